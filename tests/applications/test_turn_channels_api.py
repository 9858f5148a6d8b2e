"""``TurnChannelsApi`` end to end, on the memory broker and on RabbitMQ.

A fake Turn (a real HTTP server on localhost, started by the test) records what the
app POSTs to ``/messages`` and ``/statuses`` and can be told to fail the next calls.
The app runs with a ``ToAddressRouter`` and a ``SimulatorTransport`` as it would in a
pipeline; tests that need to see the outbound envelope itself play the transport, by
publishing to and consuming from the router's transport-side queues.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from quart import request
from quart_trio import QuartTrio

from tests.broker.test_contract import nothing_arrives, receive
from tests.caches.test_message_caches import REDIS_URL, delete_redis_keys
from tests.conftest import IN_CI, require_service
from tests.test_worker import free_port, running_worker, simulator_and_router
from vumi_like.applications.turn_channels_api import (
    SIGNATURE_HEADER,
    TurnChannelsApi,
    TurnChannelsApiConfig,
    signature,
)
from vumi_like.broker import Broker, BrokerInspector
from vumi_like.broker.base import HEADER_DL_ERROR, HEADER_DL_QUEUE
from vumi_like.config import ConfigError, config_from_data
from vumi_like.errors import PROBLEM_CONTENT_TYPE, SERVICE_RETRY_AFTER
from vumi_like.messages import DeliveryStatus, Event, Message, SessionEvent
from vumi_like.metrics import REGISTRY
from vumi_like.worker import serve_http

SECRET = "turn-hmac-secret"
TOKEN = "turn-auth-token"
DEFAULT_FROM = "8110"
USER = "+27820000001"
DELIVERY_DELAY = 0.05


# -- a fake Turn


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


class FakeTurn:
    """Turn's side of the channel API: records every POST; answers 200 unless told."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Recorded] = []
        self._answers: deque[tuple[int, dict[str, str]]] = deque()
        self._arrived = trio.Event()  # set, and replaced, on every request
        self.app = QuartTrio("fake-turn")
        for path in ("/messages", "/statuses"):
            self.app.add_url_rule(path, path, self._record, methods=["POST"])

    def fail_next(self, count: int, status: int, headers: dict[str, str] | None = None) -> None:
        self._answers.extend([(status, headers or {})] * count)

    async def _record(self) -> tuple[str, int, dict[str, str]]:
        body = json.loads(await request.get_data())
        self.requests.append(
            Recorded(
                request.path,
                {key.lower(): value for key, value in request.headers.items()},
                body,
                trio.current_time(),
            )
        )
        self._arrived.set()
        self._arrived = trio.Event()
        status, headers = self._answers.popleft() if self._answers else (200, {})
        return json.dumps({"status": status}), status, headers

    def received(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, within: float = 10) -> list[Recorded]:
        with trio.fail_after(within):
            while len(self.received(path)) < count:
                await self._arrived.wait()
        return self.received(path)


@asynccontextmanager
async def fake_turn() -> AsyncIterator[FakeTurn]:
    turn = FakeTurn()
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        [turn.url] = await nursery.start(serve_http, turn.app, "127.0.0.1:0", stopped)
        try:
            yield turn
        finally:
            stopped.set()


# -- the pipeline under test


class Names:
    def __init__(self, unique: str) -> None:
        self.app = f"{unique}-turn"
        self.transport = f"{unique}-sms"
        self.dead_letter = f"{unique}.dead_letter"
        self.worker = f"{unique}-turn-worker"


@pytest.fixture
def names(unique: str) -> Names:
    return Names(unique)


def app_config(names: Names, turn: FakeTurn, **fields: Any) -> TurnChannelsApiConfig:
    data: dict[str, Any] = {
        "connector_name": names.app,
        "http_bind": f"127.0.0.1:{free_port()}",
        "turn_api_url": turn.url,
        "default_from_addr": DEFAULT_FROM,
        "auth_token": TOKEN,
        "turn_hmac_secret": SECRET,
        "transport_name": names.transport,
        "retry_delay_base": 0.05,
        "retry_jitter": 0,
        **fields,
    }
    return config_from_data(TurnChannelsApiConfig, data, source="test")


