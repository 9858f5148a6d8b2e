"""``run_worker`` and ``BaseWorker``: HTTP surfaces, graceful stop, connector bookkeeping.

Each test runs a small worker defined here on the memory broker and on RabbitMQ, and
talks to its HTTP server over real localhost HTTP.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.broker.test_contract import nothing_arrives, receive
from vumi_like.broker import Broker
from vumi_like.config import BaseConfig
from vumi_like.errors import PROBLEM_CONTENT_TYPE
from vumi_like.messages import Event, Message
from vumi_like.routers import ToAddressRouter, ToAddressRouterConfig
from vumi_like.transports.simulator import SimulatorTransport, SimulatorTransportConfig
from vumi_like.worker import BaseWorker, DuplicateConnectorError, run_worker


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    ``run_worker`` does not report the address its HTTP server bound (``serve_http``
    does, but ``run_worker`` keeps it), so ``http_bind`` cannot be ``127.0.0.1:0``
    and the test picks the port itself.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the duration of the block.

    It is bound and never listens: unlike a port that ``free_port`` found free, no
    server started meanwhile (one bound to port 0, say) can be given it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@asynccontextmanager
async def running_worker(
    worker_cls: type[BaseWorker], config: BaseConfig, broker: Broker, *, name: str | None = None
) -> AsyncIterator[Any]:
    """Run ``worker_cls`` with ``run_worker`` for the duration of the block, then stop it."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(
            functools.partial(run_worker, worker_cls, config, broker=broker, name=name, stop=stop)
        )
        try:
            yield worker
        finally:
            stop.set()


async def simulator_and_router(
    stack: AsyncExitStack,
    broker: Broker,
    *,
    transport: str,
    app: str,
    simulator: bool = True,
    delivery_delay: float = 0.05,
    router_fields: dict[str, Any] | None = None,
) -> httpx.AsyncClient | None:
    """On ``stack``: a simulator on ``transport`` (unless the test plays the transport)
    and a ToAddressRouter sending every inbound message to ``app``. The simulator's HTTP
    client, or None without one."""
    sim_client = None
    if simulator:
        sim_port = free_port()
        sim_config = SimulatorTransportConfig(
            transport_name=transport,
            delivery_delay=delivery_delay,
            http_bind=f"127.0.0.1:{sim_port}",
        )
        await stack.enter_async_context(running_worker(SimulatorTransport, sim_config, broker))
        sim_client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim_port}")
        )
    router_config = ToAddressRouterConfig(
        transport_names=[transport], to_address_mappings={app: ".*"}, **(router_fields or {})
    )
    await stack.enter_async_context(running_worker(ToAddressRouter, router_config, broker))
    return sim_client


def make_message(content: str = "hello", **fields: Any) -> Message:
    return Message(
        to_addr="1234",
        from_addr="+27820000001",
        transport_name="sim",
        transport_type="sms",
        content=content,
        **fields,
    )


class ProbeConfig(BaseConfig):
    connector_name: str
    handler_seconds: float = 0.0


class ProbeWorker(BaseWorker):
    """Consumes ``<connector_name>.inbound``; each handler sleeps, then records its message."""

    config_class = ProbeConfig
    config: ProbeConfig

    async def setup(self) -> None:
        self.handling = trio.Event()
        self.handled: list[Message] = []
        self.handled_one = trio.Event()
        await self.setup_receive_inbound_connector(
            self.config.connector_name,
            inbound_handler=self.handle_inbound,
            event_handler=self.handle_event,
        )
        if self.http is not None:
            self.http.add_url_rule("/boom", "boom", self._boom, methods=["GET"])

    async def handle_inbound(self, message: Message) -> None:
        self.handling.set()
        await trio.sleep(self.config.handler_seconds)
        self.handled.append(message)
        self.handled_one.set()

    async def handle_event(self, event: Event) -> None:
        pass

    async def _boom(self) -> str:
        raise RuntimeError("the route broke")


class UnhealthyWorker(ProbeWorker):
    def health_components(self) -> dict[str, dict[str, Any]]:
        return {**super().health_components(), "database": {"ok": False, "error": "gone"}}


class DuplicateConnectorWorker(ProbeWorker):
    async def setup(self) -> None:
        await super().setup()
        await self.setup_receive_inbound_connector(
            self.config.connector_name,
            inbound_handler=self.handle_inbound,
            event_handler=self.handle_event,
        )


def http_config(unique: str, **fields: Any) -> tuple[ProbeConfig, str]:
    port = free_port()
    config = ProbeConfig(connector_name=unique, http_bind=f"127.0.0.1:{port}", **fields)
    return config, f"http://127.0.0.1:{port}"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "code"}
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:vumi-like:problem:{code}"
    assert body["title"] and body["detail"]
    return body


# -- HTTP


async def test_health_is_ok_with_the_amqp_component(broker: Broker, unique: str):
    config, url = http_config(unique)
    with trio.fail_after(5):
        async with (
            running_worker(ProbeWorker, config, broker),
            httpx.AsyncClient(base_url=url) as client,
        ):
            response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "health": "ok",
        "components": {"amqp": {"ok": True, "state": "open"}},
    }


