"""Messages and their events: creating them, moving their status, and reading them back.

``apply_event`` is where the monotonic rule (``stores/status.py``) meets concurrency.
Two dispatcher replicas may take two events about one message at the same moment;
each reads the status, works out the next one and writes it, and without a lock both
would read QUEUED and the later write would win whatever it says. So the message row
is read with ``SELECT ... FOR UPDATE`` (PostgreSQL), which makes the second reader wait
until the first commits and then read its result. On SQLite the transaction already
holds the database's write lock from its first statement (``BEGIN IMMEDIATE``, see
``database.py``), and SQLAlchemy leaves FOR UPDATE out. Either way every event sees
the status left by the one before it, so the audit trail is a chain: each row's
``status_before`` is the previous row's ``status_after``.

An event id already recorded for the message is a redelivery; it is looked up under
the same lock, so it is found even when its first delivery committed a moment ago, and
the unique constraint on ``(message_id, event_id)`` backs that up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from vumi_like.stores.errors import AlreadyExists, StoreError
from vumi_like.stores.models import (
    Direction,
    EventOutcome,
    NewBatch,
    NewMessage,
    Page,
    StoredMessage,
    Transition,
)
from vumi_like.stores.pagination import keyset_page
from vumi_like.stores.queries import date_unsent, forget_unsent, from_db, take_unsent, to_db
from vumi_like.stores.schema import batches, message_events, messages, unsent_messages
from vumi_like.stores.status import MessageStatus, next_status

__all__ = [
    "apply_event",
    "batch_statuses",
    "create_many",
    "create_messages",
    "fail_abandoned_unsent",
    "get_message",
    "history",
    "list_messages",
    "record_inbound",
    "resume_messages",
]

CREATED = "created"  # the event_type of a message's first transition

# Listings go by creation time; the id breaks ties (a batch is created in one instant).
_ORDER = (messages.c.created_at, messages.c.message_id)


def _stored(message: NewMessage, direction: Direction, now: datetime) -> StoredMessage:
    return StoredMessage(
        message_id=message.message_id,
        tenant=message.tenant,
        direction=direction,
        channel=message.channel,
        message_type=message.message_type,
        sender=message.sender,
        receiver=message.receiver,
        content=message.content,
        payload=dict(message.payload),
        context=dict(message.context),
        batch_id=message.batch_id,
        party_id=message.party_id,
        origin=message.origin,
        issuer=message.issuer,
        in_reply_to=message.in_reply_to,
        status=message.status if direction is Direction.OUTBOUND else MessageStatus.RECEIVED,
        created_at=from_db(now),
        updated_at=from_db(now),
    )


def _message_row(message: StoredMessage) -> dict[str, Any]:
    row = attrs.asdict(message, recurse=False)
    del row["transitions"]
    # Enums go in as their values: psycopg would write an Enum's name.
    row.update(
        direction=message.direction.value,
        status=message.status.value,
        created_at=to_db(message.created_at),
        updated_at=to_db(message.updated_at),
    )
    return row


def _insert(conn: sa.Connection, stored: Sequence[tuple[StoredMessage, datetime]]) -> None:
    """Insert each message with its "created" transition at its ``now``."""
    try:
        conn.execute(sa.insert(messages), [_message_row(m) for m, _ in stored])
    except sa.exc.IntegrityError:
        raise AlreadyExists("a message with one of these ids exists already") from None
    conn.execute(
        sa.insert(message_events),
        [
            {
                "message_id": m.message_id,
                "event_id": None,
                "event_type": CREATED,
                "status_before": None,
                "status_after": m.status.value,
                "occurred_at": now,
                "recorded_at": now,
                "raw": None,
            }
            for m, now in stored
        ],
    )


def _check_new(new: Sequence[NewMessage], batch: NewBatch | None) -> None:
    for message in new:
        if message.status is MessageStatus.RECEIVED:
            raise StoreError("an outbound message can't start RECEIVED; use record_inbound")
        if batch is None and message.batch_id is not None:
            raise StoreError(f"message {message.message_id} names a batch but none was given")
        if batch is not None and (message.batch_id, message.tenant) != (
            batch.batch_id,
            batch.tenant,
        ):
            raise StoreError(f"message {message.message_id} is not of batch {batch.batch_id}")


def create_messages(
    conn: sa.Connection,
    new: Sequence[NewMessage],
    batch: NewBatch | None,
    now: datetime,
    unsent: bool = True,
) -> list[StoredMessage]:
    """Store outbound messages (and their batch), each QUEUED one also among the unsent
    if ``unsent`` (``outbound/unsent.py``)."""
    [stored] = create_many(conn, [(new, batch, now, unsent)])
    return stored


def create_many(
    conn: sa.Connection,
    calls: Sequence[tuple[Sequence[NewMessage], NewBatch | None, datetime, bool]],
) -> list[list[StoredMessage]]:
    """``create_messages`` for each call, in one insert per table.

    A store's concurrent creations share a transaction (``grouping.py``): an API
    replica under load creates dozens of single messages at once, and these are
    three statements in all rather than three each. A taken id fails them all, and the
    group then runs each call alone, so only the call that reused it fails.
    """
    for new, batch, _, _ in calls:
        _check_new(new, batch)
    batch_rows = [
        attrs.asdict(batch) | {"created_at": now, "message_count": len(new)}
        for new, batch, now, _ in calls
        if batch is not None
    ]
    if batch_rows:
        try:
            conn.execute(sa.insert(batches), batch_rows)
        except sa.exc.IntegrityError:
            ids = ", ".join(row["batch_id"] for row in batch_rows)
            raise AlreadyExists(f"batch {ids} exists already") from None
    created = [
        [_stored(message, Direction.OUTBOUND, now) for message in new] for new, _, now, _ in calls
    ]
    made = list(zip(created, calls, strict=True))
    rows = [(m, now) for stored, (_, _, now, _) in made for m in stored]
    if rows:
        _insert(conn, rows)
    unsent_rows = [
        {"message_id": m.message_id, "created_at": now}
        for stored, (_, _, now, unsent) in made
        if unsent
        for m in stored
        if m.status is MessageStatus.QUEUED
    ]
    if unsent_rows:
        conn.execute(sa.insert(unsent_messages), unsent_rows)
    return created


def resume_messages(
    conn: sa.Connection,
    new: Sequence[NewMessage],
    batch: NewBatch | None,
    now: datetime,
    unsent: bool = True,
) -> list[StoredMessage]:
    """``create_messages`` for a request run again under its own ``Idempotency-Key`` claim
    (``RequestIds.resumed``), whose message ids are its first run's: the messages as
    they are now, with their transitions, if that run stored them (it stored all or
    none), else created now.

    Their unsent rows are dated ``now``, so that no sweep marks failed what this run is
    about to send; that comes first, so that a sweep holding them is waited for and
    what it did is read."""
    _check_new(new, batch)
    ids = [message.message_id for message in new]
    tenants = {message.tenant for message in new}
    if unsent:
        date_unsent(conn, unsent_messages, ids, now)
    rows = conn.execute(
        sa.select(messages).where(
            messages.c.message_id.in_(ids), messages.c.tenant.in_(sorted(tenants))
        )
    )
    found = {row.message_id: _from_row(row) for row in rows}
    if not found:
        return create_messages(conn, new, batch, now, unsent)
    if len(found) != len(ids):
        raise StoreError(f"only {len(found)} of the request's {len(ids)} messages are stored")
    transitions = _transitions_of(conn, ids)
    return [attrs.evolve(found[i], transitions=transitions[i]) for i in ids]


def record_inbound(conn: sa.Connection, new: NewMessage, now: datetime) -> StoredMessage:
    if new.batch_id is not None:
        raise StoreError("an inbound message belongs to no batch")
    stored = _stored(new, Direction.INBOUND, now)
    _insert(conn, [(stored, now)])
    return stored


def _from_row(row: sa.Row[Any]) -> StoredMessage:
    values = row._asdict()
    values.update(
        direction=Direction(row.direction),
        status=MessageStatus(row.status),
        created_at=from_db(row.created_at),
        updated_at=from_db(row.updated_at),
    )
    return StoredMessage(**values)


def _transition(row: sa.Row[Any]) -> Transition:
    return Transition(
        event_type=row.event_type,
        event_id=row.event_id,
        status_before=None if row.status_before is None else MessageStatus(row.status_before),
        status_after=MessageStatus(row.status_after),
        occurred_at=from_db(row.occurred_at),
        recorded_at=from_db(row.recorded_at),
        raw=row.raw,
    )


def _transitions_of(
    conn: sa.Connection, message_ids: Sequence[str]
) -> dict[str, tuple[Transition, ...]]:
    """Each message's transitions, in the order they were recorded."""
    events = conn.execute(
        sa.select(message_events)
        .where(message_events.c.message_id.in_(message_ids))
        .order_by(message_events.c.id)
    )
    found: dict[str, list[Transition]] = {message_id: [] for message_id in message_ids}
    for event in events:
        found[event.message_id].append(_transition(event))
    return {message_id: tuple(transitions) for message_id, transitions in found.items()}


