"""A three-node RabbitMQ cluster on quorum queues: losing the node everyone is connected
to, mid-stream, loses nothing.

Three private nodes (tests/rabbit_nodes.py) form a cluster. A router and a simulator
transport run as ``vumi-like worker`` processes with ``amqp.queue_type: quorum`` and
``amqp_url`` listing the three nodes, so they, and the test's own publisher and event
counter, all connect to the first. A third of the way through a stream of outbound
messages that node is stopped (``rabbitmqctl stop``: the whole node goes). The quorum
queues keep a majority on the other two, every connection fails over to the next node
by itself, and every message must come back acked and delivered; duplicates are
allowed by at-least-once, and counted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.rabbit_nodes import CountedStream, pipeline_configs, rabbit_nodes, worker_process
from vumi_like.broker import open_broker
from vumi_like.broker.rabbitmq import RabbitMQBroker

# The test sets its own deadline (fail_after) below this, so that its nodes and
# workers are always torn down.
pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(200)]

QUEUE_COLUMNS = ("name", "type", "messages_ready", "messages_unacknowledged", "consumers")
COUNT = 1500
RATE = 150.0  # messages a second: the stream lasts about 10 s


async def test_losing_the_connected_node_of_a_cluster_loses_nothing(tmp_path: Path) -> None:
    with trio.fail_after(170):
        async with rabbit_nodes(3, tmp_path / "rabbit") as nodes:
            first = nodes[0]
            urls = ",".join(node.url for node in nodes)
            configs = pipeline_configs(urls, "app", "sim", queue_type="quorum")
            stream = CountedStream("app", "sim")
            options = {"reconnect_interval": 0.5, "max_reconnect_interval": 2.0}
            async with (
                open_broker(urls, publish_timeout=60, queue_type="quorum", **options) as broker,
                worker_process("router", *configs["router"], tmp_path) as router,
                worker_process("transport", *configs["transport"], tmp_path) as transport,
            ):
                assert isinstance(broker, RabbitMQBroker)
                await broker.declare_queue("app.outbound")
                await broker.declare_queue("app.event")
                queues = await first.ctl("list_queues", "name", "type", "--no-table-headers")
                for queue in ("app.outbound", "app.event", "sim.outbound", "sim.event"):
                    assert f"{queue}\tquorum" in queues

                async with trio.open_nursery() as nursery:
                    subscribed, progress = trio.Event(), trio.Event()
                    nursery.start_soon(stream.collect, broker, subscribed)
                    await subscribed.wait()
                    nursery.start_soon(stream.publish, broker, COUNT, RATE, progress)
                    await progress.wait()

                    await first.stop()
                    with trio.move_on_after(90):
                        await stream.wait_complete()
                    nursery.cancel_scope.cancel()
                if not stream.complete():  # where are they? said before the nodes go
                    print(await nodes[1].ctl("list_queues", *QUEUE_COLUMNS))
                    print(stream.missing_kinds())

                assert broker._connection is not None
                failed_over_to = broker._connection.url.port
                for worker in (router, transport):
                    assert await worker.health() == "ok"
                    assert "amqp connecting to the next node" in worker.log()

            missing = stream.missing()
            print(
                f"\ncluster node lost: sent {len(stream.sent)}, missing {len(missing)},"
                f" duplicate events {stream.duplicates()}"
            )
            assert failed_over_to in {nodes[1].amqp_port, nodes[2].amqp_port}
            assert len(stream.sent) == COUNT
            assert missing == []
            assert stream.unexpected() == []