async def test_health_is_down_with_500_when_a_component_is_not_ok(broker: Broker, unique: str):
    config, url = http_config(unique)
    with trio.fail_after(5):
        async with (
            running_worker(UnhealthyWorker, config, broker),
            httpx.AsyncClient(base_url=url) as client,
        ):
            response = await client.get("/health")
    assert response.status_code == 500
    body = response.json()
    assert body["health"] == "down"
    assert body["components"]["database"] == {"ok": False, "error": "gone"}
    assert body["components"]["amqp"]["ok"] is True


async def test_metrics_count_a_handled_message_under_the_worker_label(broker: Broker, unique: str):
    config, url = http_config(unique)
    name = f"{unique}-probe"
    with trio.fail_after(5):
        async with (
            running_worker(ProbeWorker, config, broker, name=name) as worker,
            httpx.AsyncClient(base_url=url) as client,
        ):
            await broker.publish(f"{unique}.inbound", make_message().to_json())
            await worker.handled_one.wait()
            response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    consumed = {
        (sample.labels["connector"], sample.labels["queue"]): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "vumi_like_consumed_total" and sample.labels.get("worker") == name
    }
    assert consumed == {(unique, f"{unique}.inbound"): 1.0, (unique, f"{unique}.event"): 0.0}


async def test_unknown_path_is_a_404_problem(broker: Broker, unique: str):
    config, url = http_config(unique)
    with trio.fail_after(5):
        async with (
            running_worker(ProbeWorker, config, broker),
            httpx.AsyncClient(base_url=url) as client,
        ):
            response = await client.get("/no/such/path")
    assert_problem(response, 404, "not_found")


async def test_route_that_raises_is_a_500_problem_and_the_worker_keeps_serving(
    broker: Broker, unique: str
):
    config, url = http_config(unique)
    with trio.fail_after(5):
        async with (
            running_worker(ProbeWorker, config, broker),
            httpx.AsyncClient(base_url=url) as client,
        ):
            broken = await client.get("/boom")
            health = await client.get("/health")
    body = assert_problem(broken, 500, "internal_error")
    assert "the route broke" not in body["detail"]  # internals stay in the log
    assert health.status_code == 200


# -- graceful stop


async def test_stop_lets_in_flight_handler_finish_and_acks_its_delivery(
    broker: Broker, unique: str
):
    config = ProbeConfig(connector_name=unique, handler_seconds=0.2, shutdown_timeout=3)
    message = make_message()
    stop = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            worker = await nursery.start(
                functools.partial(run_worker, ProbeWorker, config, broker=broker, stop=stop)
            )
            await broker.publish(f"{unique}.inbound", message.to_json())
            await worker.handling.wait()
            assert worker.handled == []
            stop.set()
        # run_worker has returned.
        assert [m.message_id for m in worker.handled] == [message.message_id]
        assert await nothing_arrives(broker, f"{unique}.inbound", within=0.3)


async def test_stop_cancels_handler_past_shutdown_timeout_and_its_delivery_is_redelivered(
    broker: Broker, unique: str
):
    config = ProbeConfig(connector_name=unique, handler_seconds=30, shutdown_timeout=0.2)
    message = make_message()
    stop = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            worker = await nursery.start(
                functools.partial(run_worker, ProbeWorker, config, broker=broker, stop=stop)
            )
            await broker.publish(f"{unique}.inbound", message.to_json())
            await worker.handling.wait()
            stopping_at = trio.current_time()
            stop.set()
        assert trio.current_time() - stopping_at < 2
        assert worker.handled == []
        [delivery] = await receive(broker, f"{unique}.inbound", 1)
    assert Message.from_json(delivery.body).message_id == message.message_id
    assert delivery.redelivered is True


# -- connectors


async def test_duplicate_connector_name_raises(broker: Broker, unique: str):
    config = ProbeConfig(connector_name=unique)
    with trio.fail_after(5), pytest.raises(BaseExceptionGroup) as raised:
        async with running_worker(DuplicateConnectorWorker, config, broker):
            pass
    assert raised.group_contains(DuplicateConnectorError, match=unique, depth=None)


async def _response_head(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    """One response's head and body off ``stream`` (Content-Length framed)."""
    while b"\r\n\r\n" not in buffer:
        buffer.extend(await stream.receive_some())
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += await stream.receive_some()
    buffer[:] = rest[length:]
    return head


async def test_a_refused_request_with_a_body_leaves_the_connection_usable(broker: Broker):
    # Each is answered without any route reading the body (refused by routing, or
    # OPTIONS answered by the framework), and the client sends the body only after a
    # pause, as some clients do: the next request on the connection must be answered.
    port = free_port()
    config = ProbeConfig(connector_name="probe-405", http_bind=f"127.0.0.1:{port}")
    body = b'{"some": "body"}'
    with trio.fail_after(30):
        async with running_worker(ProbeWorker, config, broker):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            buffer = bytearray()
            async with stream:
                cases = [("PUT", "/health", 405), ("OPTIONS", "/health", 200)]
                cases += [("PATCH", "/health", 405), ("POST", "/nowhere", 404)]
                for method, path, status in cases:
                    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
                    head += f"Content-Length: {len(body)}\r\n\r\n"
                    await stream.send_all(head.encode())
                    await trio.sleep(0.2)
                    await stream.send_all(body)
                    with trio.fail_after(3):
                        assert f" {status} ".encode() in await _response_head(stream, buffer)
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                with trio.fail_after(3):
                    assert b" 200 " in await _response_head(stream, buffer)