@dataclass
class Pipeline:
    app: TurnChannelsApi
    client: httpx.AsyncClient  # to the app
    simulator: httpx.AsyncClient | None


@asynccontextmanager
async def pipeline(
    broker: Broker,
    names: Names,
    turn: FakeTurn,
    *,
    simulator: bool = True,
    router_fields: dict[str, Any] | None = None,
    **fields: Any,
) -> AsyncIterator[Pipeline]:
    """Simulator (unless the test plays the transport), router and the app, all running."""
    config = app_config(names, turn, **fields)
    async with AsyncExitStack() as stack:
        sim_client = await simulator_and_router(
            stack,
            broker,
            transport=names.transport,
            app=names.app,
            simulator=simulator,
            delivery_delay=DELIVERY_DELAY,
            router_fields=router_fields,
        )
        app = await stack.enter_async_context(
            running_worker(TurnChannelsApi, config, broker, name=names.worker)
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://{config.http_bind}")
        )
        yield Pipeline(app, client, sim_client)


def text(body: str = "hello", **fields: Any) -> dict[str, Any]:
    return {"to": USER, "from": None, "turn": {"type": "text", "text": {"body": body}}, **fields}


async def post_outbound(
    client: httpx.AsyncClient,
    body: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    path: str = "/messages",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent_headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, raw)}
    sent_headers.update(headers or {})
    return await client.post(path, content=raw, headers=sent_headers)


