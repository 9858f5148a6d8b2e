"""``WebTransport`` against a portal on 127.0.0.1 that verifies our signatures with the
Standard Webhooks reference library, and the portal's signed requests to us, on the
memory broker and on RabbitMQ."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx
import pytest
import structlog
import trio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.broker.test_contract import nothing_arrives, receive
from tests.conftest import tracked_broker
from tests.test_worker import refusing_port, running_worker
from tests.transports.test_whatsapp import (
    Answer,
    FakeHttpServer,
    Recorded,
    cut_off_server,
    fake_http_server,
)
from vumi_like.broker import BrokerInspector
from vumi_like.errors import PROBLEM_CONTENT_TYPE, SERVICE_RETRY_AFTER
from vumi_like.messages import DeliveryStatus, Event, EventType, Message, SessionEvent
from vumi_like.messaging.webhooks import new_secret
from vumi_like.transports.web import WebTransport, WebTransportConfig

SECRET = new_secret()


@attrs.define
class Portal:
    """The other end: checks each POST's signature as a Standard Webhooks receiver does
    (401 if it does not verify), then takes the message as ``portal-<n>``."""

    secret: str = SECRET
    taken: int = 0

    def respond(self, req: Recorded) -> Answer:
        try:
            Webhook(self.secret).verify(req.body, req.headers)
        except WebhookVerificationError as exc:
            return Answer(401, {"error": str(exc)})
        self.taken += 1
        return Answer(200, {"id": f"portal-{self.taken}"})


@attrs.frozen
class Running:
    transport: WebTransport
    portal: FakeHttpServer
    client: httpx.AsyncClient  # to the worker's HTTP server


@asynccontextmanager
async def running_web(
    broker: BrokerInspector,
    unique: str,
    *,
    url: str | None = None,
    portal_secret: str = SECRET,
    **fields: Any,
) -> AsyncIterator[Running]:
    with trio.fail_after(10):
        async with fake_http_server(Portal(portal_secret).respond) as portal:
            config = WebTransportConfig(
                **{
                    "transport_name": unique,
                    "http_bind": "127.0.0.1:0",
                    "url": url or f"{portal.url}/messages",
                    "secret": SECRET,
                    "retry_delay_base": 0.05,
                    "retry_jitter": 0,
                    "request_timeout": 2,
                    **fields,
                }
            )
            async with (
                running_worker(WebTransport, config, broker) as transport,
                httpx.AsyncClient(base_url=transport.http_addresses[0]) as client,
            ):
                yield Running(transport, portal, client)


@pytest.fixture
async def memory_broker(unique: str) -> AsyncIterator[BrokerInspector]:
    """For variants that differ on the portal's side only (see test_whatsapp.py)."""
    async with tracked_broker("memory://", unique) as broker:
        yield broker


def outbound(unique: str, content: str | None = "Your permit is ready", **fields: Any) -> Message:
    return Message(
        to_addr="f427952b-247c-4d3b-b081-675a467b3619",
        from_addr="municipality",
        transport_name=unique,
        transport_type="web",
        content=content,
        **fields,
    )


async def send(broker: BrokerInspector, unique: str, message: Message, count: int) -> list[Event]:
    await broker.publish(f"{unique}.outbound", message.to_json())
    return [Event.from_json(d.body) for d in await receive(broker, f"{unique}.event", count)]


