"""The store's SQL, by subject: plain synchronous functions taking an open connection.

Each function runs inside a transaction that ``store.MessageStore`` opened for it on a
worker thread; none of them commits, sleeps or knows about trio. Times go into the
database as naive UTC (see ``schema.py``) and come out aware, through ``to_db`` and
``from_db``, so that no other code handles a naive datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["from_db", "to_db"]


def to_db(value: datetime) -> datetime:
    """A time as the database keeps it: naive UTC. A naive ``value`` is UTC already."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def from_db(value: datetime) -> datetime:
    """A time from the database (naive UTC) as an aware UTC datetime."""
    return value.replace(tzinfo=UTC)
