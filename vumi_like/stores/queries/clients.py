"""OAuth2 clients: who may ask for a token, for which tenant. Secrets are stored hashed.

Only hashes pass through here: hashing and checking are slow on purpose
(``client_secrets.py``), so the store does them outside any transaction, where they
hold no connection and, on SQLite, no write lock.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from vumi_like.stores.errors import AlreadyExists
from vumi_like.stores.models import ClientInfo
from vumi_like.stores.queries import from_db
from vumi_like.stores.schema import clients

__all__ = ["add_client", "client_credentials", "list_clients", "remove_client"]


def add_client(
    conn: sa.Connection, client_id: str, tenant: str, secret_hash: str, now: datetime
) -> None:
    row = {"client_id": client_id, "tenant": tenant, "secret_hash": secret_hash, "created_at": now}
    try:
        conn.execute(sa.insert(clients), [row])
    except sa.exc.IntegrityError:
        raise AlreadyExists(f"client {client_id!r} exists already") from None


def client_credentials(conn: sa.Connection, client_id: str) -> tuple[str, str] | None:
    """The client's tenant and secret hash; None if there is no such client."""
    row = conn.execute(
        sa.select(clients.c.tenant, clients.c.secret_hash).where(clients.c.client_id == client_id)
    ).one_or_none()
    return None if row is None else (row.tenant, row.secret_hash)


def list_clients(conn: sa.Connection) -> list[ClientInfo]:
    rows = conn.execute(
        sa.select(clients.c.client_id, clients.c.tenant, clients.c.created_at).order_by(
            clients.c.client_id
        )
    )
    return [
        ClientInfo(client_id=r.client_id, tenant=r.tenant, created_at=from_db(r.created_at))
        for r in rows
    ]


def remove_client(conn: sa.Connection, client_id: str) -> bool:
    return conn.execute(sa.delete(clients).where(clients.c.client_id == client_id)).rowcount > 0