def get_message(conn: sa.Connection, tenant: str, message_id: str) -> StoredMessage | None:
    row = conn.execute(
        sa.select(messages).where(messages.c.message_id == message_id, messages.c.tenant == tenant)
    ).one_or_none()
    if row is None:
        return None
    transitions = _transitions_of(conn, [message_id])[message_id]
    return attrs.evolve(_from_row(row), transitions=transitions)


# The event path's statements, built once: a dispatcher runs them for every batch of
# events, and building a statement (and its cache key) cost more than the database's
# part. The rows are locked in message id order (see ``grouping.py``).
_LOCK_MESSAGES = (
    sa.select(messages)
    .where(messages.c.message_id.in_(sa.bindparam("message_ids", expanding=True)))
    .order_by(messages.c.message_id)
    .with_for_update()
)
_EVENT_IDS = sa.select(message_events.c.message_id, message_events.c.event_id).where(
    message_events.c.message_id.in_(sa.bindparam("message_ids", expanding=True)),
    message_events.c.event_id.is_not(None),
)
_ADD_EVENT = sa.insert(message_events)
_SET_STATUS = (
    sa.update(messages)
    .where(messages.c.message_id == sa.bindparam("moved_id"))
    .values(status=sa.bindparam("new_status"), updated_at=sa.bindparam("moved_at"))
)

