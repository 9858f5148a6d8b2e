"""Delivery reports and inbound messages, called back by a fake Kannel and a fake Twilio."""

from __future__ import annotations

from typing import Any

import httpx
import structlog
import trio

from tests.broker.test_contract import nothing_arrives, receive
from tests.test_worker import running_worker
from tests.transports.helpers import events
from tests.transports.http_sms.fakes import (
    AUTH_TOKEN,
    fake_kannel,
    fake_twilio,
    kannel_reports,
    twilio_posts,
)
from tests.transports.http_sms.harness import (
    KANNEL_SECRET,
    inbound,
    kannel_config,
    outbound,
    own_http,
    twilio_config,
)
from vumi_like.broker import BrokerInspector
from vumi_like.caches import CacheUnavailable
from vumi_like.errors import PROBLEM_CONTENT_TYPE
from vumi_like.messages import DeliveryStatus, EventType
from vumi_like.transports.http_sms import HttpSmsTransport, HttpSmsTransportConfig
from vumi_like.transports.http_sms.callbacks import twilio_signature

TWILIO_NUMBER = "+15005550006"


async def test_kannel_delivery_reports_reach_the_message_they_are_for(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique)
    with trio.fail_after(10):
        async with fake_kannel() as kannel:
            config = kannel_config(unique, kannel.url)
            async with running_worker(HttpSmsTransport, config, broker):
                await broker.publish(f"{unique}.outbound", message.to_json())
                (ack,) = await events(broker, unique, 1)
                (sent,) = kannel.requests
                queued = await kannel_reports(sent, 8)  # delivered to the SMSC
                delivered = await kannel_reports(sent, 1)  # delivered to the phone
                first, second = await events(broker, unique, 2)
    assert ack.event_type == EventType.ACK
    assert (queued.status_code, queued.text) == (200, "")
    assert delivered.status_code == 200
    assert [first.event_type, second.event_type] == [EventType.DELIVERY_REPORT] * 2
    assert first.user_message_id == second.user_message_id == message.message_id
    assert first.delivery_status == DeliveryStatus.PENDING
    assert first.transport_metadata == {"provider_status": "8"}
    assert second.delivery_status == DeliveryStatus.DELIVERED
    assert second.transport_metadata == {"provider_status": "1"}


async def test_a_kannel_report_finds_its_message_after_the_transport_restarted(
    broker: BrokerInspector, unique: str
):
    """Kannel's reports name the message id: matched with no cache, so the in-process
    cache that a restart empties loses none of them."""
    message = outbound(unique)
    with trio.fail_after(10):
        async with fake_kannel() as kannel:
            config = kannel_config(unique, kannel.url, unmatched_report_retries=0)
            async with running_worker(HttpSmsTransport, config, broker):
                await broker.publish(f"{unique}.outbound", message.to_json())
                (ack,) = await events(broker, unique, 1)
            (sent,) = kannel.requests
            assert ack.event_type == EventType.ACK
            async with running_worker(HttpSmsTransport, config, broker):
                answer = await kannel_reports(sent, 1)
                (report,) = await events(broker, unique, 1)
    assert answer.status_code == 200
    assert report.event_type == EventType.DELIVERY_REPORT
    assert report.user_message_id == message.message_id
    assert report.delivery_status == DeliveryStatus.DELIVERED


async def test_twilio_status_callbacks_keep_the_raw_status_and_error_code(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique)
    with trio.fail_after(10):
        async with fake_twilio() as twilio:
            config = twilio_config(unique, twilio.url)
            async with running_worker(HttpSmsTransport, config, broker):
                await broker.publish(f"{unique}.outbound", message.to_json())
                (ack,) = await events(broker, unique, 1)
                (sent,) = twilio.requests
                answer = await twilio_posts(
                    sent.form["StatusCallback"],
                    {
                        "MessageSid": str(ack.sent_message_id),
                        "MessageStatus": "undelivered",
                        "ErrorCode": "30003",
                        "AccountSid": str(config.account_sid),
                        "To": message.to_addr,
                        "From": message.from_addr,
                    },
                )
                (report,) = await events(broker, unique, 1)
    assert answer.status_code == 200
    assert report.event_type == EventType.DELIVERY_REPORT
    assert report.user_message_id == message.message_id
    assert report.delivery_status == DeliveryStatus.FAILED
    assert report.transport_metadata == {
        "provider_status": "undelivered",
        "provider_error": "30003",
    }


