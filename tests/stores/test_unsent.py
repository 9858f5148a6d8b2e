"""The unsent: messages stored and not yet known to be published, and the sweep that
marks failed those a dead API replica left behind (``outbound/outbox.py``)."""

from __future__ import annotations

from typing import Any

import trio

from tests.stores.conftest import FakeClock, StoreTarget, new_message
from vumi_like.stores import MessageStatus, MessageStore

S = MessageStatus
ABANDONED = {"error": "its replica stopped"}


async def sweep(store: MessageStore, older_than: float = 60, **kwargs: Any) -> list[str]:
    """Sweep, and strike off what it returns, as the outbox does once it has queued
    their webhooks; the ids."""
    failed = await store.fail_abandoned_unsent(
        older_than, event_type="publish_failed", raw=ABANDONED, **kwargs
    )
    await store.forget_unsent([message.message_id for message in failed])
    return [message.message_id for message in failed]


async def an_event(
    store: MessageStore,
    clock: FakeClock,
    message_id: str,
    event_type: str,
    status: MessageStatus,
    raw: dict[str, Any] | None = None,
) -> None:
    """A transport's event about ``message_id``, now."""
    await store.apply_event(
        message_id,
        event_id=f"{event_type}-1",
        event_type=event_type,
        proposed_status=status,
        occurred_at=clock.now,
        raw=raw,
    )


async def status_of(store: MessageStore, message_id: str) -> MessageStatus:
    stored = await store.get_message("acme", message_id)
    assert stored is not None
    return stored.status


async def test_a_message_left_unsent_is_marked_failed_once_old_enough(
    store: MessageStore, clock: FakeClock
) -> None:
    [message] = await store.create_messages([new_message()])
    clock.advance(59)
    assert await sweep(store) == []
    assert await status_of(store, message.message_id) == S.QUEUED
    clock.advance(2)
    assert await sweep(store) == [message.message_id]
    stored = await store.get_message("acme", message.message_id)
    assert stored is not None and stored.status == S.DELIVERY_FAILED
    last = stored.transitions[-1]
    assert (last.event_type, last.status_before, last.status_after) == (
        "publish_failed",
        S.QUEUED,
        S.DELIVERY_FAILED,
    )
    assert last.raw == ABANDONED
    assert await sweep(store) == []  # struck off: swept once
    assert len((await store.get_message("acme", message.message_id)).transitions) == 2  # type: ignore[union-attr]


async def test_a_message_marked_by_a_sweep_that_stopped_is_returned_again(
    store: MessageStore, clock: FakeClock
) -> None:
    # The sweeping replica died before queuing the webhooks and striking it off.
    [message] = await store.create_messages([new_message()])
    clock.advance(61)
    [failed] = await store.fail_abandoned_unsent(60, event_type="publish_failed", raw=ABANDONED)
    assert failed.message_id == message.message_id
    assert failed.status == S.DELIVERY_FAILED
    assert [t.status_after for t in failed.transitions] == [S.QUEUED, S.DELIVERY_FAILED]
    assert failed.transitions[-1].raw == ABANDONED
    clock.advance(59)
    assert await sweep(store) == []  # its row was dated anew when it was marked
    clock.advance(2)
    assert await sweep(store) == [message.message_id]
    stored = await store.get_message("acme", message.message_id)
    assert stored is not None
    assert [t.status_after for t in stored.transitions] == [S.QUEUED, S.DELIVERY_FAILED]
    clock.advance(120)
    assert await sweep(store) == []  # struck off by the second


async def test_a_message_failed_otherwise_whose_row_was_left_is_returned_too(
    store: MessageStore, clock: FakeClock
) -> None:
    # Published and nacked before its replica, which then died, could strike it off.
    [message] = await store.create_messages([new_message()])
    nack = {"event_type": "nack", "nack_reason": "no route"}
    await an_event(store, clock, message.message_id, "nack", S.DELIVERY_FAILED, nack)
    clock.advance(61)
    [failed] = await store.fail_abandoned_unsent(60, event_type="publish_failed", raw=ABANDONED)
    assert [t.event_type for t in failed.transitions] == ["created", "nack"]
    assert failed.transitions[-1].raw == nack


async def test_a_request_resumed_late_keeps_what_it_sends_from_the_sweep(
    store: MessageStore, clock: FakeClock
) -> None:
    # Its first run died; a retry with its key resumes it just before the sweep's time.
    drafts = [new_message(), new_message()]
    await store.create_messages(drafts)
    clock.advance(59)
    resumed = await store.resume_messages(drafts)
    assert [m.status for m in resumed] == [S.QUEUED, S.QUEUED]
    clock.advance(2)
    assert await sweep(store) == []  # dated anew by the resumed run
    await store.forget_unsent([drafts[0].message_id])  # it sent one, then died too
    clock.advance(59)
    assert await sweep(store) == [drafts[1].message_id]


async def test_what_was_published_or_never_to_be_sent_is_left_alone(
    store: MessageStore, clock: FakeClock
) -> None:
    published, acked, unsent = await store.create_messages([new_message() for _ in range(3)])
    [unreachable] = await store.create_messages([new_message(status=S.NO_FEEDBACK_SETTINGS_FOUND)])
    await store.forget_unsent([published.message_id])
    # Published, and acked before its replica could strike it off.
    await an_event(store, clock, acked.message_id, "ack", S.SENT)
    clock.advance(120)
    assert await sweep(store) == [unsent.message_id]
    assert await status_of(store, published.message_id) == S.QUEUED
    assert await status_of(store, acked.message_id) == S.SENT
    assert await status_of(store, unreachable.message_id) == S.NO_FEEDBACK_SETTINGS_FOUND
    assert await status_of(store, unsent.message_id) == S.DELIVERY_FAILED
    assert await sweep(store) == []  # the acked one was struck off too


