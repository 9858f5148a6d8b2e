"""Failover between nodes on a lost connection: to the next URL, round robin.

Two private standalone nodes (tests/rabbit_nodes.py), each with a user whose password
must never be logged. The broker connects to the first; when that node stops it goes
on to the second, declares its queues there again and carries on; when the second
stops (the first back by then) it wraps around to the first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
import trio

from tests.broker.test_contract import receive
from tests.rabbit_nodes import RabbitNode, rabbit_nodes
from vumi_like.broker import open_broker
from vumi_like.broker.rabbitmq import RabbitMQBroker

# The test sets its own deadline (fail_after) below this, so that its nodes are always
# torn down.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(200)]

SECRET = "n0de-s3cret"


async def add_user(node: RabbitNode) -> str:
    await node.ctl("add_user", "vl", SECRET)
    await node.ctl("set_permissions", "-p", "/", "vl", ".*", ".*", ".*")
    return f"amqp://vl:{SECRET}@127.0.0.1:{node.amqp_port}/"


async def connected_to(broker: RabbitMQBroker, node: RabbitNode) -> None:
    """Wait until ``broker`` is connected to ``node``; the caller sets the deadline."""
    while not (  # noqa: ASYNC110 (set by the broker's I/O thread: no trio event to wait on)
        broker.connected
        and broker._connection is not None
        and broker._connection.url.port == node.amqp_port
    ):
        await trio.sleep(0.1)


async def round_trip(broker: RabbitMQBroker, queue: str, body: bytes) -> None:
    await broker.publish(queue, body)
    [delivery] = await receive(broker, queue, 1)
    assert delivery.body == body


async def test_a_lost_connection_fails_over_round_robin(tmp_path: Path) -> None:
    with trio.fail_after(170):
        async with rabbit_nodes(2, tmp_path / "rabbit", cluster=False) as [first, second]:
            urls = ",".join([await add_user(first), await add_user(second)])
            with structlog.testing.capture_logs() as logs:
                async with open_broker(
                    urls, reconnect_interval=0.2, max_reconnect_interval=1.0
                ) as broker:
                    assert isinstance(broker, RabbitMQBroker)
                    await connected_to(broker, first)
                    await broker.declare_queue("q")
                    await round_trip(broker, "q", b"on the first")

                    await first.stop_app()
                    with trio.fail_after(30):
                        await connected_to(broker, second)
                    # The queue was declared again on the node failed over to.
                    await round_trip(broker, "q", b"on the second")

                    await first.start_app()
                    await second.stop_app()
                    with trio.fail_after(30):
                        await connected_to(broker, first)
                    await round_trip(broker, "q", b"back on the first")

            moves = [e["url"] for e in logs if e["event"] == "amqp connecting to the next node"]
            assert f"amqp://vl:***@127.0.0.1:{second.amqp_port}/" in moves
            assert f"amqp://vl:***@127.0.0.1:{first.amqp_port}/" in moves
            assert SECRET not in repr(logs)