async def test_twilio_inbound_is_published_and_answered_with_empty_twiml(
    broker: BrokerInspector, unique: str
):
    config = twilio_config(unique, "http://127.0.0.1:9")
    inbound_url = f"{config.callback_base_url}/inbound"
    form = {
        "MessageSid": "SM0123456789abcdef0123456789abcdef",
        "From": "+27820000001",
        "To": TWILIO_NUMBER,
        "Body": "STOP please",
        "NumMedia": "0",
    }
    with trio.fail_after(10):
        async with running_worker(HttpSmsTransport, config, broker):
            answer = await twilio_posts(inbound_url, form)
            message = await inbound(broker, unique)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert answer.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert (message.from_addr, message.to_addr) == ("+27820000001", TWILIO_NUMBER)
    assert message.content == "STOP please"
    assert message.transport_name == unique
    assert message.transport_type == "sms"
    assert message.transport_metadata == {"provider_message_id": form["MessageSid"]}


async def test_kannel_inbound_from_an_sms_service_get_url(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    with trio.fail_after(10):
        async with fake_kannel() as kannel:
            config = kannel_config(unique, kannel.url)
            async with running_worker(HttpSmsTransport, config, broker):
                # The get-url of the sms-service: ...?from=%p&to=%P&content=%a&secret=...
                params = {
                    "from": "+27820000001",
                    "to": "1234",
                    "content": "hi there",
                    "secret": KANNEL_SECRET,
                }
                async with httpx.AsyncClient() as client:
                    answer = await client.get(f"{config.callback_base_url}/inbound", params=params)
                message = await inbound(broker, unique)
    assert (answer.status_code, answer.text) == (200, "")
    assert (message.from_addr, message.to_addr, message.content) == (
        "+27820000001",
        "1234",
        "hi there",
    )
    assert message.transport_metadata == {}


async def test_a_kannel_report_without_the_secret_is_refused_and_publishes_nothing(
    broker: BrokerInspector, unique: str
):
    attempts = {"wrong": "not-the-secret", "missing": None}
    answers: dict[str, httpx.Response] = {}
    with trio.fail_after(10), structlog.testing.capture_logs() as logs:
        async with fake_kannel() as kannel:
            config = kannel_config(unique, kannel.url)
            async with (
                running_worker(HttpSmsTransport, config, broker),
                httpx.AsyncClient() as client,
            ):
                for name, secret in attempts.items():
                    params = {"id": "0123abcd", "status": "1"}
                    if secret is not None:
                        params["secret"] = secret
                    url = f"{config.callback_base_url}/dlr"
                    answers[name] = await client.get(url, params=params)
                assert await nothing_arrives(broker, f"{unique}.event", within=0.2)
                assert await nothing_arrives(broker, f"{unique}.unmatched_reports", within=0.1)
    for answer in answers.values():
        assert answer.status_code == 403
        assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert answer.json()["code"] == "callback_not_verified"
    reasons = [entry["reason"] for entry in logs if entry["event"] == "callback refused"]
    assert reasons == ["wrong callback secret", "no callback secret"]


def _status_form(sid: str = "SM0123") -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": "delivered"}


def _inbound_form() -> dict[str, str]:
    return {"MessageSid": "SM9", "From": "+27820000001", "To": TWILIO_NUMBER, "Body": "hi"}


async def _signed_by_another_token(url: str, form: dict[str, str]) -> httpx.Response:
    return await twilio_posts(url, form, auth_token="some-other-token")


async def _signed_for_another_url(url: str, form: dict[str, str]) -> httpx.Response:
    signature = twilio_signature(AUTH_TOKEN, url.replace("127.0.0.1", "localhost"), form.items())
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=form, headers={"X-Twilio-Signature": signature})


async def _tampered_after_signing(url: str, form: dict[str, str]) -> httpx.Response:
    signature = twilio_signature(AUTH_TOKEN, url, form.items())
    tampered = {**form, "MessageStatus": "failed", "Body": "tampered"}
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=tampered, headers={"X-Twilio-Signature": signature})


async def _unsigned(url: str, form: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=form)


BAD_SIGNATURES = {
    "other-token": _signed_by_another_token,
    "other-url": _signed_for_another_url,
    "tampered": _tampered_after_signing,
    "unsigned": _unsigned,
}