def sent_id(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    [entry] = response.json()["messages"]
    return str(entry["id"])


def inbound(names: Names, content: str = "ping", **fields: Any) -> Message:
    return Message(
        to_addr="1234",
        from_addr=USER,
        transport_name=names.transport,
        transport_type="ussd",
        content=content,
        session_event=SessionEvent.NEW,
        **fields,
    )


async def inbound_reaches_turn(broker: Broker, names: Names, turn: FakeTurn) -> Message:
    """Publish an inbound as the transport would; return it once Turn has it."""
    message = inbound(names)
    before = len(turn.received("/messages"))
    await broker.publish(f"{names.transport}.inbound", message.to_json())
    await turn.wait_for("/messages", before + 1)
    return message


async def outbound_at_transport(broker: Broker, names: Names) -> Message:
    [delivery] = await receive(broker, f"{names.transport}.outbound", 1)
    return Message.from_json(delivery.body)


def turn_posts(names: Names, endpoint: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "vumi_like_turn_posts_total",
        {"worker": names.worker, "endpoint": endpoint, "outcome": outcome},
    )
    return value or 0.0


# -- outbound, inbound, events


async def test_outbound_is_sent_and_its_events_reach_turn_statuses(broker: Broker, names: Names):
    with trio.fail_after(15):
        async with fake_turn() as turn, pipeline(broker, names, turn) as p:
            response = await post_outbound(p.client, text())
            message_id = sent_id(response)
            statuses = await turn.wait_for("/statuses", 2)
            assert await nothing_arrives(broker, names.dead_letter, within=0.1)
    assert response.headers["content-type"] == "application/json"
    bodies = sorted((s.body for s in statuses), key=lambda body: body["status"])
    assert [body["status"] for body in bodies] == ["delivered", "sent"]
    for status in statuses:
        assert status.headers["authorization"] == f"Bearer {TOKEN}"
        assert set(status.body) == {"user_message_id", "timestamp", "status"}
        assert status.body["user_message_id"] == message_id
        datetime.strptime(status.body["timestamp"], "%Y-%m-%d %H:%M:%S")
    assert turn.received("/messages") == []
    assert turn_posts(names, "statuses", "ok") == 2


async def test_outbound_without_an_inbound_is_a_fresh_message_from_the_default_address(
    broker: Broker, names: Names
):
    with trio.fail_after(15):
        async with fake_turn() as turn, pipeline(broker, names, turn, simulator=False) as p:
            first_id = sent_id(await post_outbound(p.client, text("one")))
            first = await outbound_at_transport(broker, names)
            sent_id(await post_outbound(p.client, text("two", **{"from": "9999"})))
            second = await outbound_at_transport(broker, names)
    assert first.message_id == first_id
    assert (first.to_addr, first.from_addr, first.content) == (USER, DEFAULT_FROM, "one")
    assert (first.transport_name, first.transport_type) == (names.transport, "sms")
    assert first.in_reply_to is None
    assert first.session_event is None
    assert (second.from_addr, second.content) == ("9999", "two")


async def test_simulator_inbound_reaches_turn_messages_in_turns_format(
    broker: Broker, names: Names
):
    with trio.fail_after(15):
        async with fake_turn() as turn, pipeline(broker, names, turn) as p:
            assert p.simulator is not None
            response = await p.simulator.post(
                "/inbound", json={"from_addr": USER, "to_addr": "1234", "content": "ping"}
            )
            message_id = response.json()["message_id"]
            [posted] = await turn.wait_for("/messages", 1)
    assert posted.headers["authorization"] == f"Bearer {TOKEN}"
    body = posted.body
    assert body["contact"] == {"id": USER, "profile": {"name": USER}}
    message = body["message"]
    assert {k: v for k, v in message.items() if k != "timestamp"} == {
        "type": "text",
        "text": {"body": "ping"},
        "from": USER,
        "id": message_id,
    }
    assert isinstance(message["timestamp"], str)
    assert abs(int(message["timestamp"]) - datetime.now(UTC).timestamp()) < 60
    assert turn_posts(names, "messages", "ok") == 1


async def test_reply_to_threads_the_outbound_to_that_inbound_and_keeps_the_session(
    broker: Broker, names: Names
):
    with trio.fail_after(15):
        async with fake_turn() as turn, pipeline(broker, names, turn, simulator=False) as p:
            first = await inbound_reaches_turn(broker, names, turn)
            await inbound_reaches_turn(broker, names, turn)  # newer: not the one replied to
            reply_id = sent_id(
                await post_outbound(
                    p.client,
                    text("menu", reply_to=first.message_id, waiting_for_user_input=True),
                )
            )
            reply = await outbound_at_transport(broker, names)
    assert reply.message_id == reply_id
    assert reply.in_reply_to == first.message_id
    assert (reply.to_addr, reply.from_addr) == (USER, "1234")
    assert (reply.transport_name, reply.transport_type) == (names.transport, "ussd")
    assert reply.session_event == SessionEvent.RESUME
    assert reply.content == "menu"


async def test_reply_is_inferred_from_the_last_inbound_from_the_address(
    broker: Broker, names: Names
):
    with trio.fail_after(15):
        async with fake_turn() as turn, pipeline(broker, names, turn, simulator=False) as p:
            await inbound_reaches_turn(broker, names, turn)
            last = await inbound_reaches_turn(broker, names, turn)
            sent_id(await post_outbound(p.client, text("bye")))
            reply = await outbound_at_transport(broker, names)
    assert reply.in_reply_to == last.message_id
    assert reply.from_addr == "1234"
    assert reply.session_event == SessionEvent.CLOSE


async def test_nested_status_format(broker: Broker, names: Names):
    with trio.fail_after(15):
        async with (
            fake_turn() as turn,
            pipeline(broker, names, turn, status_format="turn") as p,
        ):
            message_id = sent_id(await post_outbound(p.client, text()))
            statuses = await turn.wait_for("/statuses", 2)
    for status in statuses:
        assert set(status.body) == {"status"}
        nested = status.body["status"]
        assert set(nested) == {"id", "recipient_id", "status", "timestamp"}
        assert (nested["id"], nested["recipient_id"]) == (message_id, USER)
        assert nested["timestamp"].isdigit()
    assert sorted(s.body["status"]["status"] for s in statuses) == ["delivered", "sent"]


async def test_failed_delivery_is_sent_and_nack_pending_and_unknown_are_not_forwarded(
    broker: Broker, names: Names
):
    with trio.fail_after(15):
        async with fake_turn() as turn, pipeline(broker, names, turn, simulator=False) as p:
            message_id = sent_id(await post_outbound(p.client, text()))
            await outbound_at_transport(broker, names)
            for event in (
                Event.nack(message_id, reason="no route"),
                Event.delivery_report(message_id, DeliveryStatus.PENDING),
            ):
                await broker.publish(f"{names.transport}.event", event.to_json())
            # Straight to the app: the router would dead-letter an event it cannot place.
            unknown = Event.ack("never-sent-by-us", sent_message_id="x")
            await broker.publish(f"{names.app}.event", unknown.to_json())
            failed = Event.delivery_report(message_id, DeliveryStatus.FAILED)
            await broker.publish(f"{names.transport}.event", failed.to_json())
            [status] = await turn.wait_for("/statuses", 1)
            assert await nothing_arrives(broker, names.dead_letter, within=0.3)
    assert len(turn.received("/statuses")) == 1
    assert status.body["status"] == "sent"


# -- retries and dead letters


async def test_turn_503_is_retried_then_succeeds(broker: Broker, names: Names):
    with trio.fail_after(15):
        async with fake_turn() as turn, pipeline(broker, names, turn, simulator=False):
            turn.fail_next(1, 503)
            message = inbound(names)
            await broker.publish(f"{names.transport}.inbound", message.to_json())
            first, second = await turn.wait_for("/messages", 2)
            assert await nothing_arrives(broker, names.dead_letter, within=0.1)
    assert first.body == second.body
    assert second.body["message"]["id"] == message.message_id
    assert second.at - first.at >= 0.04  # retry_delay_base, held by the broker
    assert turn_posts(names, "messages", "retry") == 1
    assert turn_posts(names, "messages", "ok") == 1


async def test_retry_after_is_honoured_when_longer_than_the_backoff(broker: Broker, names: Names):
    with trio.fail_after(15):
        async with fake_turn() as turn, pipeline(broker, names, turn, simulator=False):
            turn.fail_next(1, 429, {"Retry-After": "1"})
            await broker.publish(f"{names.transport}.inbound", inbound(names).to_json())
            first, second = await turn.wait_for("/messages", 2)
    assert second.at - first.at >= 0.9


async def test_retries_exhausted_go_to_dead_letter_with_the_reason(broker: Broker, names: Names):
    message = inbound(names)
    with trio.fail_after(15):
        async with (
            fake_turn() as turn,
            pipeline(broker, names, turn, simulator=False, max_retries=2) as p,
        ):
            turn.fail_next(10, 503)
            await broker.publish(f"{names.transport}.inbound", message.to_json())
            [letter] = await receive(broker, names.dead_letter, 1)
            assert len(turn.received("/messages")) == 3
            # The worker carries on: the next inbound goes through.
            turn._answers.clear()
            await inbound_reaches_turn(broker, names, turn)
            assert p.app.receive_inbound_connectors
    assert Message.from_json(letter.body).message_id == message.message_id
    assert letter.headers[HEADER_DL_QUEUE] == f"{names.app}.inbound"
    reason = letter.headers[HEADER_DL_ERROR]
    assert "503" in reason
    assert "gave up after 3 attempts" in reason
    assert turn_posts(names, "messages", "retry") == 2
    assert turn_posts(names, "messages", "failed") == 1


async def test_turn_400_goes_to_dead_letter_without_retry(broker: Broker, names: Names):
    with trio.fail_after(15):
        async with fake_turn() as turn, pipeline(broker, names, turn) as p:
            turn.fail_next(1, 400)
            message_id = sent_id(await post_outbound(p.client, text()))
            [letter] = await receive(broker, names.dead_letter, 1)
            # The other status went through; the refused one was asked once only.
            await turn.wait_for("/statuses", 2)
            await trio.sleep(0.2)
    assert len(turn.received("/statuses")) == 2
    assert Event.from_json(letter.body).user_message_id == message_id
    assert letter.headers[HEADER_DL_QUEUE] == f"{names.app}.event"
    reason = letter.headers[HEADER_DL_ERROR]
    assert "400" in reason
    assert "not retried" in reason
    assert turn_posts(names, "statuses", "retry") == 0
    assert turn_posts(names, "statuses", "failed") == 1


async def test_turn_unreachable_is_retried(broker: Broker, names: Names):
    with trio.fail_after(15):
        async with fake_turn() as turn:
            real_url = turn.url
            turn.url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
            async with pipeline(broker, names, turn, simulator=False, max_retries=1):
                await broker.publish(f"{names.transport}.inbound", inbound(names).to_json())
                [letter] = await receive(broker, names.dead_letter, 1)
            turn.url = real_url
    reason = letter.headers[HEADER_DL_ERROR]
    assert "ConnectError" in reason
    assert "gave up after 2 attempts" in reason


# -- bad input


def _signed(raw: bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: signature(SECRET, raw)}


BAD_REQUESTS = {
    "missing signature": (json.dumps(text()).encode(), {SIGNATURE_HEADER: ""}, 401, "missing"),
    "wrong secret": (
        json.dumps(text()).encode(),
        {SIGNATURE_HEADER: signature("not-the-secret", json.dumps(text()).encode())},
        401,
        "does not match",
    ),
    "not base64": (json.dumps(text()).encode(), {SIGNATURE_HEADER: "%%%"}, 401, "does not match"),
    "signature of another body": (
        json.dumps(text("changed")).encode(),
        {SIGNATURE_HEADER: signature(SECRET, json.dumps(text()).encode())},
        401,
        "does not match",
    ),
    "not json": (b"{not json", None, 400, "not valid JSON"),
    "not an object": (b"[1, 2]", None, 400, "JSON object"),
    "missing to": (json.dumps({"turn": text()["turn"]}).encode(), None, 400, "to: is required"),
    "missing turn": (json.dumps({"to": USER}).encode(), None, 400, "turn: is required"),
    "missing text body": (
        json.dumps({"to": USER, "turn": {"type": "text", "text": {}}}).encode(),
        None,
        400,
        "turn.text.body: is required",
    ),
    "unknown type": (
        json.dumps({"to": USER, "turn": {"type": "image", "image": {"id": "x"}}}).encode(),
        None,
        400,
        "only 'text' messages are supported, got 'image'",
    ),
    "unknown reply_to": (
        json.dumps(text(reply_to="no-such-inbound")).encode(),
        None,
        400,
        "'no-such-inbound' is not a known inbound",
    ),
    "too large": (json.dumps(text("x" * 4096)).encode(), None, 413, "larger"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_bad_request_is_a_problem_and_the_worker_keeps_serving(
    broker: Broker, names: Names, case: str
):
    raw, headers, status, detail = BAD_REQUESTS[case]
    with trio.fail_after(15):
        async with (
            fake_turn() as turn,
            pipeline(broker, names, turn, simulator=False, max_body_bytes=1024) as p,
        ):
            sent = {"Content-Type": "application/json", **_signed(raw), **(headers or {})}
            response = await p.client.post("/messages", content=raw, headers=sent)
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
            problem = response.json()
            assert problem["status"] == status
            assert detail in problem["detail"]
            assert await nothing_arrives(broker, f"{names.transport}.outbound", within=0.05)
            # Still serving.
            sent_id(await post_outbound(p.client, text()))
            await outbound_at_transport(broker, names)


async def test_unknown_path_and_method_are_problems(broker: Broker, names: Names):
    with trio.fail_after(15):
        async with (
            fake_turn() as turn,
            pipeline(broker, names, turn, simulator=False, vumi_api_path="/api/v1/") as p,
        ):
            not_found = await post_outbound(p.client, text())
            wrong_method = await p.client.get("/api/v1/messages")
            ok = await post_outbound(p.client, text(), path="/api/v1/messages")
    assert not_found.status_code == 404
    assert not_found.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == PROBLEM_CONTENT_TYPE
    sent_id(ok)


# -- replicas sharing a Redis cache


@pytest.fixture
def redis_key_prefix(unique: str) -> Iterator[str]:
    require_service(REDIS_URL, 6379, "Redis")
    prefix = f"vumi_like_test:{unique}:"
    yield prefix
    delete_redis_keys(prefix)


async def test_replicas_sharing_a_redis_cache_forward_each_others_events_and_replies(
    broker: Broker, names: Names, redis_key_prefix: str
):
    def redis_cache(prefix: str) -> dict[str, Any]:
        return {
            "message_cache_class": "redis",
            "message_cache_config": {"redis_url": REDIS_URL, "key_prefix": prefix},
        }

    # The router restarts too, so it needs a shared cache as well; a prefix of its own,
    # since it keeps its own info under the same outbound message ids.
    cache = {
        **redis_cache(f"{redis_key_prefix}app:"),
        "router_fields": redis_cache(f"{redis_key_prefix}router:"),
    }
    with trio.fail_after(20):
        async with fake_turn() as turn:
            async with pipeline(broker, names, turn, simulator=False, **cache) as p:
                message_id = sent_id(await post_outbound(p.client, text()))
                await outbound_at_transport(broker, names)
                earlier = await inbound_reaches_turn(broker, names, turn)
            # Replica 1 is gone; replica 2 never saw the outbound or the inbound itself.
            async with pipeline(broker, names, turn, simulator=False, **cache) as p:
                ack = Event.ack(message_id, sent_message_id="provider-1")
                await broker.publish(f"{names.transport}.event", ack.to_json())
                [status] = await turn.wait_for("/statuses", 1)
                sent_id(await post_outbound(p.client, text(reply_to=earlier.message_id)))
                reply = await outbound_at_transport(broker, names)
    assert status.body["user_message_id"] == message_id
    assert status.body["status"] == "sent"
    assert reply.in_reply_to == earlier.message_id


# -- configuration and pieces


def minimal_config(**fields: Any) -> TurnChannelsApiConfig:
    data = {
        "connector_name": "turn",
        "http_bind": "127.0.0.1:8000",
        "turn_api_url": "http://127.0.0.1:8090",
        "default_from_addr": DEFAULT_FROM,
        "auth_token": TOKEN,
        "turn_hmac_secret": SECRET,
        **fields,
    }
    return config_from_data(TurnChannelsApiConfig, data, source="test")


def test_config_defaults_are_the_seeds():
    config = minimal_config()
    assert config.vumi_api_path == ""
    assert config.request_timeout == 240
    assert config.mo_message_url_timeout == 10
    assert config.event_url_timeout == 10
    assert config.transport_type == "sms"
    assert config.message_cache_class == "memory"
    assert config.message_cache_config == {}
    assert (config.max_retries, config.retry_delay_exponent, config.retry_delay_base) == (3, 2, 2)
    assert config.max_body_bytes == 1024 * 1024
    assert config.status_format == "flat"
    assert TOKEN not in repr(config) and SECRET not in repr(config)


def test_vumi2_cache_class_names_are_accepted():
    for name in ("MemoryMessageCache", "vumi2.message_caches.MemoryMessageCache"):
        assert minimal_config(message_cache_class=name).message_cache_class == name


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"http_bind": None}, "http_bind is required"),
        ({"message_cache_class": "nonesuch"}, "message_cache_class"),
        (
            {"message_cache_class": "redis", "message_cache_config": {"x": 1}},
            "message_cache_config",
        ),
        ({"turn_api_url": "127.0.0.1:8090"}, "turn_api_url"),
        ({"status_format": "nested"}, "status_format"),
    ],
)
def test_bad_config_is_a_clear_error(fields: dict[str, Any], expected: str):
    with pytest.raises(ConfigError, match=expected) as raised:
        minimal_config(**fields)
    assert SECRET not in str(raised.value)