def signed(
    body: dict[str, Any] | bytes, *, secret: str = SECRET, skew: float = 0
) -> tuple[bytes, dict[str, str]]:
    """A request as a portal signs it, with the Standard Webhooks library, ``skew``
    seconds away from now (taken when it is signed, not when the test is collected)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    webhook_id = f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(time.time() + skew, tz=UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, when, raw.decode()),
    }
    return raw, headers


async def post_signed(
    client: httpx.AsyncClient, path: str, body: dict[str, Any] | bytes, **signing: Any
) -> httpx.Response:
    raw, headers = signed(body, **signing)
    return await client.post(path, content=raw, headers=headers)


# -- outbound


async def test_outbound_is_a_signed_post_and_acked_under_the_portals_id(
    broker: BrokerInspector, unique: str
):
    message = outbound(
        unique,
        session_event=SessionEvent.NEW,
        helper_metadata={"messaging_api": {"tenant": "demo", "channel": "web"}},
    )
    async with running_web(broker, unique) as run:
        (ack,) = await send(broker, unique, message, 1)
    assert ack.event_type == EventType.ACK
    assert ack.user_message_id == message.message_id
    assert ack.sent_message_id == "portal-1"
    (posted,) = run.portal.requests
    assert posted.path == "/messages"
    assert posted.headers["webhook-id"] == message.message_id
    assert posted.headers["content-type"] == "application/json"
    assert posted.json() == {
        "id": message.message_id,
        "from": "municipality",
        "to": "f427952b-247c-4d3b-b081-675a467b3619",
        "content": "Your permit is ready",
        "in_reply_to": None,
        "session_event": "new",
        "timestamp": message.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "metadata": {"messaging_api": {"tenant": "demo", "channel": "web"}},
    }


async def test_a_portal_with_another_secret_refuses_and_the_message_is_nacked(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique)
    async with running_web(broker, unique, portal_secret=new_secret()):
        (nack,) = await send(broker, unique, message, 1)
        assert await nothing_arrives(broker, f"{unique}.event", within=0.1)
    assert nack.event_type == EventType.NACK
    assert nack.nack_reason == 'HTTP 401: {"error": "No matching signature found"}'


@pytest.mark.parametrize(
    "answer",
    [Answer(204), Answer(200, b"OK"), Answer(202, {"status": "queued"})],
    ids=["empty", "not-json", "no-id"],
)
async def test_a_2xx_without_an_id_is_acked_under_the_message_id(
    memory_broker: BrokerInspector, unique: str, answer: Answer
):
    message = outbound(unique)
    async with running_web(memory_broker, unique) as run:
        run.portal.script.append(answer)
        (ack,) = await send(memory_broker, unique, message, 1)
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id == message.message_id


async def test_a_4xx_is_a_nack_with_the_status_and_body(broker: BrokerInspector, unique: str):
    message = outbound(unique)
    async with running_web(broker, unique) as run:
        run.portal.script.append(Answer(422, b"unknown party"))
        (nack,) = await send(broker, unique, message, 1)
        assert await nothing_arrives(broker, f"{unique}.event", within=0.1)
    assert nack.event_type == EventType.NACK
    assert nack.nack_reason == "HTTP 422: unknown party"


@pytest.mark.parametrize(
    "answer",
    [
        Answer(429, b"slow down", {"Retry-After": "0"}),
        Answer(503, b"maintenance"),
    ],
    ids=["429", "503"],
)
async def test_busy_or_failing_portals_are_retried(
    memory_broker: BrokerInspector, unique: str, answer: Answer
):
    message = outbound(unique)
    async with running_web(memory_broker, unique) as run:
        run.portal.script.append(answer)
        pending, ack = await send(memory_broker, unique, message, 2)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id == "portal-1"
    # The retry is the same webhook: same id, so the portal can tell a repeat.
    assert {r.headers["webhook-id"] for r in run.portal.requests} == {message.message_id}


async def test_a_hanging_portal_times_out_and_the_message_is_retried(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique)
    async with running_web(broker, unique, request_timeout=0.2) as run:
        run.portal.script.append(Answer(hang=True))
        pending, ack = await send(broker, unique, message, 2)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert pending.transport_metadata["retry"]["reason"] == (
        f"POST {run.portal.url}/messages: no answer within 0.2 s"
    )
    assert ack.event_type == EventType.ACK


async def test_an_answer_cut_off_mid_body_is_retried(broker: BrokerInspector, unique: str):
    async with cut_off_server() as url, running_web(broker, unique, url=url):
        pending, *_ = await send(broker, unique, outbound(unique), 1)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert "RemoteProtocolError" in pending.transport_metadata["retry"]["reason"]


async def test_an_unreachable_portal_is_retried(broker: BrokerInspector, unique: str):
    with refusing_port() as port:
        async with running_web(broker, unique, url=f"http://127.0.0.1:{port}/messages"):
            (pending,) = await send(broker, unique, outbound(unique), 1)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert "ConnectError" in pending.transport_metadata["retry"]["reason"]


# -- inbound


async def test_a_signed_inbound_is_published(broker: BrokerInspector, unique: str):
    body = {
        "from": "f427952b-247c-4d3b-b081-675a467b3619",
        "to": "municipality",
        "content": "Thank you",
        "in_reply_to": "m-1",
        "metadata": {"page": "permits"},
    }
    raw, headers = signed(body)
    async with running_web(broker, unique) as run:
        response = await run.client.post("/inbound", content=raw, headers=headers)
        (delivery,) = await receive(broker, f"{unique}.inbound", 1)
    assert response.status_code == 200
    message = Message.from_json(delivery.body)
    assert response.json() == {"message_id": message.message_id}
    assert message.from_addr == "f427952b-247c-4d3b-b081-675a467b3619"
    assert message.to_addr == "municipality"
    assert message.content == "Thank you"
    assert message.in_reply_to == "m-1"
    assert message.transport_name == unique
    assert message.transport_type == "web"
    assert message.transport_metadata == {
        "web": {"webhook_id": headers["webhook-id"], "metadata": {"page": "permits"}}
    }


INBOUND = {"from": "party", "to": "municipality", "content": "hi"}


async def test_an_inbound_the_broker_refuses_is_a_503_with_retry_after(
    broker: BrokerInspector, unique: str
):
    raw, headers = signed({"from": "party", "to": "municipality", "content": "hi"})
    async with running_web(broker, unique) as run:
        await broker.delete_queue(f"{unique}.inbound")  # nothing takes it: refused
        refused = await run.client.post("/inbound", content=raw, headers=headers)
        await broker.declare_queue(f"{unique}.inbound")
        accepted = await run.client.post("/inbound", content=raw, headers=headers)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert refused.json()["code"] == "broker_unavailable"
    assert refused.headers["retry-after"] == str(SERVICE_RETRY_AFTER)
    assert accepted.status_code == 200, accepted.text


@pytest.mark.parametrize(
    ("signing", "code"),
    [
        ({"secret": new_secret()}, "invalid_signature"),
        ({"skew": -600}, "invalid_signature"),
        ({"skew": 600}, "invalid_signature"),
        (None, "missing_signature"),
    ],
    ids=["other-secret", "replayed-old", "from-the-future", "unsigned"],
)
async def test_an_inbound_not_signed_now_with_the_secret_is_refused(
    memory_broker: BrokerInspector, unique: str, signing: dict[str, Any] | None, code: str
):
    async with running_web(memory_broker, unique) as run:
        with structlog.testing.capture_logs() as logs:
            if signing is None:
                response = await run.client.post("/inbound", json=INBOUND)
            else:
                response = await post_signed(run.client, "/inbound", INBOUND, **signing)
        assert await nothing_arrives(memory_broker, f"{unique}.inbound", within=0.1)
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["code"] == code
    assert len([log for log in logs if log["log_level"] == "warning"]) == 1


async def test_a_replayed_signature_on_another_body_is_refused(
    memory_broker: BrokerInspector, unique: str
):
    _, headers = signed(INBOUND)
    other = json.dumps({**INBOUND, "content": "changed"}).encode()
    async with running_web(memory_broker, unique) as run:
        response = await run.client.post("/inbound", content=other, headers=headers)
        assert await nothing_arrives(memory_broker, f"{unique}.inbound", within=0.1)
    assert response.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        json.dumps({"from": "party"}).encode(),
        json.dumps({**INBOUND, "x": 1}).encode(),
    ],
    ids=["garbage", "no-to", "unknown-key"],
)
async def test_a_signed_inbound_that_is_not_valid_is_a_400(
    memory_broker: BrokerInspector, unique: str, body: bytes
):
    async with running_web(memory_broker, unique) as run:
        response = await post_signed(run.client, "/inbound", body)
        assert await nothing_arrives(memory_broker, f"{unique}.inbound", within=0.1)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_body"


# -- statuses


async def test_status_callbacks_are_delivery_reports_for_the_message_sent(
    broker: BrokerInspector, unique: str
):
    first, second = outbound(unique, "one"), outbound(unique, "two")
    async with running_web(broker, unique) as run:
        (ack1,) = await send(broker, unique, first, 1)
        (ack2,) = await send(broker, unique, second, 1)
        answers = [
            await post_signed(run.client, "/status", {"id": ack1.sent_message_id, "status": s})
            for s in ("delivered", "read")
        ]
        answers.append(
            await post_signed(
                run.client,
                "/status",
                {"id": ack2.sent_message_id, "status": "failed", "reason": "party unknown"},
            )
        )
        reports = [Event.from_json(d.body) for d in await receive(broker, f"{unique}.event", 3)]
    assert [a.status_code for a in answers] == [204, 204, 204]
    assert [(r.user_message_id, r.delivery_status) for r in reports] == [
        (first.message_id, DeliveryStatus.DELIVERED),
        (first.message_id, DeliveryStatus.DELIVERED),
        (second.message_id, DeliveryStatus.FAILED),
    ]
    metadata = [r.transport_metadata["web"] for r in reports]  # type: ignore[index]
    assert [m["status"] for m in metadata] == ["delivered", "read", "failed"]
    assert metadata[2]["reason"] == "party unknown"


async def test_a_status_not_signed_with_the_secret_is_refused(
    broker: BrokerInspector, unique: str
):
    async with running_web(broker, unique) as run:
        (ack,) = await send(broker, unique, outbound(unique), 1)
        response = await post_signed(
            run.client,
            "/status",
            {"id": ack.sent_message_id, "status": "failed"},
            secret=new_secret(),
        )
        assert await nothing_arrives(broker, f"{unique}.event", within=0.1)
    assert response.status_code == 403


async def test_an_unknown_status_is_a_400(memory_broker: BrokerInspector, unique: str):
    async with running_web(memory_broker, unique) as run:
        response = await post_signed(run.client, "/status", {"id": "portal-1", "status": "seen"})
        assert await nothing_arrives(memory_broker, f"{unique}.event", within=0.1)
    assert response.status_code == 400
    assert "status" in response.json()["detail"]


def test_config_needs_an_http_url():
    with pytest.raises(ValueError, match="http:// or https://"):
        WebTransportConfig(transport_name="web", url="ftp://portal", secret="s")
