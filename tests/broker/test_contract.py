"""The Broker contract: every test runs on the memory broker and on real RabbitMQ."""

from __future__ import annotations

import time

import pytest
import trio

from tests.conftest import AMQP_URL, require_service
from vumi_like.broker import (
    Broker,
    BrokerError,
    BrokerInspector,
    Delivery,
    PublishError,
    open_broker,
    open_inspector,
)
from vumi_like.broker.base import (
    HEADER_ATTEMPT,
    HEADER_DL_ERROR,
    HEADER_DL_QUEUE,
    HEADER_DL_WORKER,
    delay_bucket_ms,
)


async def receive(broker: Broker, queue: str, count: int, *, within: float = 10) -> list[Delivery]:
    """Take ``count`` deliveries from ``queue`` and ack them."""
    got: list[Delivery] = []
    with trio.fail_after(within):
        async with broker.consume(queue, prefetch=max(count, 1)) as subscription:
            async for delivery in subscription:
                got.append(delivery)
                broker.ack(delivery)
                if len(got) == count:
                    break
    return got


async def nothing_arrives(broker: Broker, queue: str, within: float) -> bool:
    async with broker.consume(queue, prefetch=10) as subscription:
        with trio.move_on_after(within):
            async for delivery in subscription:
                broker.requeue(delivery)
                return False
    return True


async def dead_letter_next(broker: Broker, queue: str, *, error: str, worker: str) -> Delivery:
    """Dead-letter the next delivery of ``queue``; what then arrives on the dead-letter
    queue."""
    async with broker.consume(queue, prefetch=1) as subscription:
        with trio.fail_after(10):
            async for delivery in subscription:
                await broker.dead_letter(delivery, error=error, worker=worker)
                break
    [dead] = await receive(broker, broker.dead_letter_queue, 1)
    return dead


async def test_published_message_is_consumed_with_body_and_headers(broker: Broker, unique: str):
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    await broker.publish(queue, b'{"a": 1}', headers={"x-test": "yes"})
    [delivery] = await receive(broker, queue, 1)
    assert delivery.body == b'{"a": 1}'
    assert delivery.headers["x-test"] == "yes"
    assert delivery.queue == queue
    assert delivery.redelivered is False


async def test_messages_arrive_in_publish_order(broker: Broker, unique: str):
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    for i in range(20):
        await broker.publish(queue, str(i).encode())
    got = await receive(broker, queue, 20)
    assert [d.body for d in got] == [str(i).encode() for i in range(20)]


