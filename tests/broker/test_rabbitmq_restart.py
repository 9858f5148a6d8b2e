"""RabbitMQ restarted mid-stream: consumers resume by themselves and nothing acked is lost."""

from __future__ import annotations

import shutil

import pytest
import trio

from tests.conftest import IN_CI
from vumi_like.broker import open_inspector
from vumi_like.broker.reconnect import BackoffConnection
from vumi_like.connectors import ReceiveOutboundConnector
from vumi_like.messages import Message


async def rabbitmqctl(*args: str) -> None:
    await trio.run_process(["rabbitmqctl", *args], capture_stdout=True, capture_stderr=True)


@pytest.mark.slow
async def test_consumers_resume_after_broker_restart_and_nothing_is_lost(
    amqp_url: str, unique: str
):
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is needed in CI to restart the broker")
        pytest.skip("rabbitmqctl not on PATH")

    total = 400
    received: set[str] = set()
    all_received = trio.Event()
    quarter_received = trio.Event()
    saw_down = saw_backoff = False

    def on_outbound(msg: Message) -> None:
        received.add(msg.content or "")
        if len(received) >= total // 4:
            quarter_received.set()
        if len(received) == total:
            all_received.set()

    async with open_inspector(amqp_url, reconnect_interval=0.5, publish_timeout=60) as broker:
        queue = f"{unique}.outbound"
        connection = broker._connection
        assert isinstance(connection, BackoffConnection)
        try:
            async with trio.open_nursery() as nursery:
                transport = ReceiveOutboundConnector(broker, unique, concurrency=10)
                await transport.setup(nursery, outbound_handler=on_outbound)

                async def watch_health() -> None:
                    nonlocal saw_down, saw_backoff
                    while True:
                        if not broker.connected:
                            saw_down = True
                            # The outage clock that grows the reconnect wait is running.
                            saw_backoff |= connection._down_since is not None
                        await trio.sleep(0.05)

                nursery.start_soon(watch_health)

                async def publish_all() -> None:
                    for i in range(total):
                        msg = Message(
                            to_addr="+1",
                            from_addr="2",
                            transport_name="t",
                            transport_type="sms",
                            content=str(i),
                        )
                        await broker.publish(queue, msg.to_json())
                        await trio.sleep(0.005)

                async def restart_midway() -> None:
                    await quarter_received.wait()
                    try:
                        await rabbitmqctl("stop_app")
                        await trio.sleep(1)
                    finally:
                        await rabbitmqctl("start_app")
                        await rabbitmqctl("await_startup")

                async with trio.open_nursery() as inner:
                    inner.start_soon(publish_all)
                    inner.start_soon(restart_midway)

                with trio.fail_after(60):
                    await all_received.wait()
                await transport.close()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                while not broker.connected:  # noqa: ASYNC110 - a flag set by another thread
                    await trio.sleep(0.2)
                # The connector declared what it publishes to as well.
                for kind in ("outbound", "inbound", "event"):
                    await broker.delete_queue(f"{unique}.{kind}")

    assert saw_down, "the broker never reported itself disconnected"
    assert saw_backoff
    assert connection._down_since is None  # reconnected: back to the base interval
    assert received == {str(i) for i in range(total)}
