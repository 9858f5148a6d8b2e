"""Publish topics built from a template, one level per value, never more; and what
makes a topic or a topic filter valid at all.

The backend this transport replaces publishes a message for a user, a form or a
project on ``/{topic_base}/{target_type}/{target_id}/messages/publish``, and clients
subscribe to that topic to receive them. A value is pasted into one topic level, so a
value holding ``/`` would move the message to another topic (``target_id`` "1/x"
lands on a level nobody subscribed to), and ``+`` or ``#`` are wildcards a publish topic
may not contain at all. ``TopicTemplate.render`` refuses such values, and empty ones
(an empty level is legal MQTT but always a mistake here), with a ``TopicError``
naming the field, instead of publishing somewhere unexpected.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

import attrs

__all__ = [
    "DEFAULT_TOPIC_TEMPLATE",
    "TopicError",
    "TopicTemplate",
    "check_topic_filter",
    "publish_topic_bytes",
]

DEFAULT_TOPIC_TEMPLATE = "/{topic_base}/{target_type}/{target_id}/messages/publish"

# Wildcards, the level separator, and U+0000 (forbidden in any MQTT string).
_FORBIDDEN_IN_VALUE = ("/", "+", "#", "\x00")
_FORBIDDEN_IN_TEMPLATE = ("+", "#", "\x00")
_MAX_TOPIC_BYTES = 65535


class TopicError(ValueError):
    """A template or a value that cannot make a publish topic; ``str()`` says why."""


@attrs.frozen
class TopicTemplate:
    """A publish topic with ``{name}`` fields, each filling (part of) one level.

    ``TopicTemplate(DEFAULT_TOPIC_TEMPLATE).render({"topic_base": "onadata",
    "target_type": "xform", "target_id": 1337})`` is
    ``"/onadata/xform/1337/messages/publish"``.
    """

    template: str
    fields: tuple[str, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "fields", _parse(self.template))

    def render(self, values: Mapping[str, object]) -> str:
        """The topic with each field replaced by ``str(values[field])``.

        Raises ``TopicError`` if a field has no value, or its value is empty or holds
        ``/``, ``+``, ``#`` or U+0000. Values not named by the template are ignored.
        """
        rendered: dict[str, str] = {}
        for name in self.fields:
            if name not in values:
                raise TopicError(f"topic {self.template!r} needs a value for {name!r}")
            text = str(values[name])
            if not text:
                raise TopicError(f"topic value {name!r} is empty")
            bad = [c for c in _FORBIDDEN_IN_VALUE if c in text]
            if bad:
                shown = ", ".join(repr(c) for c in bad)
                raise TopicError(f"topic value {name!r} ({text!r}) may not contain {shown}")
            rendered[name] = text
        topic = self.template.format_map(rendered)
        if len(topic.encode()) > _MAX_TOPIC_BYTES:
            raise TopicError(f"topic longer than {_MAX_TOPIC_BYTES} bytes")
        return topic


def _parse(template: str) -> tuple[str, ...]:
    if not template:
        raise TopicError("topic template is empty")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TopicError(f"topic template {template!r}: {exc}") from None
    fields: list[str] = []
    for literal, name, spec, conversion in parts:
        bad = [c for c in _FORBIDDEN_IN_TEMPLATE if c in literal]
        if bad:
            shown = ", ".join(repr(c) for c in bad)
            raise TopicError(f"topic template {template!r} may not contain {shown}")
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TopicError(
                f"topic template {template!r}: fields are plain names like {{target_id}}, "
                f"not {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}"
            )
        if name not in fields:
            fields.append(name)
    return tuple(fields)


def publish_topic_bytes(topic: str) -> bytes:
    """``topic`` in UTF-8, or ``TopicError`` if no broker would take it for a publish.

    Empty (MQTT 5 allows it only with a topic alias), U+0000, wildcards, over 65535
    bytes, or not encodable (a lone surrogate).
    """
    try:
        encoded = topic.encode()
    except UnicodeEncodeError as exc:
        raise TopicError(str(exc)) from None
    if not encoded:
        raise TopicError("empty topic")
    bad = [c for c in _FORBIDDEN_IN_TEMPLATE if c in topic]
    if bad:
        raise TopicError(f"a publish topic may not contain {', '.join(repr(c) for c in bad)}")
    if len(encoded) > _MAX_TOPIC_BYTES:
        raise TopicError(f"topic longer than {_MAX_TOPIC_BYTES} bytes")
    return encoded


def check_topic_filter(topic_filter: str) -> None:
    """``TopicError`` unless ``topic_filter`` is a valid subscription: wildcards fill a
    whole level, ``#`` only as the last one."""
    if not topic_filter or "\x00" in topic_filter or len(topic_filter.encode()) > _MAX_TOPIC_BYTES:
        raise TopicError(f"invalid topic filter {topic_filter!r}")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            raise TopicError(f"topic filter {topic_filter!r}: a wildcard must fill its level")
        if level == "#" and index != len(levels) - 1:
            raise TopicError(f"topic filter {topic_filter!r}: '#' must be the last level")
