"""RabbitMQ stopped for 10 s mid-stream: every worker reconnects by itself, nothing is lost.

A private RabbitMQ node (never the shared one) carries a whole pipeline, each worker
its own ``vumi-like worker`` process: the Messaging API and the event dispatcher (on
PostgreSQL), a router and a simulator transport. Two streams flow through it at once:

* outbound messages the test publishes as an application straight onto the router's
  queue, counted back as events (an ack and a delivery report each);
* messages sent through the API (``POST /v1/messages``, with an ``Idempotency-Key``,
  retried on 503 as the API asks), each of which must end DELIVERED in the store.

A third of the way through, ``rabbitmqctl stop_app`` cuts every connection for 10 s,
then ``start_app``. Each worker's ``/health`` must say ``down`` during the outage and
``ok`` after it; nothing sent may go missing (duplicates are allowed by at-least-once,
counted and reported).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.rabbit_nodes import (
    CountedStream,
    WorkerProcess,
    pipeline_configs,
    rabbit_nodes,
    worker_process,
)
from tests.stores.conftest import _postgres_target
from vumi_like.broker import open_broker

# The test sets its own deadline (fail_after) below this, so that its nodes and
# workers are always torn down.
pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(200)]

COUNT = 2000
RATE = 150.0  # messages a second: the stream lasts about 13 s
API_COUNT = 400
API_RATE = 30.0
OUTAGE = 10.0

TENANT, CLIENT_ID, CLIENT_SECRET = "acme", "crm", "crm-secret-for-the-outage-test"
JWT_SECRET = "outage-test-signing-key-0123456789abcdef"


@pytest.fixture
def store() -> Iterator[dict[str, Any]]:
    """A PostgreSQL schema of the test's own, dropped afterwards."""
    for target in _postgres_target():
        yield {"store_url": target.url, "store_schema": target.options["schema"]}


def api_configs(base: dict[str, Any], store: dict[str, Any]) -> dict[str, tuple[str, dict]]:
    channels = [
        {"name": "sms", "type": "sms", "transport_name": "sim", "senders": {TENANT: ["1234"]}}
    ]
    auth = {
        "jwt_secret": JWT_SECRET,
        "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "tenant": TENANT}],
    }
    common = {**base, **store, "connector_name": "messaging", "channels": channels}
    return {
        "api": ("vumi_like.applications.messaging_api.MessagingApi", {**common, "auth": auth}),
        "dispatcher": ("vumi_like.dispatch.EventDispatcher", common),
    }


class ApiStream:
    """Messages sent through the Messaging API, each until it is accepted (202)."""

    def __init__(self, api: WorkerProcess) -> None:
        self.url = f"http://127.0.0.1:{api.port}"
        self.accepted: list[str] = []
        self.answers: dict[int, int] = {}  # HTTP status -> count (503s included)
        self.sent = trio.Event()

    async def token(self) -> str:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            response = await http.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                },
            )
        response.raise_for_status()
        return str(response.json()["access_token"])

    async def send(self, count: int, rate: float) -> None:
        headers = {"Authorization": f"Bearer {await self.token()}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=40) as http:
            started = trio.current_time()
            for i in range(count):
                await self.send_one(http, i)
                await trio.sleep_until(started + (i + 1) / rate)
        self.sent.set()

    async def send_one(self, http: httpx.AsyncClient, i: int) -> None:
        body = {"channel": "sms", "receiver": f"+2783{i:07d}", "content": f"via the API {i}"}
        key = uuid.uuid4().hex
        while True:
            try:
                response = await http.post(
                    "/v1/messages", json=body, headers={"Idempotency-Key": key}
                )
            except httpx.HTTPError:
                await trio.sleep(1)
                continue
            self.answers[response.status_code] = self.answers.get(response.status_code, 0) + 1
            if response.status_code == 202:
                self.accepted.append(response.json()["messageId"])
                return
            assert response.status_code == 503, response.text
            assert "Retry-After" in response.headers
            await trio.sleep(float(response.headers["Retry-After"]))

    async def statuses(self) -> dict[str, str]:
        """Each accepted message's status, read through the API."""
        headers = {"Authorization": f"Bearer {await self.token()}"}
        found: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10) as http:
            for message_id in self.accepted:
                response = await http.get(f"/v1/messages/{message_id}")
                response.raise_for_status()
                found[message_id] = response.json()["status"]
        return found

    async def wait_delivered(self) -> dict[str, str]:
        """The statuses once all are DELIVERED; the caller sets the deadline."""
        await self.sent.wait()
        while True:
            statuses = await self.statuses()
            if all(status == "DELIVERED" for status in statuses.values()):
                return statuses
            await trio.sleep(1)


