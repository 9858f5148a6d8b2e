"""``WhatsAppCloudTransport`` against a fake Graph API on 127.0.0.1, and its webhook over
HTTP, on the memory broker and on RabbitMQ.

The fake Graph API is a real HTTP server speaking the Cloud API's shapes (``FakeHttpServer``
below, also used by the web transport's tests). Webhooks are POSTed to the worker's own
HTTP server, signed as Meta signs them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import structlog
import trio
from quart import Response, request
from quart_trio import QuartTrio

from tests.broker.test_contract import nothing_arrives, receive
from tests.conftest import tracked_broker
from tests.test_worker import refusing_port, running_worker
from tests.transports.helpers import events
from vumi_like.broker import BrokerInspector
from vumi_like.config import ConfigError, load_config
from vumi_like.errors import PROBLEM_CONTENT_TYPE, SERVICE_RETRY_AFTER
from vumi_like.messages import DeliveryStatus, Event, EventType, Message
from vumi_like.transports.outcomes import (
    PermanentFailure,
    ProviderUnavailable,
    TemporaryFailure,
)
from vumi_like.transports.whatsapp import (
    SIGNATURE_HEADER,
    TokenRejected,
    WhatsAppCloudConfig,
    WhatsAppCloudTransport,
    graph_failure,
    message_request,
    signature,
)
from vumi_like.worker import serve_http

# -- a scripted HTTP server on 127.0.0.1


@attrs.frozen
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.frozen
class Answer:
    status: int = 200
    body: bytes | dict[str, Any] = b""
    headers: dict[str, str] = attrs.field(factory=dict)
    hang: bool = False  # never answer (until the server stops)


class FakeHttpServer:
    """Records every request; answers with the next of ``script``, else ``respond(req)``."""

    def __init__(self, respond: Callable[[Recorded], Answer]) -> None:
        self.respond = respond
        self.script: list[Answer] = []
        self.requests: list[Recorded] = []
        self.url = ""
        self.stopping = trio.Event()
        self.app = QuartTrio("fake-provider")
        self.app.add_url_rule("/", "root", self._route, methods=["GET", "POST"])
        self.app.add_url_rule("/<path:path>", "any", self._route, methods=["GET", "POST"])

    async def _route(self, path: str = "") -> Response:
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.args),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=await request.get_data(as_text=False),
        )
        self.requests.append(recorded)
        answer = self.script.pop(0) if self.script else self.respond(recorded)
        if answer.hang:
            await self.stopping.wait()
        body = answer.body
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **answer.headers}
        else:
            headers = answer.headers
        return Response(body, answer.status, headers=headers)


@asynccontextmanager
async def fake_http_server(respond: Callable[[Recorded], Answer]) -> AsyncIterator[FakeHttpServer]:
    server = FakeHttpServer(respond)
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(serve_http, server.app, "127.0.0.1:0", stopped)
        server.url = addresses[0]
        try:
            yield server
        finally:
            server.stopping.set()
            stopped.set()


def expected_length(received: bytes) -> int:
    head, _, _ = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


@asynccontextmanager
async def cut_off_server() -> AsyncIterator[str]:
    """A server that reads a request, sends half an answer and closes the connection."""

    async def half_answer(stream: trio.SocketStream) -> None:
        # The whole request is read first: closing on unread bytes would be a reset,
        # not the clean close in the middle of the answer this is about.
        received = b""
        while b"\r\n\r\n" not in received or len(received) < expected_length(received):
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            received += chunk
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Content-Length: 200\r\n\r\n{"messages": [{"id'
        )
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, half_answer, 0)
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


# -- a fake Graph API

VERSION = "v21.0"
NUMBER_ID = "106540352242922"
DISPLAY_NUMBER = "15550783881"
TOKEN = "graph-token"
APP_SECRET = "app-secret"
VERIFY_TOKEN = "verify-me"
MESSAGES_PATH = f"/{VERSION}/{NUMBER_ID}/messages"


def graph_error(code: int, message: str, status: int = 400, **extra: Any) -> Answer:
    error = {"message": message, "type": "OAuthException", "code": code, **extra}
    return Answer(status, {"error": {**error, "fbtrace_id": "Az8or2yhqkZfEZ"}})


@attrs.define
class FakeGraph:
    """What the transport uses of the Graph API: send a message, read the phone number."""

    accepted_token: str = TOKEN
    sent: int = 0

    def respond(self, req: Recorded) -> Answer:
        if req.headers.get("authorization") != f"Bearer {self.accepted_token}":
            return graph_error(190, "Error validating access token", status=401)
        if req.method == "POST" and req.path == MESSAGES_PATH:
            self.sent += 1
            to = req.json()["to"]
            return Answer(
                200,
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": to, "wa_id": to}],
                    "messages": [{"id": f"wamid.HBgL{self.sent:04d}"}],
                },
            )
        if req.method == "GET" and req.path == f"/{VERSION}/{NUMBER_ID}":
            return Answer(200, {"id": NUMBER_ID})
        return graph_error(100, f"Unsupported request {req.method} {req.path}")


def whatsapp_config(unique: str, api_url: str, **fields: Any) -> WhatsAppCloudConfig:
    defaults: dict[str, Any] = {
        "transport_name": unique,
        "http_bind": "127.0.0.1:0",
        "api_base_url": api_url,
        "api_version": VERSION,
        "phone_number_id": NUMBER_ID,
        "access_token": TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "retry_delay_base": 0.05,
        "retry_jitter": 0,
        "request_timeout": 2,
    }
    return WhatsAppCloudConfig(**{**defaults, **fields})


@attrs.frozen
class Running:
    transport: WhatsAppCloudTransport
    graph: FakeHttpServer
    fake: FakeGraph
    webhook: httpx.AsyncClient  # to the worker's HTTP server


@asynccontextmanager
async def running_whatsapp(
    broker: BrokerInspector, unique: str, *, api_url: str | None = None, **fields: Any
) -> AsyncIterator[Running]:
    fake = FakeGraph()
    with trio.fail_after(10):
        async with fake_http_server(fake.respond) as graph:
            config = whatsapp_config(unique, api_url or graph.url, **fields)
            async with (
                running_worker(WhatsAppCloudTransport, config, broker) as transport,
                httpx.AsyncClient(base_url=transport.http_addresses[0]) as webhook,
            ):
                yield Running(transport, graph, fake, webhook)


def outbound(unique: str, content: str | None = "hello", **fields: Any) -> Message:
    return Message(
        to_addr="16505551234",
        from_addr=DISPLAY_NUMBER,
        transport_name=unique,
        transport_type="whatsapp",
        content=content,
        **fields,
    )


async def send(broker: BrokerInspector, unique: str, message: Message, count: int) -> list[Event]:
    await broker.publish(f"{unique}.outbound", message.to_json())
    return await events(broker, unique, count)


def notification(value: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": NUMBER_ID},
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": field}]}],
    }


def text_from(sender: str, body: str, wamid: str = "wamid.IN1", **extra: Any) -> dict[str, Any]:
    return {
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": sender}],
        "messages": [
            {
                "from": sender,
                "id": wamid,
                "timestamp": "1750857384",
                "type": "text",
                "text": {"body": body},
                **extra,
            }
        ],
    }


def statuses(*items: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "statuses": [
            {
                "id": wamid,
                "status": status,
                "timestamp": "1750857384",
                "recipient_id": "16505551234",
                **extra,
            }
            for wamid, status in items
        ]
    }


async def post_webhook(
    client: httpx.AsyncClient, body: dict[str, Any] | bytes, *, secret: str | None = APP_SECRET
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SIGNATURE_HEADER] = signature(secret, raw)
    return await client.post("/whatsapp/webhook", content=raw, headers=headers)


@pytest.fixture
async def memory_broker(unique: str) -> AsyncIterator[BrokerInspector]:
    """For the variants of one behaviour, which differ on the provider's side only: what
    the broker does with an outcome is the base's, tested on both in test_base.py, and
    each flow here runs on both once. Keeps the suite fast."""
    async with tracked_broker("memory://", unique) as broker:
        yield broker


# -- sending


async def test_text_message_is_sent_with_the_token_and_acked_with_metas_id(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique, "Hello there")
    async with running_whatsapp(broker, unique) as run:
        (ack,) = await send(broker, unique, message, 1)
    assert ack.event_type == EventType.ACK
    assert ack.user_message_id == message.message_id
    assert ack.sent_message_id == "wamid.HBgL0001"
    (sent,) = run.graph.requests
    assert sent.method == "POST"
    assert sent.path == MESSAGES_PATH
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.json() == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"body": "Hello there"},
    }


async def test_helper_metadata_template_is_sent_as_a_template_message(
    broker: BrokerInspector, unique: str
):
    components = [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}]
    template = {"name": "order_update", "language": "en_US", "components": components}
    message = outbound(unique, None, helper_metadata={"whatsapp": {"template": template}})
    async with running_whatsapp(broker, unique) as run:
        (ack,) = await send(broker, unique, message, 1)
    assert ack.event_type == EventType.ACK
    body = run.graph.requests[0].json()
    assert body["type"] == "template"
    assert body["template"] == {
        "name": "order_update",
        "language": {"code": "en_US"},
        "components": components,
    }
    assert "text" not in body


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            graph_error(131026, "Message undeliverable"),
            "WhatsApp error 131026 (HTTP 400): Message undeliverable",
        ),
        (
            graph_error(
                131047,
                "Re-engagement message",
                error_data={"details": "More than 24 hours have passed"},
            ),
            "WhatsApp error 131047 (HTTP 400): Re-engagement message: "
            "More than 24 hours have passed",
        ),
        (
            graph_error(100, "Invalid parameter", error_subcode=2494010),
            "WhatsApp error 100/2494010 (HTTP 400): Invalid parameter",
        ),
    ],
    ids=["undeliverable", "outside-24h-window", "invalid-parameter"],
)
async def test_a_refusal_is_a_nack_with_the_code_and_metas_message(
    memory_broker: BrokerInspector, unique: str, answer: Answer, reason: str
):
    message = outbound(unique)
    async with running_whatsapp(memory_broker, unique) as run:
        run.graph.script.append(answer)
        (nack,) = await send(memory_broker, unique, message, 1)
        assert await nothing_arrives(memory_broker, f"{unique}.event", within=0.1)
    assert nack.event_type == EventType.NACK
    assert nack.user_message_id == message.message_id
    assert nack.nack_reason == reason
    assert len(run.graph.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        graph_error(130429, "Rate limit hit"),
        graph_error(80007, "Rate limit issues"),
        graph_error(4, "Application request limit reached"),
        Answer(503, b"<html>Service Unavailable</html>", {"Retry-After": "0"}),
    ],
    ids=["130429", "80007", "4", "503-html"],
)
async def test_throttling_and_5xx_report_pending_and_are_retried(
    memory_broker: BrokerInspector, unique: str, answer: Answer
):
    message = outbound(unique)
    async with running_whatsapp(memory_broker, unique) as run:
        run.graph.script.append(answer)
        pending, ack = await send(memory_broker, unique, message, 2)
    assert pending.event_type == EventType.DELIVERY_REPORT
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert pending.transport_metadata["retry"]["attempt"] == 1
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id == "wamid.HBgL0001"
    assert len(run.graph.requests) == 2


async def test_a_hanging_graph_api_times_out_and_the_message_is_retried(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique)
    async with running_whatsapp(broker, unique, request_timeout=0.2) as run:
        run.graph.script.append(Answer(hang=True))
        with structlog.testing.capture_logs() as logs:
            pending, ack = await send(broker, unique, message, 2)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert pending.transport_metadata["retry"]["reason"] == (
        "the Graph API did not answer within 0.2 s"
    )
    assert ack.event_type == EventType.ACK
    # One line says it, from the connector that holds the retry.
    assert [log["event"] for log in logs if log["log_level"] != "debug"] == ["retrying later"]


async def test_an_answer_cut_off_mid_body_is_retried(broker: BrokerInspector, unique: str):
    message = outbound(unique)
    async with cut_off_server() as url, running_whatsapp(broker, unique, api_url=url):
        pending, *_ = await send(broker, unique, message, 1)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert "RemoteProtocolError" in pending.transport_metadata["retry"]["reason"]


async def test_an_unreachable_graph_api_is_retried(broker: BrokerInspector, unique: str):
    message = outbound(unique)
    with refusing_port() as port:
        async with running_whatsapp(broker, unique, api_url=f"http://127.0.0.1:{port}"):
            (pending,) = await send(broker, unique, message, 1)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert "ConnectError" in pending.transport_metadata["retry"]["reason"]


async def test_a_2xx_without_an_id_is_acked_under_our_own_id(broker: BrokerInspector, unique: str):
    message = outbound(unique)
    async with running_whatsapp(broker, unique) as run:
        run.graph.script.append(Answer(200, b"<html>ok</html>"))
        with structlog.testing.capture_logs() as logs:
            (ack,) = await send(broker, unique, message, 1)
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id == message.message_id
    errors = [log for log in logs if log["log_level"] == "error"]
    assert [log["message_id"] for log in errors] == [message.message_id]


async def test_a_refused_token_pauses_outbound_until_the_graph_api_takes_it(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique)
    async with running_whatsapp(broker, unique, auth_check_interval=0.2) as run:
        run.fake.accepted_token = "rotated"
        (pending,) = await send(broker, unique, message, 1)
        assert pending.delivery_status == DeliveryStatus.PENDING
        assert "WhatsApp error 190" in pending.transport_metadata["retry"]["reason"]
        body, status = run.transport.health()
        assert status == 500
        assert body["components"]["provider"]["state"] == "down"

        run.fake.accepted_token = TOKEN  # the token is valid again
        (ack,) = await events(broker, unique, 1)
        assert ack.event_type == EventType.ACK
        assert run.transport.health()[1] == 200
    checks = [r for r in run.graph.requests if r.method == "GET"]
    assert checks
    assert all(r.path == f"/{VERSION}/{NUMBER_ID}" for r in checks)


async def test_a_reply_quotes_the_inbound_it_answers(broker: BrokerInspector, unique: str):
    async with running_whatsapp(broker, unique) as run:
        response = await post_webhook(
            run.webhook, notification(text_from("16505551234", "hi", wamid="wamid.IN7"))
        )
        assert response.status_code == 200
        (delivery,) = await receive(broker, f"{unique}.inbound", 1)
        inbound = Message.from_json(delivery.body)
        (ack,) = await send(broker, unique, inbound.reply("hello back"), 1)
    assert ack.event_type == EventType.ACK
    body = run.graph.requests[0].json()
    assert body["to"] == "16505551234"
    assert body["context"] == {"message_id": "wamid.IN7"}


# -- the webhook: verification and signatures


async def test_verification_echoes_the_challenge_when_the_token_matches(
    broker: BrokerInspector, unique: str
):
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158"}
    async with running_whatsapp(broker, unique) as run:
        response = await run.webhook.get("/whatsapp/webhook", params=params)
    assert response.status_code == 200
    assert response.text == "1158"
    assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158"},
        {"hub.mode": "subscribe", "hub.challenge": "1158"},
    ],
    ids=["wrong-token", "wrong-mode", "no-token"],
)
async def test_verification_is_refused_otherwise(
    memory_broker: BrokerInspector, unique: str, params: dict[str, str]
):
    async with running_whatsapp(memory_broker, unique) as run:
        response = await run.webhook.get("/whatsapp/webhook", params=params)
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["code"] == "verification_failed"
    assert "1158" not in response.text


@pytest.mark.parametrize(
    ("secret", "code"),
    [("not-the-app-secret", "invalid_signature"), (None, "missing_signature")],
    ids=["bad", "missing"],
)
async def test_a_webhook_not_signed_with_the_app_secret_is_refused_and_not_published(
    memory_broker: BrokerInspector, unique: str, secret: str | None, code: str
):
    body = notification(text_from("16505551234", "hi"))
    async with running_whatsapp(memory_broker, unique) as run:
        with structlog.testing.capture_logs() as logs:
            response = await post_webhook(run.webhook, body, secret=secret)
        assert await nothing_arrives(memory_broker, f"{unique}.inbound", within=0.1)
    assert response.status_code == 403
    assert response.json()["code"] == code
    assert len([log for log in logs if log["log_level"] == "warning"]) == 1


async def test_a_signature_of_another_body_is_refused(broker: BrokerInspector, unique: str):
    body = json.dumps(notification(text_from("16505551234", "hi"))).encode()
    headers = {SIGNATURE_HEADER: signature(APP_SECRET, body + b" ")}
    async with running_whatsapp(broker, unique) as run:
        response = await run.webhook.post("/whatsapp/webhook", content=body, headers=headers)
        assert await nothing_arrives(broker, f"{unique}.inbound", within=0.1)
    assert response.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        json.dumps(notification({"messages": [{"id": "wamid.X", "type": "text"}]})).encode(),
    ],
    ids=["garbage", "not-an-object", "message-without-sender"],
)
async def test_a_signed_body_that_is_not_a_notification_is_a_400_and_nothing_is_published(
    memory_broker: BrokerInspector, unique: str, body: bytes
):
    async with running_whatsapp(memory_broker, unique) as run:
        with structlog.testing.capture_logs() as logs:
            response = await post_webhook(run.webhook, body)
        assert await nothing_arrives(memory_broker, f"{unique}.inbound", within=0.1)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["code"] == "invalid_body"
    assert len([log for log in logs if log["log_level"] == "warning"]) == 1


# -- the webhook: inbound messages


async def test_an_inbound_text_is_published(broker: BrokerInspector, unique: str):
    body = notification(text_from("16505551234", "this is a text message", wamid="wamid.IN1"))
    async with running_whatsapp(broker, unique) as run:
        response = await post_webhook(run.webhook, body)
        (delivery,) = await receive(broker, f"{unique}.inbound", 1)
    assert response.status_code == 200
    message = Message.from_json(delivery.body)
    assert message.from_addr == "16505551234"
    assert message.to_addr == DISPLAY_NUMBER
    assert message.content == "this is a text message"
    assert message.transport_name == unique
    assert message.transport_type == "whatsapp"
    assert message.in_reply_to is None
    assert message.transport_metadata == {
        "whatsapp": {
            "message_id": "wamid.IN1",
            "type": "text",
            "timestamp": "1750857384",
            "phone_number_id": NUMBER_ID,
            "profile_name": "Sheena Nelson",
        }
    }


async def test_a_webhook_the_broker_refuses_is_a_503_with_retry_after(
    broker: BrokerInspector, unique: str
):
    body = notification(text_from("16505551234", "hello", wamid="wamid.IN2"))
    async with running_whatsapp(broker, unique) as run:
        await broker.delete_queue(f"{unique}.inbound")  # nothing takes it: refused
        refused = await post_webhook(run.webhook, body)
        await broker.declare_queue(f"{unique}.inbound")
        again = await post_webhook(run.webhook, body)  # as Meta sends it again
        (delivery,) = await receive(broker, f"{unique}.inbound", 1)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert refused.json()["code"] == "broker_unavailable"
    assert refused.headers["retry-after"] == str(SERVICE_RETRY_AFTER)
    assert again.status_code == 200
    assert Message.from_json(delivery.body).content == "hello"


@pytest.mark.parametrize(
    ("message", "content"),
    [
        ({"type": "button", "button": {"text": "Yes", "payload": "yes-1"}}, "Yes"),
        (
            {
                "type": "interactive",
                "interactive": {
                    "type": "button_reply",
                    "button_reply": {"id": "cancel-button", "title": "Cancel"},
                },
            },
            "Cancel",
        ),
        (
            {
                "type": "interactive",
                "interactive": {
                    "type": "list_reply",
                    "list_reply": {"id": "express", "title": "Express", "description": "1 day"},
                },
            },
            "Express",
        ),
        ({"type": "image", "image": {"id": "1003383421387256", "mime_type": "image/jpeg"}}, None),
    ],
    ids=["button", "button-reply", "list-reply", "image"],
)
async def test_other_inbound_types_carry_the_raw_message(
    memory_broker: BrokerInspector, unique: str, message: dict[str, Any], content: str | None
):
    raw = {"from": "16505551234", "id": "wamid.IN2", "timestamp": "1750857384", **message}
    async with running_whatsapp(memory_broker, unique) as run:
        response = await post_webhook(run.webhook, notification({"messages": [raw]}))
        (delivery,) = await receive(memory_broker, f"{unique}.inbound", 1)
    assert response.status_code == 200
    inbound = Message.from_json(delivery.body)
    assert inbound.content == content
    assert inbound.transport_metadata["whatsapp"]["message"] == raw
    assert inbound.transport_metadata["whatsapp"]["message_id"] == "wamid.IN2"


async def test_an_inbound_quoting_our_message_is_in_reply_to_it(
    broker: BrokerInspector, unique: str
):
    sent = outbound(unique)
    async with running_whatsapp(broker, unique) as run:
        (ack,) = await send(broker, unique, sent, 1)
        context = {"from": DISPLAY_NUMBER, "id": ack.sent_message_id}
        body = notification(text_from("16505551234", "yes", context=context))
        await post_webhook(run.webhook, body)
        (delivery,) = await receive(broker, f"{unique}.inbound", 1)
    inbound = Message.from_json(delivery.body)
    assert inbound.in_reply_to == sent.message_id
    assert inbound.transport_metadata["whatsapp"]["context"] == context


# -- the webhook: statuses


async def test_statuses_are_delivery_reports_for_the_message_sent(
    broker: BrokerInspector, unique: str
):
    first, second = outbound(unique, "one"), outbound(unique, "two")
    errors = [{"code": 131026, "title": "Message undeliverable"}]
    async with running_whatsapp(broker, unique) as run:
        (ack1,) = await send(broker, unique, first, 1)
        (ack2,) = await send(broker, unique, second, 1)
        one, two = ack1.sent_message_id, ack2.sent_message_id
        assert one is not None
        assert two is not None
        body = notification(statuses((one, "sent"), (one, "delivered"), (one, "read")))
        response = await post_webhook(run.webhook, body)
        assert response.status_code == 200
        response = await post_webhook(
            run.webhook, notification(statuses((two, "failed"), errors=errors))
        )
        assert response.status_code == 200
        reports = await events(broker, unique, 4)
        assert await nothing_arrives(broker, f"{unique}.event", within=0.1)
    assert [(r.user_message_id, r.delivery_status) for r in reports] == [
        (first.message_id, DeliveryStatus.PENDING),
        (first.message_id, DeliveryStatus.DELIVERED),
        (first.message_id, DeliveryStatus.DELIVERED),
        (second.message_id, DeliveryStatus.FAILED),
    ]
    assert [r.transport_metadata["whatsapp"]["status"] for r in reports] == [  # type: ignore[index]
        "sent",
        "delivered",
        "read",
        "failed",
    ]
    assert reports[3].transport_metadata["whatsapp"]["errors"] == errors  # type: ignore[index]


async def test_unknown_statuses_and_other_fields_are_skipped(broker: BrokerInspector, unique: str):
    async with running_whatsapp(broker, unique) as run:
        deleted = await post_webhook(run.webhook, notification(statuses(("wamid.IN1", "deleted"))))
        account = await post_webhook(
            run.webhook, notification({"event": "VERIFIED_ACCOUNT"}, field="account_update")
        )
        assert await nothing_arrives(broker, f"{unique}.event", within=0.1)
        assert await nothing_arrives(broker, f"{unique}.inbound", within=0.01)
    assert deleted.status_code == account.status_code == 200


# -- the mappings on their own


@pytest.mark.parametrize(
    ("status", "answer", "outcome"),
    [
        (400, graph_error(131026, "Message undeliverable"), PermanentFailure),
        (400, graph_error(131047, "Re-engagement message"), PermanentFailure),
        (400, graph_error(100, "Invalid parameter"), PermanentFailure),
        (400, graph_error(130429, "Rate limit hit"), TemporaryFailure),
        (400, graph_error(131048, "Spam rate limit hit"), TemporaryFailure),
        (400, graph_error(131056, "Pair rate limit hit"), TemporaryFailure),
        (400, graph_error(80007, "Rate limit issues"), TemporaryFailure),
        (400, graph_error(4, "Too many calls"), TemporaryFailure),
        (500, graph_error(1, "An unknown error occurred", status=500), TemporaryFailure),
        (401, graph_error(190, "Error validating access token"), TokenRejected),
        (400, graph_error(190, "Access token has expired"), TokenRejected),
        (401, Answer(401, b"Unauthorized"), TokenRejected),
        (429, Answer(429, b""), TemporaryFailure),
        (502, Answer(502, b"<html>Bad Gateway</html>"), TemporaryFailure),
        (404, Answer(404, b"not found"), PermanentFailure),
    ],
)
def test_graph_errors_are_classified_by_code_then_status(
    status: int, answer: Answer, outcome: type[Exception]
):
    body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
    failure = graph_failure(status, body, retry_after=3)
    assert type(failure) is outcome
    if outcome is TemporaryFailure:
        assert failure.retry_after == 3  # type: ignore[attr-defined]
    assert isinstance(failure, ProviderUnavailable) == (outcome is TokenRejected)


def test_an_invalid_template_or_nothing_to_send_is_refused_before_sending():
    bad = outbound("t", None, helper_metadata={"whatsapp": {"template": {"language": "en"}}})
    with pytest.raises(PermanentFailure, match=r"helper_metadata\.whatsapp\.template"):
        message_request(bad)
    with pytest.raises(PermanentFailure, match="nothing to send"):
        message_request(outbound("t", None))


def test_only_a_reply_quotes_the_inbound():
    metadata = {"whatsapp": {"message_id": "wamid.IN1"}}
    assert "context" not in message_request(outbound("t", transport_metadata=metadata))
    reply = outbound("t", in_reply_to="abc", transport_metadata=metadata)
    assert message_request(reply)["context"] == {"message_id": "wamid.IN1"}


def test_config_needs_http_bind_and_names_bad_keys(tmp_path: Any):
    path = tmp_path / "whatsapp.yaml"
    path.write_text(
        "transport_name: wa\nphone_number_id: '1'\naccess_token: t\napp_secret: s\n"
        "verify_token: v\napi_version: '21'\nhttp_bind: 127.0.0.1:0\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="api_version"):
        load_config(WhatsAppCloudConfig, config_file=str(path), environ={})
    path.write_text(
        "transport_name: wa\nphone_number_id: '1'\naccess_token: t\napp_secret: s\n"
        "verify_token: v\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="http_bind is required"):
        load_config(WhatsAppCloudConfig, config_file=str(path), environ={})