def test_retry_keys_build_the_shared_retry_policy():
    config = minimal_config(retry_delay_base=2, retry_delay_exponent=3, retry_jitter=0.1)
    policy = config.retry_policy()
    assert (policy.max_retries, policy.delay_base, policy.delay_exponent, policy.jitter) == (
        3,
        2,
        3,
        0.1,
    )


async def test_too_large_body_without_content_length_is_a_413_problem(
    broker: Broker, names: Names
):
    raw = json.dumps(text("x" * 4096)).encode()

    async def chunks() -> AsyncIterator[bytes]:  # sent chunked: no Content-Length
        for start in range(0, len(raw), 512):
            yield raw[start : start + 512]
            # Slow enough that the 413 comes back while the body is still being sent:
            # the same connection must not then be reused for the next request.
            await trio.sleep(0.02)

    with trio.fail_after(15):
        async with (
            fake_turn() as turn,
            pipeline(broker, names, turn, simulator=False, max_body_bytes=1024) as p,
        ):
            headers = {"Content-Type": "application/json", **_signed(raw)}
            response = await p.client.post("/messages", content=chunks(), headers=headers)
            sent_id(await post_outbound(p.client, text()))
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.headers["connection"] == "close"
    assert "larger than 1024 bytes" in response.json()["detail"]