async def test_broker_outage_mid_stream_loses_nothing(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    with trio.fail_after(170):
        async with rabbit_nodes(1, tmp_path / "rabbit") as [node]:
            configs = pipeline_configs(node.url, "app", "sim")
            router_config = configs["router"][1]
            router_config["to_address_mappings"] = {"app": ".*", "messaging": ".*"}
            base = {key: router_config[key] for key in ("amqp_url", "amqp", "log_level")}
            configs.update(api_configs(base, store))
            stream = CountedStream("app", "sim")
            options = {"reconnect_interval": 0.5, "max_reconnect_interval": 2.0}
            async with (
                open_broker(node.url, publish_timeout=60, **options) as broker,
                worker_process("router", *configs["router"], tmp_path) as router,
                worker_process("transport", *configs["transport"], tmp_path) as transport,
                worker_process("api", *configs["api"], tmp_path) as api,
                worker_process("dispatcher", *configs["dispatcher"], tmp_path) as dispatcher,
            ):
                workers = [router, transport, api, dispatcher]
                api_stream = ApiStream(api)
                await broker.declare_queue("app.outbound")
                await broker.declare_queue("app.event")
                async with trio.open_nursery() as nursery:
                    subscribed, progress = trio.Event(), trio.Event()
                    nursery.start_soon(stream.collect, broker, subscribed)
                    await subscribed.wait()
                    nursery.start_soon(stream.publish, broker, COUNT, RATE, progress)
                    nursery.start_soon(api_stream.send, API_COUNT, API_RATE)
                    await progress.wait()

                    await node.stop_app()
                    stopped = trio.current_time()
                    with trio.fail_after(10):
                        for worker in workers:
                            await worker.wait_health("down")
                    assert not broker.connected
                    await trio.sleep_until(stopped + OUTAGE)
                    await node.start_app()
                    with trio.fail_after(30):
                        recovery = [await worker.wait_health("ok") for worker in workers]

                    statuses: dict[str, str] = {}
                    with trio.move_on_after(60):
                        await stream.wait_complete()
                        statuses = await api_stream.wait_delivered()
                    nursery.cancel_scope.cancel()
                if not statuses:
                    statuses = await api_stream.statuses()

            missing = stream.missing()
            undelivered = sorted(i for i, status in statuses.items() if status != "DELIVERED")
            print(
                f"\nbroker outage {OUTAGE:g}s: direct stream sent {len(stream.sent)},"
                f" missing {len(missing)}, duplicate events {stream.duplicates()};"
                f" API accepted {len(api_stream.accepted)} (answers {api_stream.answers}),"
                f" not DELIVERED {len(undelivered)};"
                f" workers healthy again {max(recovery):.1f}s after start_app"
            )
            assert len(stream.sent) == COUNT
            assert missing == []
            assert stream.unexpected() == []
            assert len(api_stream.accepted) == API_COUNT
            assert len(statuses) == API_COUNT
            assert undelivered == []
            for worker in workers:
                assert "amqp connection lost" in worker.log()
                assert "amqp connection restored" in worker.log()
