"""Behaviour specific to the in-memory broker (the shared contract is in test_contract.py).

On one process and one trio clock, the memory broker's promises can be checked
exactly: who gets which delivery, that nothing arrives (``wait_all_tasks_blocked``
instead of waiting a while), and hour-long delays with ``autojump_clock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from vumi_like.broker import BrokerError, Delivery, PublishError, Subscription, open_broker
from vumi_like.broker.base import (
    DEAD_LETTER_QUEUE,
    HEADER_ATTEMPT,
    HEADER_DL_ERROR,
    HEADER_DL_QUEUE,
)
from vumi_like.broker.memory import MemoryBroker, open_memory_broker

QUEUE = "app.inbound"


@pytest.fixture
async def memory_broker() -> AsyncIterator[MemoryBroker]:
    async with open_memory_broker(dead_letter_queue="test.dead_letter") as broker:
        await broker.declare_queue(QUEUE)
        yield broker


async def publish_numbers(broker: MemoryBroker, count: int, queue: str = QUEUE) -> None:
    for i in range(count):
        await broker.publish(queue, str(i).encode())


async def drain(broker: MemoryBroker, queue: str = QUEUE) -> list[Delivery]:
    """Every ready delivery of ``queue``, taken with ``get`` and acked."""
    got = []
    while (delivery := await broker.get(queue)) is not None:
        broker.ack(delivery)
        got.append(delivery)
    return got


async def take(subscription: Subscription, count: int, *, within: float = 5) -> list[Delivery]:
    """The next ``count`` deliveries of ``subscription``, unsettled; fail rather than hang."""
    deliveries = aiter(subscription)
    with trio.fail_after(within):
        return [await anext(deliveries) for _ in range(count)]


def bodies(deliveries: list[Delivery]) -> list[bytes]:
    return [d.body for d in deliveries]


async def test_open_broker_memory_url_gives_a_memory_broker_with_its_dead_letter_queue():
    async with open_broker("memory://", dead_letter_queue="mine.dead_letter") as broker:
        assert isinstance(broker, MemoryBroker)
        assert broker.connected
        assert broker.dead_letter_queue == "mine.dead_letter"
        await broker.publish("mine.dead_letter", b"routable")
    async with open_memory_broker() as broker:
        await broker.publish(DEAD_LETTER_QUEUE, b"routable")


async def test_subscriptions_to_one_queue_get_messages_round_robin(memory_broker: MemoryBroker):
    async with (
        memory_broker.consume(QUEUE, prefetch=10) as first,
        memory_broker.consume(QUEUE, prefetch=10) as second,
    ):
        await publish_numbers(memory_broker, 6)
        first_got = await take(first, 3)
        second_got = await take(second, 3)
    assert bodies(first_got) == [b"0", b"2", b"4"]
    assert bodies(second_got) == [b"1", b"3", b"5"]


async def test_round_robin_skips_a_subscription_whose_prefetch_is_full(
    memory_broker: MemoryBroker,
):
    async with (
        memory_broker.consume(QUEUE, prefetch=1) as narrow,
        memory_broker.consume(QUEUE, prefetch=10) as wide,
    ):
        await publish_numbers(memory_broker, 4)
        [narrow_got] = await take(narrow, 1)
        wide_got = await take(wide, 3)
    assert narrow_got.body == b"0"
    assert bodies(wide_got) == [b"1", b"2", b"3"]


async def test_no_delivery_past_prefetch_until_one_is_settled(memory_broker: MemoryBroker):
    await publish_numbers(memory_broker, 6)
    async with memory_broker.consume(QUEUE, prefetch=2) as subscription:
        held = await take(subscription, 2)

        async def take_one(into: list[Delivery]) -> None:
            into.extend(await take(subscription, 1))

        async def ack(delivery: Delivery) -> None:
            memory_broker.ack(delivery)

        async def requeue(delivery: Delivery) -> None:
            memory_broker.requeue(delivery)

        async def dead_letter(delivery: Delivery) -> None:
            await memory_broker.dead_letter(delivery, error="ValueError", worker="w1")

        for settle in (ack, requeue, dead_letter):
            got: list[Delivery] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(take_one, got)
                await trio.testing.wait_all_tasks_blocked()
                assert got == [], "a delivery arrived past prefetch=2"
                await settle(held.pop(0))
            held.append(got[0])
        # Acking "0" let "2" in; requeueing "1" brought "1" straight back (to the
        # front, ahead of "3"); dead-lettering "2" let "3" in.
        assert bodies(held) == [b"1", b"3"]
        for delivery in held:
            memory_broker.ack(delivery)
    assert bodies(await drain(memory_broker)) == [b"4", b"5"]
    assert bodies(await drain(memory_broker, memory_broker.dead_letter_queue)) == [b"2"]


async def test_prefetch_counts_deliveries_handed_out_but_not_yet_taken(
    memory_broker: MemoryBroker,
):
    await publish_numbers(memory_broker, 3)
    async with memory_broker.consume(QUEUE, prefetch=2):
        # Nothing taken from the subscription, yet two messages are out with it.
        assert bodies(await drain(memory_broker)) == [b"2"]


async def test_leaving_the_context_puts_unsettled_back_at_the_front_in_order_redelivered(
    memory_broker: MemoryBroker,
):
    await publish_numbers(memory_broker, 6)
    async with memory_broker.consume(QUEUE, prefetch=3) as subscription:
        zero, one = await take(subscription, 2)
        memory_broker.ack(one)
        # "0" is taken and unsettled, "2" and "3" are handed out but never taken.
    assert zero.body == b"0"
    back = await drain(memory_broker)
    assert bodies(back) == [b"0", b"2", b"3", b"4", b"5"]
    assert [d.redelivered for d in back] == [True, True, True, False, False]


async def test_leaving_the_context_hands_unsettled_to_the_other_subscription(
    memory_broker: MemoryBroker,
):
    async with memory_broker.consume(QUEUE, prefetch=10) as staying:
        async with memory_broker.consume(QUEUE, prefetch=10) as leaving:
            await publish_numbers(memory_broker, 2)
            assert bodies(await take(leaving, 1)) == [b"1"]
        got = await take(staying, 2)
    assert bodies(got) == [b"0", b"1"]
    assert [d.redelivered for d in got] == [False, True]


async def test_ack_after_leaving_the_context_is_ignored(memory_broker: MemoryBroker):
    await memory_broker.publish(QUEUE, b"kept")
    async with memory_broker.consume(QUEUE, prefetch=1) as subscription:
        [delivery] = await take(subscription, 1)
    memory_broker.ack(delivery)
    memory_broker.requeue(delivery)
    [again] = await drain(memory_broker)
    assert again.body == b"kept"
    assert again.redelivered


async def test_iterating_after_leaving_the_context_ends(memory_broker: MemoryBroker):
    async with memory_broker.consume(QUEUE, prefetch=1) as subscription:
        pass
    await memory_broker.publish(QUEUE, b"not for the old subscription")
    with trio.fail_after(5):
        assert [d async for d in subscription] == []
    assert len(await drain(memory_broker)) == 1


async def test_settling_a_delivery_twice_is_a_no_op(memory_broker: MemoryBroker):
    await publish_numbers(memory_broker, 2)
    first = await memory_broker.get(QUEUE)
    assert first is not None
    memory_broker.ack(first)
    memory_broker.ack(first)
    memory_broker.requeue(first)
    second = await memory_broker.get(QUEUE)
    assert second is not None
    memory_broker.requeue(second)
    memory_broker.requeue(second)
    memory_broker.ack(second)
    assert bodies(await drain(memory_broker)) == [b"1"]


async def test_requeued_get_delivery_goes_back_ahead_of_newer_messages(
    memory_broker: MemoryBroker,
):
    await memory_broker.publish(QUEUE, b"old")
    delivery = await memory_broker.get(QUEUE)
    assert delivery is not None and not delivery.redelivered
    await memory_broker.publish(QUEUE, b"new")
    # Unsettled, it is not ready: get skips it.
    newer = await memory_broker.get(QUEUE)
    assert newer is not None and newer.body == b"new"
    memory_broker.requeue(newer)
    memory_broker.requeue(delivery)
    back = await drain(memory_broker)
    assert bodies(back) == [b"old", b"new"]
    assert all(d.redelivered for d in back)


async def test_a_delivery_from_another_broker_is_refused(memory_broker: MemoryBroker):
    async with open_memory_broker() as other:
        await other.declare_queue(QUEUE)
        await other.publish(QUEUE, b"elsewhere")
        foreign = await other.get(QUEUE)
    assert foreign is not None
    with pytest.raises(TypeError, match="did not come from this memory broker"):
        memory_broker.ack(foreign)


async def test_headers_are_copied_in_and_out(memory_broker: MemoryBroker):
    headers = {"x-trace": "t1"}
    await memory_broker.publish(QUEUE, b"x", headers=headers)
    headers["x-trace"] = "changed by the publisher"
    delivery = await memory_broker.get(QUEUE)
    assert delivery is not None
    delivery.headers["x-trace"] = "changed by a handler"  # type: ignore[index]
    memory_broker.requeue(delivery)
    again = await memory_broker.get(QUEUE)
    assert again is not None
    assert again.headers == {"x-trace": "t1"}


async def test_publish_to_a_routing_key_without_a_queue_raises(memory_broker: MemoryBroker):
    with pytest.raises(PublishError, match=r"app\.outbound"):
        await memory_broker.publish("app.outbound", b"lost?")
    await memory_broker.delete_queue(QUEUE)
    with pytest.raises(PublishError):
        await memory_broker.publish(QUEUE, b"lost?")


async def test_publish_is_a_checkpoint_and_publishes_nothing_when_cancelled(
    memory_broker: MemoryBroker,
):
    with trio.testing.assert_checkpoints():
        await memory_broker.publish(QUEUE, b"published")
    with trio.CancelScope() as scope:
        scope.cancel()
        await memory_broker.publish(QUEUE, b"cancelled")
    assert scope.cancelled_caught
    assert bodies(await drain(memory_broker)) == [b"published"]


async def test_a_publishing_loop_lets_consumers_run(memory_broker: MemoryBroker):
    consumed: list[bytes] = []

    async def consume() -> None:
        async with memory_broker.consume(QUEUE, prefetch=1) as subscription:
            async for delivery in subscription:
                consumed.append(delivery.body)
                memory_broker.ack(delivery)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        await publish_numbers(memory_broker, 100)
        # With prefetch=1 the consumer had to keep up, within a message or two, during the
        # loop itself: each publish yielded to it.
        assert len(consumed) >= 90
        nursery.cancel_scope.cancel()


async def test_consuming_an_undeclared_queue_raises_naming_it(memory_broker: MemoryBroker):
    with pytest.raises(BrokerError, match=r"no such queue: 'app\.event'"):
        async with memory_broker.consume("app.event", prefetch=1):
            pytest.fail("consumed a queue that does not exist")


@pytest.mark.parametrize("operation", ["get", "purge"])
async def test_operator_calls_on_an_undeclared_queue_raise(
    memory_broker: MemoryBroker, operation: str
):
    with pytest.raises(BrokerError, match="no such queue"):
        await getattr(memory_broker, operation)("app.event")


async def test_prefetch_below_one_is_refused(memory_broker: MemoryBroker):
    with pytest.raises(ValueError, match="prefetch"):
        async with memory_broker.consume(QUEUE, prefetch=0):
            pass


async def test_purge_leaves_deliveries_out_with_consumers(memory_broker: MemoryBroker):
    await publish_numbers(memory_broker, 4)
    async with memory_broker.consume(QUEUE, prefetch=1) as subscription:
        [held] = await take(subscription, 1)
        assert await memory_broker.purge(QUEUE) == 3
        memory_broker.requeue(held)
        # The subscription's slot is free again: it holds "0" once more.
        assert await memory_broker.get(QUEUE) is None
    assert bodies(await drain(memory_broker)) == [b"0"]


async def test_deleting_a_queue_ends_its_consumers_iteration_cleanly(
    memory_broker: MemoryBroker,
):
    received: list[bytes] = []

    async def consume() -> None:
        async with memory_broker.consume(QUEUE, prefetch=10) as subscription:
            async for delivery in subscription:
                received.append(delivery.body)
                # Not acked: deleting the queue takes it too.

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await memory_broker.publish(QUEUE, b"before")
            await trio.testing.wait_all_tasks_blocked()
            await memory_broker.delete_queue(QUEUE)
    assert received == [b"before"]
    await memory_broker.declare_queue(QUEUE)
    assert await memory_broker.get(QUEUE) is None, "a deleted message came back"


async def test_deleting_a_missing_queue_is_a_no_op(memory_broker: MemoryBroker):
    await memory_broker.delete_queue("never.declared")


async def test_retry_later_holds_the_body_for_the_bucketed_delay(
    memory_broker: MemoryBroker, autojump_clock: trio.testing.MockClock
):
    start = trio.current_time()
    # 61.7 s is bucketed to 62 s, as RabbitMQ's delay queue vumi.delay.62000 would hold it.
    await memory_broker.retry_later(QUEUE, b"later", delay=61.7, headers={HEADER_ATTEMPT: 3})
    async with memory_broker.consume(QUEUE, prefetch=1) as subscription:
        [delivery] = await take(subscription, 1, within=120)
        memory_broker.ack(delivery)
    assert trio.current_time() - start == pytest.approx(62.0)
    assert delivery.body == b"later"
    assert delivery.attempt == 3
    assert not delivery.redelivered


async def test_retries_in_one_delay_bucket_come_back_in_order(
    memory_broker: MemoryBroker, autojump_clock: trio.testing.MockClock
):
    for i in range(10):
        # All of these round to the 3,600 s bucket.
        await memory_broker.retry_later(QUEUE, str(i).encode(), delay=3600 + i / 1000)
    await trio.sleep(3601)
    assert bodies(await drain(memory_broker)) == [str(i).encode() for i in range(10)]


async def test_a_long_retry_does_not_hold_up_a_short_one(
    memory_broker: MemoryBroker, autojump_clock: trio.testing.MockClock
):
    await memory_broker.retry_later(QUEUE, b"hour", delay=3600)
    await memory_broker.retry_later(QUEUE, b"minute", delay=60)
    await trio.sleep(61)
    assert bodies(await drain(memory_broker)) == [b"minute"]
    await trio.sleep(3600)
    assert bodies(await drain(memory_broker)) == [b"hour"]


async def test_retry_to_a_deleted_queue_goes_to_the_dead_letter_queue_with_the_reason(
    memory_broker: MemoryBroker, autojump_clock: trio.testing.MockClock
):
    await memory_broker.retry_later(QUEUE, b"orphan", delay=30, headers={HEADER_ATTEMPT: 1})
    await memory_broker.delete_queue(QUEUE)
    await trio.sleep(31)
    [dead] = await drain(memory_broker, memory_broker.dead_letter_queue)
    assert dead.body == b"orphan"
    assert dead.headers[HEADER_DL_QUEUE] == QUEUE
    assert "no longer exists" in dead.headers[HEADER_DL_ERROR]
    assert dead.attempt == 1


async def test_retry_dead_letters_even_when_the_dead_letter_queue_was_deleted(
    memory_broker: MemoryBroker, autojump_clock: trio.testing.MockClock
):
    await memory_broker.retry_later("never.declared", b"orphan", delay=1)
    await memory_broker.delete_queue(memory_broker.dead_letter_queue)
    await trio.sleep(2)
    assert bodies(await drain(memory_broker, memory_broker.dead_letter_queue)) == [b"orphan"]


async def test_closing_drops_pending_retries_without_waiting_for_them(
    autojump_clock: trio.testing.MockClock,
):
    start = trio.current_time()
    async with open_memory_broker() as broker:
        await broker.declare_queue(QUEUE)
        await broker.retry_later(QUEUE, b"lost with the process", delay=3600)
    assert trio.current_time() == start


async def test_operations_after_close_raise_and_settling_is_ignored():
    async with open_memory_broker() as broker:
        await broker.declare_queue(QUEUE)
        await broker.publish(QUEUE, b"x")
        delivery = await broker.get(QUEUE)
        assert delivery is not None
        await broker.aclose()
        await broker.aclose()  # idempotent
        assert not broker.connected
        broker.ack(delivery)
        broker.requeue(delivery)
        operations = [
            broker.declare_queue(QUEUE),
            broker.publish(QUEUE, b"x"),
            broker.retry_later(QUEUE, b"x", delay=1),
            broker.purge(QUEUE),
            broker.delete_queue(QUEUE),
            broker.get(QUEUE),
        ]
        for operation in operations:
            with pytest.raises(BrokerError, match="closed"):
                await operation
        with pytest.raises(BrokerError, match="closed"):
            async with broker.consume(QUEUE, prefetch=1):
                pass
        # The code inside the ``async with`` was not cancelled by closing.
        await trio.lowlevel.checkpoint()


async def test_a_consumer_iterating_when_the_broker_closes_gets_broker_error():
    async with open_memory_broker() as broker:
        await broker.declare_queue(QUEUE)

        async def consume() -> None:
            async with broker.consume(QUEUE, prefetch=1) as subscription:
                with pytest.raises(BrokerError, match="closed"):
                    async for _ in subscription:
                        pass

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.testing.wait_all_tasks_blocked()
                await broker.aclose()
