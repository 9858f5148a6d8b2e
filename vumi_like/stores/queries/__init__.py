"""The store's SQL, by subject: plain synchronous functions taking an open connection.

Each function runs inside a transaction that ``store.MessageStore`` opened for it on a
worker thread; none of them commits, sleeps or knows about trio. Times go into the
database as naive UTC (see ``schema.py``) and come out aware, through ``to_db`` and
``from_db``, so that no other code handles a naive datetime.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

__all__ = ["date_unsent", "forget_unsent", "from_db", "take_unsent", "to_db"]


def to_db(value: datetime) -> datetime:
    """A time as the database keeps it: naive UTC. A naive ``value`` is UTC already."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def from_db(value: datetime) -> datetime:
    """A time from the database (naive UTC) as an aware UTC datetime."""
    return value.replace(tzinfo=UTC)


def take_unsent(
    conn: sa.Connection, table: sa.Table, stored_before: datetime, limit: int
) -> list[Any]:
    """The ids (the first column) of at most ``limit`` rows of the unsent ``table``
    stored before ``stored_before``, oldest first, locked for this transaction. Rows
    another transaction holds are skipped (PostgreSQL), so replicas sweeping at once
    never take one row twice (``outbound/unsent.py``)."""
    taken = conn.execute(
        sa.select(table.c[0])
        .where(table.c.created_at < stored_before)
        .order_by(table.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [row[0] for row in taken]


def forget_unsent(conn: sa.Connection, table: sa.Table, ids: Sequence[Any]) -> None:
    """Strike ``ids`` (the first column) from the unsent ``table``: published, failed by
    their request, or gone."""
    conn.execute(sa.delete(table).where(table.c[0].in_(list(ids))))


def date_unsent(conn: sa.Connection, table: sa.Table, ids: Any, now: datetime) -> None:
    """Date the rows of ``ids`` (the first column; a sequence or a subquery) in the
    unsent ``table`` ``now``: no sweep takes them for another request's time."""
    conn.execute(sa.update(table).where(table.c[0].in_(ids)).values(created_at=now))
