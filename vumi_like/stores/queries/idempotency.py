"""Idempotency keys: the first request with a key does the work, repeats get its answer.

A client that retries a POST (its connection dropped before it saw our answer) sends
the same ``Idempotency-Key``, and must not send its messages twice. Replicas of the API
share nothing but the database, so the claim is decided by the database: one statement,

    INSERT ... ON CONFLICT (tenant, key) DO UPDATE ... WHERE created_at < :expired

inserts the key if it is new, or takes over a row older than the TTL (or a claim
still in progress older than ``abandoned_after``: its request died with the replica
that took it, which will never answer or release it), and otherwise changes nothing.
Each claim gets an id, which the same request taking over its own abandoned claim
keeps (``resumed``): the ids of what the request stores derive from it, so the
request run again finds what its first run stored (``RequestIds``).
The primary key makes two racing inserts of one key conflict, and the
database makes the loser wait for the winner and then see its row, so exactly one
caller of any number, on any replica, is told NEW; the rest read the row and are told
REPLAY (done, here is the response), IN_PROGRESS (the first is still at it) or
MISMATCH (the key came with a different request).

A caller told NEW saves the response when done (``save_response``), or releases the key
(``release``) if it failed before anything was sent, so that a retry may go ahead. Both
may name the claim by the time it was taken (``claimed_at``, which a takeover renews):
then a request that outlived its claim, taken over since by a retry, neither frees the
key under the retry nor answers for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from vumi_like.stores.errors import ClaimLost, StoreError
from vumi_like.stores.models import ClaimOutcome, IdempotencyClaim, new_id
from vumi_like.stores.schema import idempotency_keys

__all__ = ["claim", "release", "save_response"]

_keys = idempotency_keys.c


# The statements every keyed request runs, built once per dialect: building the upsert
# for each request cost its API replica more than the database's part.
_NEVER = datetime(1970, 1, 1)  # ``abandoned_before`` when claims are never abandoned


def _claim_upsert(dialect: Any) -> Any:
    """Insert the key, or take over its row if it expired or was abandoned (the
    parameters ``expired_before`` and ``abandoned_before``); the claim's id if taken.
    The same request taking over its own abandoned claim keeps the claim's id, so it
    finds what the first run stored; any other takes the key afresh."""
    insert = dialect.insert(idempotency_keys)
    fresh = insert.excluded
    expired = _keys.created_at < sa.bindparam("expired_before")
    abandoned = _keys.created_at < sa.bindparam("abandoned_before")
    resumes = sa.and_(
        sa.not_(expired),
        _keys.request_hash == fresh.request_hash,
        _keys.claim_id.is_not(None),
    )
    return insert.on_conflict_do_update(
        index_elements=["tenant", "key"],
        set_={
            "request_hash": fresh.request_hash,
            "response_status": fresh.response_status,
            "response_body": fresh.response_body,
            "created_at": fresh.created_at,
            "claim_id": sa.case((resumes, _keys.claim_id), else_=fresh.claim_id),
        },
        where=sa.or_(expired, sa.and_(_keys.response_status.is_(None), abandoned)),
    ).returning(_keys.claim_id)


_CLAIM = {"postgresql": _claim_upsert(postgresql), "sqlite": _claim_upsert(sqlite)}
_THIS = sa.and_(_keys.tenant == sa.bindparam("owner"), _keys.key == sa.bindparam("the_key"))
_READ = sa.select(idempotency_keys).where(_THIS)
_THIS_CLAIM = sa.and_(_THIS, _keys.created_at == sa.bindparam("claimed_at"))
# Only a claim still in progress: a saved response must keep being replayed.
_RELEASE = {
    claimed: sa.delete(idempotency_keys).where(where, _keys.response_status.is_(None))
    for claimed, where in ((False, _THIS), (True, _THIS_CLAIM))
}
_SAVE = {
    claimed: sa.update(idempotency_keys)
    .where(where)
    .values(
        response_status=sa.bindparam("status", type_=_keys.response_status.type),
        response_body=sa.bindparam("body", type_=_keys.response_body.type),
    )
    for claimed, where in ((False, _THIS), (True, _THIS_CLAIM))
}


def claim(
    conn: sa.Connection,
    tenant: str,
    key: str,
    request_hash: str,
    ttl: float,
    now: datetime,
    abandoned_after: float | None = None,
) -> IdempotencyClaim:
    claim_id = new_id()
    abandoned_before = _NEVER
    if abandoned_after is not None:
        abandoned_before = now - timedelta(seconds=abandoned_after)
    taken = conn.execute(
        _CLAIM[conn.dialect.name],
        {
            "tenant": tenant,
            "key": key,
            "request_hash": request_hash,
            "response_status": None,
            "response_body": None,
            "created_at": now,
            "claim_id": claim_id,
            "expired_before": now - timedelta(seconds=ttl),
            "abandoned_before": abandoned_before,
        },
    ).one_or_none()
    if taken is not None:
        return IdempotencyClaim(
            outcome=ClaimOutcome.NEW,
            claim_id=taken.claim_id,
            resumed=taken.claim_id != claim_id,
            claimed_at=now,
        )
    # A conflict with a live row, which the upsert has locked (PostgreSQL) or which the
    # write transaction guards (SQLite): it is still there to be read.
    row = conn.execute(_READ, {"owner": tenant, "the_key": key}).one()
    if row.request_hash != request_hash:
        return IdempotencyClaim(outcome=ClaimOutcome.MISMATCH)
    if row.response_status is None:
        return IdempotencyClaim(outcome=ClaimOutcome.IN_PROGRESS)
    return IdempotencyClaim(
        outcome=ClaimOutcome.REPLAY,
        response_status=row.response_status,
        response_body=row.response_body,
    )


def save_response(
    conn: sa.Connection,
    tenant: str,
    key: str,
    status: int,
    body: Any,
    claimed_at: datetime | None = None,
) -> None:
    values = {"owner": tenant, "the_key": key, "status": status, "body": body}
    saved = conn.execute(_SAVE[claimed_at is not None], {**values, "claimed_at": claimed_at})
    if saved.rowcount == 0:
        if claimed_at is not None:
            raise ClaimLost(f"idempotency key {key!r} is not claimed by this request any more")
        raise StoreError(f"idempotency key {key!r} is not claimed")


def release(
    conn: sa.Connection, tenant: str, key: str, claimed_at: datetime | None = None
) -> bool:
    values = {"owner": tenant, "the_key": key, "claimed_at": claimed_at}
    released = conn.execute(_RELEASE[claimed_at is not None], values)
    return released.rowcount > 0