# One call of ``apply_event``, as its arguments after the connection.
EventCall = tuple[str, str | None, str, MessageStatus, datetime, dict[str, Any] | None, datetime]


def apply_event(
    conn: sa.Connection,
    message_id: str,
    event_id: str | None,
    event_type: str,
    proposed: MessageStatus,
    occurred_at: datetime,
    raw: dict[str, Any] | None,
    now: datetime,
) -> EventOutcome | None:
    call = (message_id, event_id, event_type, proposed, occurred_at, raw, now)
    return apply_events(conn, [call])[0]


def apply_events(conn: sa.Connection, calls: Sequence[EventCall]) -> list[EventOutcome | None]:
    """``apply_event`` for each call, in order, as if one after the other, in four
    statements whatever their number: lock every message concerned, read the event
    ids they have, record the new events, move the statuses that moved. An event
    applies to its message as the events before it in ``calls`` left it."""
    message_ids = sorted({call[0] for call in calls})
    found = conn.execute(_LOCK_MESSAGES, {"message_ids": message_ids})
    current = {row.message_id: _from_row(row) for row in found}
    seen: set[tuple[str, str]] = set()
    if any(call[1] is not None for call in calls):
        rows = conn.execute(_EVENT_IDS, {"message_ids": list(current)})
        seen.update((row.message_id, row.event_id) for row in rows)
    outcomes: list[EventOutcome | None] = []
    new_events: list[dict[str, Any]] = []
    moved: dict[str, dict[str, Any]] = {}
    for message_id, event_id, event_type, proposed, occurred_at, raw, now in calls:
        message = current.get(message_id)
        if message is None:
            outcomes.append(None)
            continue
        before = message.status
        if event_id is not None and (message_id, event_id) in seen:
            outcomes.append(
                EventOutcome(
                    message=message, status_before=before, status_after=before, duplicate=True
                )
            )
            continue
        if event_id is not None:
            seen.add((message_id, event_id))
        after = next_status(before, proposed)
        new_events.append(
            {
                "message_id": message_id,
                "event_id": event_id,
                "event_type": event_type,
                "status_before": before.value,
                "status_after": after.value,
                "occurred_at": to_db(occurred_at),
                "recorded_at": now,
                "raw": raw,
            }
        )
        if after != before:
            message = attrs.evolve(message, status=after, updated_at=from_db(now))
            current[message_id] = message
            moved[message_id] = {
                "moved_id": message_id,
                "new_status": after.value,
                "moved_at": now,
            }
        outcomes.append(
            EventOutcome(
                message=message, status_before=before, status_after=after, duplicate=False
            )
        )
    if new_events:
        conn.execute(_ADD_EVENT, new_events)
    if moved:
        conn.execute(_SET_STATUS, list(moved.values()))
    return outcomes


