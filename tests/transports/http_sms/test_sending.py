"""Sending through a fake Kannel and a fake Twilio: the request, and each answer's outcome."""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

import structlog
import trio

from tests.broker.test_contract import nothing_arrives
from tests.test_worker import free_port, running_worker
from tests.transports.helpers import events
from tests.transports.http_sms.fakes import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Answer,
    fake_kannel,
    fake_twilio,
    twilio_error,
)
from tests.transports.http_sms.harness import (
    KANNEL_SECRET,
    kannel_config,
    outbound,
    twilio_config,
)
from vumi_like.broker import BrokerInspector
from vumi_like.messages import DeliveryStatus, EventType
from vumi_like.transports.http_sms import HttpSmsTransport, HttpSmsTransportConfig


async def test_kannel_gets_a_sendsms_request_carrying_the_message_id_back_in_the_dlr_url(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique, "héllo & goodbye")
    with trio.fail_after(10):
        async with fake_kannel() as kannel:
            config = kannel_config(unique, kannel.url)
            async with running_worker(HttpSmsTransport, config, broker):
                await broker.publish(f"{unique}.outbound", message.to_json())
                (ack,) = await events(broker, unique, 1)
            (sent,) = kannel.requests
    assert ack.event_type == EventType.ACK
    assert ack.user_message_id == message.message_id
    # Kannel's answer has no id: our message id is the provider id.
    assert ack.sent_message_id == message.message_id
    assert (sent.method, sent.path) == ("GET", "/cgi-bin/sendsms")
    assert sent.query == {
        "username": "kannel-user",
        "password": "kannel-password",
        "from": "+15005550006",
        "to": "+27820000001",
        "text": "héllo & goodbye",
        "charset": "UTF-8",
        "dlr-mask": "31",
        "dlr-url": f"{config.callback_base_url}/dlr?id={message.message_id}&status=%d"
        f"&secret={KANNEL_SECRET}",
    }