async def test_outbound_not_accepted_within_request_timeout_is_a_504_problem(
    broker: Broker, names: Names
):
    with trio.fail_after(15):
        async with (
            fake_turn() as turn,
            pipeline(broker, names, turn, simulator=False, request_timeout=1e-9) as p,
        ):
            response = await post_outbound(p.client, text())
    assert response.status_code == 504
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert "not accepted within" in response.json()["detail"]


async def test_outbound_that_cannot_be_queued_is_a_503_problem_and_serving_goes_on(
    broker: BrokerInspector, names: Names
):
    outbound_queue = f"{names.app}.outbound"
    with trio.fail_after(15):
        async with fake_turn() as turn:
            config = app_config(names, turn)
            async with (
                running_worker(TurnChannelsApi, config, broker, name=names.worker),
                httpx.AsyncClient(base_url=f"http://{config.http_bind}") as client,
            ):
                # Nothing takes the app's outbound any more: the broker refuses it.
                await broker.delete_queue(outbound_queue)
                refused = await post_outbound(client, text("refused"))
                await broker.declare_queue(outbound_queue)
                accepted_id = sent_id(await post_outbound(client, text("accepted")))
                [queued] = await receive(broker, outbound_queue, 1)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert refused.json()["code"] == "broker_unavailable"
    assert refused.headers["retry-after"] == str(SERVICE_RETRY_AFTER)
    assert "could not be queued" in refused.json()["detail"]
    assert Message.from_json(queued.body).message_id == accepted_id


