"""``retry_later`` on RabbitMQ: one request across the bridge, its delay bucket declared once."""

from __future__ import annotations

from typing import Any

import trio

from tests.broker.test_contract import receive
from vumi_like.broker.bridge import Request
from vumi_like.broker.rabbitmq import RabbitMQBroker, open_rabbitmq_broker


async def test_retry_later_is_one_request_across_the_bridge(amqp_url: str, unique: str) -> None:
    queue = f"{unique}.outbound"
    async with open_rabbitmq_broker(amqp_url, dead_letter_queue=f"{unique}.dead_letter") as broker:
        await broker.declare_queue(queue)
        try:
            requests, bucket_declares, slow_publishes = watch_io_side(broker)

            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(lambda i=i: broker.retry_later(queue, b"%d" % i, delay=0.3))
            assert requests == ["Retry"] * 5
            # The first use of the bucket declares it, once for all five, then publishes
            # with aiormq's own call; its later uses are a publish on the fast path.
            assert bucket_declares == ["vumi.delay.300"]
            assert 1 <= len(slow_publishes) <= 5
            slow_before = len(slow_publishes)
            await broker.retry_later(queue, b"5", delay=0.3)
            assert requests == ["Retry"] * 6
            assert bucket_declares == ["vumi.delay.300"]
            assert len(slow_publishes) == slow_before

            got = await receive(broker, queue, 6)
            assert sorted(d.body for d in got) == [b"%d" % i for i in range(6)]
        finally:
            await broker.delete_queue(queue)
            await broker.delete_queue(broker.dead_letter_queue)


def watch_io_side(broker: RabbitMQBroker) -> tuple[list[str], list[str], list[Any]]:
    """Record the requests ``broker`` sends to its I/O thread, the delay buckets it
    declares there and the publishes it makes with aiormq's own call."""
    requests: list[str] = []
    bucket_declares: list[str] = []
    slow_publishes: list[Any] = []
    submit = broker._bridge.submit
    declare_bucket = broker._io_declare_bucket
    publish = broker._io_publish

    def recording_submit(request: Request) -> None:
        requests.append(type(request).__name__)
        submit(request)

    async def counting_declare_bucket(name: str, delay_ms: int) -> None:
        bucket_declares.append(name)
        await declare_bucket(name, delay_ms)

    async def counting_publish(request: Any) -> None:
        slow_publishes.append(request)
        await publish(request)

    broker._bridge.submit = recording_submit  # type: ignore[method-assign]
    broker._io_declare_bucket = counting_declare_bucket  # type: ignore[method-assign]
    broker._io_publish = counting_publish  # type: ignore[method-assign]
    return requests, bucket_declares, slow_publishes
