"""Parties: how to reach a recipient the client names by its own id (channel, address).

A party is set whole, by upsert: setting it again replaces its channel and address.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vumi_like.stores.database import dialect_insert
from vumi_like.stores.models import Page, Party
from vumi_like.stores.pagination import keyset_page
from vumi_like.stores.queries import from_db
from vumi_like.stores.schema import parties

__all__ = ["delete_party", "get_party", "list_parties", "set_party"]


def _party(row: sa.Row[Any]) -> Party:
    return Party(
        tenant=row.tenant,
        party_id=row.party_id,
        channel=row.channel,
        address=row.address,
        updated_at=from_db(row.updated_at),
    )


def _this(tenant: str, party_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(parties.c.tenant == tenant, parties.c.party_id == party_id)


def set_party(
    conn: sa.Connection, tenant: str, party_id: str, channel: str, address: str, now: datetime
) -> Party:
    values = {"channel": channel, "address": address, "updated_at": now}
    insert = dialect_insert(conn, parties).values(tenant=tenant, party_id=party_id, **values)
    conn.execute(insert.on_conflict_do_update(index_elements=["tenant", "party_id"], set_=values))
    return Party(
        tenant=tenant, party_id=party_id, channel=channel, address=address, updated_at=from_db(now)
    )


def get_party(conn: sa.Connection, tenant: str, party_id: str) -> Party | None:
    row = conn.execute(sa.select(parties).where(_this(tenant, party_id))).one_or_none()
    return None if row is None else _party(row)


def delete_party(conn: sa.Connection, tenant: str, party_id: str) -> bool:
    return conn.execute(sa.delete(parties).where(_this(tenant, party_id))).rowcount > 0


def list_parties(conn: sa.Connection, tenant: str, cursor: str | None, limit: int) -> Page[Party]:
    query = sa.select(parties).where(parties.c.tenant == tenant)
    return keyset_page(conn, "parties", query, [parties.c.party_id], cursor, limit, _party)