async def test_bodies_over_many_frames_arrive_whole_and_dead_letter_whole(
    broker: Broker, unique: str
):
    # RabbitMQ's default frame_max is 131,072 bytes, 131,064 of them body: a body of
    # exactly one frame, one a byte over, and a megabyte of eight frames.
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    pattern = bytes(range(251))  # a prime length: no frame starts where the pattern does
    bodies = [(pattern * (size // 251 + 1))[:size] for size in (131_064, 131_065, 1_000_003)]
    for body in bodies:
        await broker.publish(queue, body)
    got = await receive(broker, queue, len(bodies))
    assert [d.body for d in got] == bodies
    await broker.publish(queue, bodies[-1])
    dead = await dead_letter_next(broker, queue, error="too big", worker="w1")
    assert dead.body == bodies[-1]


async def test_declare_queue_is_idempotent(broker: Broker, unique: str):
    queue = f"{unique}.outbound"
    await broker.declare_queue(queue)
    await broker.publish(queue, b"kept")
    await broker.declare_queue(queue)
    [delivery] = await receive(broker, queue, 1)
    assert delivery.body == b"kept"


async def test_publish_to_unbound_routing_key_raises(broker: Broker, unique: str):
    with pytest.raises(PublishError):
        await broker.publish(f"{unique}.nowhere", b"lost?")


async def test_concurrent_publishes_each_get_their_own_outcome(broker: Broker, unique: str):
    # Many publishes in flight at once (written out together on RabbitMQ): each
    # unroutable one is refused, every other one is confirmed and arrives.
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    outcomes: dict[int, str] = {}

    async def publish(i: int) -> None:
        try:
            await broker.publish(queue if i % 3 else f"{unique}.nowhere", str(i).encode())
        except PublishError:
            outcomes[i] = "refused"
        else:
            outcomes[i] = "confirmed"

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(90):
                nursery.start_soon(publish, i)
    assert outcomes == {i: "confirmed" if i % 3 else "refused" for i in range(90)}
    got = await receive(broker, queue, 60)
    assert sorted(int(d.body) for d in got) == [i for i in range(90) if i % 3]
    assert await nothing_arrives(broker, queue, 0.3)


async def test_acks_of_many_deliveries_at_once_all_take_effect(broker: Broker, unique: str):
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(broker.publish, queue, str(i).encode())
    # Acked as they come, then the subscription closes at once: an ack that did not
    # reach the broker first would see its message come back.
    got = await receive(broker, queue, 200)
    assert len({d.body for d in got}) == 200
    assert await nothing_arrives(broker, queue, 0.5)


async def test_consuming_an_undeclared_queue_raises(broker: Broker, unique: str):
    with pytest.raises(BrokerError):
        async with broker.consume(f"{unique}.missing", prefetch=1):
            pass


async def test_prefetch_bounds_unsettled_deliveries(broker: Broker, unique: str):
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    for i in range(5):
        await broker.publish(queue, str(i).encode())
    held: list[Delivery] = []
    async with broker.consume(queue, prefetch=2) as subscription:
        iterator = subscription.__aiter__()
        with trio.fail_after(5):
            held.append(await iterator.__anext__())
            held.append(await iterator.__anext__())
        with trio.move_on_after(0.3) as waited:
            await iterator.__anext__()
        assert waited.cancelled_caught, "a third delivery arrived past prefetch=2"
        broker.ack(held[0])
        with trio.fail_after(5):
            third = await iterator.__anext__()
        assert third.body == b"2"
        broker.ack(held[1])
        broker.ack(third)


async def test_unsettled_deliveries_return_when_the_subscription_ends(broker: Broker, unique: str):
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    for i in range(3):
        await broker.publish(queue, str(i).encode())
    async with broker.consume(queue, prefetch=10) as subscription:
        seen = 0
        with trio.fail_after(5):
            async for _ in subscription:
                seen += 1
                if seen == 3:
                    break
    again = await receive(broker, queue, 3)
    assert sorted(d.body for d in again) == [b"0", b"1", b"2"]
    assert all(d.redelivered for d in again)


async def test_requeued_delivery_is_redelivered(broker: Broker, unique: str):
    queue = f"{unique}.event"
    await broker.declare_queue(queue)
    await broker.publish(queue, b"again")
    async with broker.consume(queue, prefetch=1) as subscription:
        with trio.fail_after(5):
            async for delivery in subscription:
                if not delivery.redelivered:
                    broker.requeue(delivery)
                    continue
                broker.ack(delivery)
                break
    assert delivery.body == b"again"
    assert delivery.redelivered


async def test_dead_letter_keeps_raw_body_and_names_source_error_and_worker(
    broker: Broker, unique: str
):
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    await broker.publish(queue, b"\xff not json", headers={"x-trace": "t1"})
    dead = await dead_letter_next(broker, queue, error="ValueError: bad", worker="w1")
    assert dead.body == b"\xff not json"
    assert dead.headers[HEADER_DL_QUEUE] == queue
    assert dead.headers[HEADER_DL_ERROR] == "ValueError: bad"
    assert dead.headers[HEADER_DL_WORKER] == "w1"
    assert dead.headers["x-trace"] == "t1"
    assert await nothing_arrives(broker, queue, 0.3), "dead-lettered delivery was not acked"


async def test_retry_later_brings_body_back_after_the_delay(broker: Broker, unique: str):
    queue = f"{unique}.outbound"
    await broker.declare_queue(queue)
    start = time.monotonic()
    await broker.retry_later(queue, b"later", delay=0.4, headers={HEADER_ATTEMPT: 2})
    assert await nothing_arrives(broker, queue, 0.2)
    [delivery] = await receive(broker, queue, 1)
    assert time.monotonic() - start >= 0.38
    assert delivery.body == b"later"
    assert delivery.attempt == 2


async def test_retries_with_different_delays_come_back_in_delay_order(broker: Broker, unique: str):
    queue = f"{unique}.outbound"
    await broker.declare_queue(queue)
    await broker.retry_later(queue, b"slow", delay=0.6)
    await broker.retry_later(queue, b"fast", delay=0.1)
    got = await receive(broker, queue, 2)
    assert [d.body for d in got] == [b"fast", b"slow"]


async def test_get_takes_one_ready_delivery_or_none(broker: BrokerInspector, unique: str):
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    assert await broker.get(queue) is None
    await broker.publish(queue, b"one")
    delivery = await broker.get(queue)
    assert delivery is not None and delivery.body == b"one"
    broker.requeue(delivery)
    again = await broker.get(queue)
    assert again is not None and again.body == b"one"
    broker.ack(again)
    assert await broker.get(queue) is None


async def test_purge_drops_ready_messages_and_counts_them(broker: BrokerInspector, unique: str):
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    for _ in range(4):
        await broker.publish(queue, b"x")
    assert await broker.purge(queue) == 4
    assert await broker.get(queue) is None


async def test_get_and_purge_of_a_missing_queue_raise(broker: BrokerInspector, unique: str):
    with pytest.raises(BrokerError):
        await broker.get(f"{unique}.missing")
    with pytest.raises(BrokerError):
        await broker.purge(f"{unique}.missing")


async def test_prefetch_below_one_is_refused(broker: Broker, unique: str):
    queue = f"{unique}.inbound"
    await broker.declare_queue(queue)
    with pytest.raises(ValueError):
        async with broker.consume(queue, prefetch=0):
            pass


@pytest.mark.parametrize("kind", ["memory", "rabbitmq"])
async def test_consumer_sees_an_error_when_the_broker_closes_under_it(kind: str, unique: str):
    url = "memory://"
    if kind == "rabbitmq":
        require_service(AMQP_URL, 5672, "RabbitMQ")
        url = AMQP_URL
    queue = f"{unique}.inbound"
    async with open_broker(url, dead_letter_queue=f"{unique}.dead_letter") as broker:
        await broker.declare_queue(queue)
        try:
            with pytest.RaisesGroup(BrokerError, flatten_subgroups=True):
                async with (
                    trio.open_nursery() as nursery,
                    broker.consume(queue, prefetch=1) as sub,
                ):

                    async def close_soon() -> None:
                        await trio.sleep(0.1)
                        await broker.aclose()

                    nursery.start_soon(close_soon)
                    with trio.fail_after(5):
                        async for _ in sub:
                            pass
        finally:
            if kind == "rabbitmq":
                async with open_inspector(url) as cleanup:
                    await cleanup.delete_queue(queue)
                    await cleanup.delete_queue(f"{unique}.dead_letter")


def test_delay_buckets_are_two_significant_digits_of_milliseconds():
    assert delay_bucket_ms(0) == 1
    assert delay_bucket_ms(0.037) == 37
    assert delay_bucket_ms(1.234) == 1200
    assert delay_bucket_ms(61.7) == 62000
    for delay in (0.1, 0.73, 4.2, 17.9, 333.3):
        assert abs(delay_bucket_ms(delay) - delay * 1000) <= delay * 1000 * 0.05


OPERATOR_OPERATIONS = {"get", "purge", "delete_queue"}


def test_a_workers_broker_offers_no_operator_operations():
    assert not OPERATOR_OPERATIONS & set(dir(Broker))
    assert BrokerInspector.__abstractmethods__ >= OPERATOR_OPERATIONS


@pytest.mark.parametrize("kind", ["memory", "rabbitmq"])
async def test_open_inspector_and_open_broker_open_the_same_kind_of_broker(kind: str, unique: str):
    url = "memory://"
    if kind == "rabbitmq":
        require_service(AMQP_URL, 5672, "RabbitMQ")
        url = AMQP_URL
    dead_letter_queue = f"{unique}.dead_letter"
    async with open_inspector(url, dead_letter_queue=dead_letter_queue) as inspector:
        assert isinstance(inspector, BrokerInspector)
        async with open_broker(url, dead_letter_queue=dead_letter_queue) as broker:
            assert type(broker) is type(inspector)
        await inspector.delete_queue(dead_letter_queue)
