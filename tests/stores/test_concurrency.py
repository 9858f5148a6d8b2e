"""Two dispatcher replicas applying events for the same messages at the same time."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import trio

from tests.stores.conftest import FakeClock, StoreTarget, new_message
from vumi_like.stores import MessageStatus, MessageStore
from vumi_like.stores.status import rank

S = MessageStatus

# An ack, 18 "pending" reports and one "delivered", as a provider retrying a while sends.
EVENTS = [("e00", S.SENT)] + [(f"e{n:02}", S.DELIVERY_RETRIED) for n in range(1, 19)]
EVENTS.append(("e19", S.DELIVERED))


async def apply_all(store: MessageStore, message_id: str, seed: int) -> None:
    """Every event, in an order of its own, all at once (as many as the store allows)."""
    events = EVENTS[:]
    random.Random(seed).shuffle(events)
    async with trio.open_nursery() as nursery:
        for event_id, status in events:
            nursery.start_soon(apply, store, message_id, event_id, status)


async def apply(store: MessageStore, message_id: str, event_id: str, status: S) -> None:
    await store.apply_event(
        message_id,
        event_id=event_id,
        event_type="delivery_report" if status is not S.SENT else "ack",
        proposed_status=status,
        occurred_at=datetime(2024, 5, 1, tzinfo=UTC),
        raw={"event_id": event_id},
    )


async def test_racing_replicas_record_each_event_once_and_end_delivered(
    store_target: StoreTarget, clock: FakeClock
) -> None:
    async with store_target.open(clock=clock) as one, store_target.open(clock=clock) as two:
        messages = await one.create_messages([new_message() for _ in range(3)])
        for seed, message in enumerate(messages):
            # Both replicas get every event (a redelivery each), in different orders.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(apply_all, one, message.message_id, 2 * seed)
                nursery.start_soon(apply_all, two, message.message_id, 2 * seed + 1)

        for message in messages:
            stored = await one.get_message("acme", message.message_id)
            assert stored is not None and stored.status is S.DELIVERED
            recorded = [t.event_id or "" for t in stored.transitions[1:]]
            assert sorted(recorded) == sorted(event_id for event_id, _ in EVENTS)
            # Applied one after the other: each event saw the status the previous one left,
            # and the status never went backwards.
            for before, after in zip(stored.transitions, stored.transitions[1:], strict=False):
                assert after.status_before is before.status_after
                assert rank(after.status_after) >= rank(before.status_after)


async def test_the_store_has_threads_of_its_own(store: MessageStore) -> None:
    # Every one of trio's default worker threads is taken (by SMTP sends, say), and the
    # store still answers: it runs on its own limiter.
    default = trio.to_thread.current_default_thread_limiter()
    default.total_tokens = 1
    await default.acquire()
    try:
        with trio.fail_after(5):
            await store.create_messages([new_message()])
            assert len((await store.list_messages("acme")).items) == 1
    finally:
        default.release()
