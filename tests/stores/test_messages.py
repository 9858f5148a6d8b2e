"""Messages, their events and batches, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import trio

from tests.stores.conftest import FakeClock, new_message
from vumi_like.stores import (
    AlreadyExists,
    Direction,
    MessageStatus,
    MessageStore,
    NewBatch,
    NewMessage,
    StoreError,
    status_for_event,
)
from vumi_like.stores.queries import to_db
from vumi_like.stores.queries.messages import apply_events, create_many

S = MessageStatus
WHEN = datetime(2024, 5, 1, 13, 0, tzinfo=UTC)

# (event_type, delivery_status) of the events a transport and a provider send.
ACK = ("ack", None)
DR_PENDING = ("delivery_report", "pending")
DR_DELIVERED = ("delivery_report", "delivered")


def raw_event(event_id: str, event_type: str, delivery_status: str | None) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "delivery_status": delivery_status,
        "message_type": "event",
    }


async def send_event(
    store: MessageStore,
    message_id: str,
    event_id: str | None,
    event: tuple[str, str | None],
    occurred_at: datetime = WHEN,
) -> Any:
    event_type, delivery_status = event
    return await store.apply_event(
        message_id,
        event_id=event_id,
        event_type=event_type,
        proposed_status=status_for_event(event_type, delivery_status),
        occurred_at=occurred_at,
        raw=raw_event(event_id or "", event_type, delivery_status),
    )


async def test_a_new_message_is_queued_with_its_created_transition(
    store: MessageStore, clock: FakeClock
) -> None:
    [created] = await store.create_messages(
        [
            new_message(
                payload={"subject": "Hi", "attachments": [{"name": "a.pdf"}]},
                context={"order": 42, "tags": ["x"]},
                party_id="party-1",
                origin="crm",
                issuer="alice",
            )
        ]
    )
    stored = await store.get_message("acme", created.message_id)
    assert stored is not None
    assert stored.status is S.QUEUED
    assert stored.direction is Direction.OUTBOUND
    assert stored.payload == {"subject": "Hi", "attachments": [{"name": "a.pdf"}]}
    assert stored.context == {"order": 42, "tags": ["x"]}
    assert (stored.party_id, stored.origin, stored.issuer) == ("party-1", "crm", "alice")
    assert stored.created_at.tzinfo is UTC
    assert stored.created_at == created.created_at
    [transition] = stored.transitions
    assert (transition.event_type, transition.status_before, transition.status_after) == (
        "created",
        None,
        S.QUEUED,
    )
    assert transition.raw is None


async def test_transitions_are_kept_in_order_with_their_raw_events(store: MessageStore) -> None:
    [message] = await store.create_messages([new_message()])
    await send_event(store, message.message_id, "e1", ACK, WHEN)
    await send_event(store, message.message_id, "e2", DR_PENDING, WHEN + timedelta(seconds=5))
    await send_event(store, message.message_id, "e3", DR_DELIVERED, WHEN + timedelta(seconds=9))

    stored = await store.get_message("acme", message.message_id)
    assert stored is not None and stored.status is S.DELIVERED
    steps = [(t.event_id, t.status_before, t.status_after) for t in stored.transitions]
    assert steps == [
        (None, None, S.QUEUED),
        ("e1", S.QUEUED, S.SENT),
        ("e2", S.SENT, S.DELIVERY_RETRIED),
        ("e3", S.DELIVERY_RETRIED, S.DELIVERED),
    ]
    assert stored.transitions[2].raw == raw_event("e2", "delivery_report", "pending")
    assert stored.transitions[3].occurred_at == WHEN + timedelta(seconds=9)
    assert all(t.recorded_at.tzinfo is UTC for t in stored.transitions)


@pytest.mark.parametrize("order", list(itertools.permutations([ACK, DR_PENDING, DR_DELIVERED])))
async def test_ack_pending_and_delivered_end_delivered_in_any_order(
    store: MessageStore, order: tuple[tuple[str, str | None], ...]
) -> None:
    [message] = await store.create_messages([new_message()])
    for number, event in enumerate(order):
        await send_event(store, message.message_id, f"e{number}", event)
    stored = await store.get_message("acme", message.message_id)
    assert stored is not None and stored.status is S.DELIVERED
    assert len(stored.transitions) == 4  # created, then every event, moving or not


async def test_a_late_ack_is_recorded_but_never_moves_delivered_back_to_sent(
    store: MessageStore,
) -> None:
    [message] = await store.create_messages([new_message()])
    await send_event(store, message.message_id, "dr", DR_DELIVERED)
    outcome = await send_event(store, message.message_id, "ack", ACK)

    assert outcome.status_before is S.DELIVERED and outcome.status_after is S.DELIVERED
    assert not outcome.changed and not outcome.duplicate
    assert outcome.message.status is S.DELIVERED
    stored = await store.get_message("acme", message.message_id)
    assert stored is not None and stored.status is S.DELIVERED
    assert stored.transitions[-1].event_id == "ack"
    assert not stored.transitions[-1].changed


async def test_a_redelivered_event_is_recorded_once(store: MessageStore) -> None:
    [message] = await store.create_messages([new_message()])
    first = await send_event(store, message.message_id, "e1", ACK)
    again = await send_event(store, message.message_id, "e1", ACK)

    assert first.changed and not first.duplicate
    assert again.duplicate and not again.changed
    assert again.status_before is S.SENT and again.message.status is S.SENT
    stored = await store.get_message("acme", message.message_id)
    assert stored is not None
    assert [t.event_id for t in stored.transitions] == [None, "e1"]


async def test_the_same_event_id_on_another_message_is_not_a_duplicate(
    store: MessageStore,
) -> None:
    one, two = await store.create_messages([new_message(), new_message()])
    await send_event(store, one.message_id, "e1", ACK)
    outcome = await send_event(store, two.message_id, "e1", ACK)
    assert not outcome.duplicate and outcome.status_after is S.SENT


async def test_events_without_an_id_are_all_recorded(store: MessageStore) -> None:
    [message] = await store.create_messages([new_message()])
    await send_event(store, message.message_id, None, ACK)
    outcome = await send_event(store, message.message_id, None, ACK)
    assert not outcome.duplicate
    stored = await store.get_message("acme", message.message_id)
    assert stored is not None and len(stored.transitions) == 3


async def test_an_event_for_an_unknown_message_is_none(store: MessageStore) -> None:
    assert await send_event(store, "0" * 32, "e1", ACK) is None


async def test_the_event_outcome_carries_what_a_webhook_needs(store: MessageStore) -> None:
    [message] = await store.create_messages(
        [new_message(tenant="globex", channel="email", context={"ref": "r-1"})]
    )
    outcome = await send_event(store, message.message_id, "e1", DR_DELIVERED)
    assert outcome.message.tenant == "globex"
    assert outcome.message.channel == "email"
    assert outcome.message.context == {"ref": "r-1"}
    assert outcome.message.status is S.DELIVERED


async def test_event_times_are_taken_as_utc_whatever_zone_they_come_in(
    store: MessageStore,
) -> None:
    [message] = await store.create_messages([new_message()])
    plus_two = timezone(timedelta(hours=2))
    await send_event(store, message.message_id, "e1", ACK, datetime(2024, 5, 1, 15, 0))
    await send_event(
        store, message.message_id, "e2", DR_PENDING, datetime(2024, 5, 1, 15, 0, tzinfo=plus_two)
    )
    stored = await store.get_message("acme", message.message_id)
    assert stored is not None
    assert stored.transitions[1].occurred_at == datetime(2024, 5, 1, 15, 0, tzinfo=UTC)
    assert stored.transitions[2].occurred_at == datetime(2024, 5, 1, 13, 0, tzinfo=UTC)


async def test_a_message_with_no_feedback_settings_stays_so(store: MessageStore) -> None:
    [message] = await store.create_messages([new_message(status=S.NO_FEEDBACK_SETTINGS_FOUND)])
    outcome = await send_event(store, message.message_id, "e1", ACK)
    assert outcome.status_after is S.NO_FEEDBACK_SETTINGS_FOUND


async def test_an_inbound_message_is_received(store: MessageStore) -> None:
    stored = await store.record_inbound(
        new_message(sender="+27820000002", receiver="1234", party_id="p", in_reply_to="m0")
    )
    got = await store.get_message("acme", stored.message_id)
    assert got is not None
    assert (got.direction, got.status, got.in_reply_to) == (Direction.INBOUND, S.RECEIVED, "m0")
    assert got.transitions[0].status_after is S.RECEIVED


async def test_an_outbound_message_cannot_start_received(store: MessageStore) -> None:
    with pytest.raises(StoreError, match="record_inbound"):
        await store.create_messages([new_message(status=S.RECEIVED)])


async def test_a_message_id_is_used_once(store: MessageStore) -> None:
    [message] = await store.create_messages([new_message()])
    with pytest.raises(AlreadyExists):
        await store.create_messages([new_message(message_id=message.message_id)])
    with pytest.raises(AlreadyExists):
        await store.record_inbound(new_message(message_id=message.message_id))


def test_a_message_id_longer_than_a_uuid_is_refused_before_any_database() -> None:
    with pytest.raises(ValueError):
        new_message(message_id="x" * 33)


async def test_a_batch_is_stored_with_its_messages_and_their_statuses(
    store: MessageStore,
) -> None:
    batch = NewBatch(tenant="acme")
    created = await store.create_messages(
        [new_message(batch_id=batch.batch_id, receiver=f"+2782000000{i}") for i in range(3)],
        batch=batch,
    )
    await send_event(store, created[1].message_id, "e1", ACK)

    statuses = await store.batch_statuses("acme", batch.batch_id)
    assert statuses is not None
    # Created in one instant, so in message id order.
    assert [message_id for message_id, _ in statuses] == sorted(m.message_id for m in created)
    assert dict(statuses) == {
        created[0].message_id: S.QUEUED,
        created[1].message_id: S.SENT,
        created[2].message_id: S.QUEUED,
    }
    assert await store.batch_statuses("acme", "no-such-batch") is None


async def test_a_failed_batch_stores_nothing(store: MessageStore) -> None:
    batch = NewBatch(tenant="acme")
    [taken] = await store.create_messages([new_message()])
    with pytest.raises(AlreadyExists):
        await store.create_messages(
            [
                new_message(batch_id=batch.batch_id),
                new_message(batch_id=batch.batch_id, message_id=taken.message_id),
            ],
            batch=batch,
        )
    assert await store.batch_statuses("acme", batch.batch_id) is None
    assert len((await store.list_messages("acme")).items) == 1


async def test_a_batch_id_is_used_once(store: MessageStore) -> None:
    batch = NewBatch(tenant="acme")
    await store.create_messages([new_message(batch_id=batch.batch_id)], batch=batch)
    with pytest.raises(AlreadyExists):
        await store.create_messages([new_message(batch_id=batch.batch_id)], batch=batch)


@pytest.mark.parametrize(
    "fields",
    [{"batch_id": "other"}, {"batch_id": None}, {"tenant": "globex", "batch_id": "b1"}],
)
async def test_every_message_of_a_batch_names_it_and_shares_its_tenant(
    store: MessageStore, fields: dict[str, Any]
) -> None:
    with pytest.raises(StoreError, match="batch"):
        await store.create_messages(
            [new_message(**fields)], batch=NewBatch(tenant="acme", batch_id="b1")
        )


async def test_a_message_naming_a_batch_comes_with_it(store: MessageStore) -> None:
    with pytest.raises(StoreError, match="batch"):
        await store.create_messages([new_message(batch_id="b1")])


async def test_creations_made_as_one_are_those_made_one_after_the_other(
    store: MessageStore, clock: FakeClock
) -> None:
    # How a busy API replica's creations are stored (queries.messages.create_many).
    batch = NewBatch(tenant="acme")
    single = new_message(receiver="+27820000009")
    batched = [new_message(batch_id=batch.batch_id) for _ in range(2)]
    other = new_message(tenant="globex")
    now = to_db(clock())
    created = await store._run(
        create_many,
        [([single], None, now, True), (batched, batch, now, True), ([other], None, now, False)],
    )
    assert [[m.message_id for m in c] for c in created] == [
        [single.message_id],
        [m.message_id for m in batched],
        [other.message_id],
    ]
    for tenant, message in [("acme", single), ("acme", batched[1]), ("globex", other)]:
        stored = await store.get_message(tenant, message.message_id)
        assert stored is not None and stored.status == S.QUEUED
        assert [(t.event_type, t.status_after) for t in stored.transitions] == [
            ("created", S.QUEUED)
        ]
    statuses = await store.batch_statuses("acme", batch.batch_id)
    assert statuses is not None and len(statuses) == 2


async def test_concurrent_creations_fail_only_where_an_id_is_taken(store: MessageStore) -> None:
    [taken] = await store.create_messages([new_message()])
    fresh = [new_message() for _ in range(20)]
    refused: list[str] = []

    async def create(message: NewMessage) -> None:
        try:
            await store.create_messages([message])
        except AlreadyExists:
            refused.append(message.message_id)

    async with trio.open_nursery() as nursery:
        for message in [*fresh[:10], new_message(message_id=taken.message_id), *fresh[10:]]:
            nursery.start_soon(create, message)
    assert refused == [taken.message_id]
    for message in fresh:
        assert await store.get_message("acme", message.message_id) is not None


async def test_a_batch_of_events_is_applied_as_one_after_the_other(
    store: MessageStore, clock: FakeClock
) -> None:
    # How a busy dispatcher's events are applied (queries.messages.apply_events): the
    # outcomes and the history must be those of applying each in turn.
    first, second = await store.create_messages([new_message(), new_message()])
    now = to_db(clock())

    def call(message_id: str, event_id: str | None, proposed: MessageStatus) -> Any:
        return (message_id, event_id, "ack", proposed, WHEN, {"event_id": event_id}, now)

    a, b = first.message_id, second.message_id
    outcomes = await store._run(
        apply_events,
        [
            call(a, "e1", MessageStatus.SENT),
            call(b, "e2", MessageStatus.DELIVERED),
            call(a, "e3", MessageStatus.DELIVERED),
            call(a, "e1", MessageStatus.SENT),  # e1 again: a duplicate, in the same batch
            call("no-such-message", "e4", MessageStatus.SENT),
            call(a, None, MessageStatus.SENT),  # late: recorded, moves nothing back
            call(b, "e2", MessageStatus.DELIVERED),  # e2 again
        ],
    )
    moves = [
        None if o is None else (o.status_before, o.status_after, o.duplicate) for o in outcomes
    ]
    assert moves == [
        (MessageStatus.QUEUED, MessageStatus.SENT, False),
        (MessageStatus.QUEUED, MessageStatus.DELIVERED, False),
        (MessageStatus.SENT, MessageStatus.DELIVERED, False),
        (MessageStatus.DELIVERED, MessageStatus.DELIVERED, True),
        None,
        (MessageStatus.DELIVERED, MessageStatus.DELIVERED, False),
        (MessageStatus.DELIVERED, MessageStatus.DELIVERED, True),
    ]
    stored = await store.get_message("acme", a)
    assert stored is not None and stored.status == MessageStatus.DELIVERED
    chain = [(t.event_id, t.status_before, t.status_after) for t in stored.transitions]
    assert chain[1:] == [
        ("e1", MessageStatus.QUEUED, MessageStatus.SENT),
        ("e3", MessageStatus.SENT, MessageStatus.DELIVERED),
        (None, MessageStatus.DELIVERED, MessageStatus.DELIVERED),
    ]
    # A later batch finds the events recorded by this one.
    [again] = await store._run(apply_events, [call(a, "e3", MessageStatus.DELIVERED)])
    assert again is not None and again.duplicate