async def test_a_twilio_callback_with_a_bad_signature_is_refused_and_publishes_nothing(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    config = twilio_config(unique, "http://127.0.0.1:9")
    forms = {"/dlr": _status_form(), "/inbound": _inbound_form()}
    statuses: dict[tuple[str, str], int] = {}
    with trio.fail_after(10), structlog.testing.capture_logs() as logs:
        async with running_worker(HttpSmsTransport, config, broker):
            for path, form in forms.items():
                for name, post in BAD_SIGNATURES.items():
                    answer = await post(f"{config.callback_base_url}{path}", form)
                    assert answer.json()["code"] == "callback_not_verified"
                    statuses[path, name] = answer.status_code
            for queue in ("event", "inbound", "unmatched_reports"):
                assert await nothing_arrives(broker, f"{unique}.{queue}", within=0.1)
    assert set(statuses.values()) == {403}
    assert len(statuses) == len(forms) * len(BAD_SIGNATURES)
    refusals = [entry for entry in logs if entry["event"] == "callback refused"]
    assert len(refusals) == len(statuses)


async def test_a_report_for_an_unknown_id_is_answered_200_then_dead_lettered(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    config = twilio_config(unique, "http://127.0.0.1:9", unmatched_report_retries=0)
    with trio.fail_after(10):
        async with running_worker(HttpSmsTransport, config, broker):
            answer = await twilio_posts(f"{config.callback_base_url}/dlr", _status_form("SMnone"))
            (dead,) = await receive(broker, f"{unique}.dead_letter", 1)
            assert await nothing_arrives(broker, f"{unique}.event", within=0.05)
    assert answer.status_code == 200
    assert b'"provider_ids":["smnone"]' in dead.body
    assert b'"provider_status":"delivered"' in dead.body
    assert "no message sent as provider id 'smnone'" in str(dead.headers)


async def test_a_report_while_the_cache_is_away_is_a_503_to_send_again(
    memory_broker: BrokerInspector, unique: str
):
    """The provider is told to try again, with nothing published; the log, not the
    answer, names the service."""
    broker = memory_broker
    config = twilio_config(unique, "http://127.0.0.1:9")

    async def away(*args: Any) -> None:
        raise CacheUnavailable("redis://cache.internal:6379/0: connection refused")

    with trio.fail_after(10):
        async with running_worker(HttpSmsTransport, config, broker) as transport:
            transport.cache.get_provider_message_id = away  # type: ignore[method-assign]
            with structlog.testing.capture_logs() as logs:
                answer = await twilio_posts(f"{config.callback_base_url}/dlr", _status_form())
            assert await nothing_arrives(broker, f"{unique}.event", within=0.05)
            assert await nothing_arrives(broker, f"{unique}.unmatched_reports", within=0.05)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert answer.json()["code"] == "service_unavailable"
    assert "cache.internal" not in answer.text
    (warning,) = [e for e in logs if e["event"] == "service unavailable: answered 503"]
    assert warning["log_level"] == "warning"
    assert "cache.internal" in warning["error"]


async def test_a_report_without_a_status_is_a_400_and_publishes_nothing(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    config = twilio_config(unique, "http://127.0.0.1:9")
    with trio.fail_after(10), structlog.testing.capture_logs() as logs:
        async with running_worker(HttpSmsTransport, config, broker):
            answer = await twilio_posts(f"{config.callback_base_url}/dlr", {"MessageSid": "SM1"})
            assert await nothing_arrives(broker, f"{unique}.unmatched_reports", within=0.1)
    assert answer.status_code == 400
    assert answer.json()["detail"] == "the delivery report has no 'MessageStatus'"
    [line] = [entry for entry in logs if entry["event"] == "callback without a required field"]
    assert line["field"] == "MessageStatus"


def _json_provider(unique: str, **fields: Any) -> HttpSmsTransportConfig:
    return HttpSmsTransportConfig.model_validate(
        {
            "transport_name": unique,
            "url": "http://127.0.0.1:9/send",
            "id_json_path": "id",
            "callback_secret": "header-secret",
            "dlr_id_field": "data.message.id",
            "dlr_status_field": "data.status",
            "status_map": {"DELIVRD": "delivered", "UNDELIV": "failed"},
            **own_http(),
            **fields,
        }
    )


async def test_a_json_report_with_an_unknown_status_is_taken_as_unknown_status_says(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    config = _json_provider(unique, unmatched_report_retries=0)
    report = {"data": {"message": {"id": "abc-1"}, "status": "ENROUTE"}}
    with trio.fail_after(10), structlog.testing.capture_logs() as logs:
        async with running_worker(HttpSmsTransport, config, broker):
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"{config.callback_base_url}/dlr",
                    json=report,
                    headers={"X-Callback-Secret": "header-secret"},
                )
            (dead,) = await receive(broker, f"{unique}.dead_letter", 1)
    assert answer.status_code == 200
    # Unmatched (nothing was sent as abc-1), so the report shows as it was read.
    assert b'"delivery_status":"pending"' in dead.body
    assert b'"provider_status":"ENROUTE"' in dead.body
    [line] = [entry for entry in logs if entry["event"] == "unknown provider status"]
    assert line["provider_status"] == "ENROUTE"
