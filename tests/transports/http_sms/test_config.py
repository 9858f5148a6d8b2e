"""The config checked at load, presets, templates, answers read, Twilio's signature."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from vumi_like.config import ConfigError, config_from_data
from vumi_like.messages import DeliveryStatus, Message
from vumi_like.transports.http_sms import HttpSmsTransportConfig
from vumi_like.transports.http_sms.answers import AnswerRules, MissingProviderId
from vumi_like.transports.http_sms.callbacks import twilio_signature
from vumi_like.transports.http_sms.lookup import find, find_text
from vumi_like.transports.http_sms.request import RequestTemplate
from vumi_like.transports.outcomes import PermanentFailure, TemporaryFailure


def load(**fields: Any) -> HttpSmsTransportConfig:
    data = {"transport_name": "sms", **fields}
    if "preset" not in fields:
        data.setdefault("url", "https://sms.example.org/send")
    return config_from_data(HttpSmsTransportConfig, data, source="test.yaml")


def refused(**fields: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(**fields)
    return str(info.value)


# -- templates


def test_an_unknown_placeholder_is_refused_naming_its_key():
    problem = refused(query={"to": "{to_addr}", "text": "{contents}"})
    assert "query: in 'text': unknown placeholder {contents}" in problem
    assert "known: account_sid, " in problem


def test_an_unknown_placeholder_in_a_nested_json_body_names_its_path():
    problem = refused(body_format="json", body={"messages": [{"to": "{to}"}]})
    assert "body: in 'messages.0.to': unknown placeholder {to}" in problem


@pytest.mark.parametrize(
    "template",
    ["{to_addr.__class__}", "{content[0]}", "{content!r}", "{content:>99}", "{0}", "{}"],
)
def test_placeholders_are_bare_names_only(template: str):
    assert "should be a bare name like {to_addr}" in refused(query={"x": template})


def test_a_lone_brace_is_refused_and_doubled_braces_are_literal():
    assert "write {{ and }} for literal braces" in refused(headers={"X-A": "{to_addr"})
    config = load(method="POST", body_format="json", body={"raw": "{{not a placeholder}}"})
    built = RequestTemplate(config).build(httpx.AsyncClient(), message())
    assert json.loads(built.content) == {"raw": "{not a placeholder}"}


def test_a_config_placeholder_needs_its_value():
    assert "callback_base_url is required: body.cb uses {dlr_url}" in refused(
        body={"cb": "{dlr_url}"}
    )
    assert "account_sid is required: url uses {account_sid}" in refused(
        url="https://api.example.org/{account_sid}/send"
    )


def message(**fields: Any) -> Message:
    return Message(
        **{
            "to_addr": "+27 82/000?1",
            "from_addr": "1234",
            "transport_name": "sms",
            "transport_type": "sms",
            "content": "a&b=c",
            **fields,
        }
    )


def test_placeholders_are_url_quoted_in_the_url_and_encoded_in_the_query():
    config = load(
        url="https://api.example.org/to/{to_addr}",
        method="GET",
        query={"text": "{content}", "id": "{message_id}"},
        auth="query",
        auth_query_param="key",
        token="t0k",
    )
    msg = message()
    built = RequestTemplate(config).build(httpx.AsyncClient(), msg)
    assert built.url.raw_path.decode().startswith("/to/%2B27%2082%2F000%3F1?")
    assert dict(built.url.params) == {"text": "a&b=c", "id": msg.message_id, "key": "t0k"}


# -- presets


def test_the_kannel_preset_fills_defaults_and_explicit_keys_win_entry_by_entry():
    config = load(
        preset="kannel",
        url="http://kannel:13013/cgi-bin/sendsms",
        username="u",
        password="p",
        query={"dlr-url": None, "dlr-mask": None, "smsc": "mtn"},
        success_regex="^0:",
    )
    assert config.method == "GET"
    assert config.query == {
        "username": "{username}",
        "password": "{password}",
        "from": "{from_addr}",
        "to": "{to_addr}",
        "text": "{content}",
        "charset": "UTF-8",
        "smsc": "mtn",
    }
    assert config.success_regex == "^0:"
    assert config.status_map["16"] == DeliveryStatus.FAILED


def test_the_twilio_preset_logs_in_as_the_account_and_verifies_with_the_auth_token():
    config = load(
        preset="twilio",
        url="https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Messages.json",
        account_sid="AC1",
        password="auth-token",
        callback_base_url="https://gw.example.org",
    )
    assert config.auth == "basic"
    assert config.username == "AC1"
    assert config.callback_secret is not None
    assert config.callback_secret.get_secret_value() == "auth-token"
    assert config.callback_auth == "twilio_signature"
    # An API key logs in instead; the auth token still signs callbacks.
    keyed = load(
        preset="twilio",
        account_sid="AC1",
        username="SK1",
        password="key-secret",
        callback_secret="auth-token",
        callback_base_url="https://gw.example.org",
    )
    assert keyed.username == "SK1"
    assert keyed.url == "https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Messages.json"


def test_secrets_stay_out_of_the_configs_repr():
    config = load(
        preset="twilio",
        account_sid="AC1",
        password="auth-token",
        http_bind="127.0.0.1:8090",
        callback_base_url="https://gw.example.org",
    )
    assert "auth-token" not in repr(config)


# -- other checks


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"auth": "basic", "username": "u"}, "password is required for auth: basic"),
        ({"auth": "bearer"}, "token is required for auth: bearer"),
        ({"method": "GET", "body": {"a": "b"}}, "body: a GET request has no body"),
        ({"body": {"a": {"b": "c"}}}, "body.a: a form field is text"),
        ({"id_json_path": "id", "id_header": "X-Id"}, "id_json_path and id_header"),
        ({"success_regex": "(unclosed"}, "success_regex: not a valid regular expression"),
        ({"success_json_path": "status"}, "success_json_path and success_json_value go"),
        ({"http_bind": "127.0.0.1:8080"}, "callback_secret is required to verify callbacks"),
        ({"url": "ftp://x"}, "url: should be an http:// or https:// URL"),
        ({"dlr_path": "dlr"}, "dlr_path: should start with /"),
        ({"preset": "nexmo"}, "preset: should be 'kannel' or 'twilio'"),
        ({"status_map": {"1": "sent"}}, "status_map.1: should be 'pending', 'failed' or"),
    ],
)
def test_a_config_that_cannot_work_is_refused_at_load(fields: dict[str, Any], problem: str):
    assert problem in refused(**fields)


# -- reading answers


def rules(**fields: Any) -> AnswerRules:
    return AnswerRules.from_config(load(**fields))


def answer(status: int, body: str = "", **headers: str) -> httpx.Response:
    return httpx.Response(status, text=body, headers=headers)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_retryable_statuses_are_temporary_with_their_retry_after(status: int):
    with pytest.raises(TemporaryFailure) as info:
        rules().provider_id(answer(status, " busy\n  now ", **{"Retry-After": "7"}))
    assert info.value.reason == f"HTTP {status}: busy now"
    assert info.value.retry_after == 7


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_failing_statuses_are_permanent(status: int):
    with pytest.raises(PermanentFailure, match=f"HTTP {status}: Authorization failed"):
        rules().provider_id(answer(status, "Authorization failed"))


def test_only_the_configured_success_statuses_count():
    assert rules(success_statuses=[202]).provider_id(answer(202)) is None
    with pytest.raises(PermanentFailure, match="HTTP 200: \\(empty answer\\)"):
        rules(success_statuses=[202]).provider_id(answer(200))


def test_a_json_success_check_compares_as_text():
    check = rules(success_json_path="result.code", success_json_value=0, id_json_path="id")
    assert check.provider_id(answer(200, '{"result": {"code": 0}, "id": 12}')) == "12"
    with pytest.raises(PermanentFailure, match="HTTP 200 but not accepted"):
        check.provider_id(answer(200, '{"result": {"code": 3}}'))
    with pytest.raises(PermanentFailure, match="HTTP 200 but not accepted: garbage"):
        check.provider_id(answer(200, "garbage"))


def test_the_id_from_a_regex_or_a_header():
    by_group = rules(id_regex=r"ID: (?P<id>\w+)")
    assert by_group.provider_id(answer(200, "OK ID: ab12 queued")) == "ab12"
    assert rules(id_regex=r"OK (\d+)").provider_id(answer(200, "OK 991")) == "991"
    by_header = rules(id_header="X-Message-Id")
    assert by_header.provider_id(answer(200, **{"X-Message-Id": "m7"})) == "m7"
    with pytest.raises(MissingProviderId, match="no id in the answer: Accepted"):
        by_group.provider_id(answer(200, "Accepted"))
    with pytest.raises(MissingProviderId, match="no X-Message-Id header"):
        by_header.provider_id(answer(200))
    with pytest.raises(MissingProviderId, match="no 'sid' in the answer"):
        rules(id_json_path="sid").provider_id(answer(201, '{"status": "queued"}'))


# -- finding fields


def test_find_takes_a_flat_key_first_then_a_dotted_path():
    data = {"a.b": 1, "a": {"b": 2, "list": [{"id": "x"}]}, "n": None, "t": True}
    assert find(data, "a.b") == 1
    assert find(data, "a.list.0.id") == "x"
    with pytest.raises(LookupError):
        find(data, "a.list.1.id")
    assert find_text(data, "a") is None  # an object is not text
    assert find_text(data, "n") is None
    assert find_text(data, "t") == "true"
    assert find_text({"code": 30003}, "code") == "30003"


# -- Twilio's signature


def test_twilio_signature_matches_twilios_published_example():
    # The worked example of Twilio's webhook security guide, parameters out of order.
    params = [
        ("To", "+18005551212"),
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("Caller", "+12349013030"),
    ]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