def fail_abandoned_unsent(
    conn: sa.Connection,
    stored_before: datetime,
    event_type: str,
    raw: dict[str, Any],
    now: datetime,
    limit: int,
) -> list[StoredMessage]:
    """Mark DELIVERY_FAILED (an ``event_type`` event with ``raw``) the unsent messages
    stored before ``stored_before`` and still QUEUED (at most ``limit``, oldest first);
    those marked, and those failed already, with their transitions.

    A message that moved on otherwise had been published after all (an event came for
    it): it is struck off the unsent and left as it is. A failed one keeps its row,
    dated ``now``, until the caller has queued its webhooks and strikes it off
    (``forget_unsent``); should the caller die first, a sweep ``stored_before`` from
    then finds it failed, and returns it again. Replicas sweeping at once never take
    one message twice (``take_unsent``).
    """
    ids = take_unsent(conn, unsent_messages, stored_before, limit)
    if not ids:
        return []
    locked = conn.execute(_LOCK_MESSAGES, {"message_ids": ids})
    status = {row.message_id: row.status for row in locked}
    failed = MessageStatus.DELIVERY_FAILED
    queued = [m for m in ids if status.get(m) == MessageStatus.QUEUED.value]
    apply_events(conn, [(m, None, event_type, failed, now, raw, now) for m in queued])
    kept = [m for m in ids if status.get(m) in (MessageStatus.QUEUED.value, failed.value)]
    forget_unsent(conn, unsent_messages, [m for m in ids if m not in kept])
    if not kept:
        return []
    date_unsent(conn, unsent_messages, kept, now)
    rows = conn.execute(sa.select(messages).where(messages.c.message_id.in_(kept)))
    transitions = _transitions_of(conn, kept)
    return [attrs.evolve(_from_row(row), transitions=transitions[row.message_id]) for row in rows]


def batch_statuses(
    conn: sa.Connection, tenant: str, batch_id: str
) -> list[tuple[str, MessageStatus]] | None:
    found = conn.execute(
        sa.select(batches.c.batch_id).where(
            batches.c.batch_id == batch_id, batches.c.tenant == tenant
        )
    ).first()
    if found is None:
        return None
    rows = conn.execute(
        sa.select(messages.c.message_id, messages.c.status)
        .where(messages.c.batch_id == batch_id, messages.c.tenant == tenant)
        .order_by(messages.c.created_at, messages.c.message_id)
    )
    return [(row.message_id, MessageStatus(row.status)) for row in rows]


def history(
    conn: sa.Connection,
    tenant: str,
    party_id: str,
    from_date: date | None,
    to_date: date | None,
    cursor: str | None,
    limit: int,
) -> Page[StoredMessage]:
    query = sa.select(messages).where(messages.c.tenant == tenant, messages.c.party_id == party_id)
    if from_date is not None:
        query = query.where(messages.c.created_at >= datetime.combine(from_date, time.min))
    if to_date is not None:  # inclusive: everything before the next day starts
        end = datetime.combine(to_date + timedelta(days=1), time.min)
        query = query.where(messages.c.created_at < end)
    return keyset_page(conn, "history", query, _ORDER, cursor, limit, _from_row)


def list_messages(
    conn: sa.Connection, tenant: str, cursor: str | None, limit: int
) -> Page[StoredMessage]:
    query = sa.select(messages).where(messages.c.tenant == tenant)
    return keyset_page(conn, "messages", query, _ORDER, cursor, limit, _from_row)