async def test_messages_stored_to_be_sent_by_others_are_not_among_the_unsent(
    store: MessageStore, clock: FakeClock
) -> None:
    # The notifications' fan-out sends its own, and finds what a dead run left itself.
    [message] = await store.create_messages([new_message()], unsent=False)
    [resumed] = await store.resume_messages([new_message()], unsent=False)
    clock.advance(120)
    assert await sweep(store) == []
    assert await status_of(store, message.message_id) == S.QUEUED
    assert await status_of(store, resumed.message_id) == S.QUEUED


async def test_a_sweep_takes_the_oldest_first_up_to_its_limit(
    store: MessageStore, clock: FakeClock
) -> None:
    stored = [(await store.create_messages([new_message()]))[0] for _ in range(5)]
    clock.advance(120)
    first = await sweep(store, limit=3)
    assert sorted(first) == sorted(m.message_id for m in stored[:3])
    assert sorted(await sweep(store)) == sorted(m.message_id for m in stored[3:])


async def test_replicas_sweeping_at_once_mark_each_message_once(
    store_target: StoreTarget, clock: FakeClock
) -> None:
    async with store_target.open(clock=clock) as one, store_target.open(clock=clock) as two:
        stored = await one.create_messages([new_message() for _ in range(200)])
        clock.advance(120)
        swept: list[list[str]] = []

        async def sweeper(store: MessageStore) -> None:
            while marked := await sweep(store, limit=20):
                swept.append(marked)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sweeper, one)
            nursery.start_soon(sweeper, two)
        marked = [message_id for batch in swept for message_id in batch]
        assert sorted(marked) == sorted(m.message_id for m in stored)
        for message in stored[:5]:
            found = await one.get_message("acme", message.message_id)
            assert found is not None
            assert [t.status_after for t in found.transitions] == [S.QUEUED, S.DELIVERY_FAILED]


FAILED = {"state": "failed", "reason": "its replica stopped"}


async def notification(store: MessageStore, deliveries: dict[str, Any]) -> int:
    created = await store.create_notification("acme", "xform", "1", "bob", "Hello", {}, deliveries)
    return created.id


async def test_a_notification_left_unpublished_has_its_queued_backends_failed(
    store: MessageStore, clock: FakeClock
) -> None:
    queued = {"state": "queued"}
    orphan = await notification(store, {"mqtt": queued, "channels": queued})
    # The fan-out job went; the MQTT publish did not.
    half = await notification(store, {"mqtt": queued, "channels": {"state": "done"}})
    published = await notification(store, {"mqtt": queued})
    await store.forget_unsent_notifications([published])
    clock.advance(59)
    assert await store.fail_abandoned_unsent_notifications(60, FAILED) == []
    clock.advance(2)
    assert sorted(await store.fail_abandoned_unsent_notifications(60, FAILED)) == [orphan, half]
    found = {pk: await store.get_notification("acme", pk) for pk in (orphan, half, published)}
    assert found[orphan] is not None and found[half] is not None and found[published] is not None
    assert found[orphan].deliveries == {"mqtt": FAILED, "channels": FAILED}
    assert found[half].deliveries == {"mqtt": FAILED, "channels": {"state": "done"}}
    assert found[published].deliveries == {"mqtt": queued}
    assert await store.fail_abandoned_unsent_notifications(60, FAILED) == []  # struck off


async def test_a_notification_published_meanwhile_is_struck_off_and_left_alone(
    store: MessageStore, clock: FakeClock
) -> None:
    pk = await notification(store, {"mqtt": {"state": "queued"}})
    await store.record_notification_delivery(pk, "mqtt", {"state": "published"})
    clock.advance(120)
    assert await store.fail_abandoned_unsent_notifications(60, FAILED) == []
    found = await store.get_notification("acme", pk)
    assert found is not None and found.deliveries == {"mqtt": {"state": "published"}}
    # Deleted meanwhile: nothing to mark, and its row goes too.
    gone = await notification(store, {"mqtt": {"state": "queued"}})
    assert await store.delete_notification("acme", gone)
    clock.advance(120)
    assert await store.fail_abandoned_unsent_notifications(60, FAILED) == []
    # Its id, which SQLite gives again, is free among the unsent too.
    again = await notification(store, {"mqtt": {"state": "queued"}})
    assert await store.delete_notification("acme", again)
    assert await notification(store, {"mqtt": {"state": "queued"}}) > pk


async def test_a_notification_resumed_late_is_kept_from_the_sweep(
    store: MessageStore, clock: FakeClock
) -> None:
    queued = {"state": "queued"}
    created = await store.create_notification(
        "acme", "xform", "1", "bob", "Hello", {}, {"mqtt": queued}, request_id="r1"
    )
    clock.advance(59)
    resumed = await store.resume_notification("acme", "r1")
    assert resumed is not None and resumed.id == created.id
    assert await store.resume_notification("acme", "r2") is None
    clock.advance(2)
    assert await store.fail_abandoned_unsent_notifications(60, FAILED) == []
    clock.advance(59)
    assert await store.fail_abandoned_unsent_notifications(60, FAILED) == [created.id]