async def test_twilio_gets_a_signed_in_form_post_and_its_sid_is_the_provider_id(
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
    assert sent.method == "POST"
    assert sent.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    credentials = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert sent.headers["authorization"] == f"Basic {credentials}"
    assert sent.form == {
        "To": "+27820000001",
        "From": "+15005550006",
        "Body": "hello",
        "StatusCallback": f"{config.callback_base_url}/dlr",
    }
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id is not None and ack.sent_message_id.startswith("SM")


async def test_a_4xx_is_a_nack_with_the_providers_reason(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    message = outbound(unique)
    with trio.fail_after(10):
        async with fake_twilio() as twilio:
            twilio.answer_next(twilio_error(400, 21211, "The 'To' number is not valid."))
            async with running_worker(HttpSmsTransport, twilio_config(unique, twilio.url), broker):
                await broker.publish(f"{unique}.outbound", message.to_json())
                (nack,) = await events(broker, unique, 1)
                assert await nothing_arrives(broker, f"{unique}.event", within=0.2)
    assert nack.event_type == EventType.NACK
    assert nack.user_message_id == message.message_id
    assert nack.nack_reason is not None
    assert nack.nack_reason.startswith("HTTP 400: ")
    assert "The 'To' number is not valid." in nack.nack_reason
    assert len(twilio.requests) == 1


async def test_a_429_is_retried_no_sooner_than_its_retry_after(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    message = outbound(unique)
    too_many = twilio_error(429, 20429, "Too Many Requests")
    too_many.headers["Retry-After"] = "1"
    with trio.fail_after(10):
        async with fake_twilio() as twilio:
            twilio.answer_next(too_many)
            async with running_worker(HttpSmsTransport, twilio_config(unique, twilio.url), broker):
                await broker.publish(f"{unique}.outbound", message.to_json())
                pending, ack = await events(broker, unique, 2)
            first, second = twilio.requests
    assert pending.event_type == EventType.DELIVERY_REPORT
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert pending.transport_metadata["retry"]["reason"].startswith("HTTP 429: ")
    assert ack.event_type == EventType.ACK
    assert second.at - first.at >= 1.0


async def test_a_5xx_is_retried_then_acked(memory_broker: BrokerInspector, unique: str):
    broker = memory_broker
    with trio.fail_after(10):
        async with fake_kannel() as kannel:
            kannel.answer_next(Answer(503, "Sending failed"))
            async with running_worker(HttpSmsTransport, kannel_config(unique, kannel.url), broker):
                await broker.publish(f"{unique}.outbound", outbound(unique).to_json())
                pending, ack = await events(broker, unique, 2)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert pending.transport_metadata == {
        "retry": {"attempt": 1, "reason": "HTTP 503: Sending failed"}
    }
    assert ack.event_type == EventType.ACK
    assert len(kannel.requests) == 2


async def test_a_provider_that_hangs_past_the_timeout_is_retried(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    with trio.fail_after(10):
        async with fake_twilio() as twilio:
            twilio.answer_next(Answer(200, hang=True))
            config = twilio_config(unique, twilio.url, timeout=0.3)
            async with running_worker(HttpSmsTransport, config, broker):
                sent_at = trio.current_time()
                await broker.publish(f"{unique}.outbound", outbound(unique).to_json())
                pending, ack = await events(broker, unique, 2)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert pending.transport_metadata["retry"]["reason"] == "no answer within 0.3 s"
    assert ack.event_type == EventType.ACK
    second = twilio.requests[1]
    assert second.at - sent_at >= 0.3


async def test_a_refused_connection_is_retried_until_the_provider_listens(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    port = free_port()
    config = twilio_config(unique, f"http://127.0.0.1:{port}")
    with trio.fail_after(10):
        async with running_worker(HttpSmsTransport, config, broker):
            await broker.publish(f"{unique}.outbound", outbound(unique).to_json())
            (pending,) = await events(broker, unique, 1)
            async with fake_twilio(port) as twilio:
                # Retries that came before the fake listened report pending too.
                got = await events(broker, unique, 1)
                while got[-1].event_type != EventType.ACK:
                    got += await events(broker, unique, 1)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert pending.transport_metadata["retry"]["reason"].startswith("request failed: ConnectError")
    assert [e.delivery_status for e in got[:-1]] == [DeliveryStatus.PENDING] * (len(got) - 1)
    assert len(twilio.requests) == 1


async def test_an_accepted_answer_without_its_id_is_acked_under_the_message_id(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    message = outbound(unique)
    with trio.fail_after(10), structlog.testing.capture_logs() as logs:
        async with fake_twilio() as twilio:
            twilio.answer_next(Answer(201, "<html>Created</html>"))
            async with running_worker(HttpSmsTransport, twilio_config(unique, twilio.url), broker):
                await broker.publish(f"{unique}.outbound", message.to_json())
                (ack,) = await events(broker, unique, 1)
                assert await nothing_arrives(broker, f"{unique}.event", within=0.2)
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id == message.message_id
    assert len(twilio.requests) == 1
    [line] = [entry for entry in logs if entry["event"].startswith("accepted without")]
    assert line["message_id"] == message.message_id
    assert line["reason"] == "the answer is not JSON: <html>Created</html>"


async def test_a_success_status_whose_body_says_otherwise_is_a_nack(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    with trio.fail_after(10):
        async with fake_kannel() as kannel:
            kannel.answer_next(Answer(202, "<html>captive portal</html>"))
            async with running_worker(HttpSmsTransport, kannel_config(unique, kannel.url), broker):
                await broker.publish(f"{unique}.outbound", outbound(unique).to_json())
                (nack,) = await events(broker, unique, 1)
    assert nack.event_type == EventType.NACK
    assert nack.nack_reason == "HTTP 202 but not accepted: <html>captive portal</html>"


async def test_a_json_provider_with_bearer_auth_and_an_id_in_a_nested_answer(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    message = outbound(unique)
    answer = Answer(200, json.dumps({"status": "ok", "messages": [{"id": "0042"}]}))
    with trio.fail_after(10):
        async with fake_twilio() as provider:
            provider.answer_next(answer)
            config: dict[str, Any] = {
                "transport_name": unique,
                "url": f"{provider.url}/v1/sms/{{to_addr}}",
                "body_format": "json",
                "body": {"text": "{content}", "ref": "{message_id}", "flash": False},
                "headers": {"X-Sender": "{from_addr}"},
                "auth": "bearer",
                "token": "sekret-token",
                "success_json_path": "status",
                "success_json_value": "ok",
                "id_json_path": "messages.0.id",
            }
            transport_config = HttpSmsTransportConfig.model_validate(config)
            async with running_worker(HttpSmsTransport, transport_config, broker):
                await broker.publish(f"{unique}.outbound", message.to_json())
                (ack,) = await events(broker, unique, 1)
            (sent,) = provider.requests
    assert sent.path == "/v1/sms/%2B27820000001"
    assert sent.headers["authorization"] == "Bearer sekret-token"
    assert sent.headers["x-sender"] == "+15005550006"
    assert json.loads(sent.body) == {"text": "hello", "ref": message.message_id, "flash": False}
    assert ack.sent_message_id == "0042"


async def test_a_connection_closed_in_the_middle_of_the_answer_is_retried(
    memory_broker: BrokerInspector, unique: str
):
    broker = memory_broker
    complete = b"HTTP/1.1 202 Accepted\r\nContent-Length: 24\r\n\r\n0: Accepted for delivery"
    truncated = b"HTTP/1.1 202 Accepted\r\nContent-Length: 24\r\n\r\n0: Acc"
    requests: list[bytes] = []

    async def kannel_cut_short(stream: trio.SocketStream) -> None:
        # A Kannel behind a proxy that drops the first connection halfway through.
        received = b""
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some()
        requests.append(received)
        await stream.send_all(truncated if len(requests) == 1 else complete)
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(
                functools.partial(trio.serve_tcp, kannel_cut_short, 0, host="127.0.0.1")
            )
            port = listener.socket.getsockname()[1]
            config = kannel_config(unique, f"http://127.0.0.1:{port}")
            async with running_worker(HttpSmsTransport, config, broker):
                await broker.publish(f"{unique}.outbound", outbound(unique).to_json())
                pending, ack = await events(broker, unique, 2)
            nursery.cancel_scope.cancel()
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert pending.transport_metadata["retry"]["reason"].startswith(
        "request failed: RemoteProtocolError: "
    )
    assert ack.event_type == EventType.ACK
    assert len(requests) == 2
    assert requests[0].startswith(b"GET /cgi-bin/sendsms?")
