"""Publish topics from a template: the seed's layout, and values that would escape their level."""

from __future__ import annotations

import pytest

from vumi_like.transports.mqtt import DEFAULT_TOPIC_TEMPLATE, TopicError, TopicTemplate
from vumi_like.transports.mqtt.topics import check_topic_filter, publish_topic_bytes

TARGET = {"topic_base": "onadata", "target_type": "xform", "target_id": 1337}


@pytest.mark.parametrize("target_type", ["user", "xform", "project"])
def test_default_template_is_the_backends_layout(target_type: str) -> None:
    topic = TopicTemplate(DEFAULT_TOPIC_TEMPLATE).render(TARGET | {"target_type": target_type})
    assert topic == f"/onadata/{target_type}/1337/messages/publish"


def test_values_not_named_by_the_template_are_ignored() -> None:
    template = TopicTemplate("{topic_base}/inbox")
    assert template.fields == ("topic_base",)
    assert template.render(TARGET) == "onadata/inbox"


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("1/2", "'/'"),
        ("+", "'+'"),
        ("all#", "'#'"),
        ("a\x00b", "'\\x00'"),
    ],
)
def test_a_value_that_would_leave_its_level_is_refused(value: str, complaint: str) -> None:
    with pytest.raises(TopicError) as caught:
        TopicTemplate(DEFAULT_TOPIC_TEMPLATE).render(TARGET | {"target_id": value})
    assert "'target_id'" in str(caught.value)
    assert complaint in str(caught.value)


def test_an_empty_value_is_refused() -> None:
    with pytest.raises(TopicError, match="'topic_base' is empty"):
        TopicTemplate(DEFAULT_TOPIC_TEMPLATE).render(TARGET | {"topic_base": ""})


def test_a_missing_value_is_named() -> None:
    with pytest.raises(TopicError, match="needs a value for 'target_id'"):
        TopicTemplate(DEFAULT_TOPIC_TEMPLATE).render({"topic_base": "a", "target_type": "user"})


def test_a_topic_too_long_for_mqtt_is_refused() -> None:
    with pytest.raises(TopicError, match="longer than 65535 bytes"):
        TopicTemplate("t/{x}").render({"x": "é" * 40000})


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("", "empty"),
        ("/a/+/{x}", "'+'"),
        ("/a/{x}/#", "'#'"),
        ("/a/{}", "plain names"),
        ("/a/{0}", "plain names"),
        ("/a/{x:>5}", "plain names"),
        ("/a/{x!r}", "plain names"),
        ("/a/{x.y}", "plain names"),
        ("/a/{x", "expected '}'"),
    ],
)
def test_a_bad_template_is_refused_when_made(template: str, complaint: str) -> None:
    with pytest.raises(TopicError) as caught:
        TopicTemplate(template)
    assert complaint in str(caught.value)


@pytest.mark.parametrize("good", ["#", "+", "a/+/b", "a/#", "/", "+/+", "a//b", "$SYS/#"])
def test_valid_topic_filters_pass(good: str) -> None:
    check_topic_filter(good)


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        ("", "invalid topic filter"),
        ("a\x00", "invalid topic filter"),
        ("a/#/b", "'#' must be the last level"),
        ("a/b#", "a wildcard must fill its level"),
        ("a+/b", "a wildcard must fill its level"),
    ],
)
def test_invalid_topic_filters_are_refused(bad: str, complaint: str) -> None:
    with pytest.raises(TopicError, match=complaint):
        check_topic_filter(bad)


def test_a_publish_topic_is_encoded_or_refused() -> None:
    assert publish_topic_bytes("a/é") == "a/é".encode()
    for bad, complaint in [
        ("", "empty topic"),
        ("a/+", "'+'"),
        ("a/#", "'#'"),
        ("\x00", "'\\x00'"),
        ("\udc80", "surrogates not allowed"),
        ("x" * 65536, "longer than 65535 bytes"),
    ]:
        with pytest.raises(TopicError) as caught:
            publish_topic_bytes(bad)
        assert complaint in str(caught.value)