class PrivateRedis:
    """A redis-server of the test's own, to stop and start under a running app."""

    def __init__(self, nursery: trio.Nursery, port: int, directory: Path) -> None:
        self.nursery = nursery
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port)]
        self.command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
        self.process: trio.Process | None = None

    async def start(self) -> None:
        self.process = await self.nursery.start(
            functools.partial(
                trio.run_process, self.command, check=False, stdout=subprocess.DEVNULL
            )
        )
        with trio.fail_after(10):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.05)
                else:
                    await stream.aclose()
                    return

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await self.process.wait()
            self.process = None


@asynccontextmanager
async def private_redis(directory: Path) -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is needed in CI to stop a Redis under the app")
        pytest.skip("redis-server not on PATH")
    async with trio.open_nursery() as nursery:
        server = PrivateRedis(nursery, free_port(), directory)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


async def test_outbound_while_the_cache_is_unreachable_is_a_503_problem_and_recovers(
    broker: Broker, names: Names, tmp_path: Path
):
    with trio.fail_after(30):
        async with fake_turn() as turn, private_redis(tmp_path) as redis_server:
            cache_config = {
                "redis_url": redis_server.url,
                "connect_timeout": 0.5,
                "command_timeout": 0.5,
            }
            async with pipeline(
                broker,
                names,
                turn,
                simulator=False,
                message_cache_class="redis",
                message_cache_config=cache_config,
            ) as p:
                sent_id(await post_outbound(p.client, text("before")))
                await redis_server.stop()
                during = await post_outbound(p.client, text("during"))
                await redis_server.start()
                sent_id(await post_outbound(p.client, text("after")))
    assert during.status_code == 503
    assert during.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert during.headers["Retry-After"] == str(SERVICE_RETRY_AFTER)
    assert during.json()["code"] == "cache_unavailable"
    assert "try again" in during.json()["detail"]
