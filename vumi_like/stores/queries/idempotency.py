"""Idempotency keys: the first request with a key does the work, repeats get its answer.

A client that retries a POST (its connection dropped before it saw our answer) sends
the same ``Idempotency-Key``, and must not send its messages twice. Replicas of the API
share nothing but the database, so the claim is decided by the database: one statement,

    INSERT ... ON CONFLICT (tenant, key) DO UPDATE ... WHERE created_at < :expired

inserts the key if it is new, or takes over a row older than the TTL (or a claim
still in progress older than ``abandoned_after``: its request died with the replica
that took it, which will never answer or release it), and otherwise changes nothing.
The primary key makes two racing inserts of one key conflict, and the
database makes the loser wait for the winner and then see its row, so exactly one
caller of any number, on any replica, is told NEW; the rest read the row and are told
REPLAY (done, here is the response), IN_PROGRESS (the first is still at it) or
MISMATCH (the key came with a different request).

A caller told NEW saves the response when done (``save_response``), or releases the key
(``release``) if it failed before anything was sent, so that a retry may go ahead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from vumi_like.stores.database import dialect_insert
from vumi_like.stores.errors import StoreError
from vumi_like.stores.models import ClaimOutcome, IdempotencyClaim
from vumi_like.stores.schema import idempotency_keys

__all__ = ["claim", "release", "save_response"]

_keys = idempotency_keys.c


def _this(tenant: str, key: str) -> sa.ColumnElement[bool]:
    return sa.and_(_keys.tenant == tenant, _keys.key == key)


def claim(
    conn: sa.Connection,
    tenant: str,
    key: str,
    request_hash: str,
    ttl: float,
    now: datetime,
    abandoned_after: float | None = None,
) -> IdempotencyClaim:
    fresh = {
        "request_hash": request_hash,
        "response_status": None,
        "response_body": None,
        "created_at": now,
    }
    insert = dialect_insert(conn, idempotency_keys).values(tenant=tenant, key=key, **fresh)
    free = _keys.created_at < now - timedelta(seconds=ttl)
    if abandoned_after is not None:
        abandoned = _keys.created_at < now - timedelta(seconds=abandoned_after)
        free = sa.or_(free, sa.and_(_keys.response_status.is_(None), abandoned))
    taken = conn.execute(
        insert.on_conflict_do_update(
            index_elements=["tenant", "key"],
            set_=fresh,
            where=free,
        ),
        # SQLAlchemy reports an INSERT's rowcount only when asked to.
        execution_options={"preserve_rowcount": True},
    )
    if taken.rowcount == 1:
        return IdempotencyClaim(outcome=ClaimOutcome.NEW)
    # A conflict with a live row, which the upsert has locked (PostgreSQL) or which the
    # write transaction guards (SQLite): it is still there to be read.
    row = conn.execute(sa.select(idempotency_keys).where(_this(tenant, key))).one()
    if row.request_hash != request_hash:
        return IdempotencyClaim(outcome=ClaimOutcome.MISMATCH)
    if row.response_status is None:
        return IdempotencyClaim(outcome=ClaimOutcome.IN_PROGRESS)
    return IdempotencyClaim(
        outcome=ClaimOutcome.REPLAY,
        response_status=row.response_status,
        response_body=row.response_body,
    )


def save_response(conn: sa.Connection, tenant: str, key: str, status: int, body: Any) -> None:
    saved = conn.execute(
        sa.update(idempotency_keys)
        .where(_this(tenant, key))
        .values(response_status=status, response_body=body)
    )
    if saved.rowcount == 0:
        raise StoreError(f"idempotency key {key!r} is not claimed")


def release(conn: sa.Connection, tenant: str, key: str) -> bool:
    # Only a claim still in progress: a saved response must keep being replayed.
    released = conn.execute(
        sa.delete(idempotency_keys).where(_this(tenant, key), _keys.response_status.is_(None))
    )
    return released.rowcount > 0
