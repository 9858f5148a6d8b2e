"""Webhook subscriptions per tenant, and the state of each webhook post.

``webhooks_for`` reads all of a tenant's subscriptions and filters them here: a tenant
has a handful, and matching "empty list or contains this code" inside a JSON column
would need different SQL on each database for no gain.

A delivery is upserted by its id: the dispatcher records it as pending before the
first post and updates it after each attempt, all under the one id a receiver uses to
recognise a retry of a post it already took.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from vumi_like.stores.models import DeliveryState, Page, Webhook, WebhookDelivery, new_id
from vumi_like.stores.pagination import keyset_page
from vumi_like.stores.queries import from_db
from vumi_like.stores.schema import webhook_deliveries, webhooks

__all__ = [
    "add_webhook",
    "delete_webhook",
    "get_delivery",
    "get_webhook",
    "list_webhooks",
    "record_delivery",
    "webhooks_for",
]


def _webhook(row: sa.Row[Any]) -> Webhook:
    return Webhook(
        webhook_id=row.webhook_id,
        tenant=row.tenant,
        url=row.url,
        event_types=tuple(row.event_types),
        secret=row.secret,
        created_at=from_db(row.created_at),
    )


def add_webhook(
    conn: sa.Connection,
    tenant: str,
    url: str,
    event_types: tuple[str, ...],
    secret: str,
    now: datetime,
) -> Webhook:
    webhook_id = new_id()
    conn.execute(
        sa.insert(webhooks),
        [
            {
                "webhook_id": webhook_id,
                "tenant": tenant,
                "url": url,
                "event_types": list(event_types),
                "secret": secret,
                "created_at": now,
            }
        ],
    )
    return Webhook(
        webhook_id=webhook_id,
        tenant=tenant,
        url=url,
        event_types=event_types,
        secret=secret,
        created_at=from_db(now),
    )


def _mine(tenant: str, webhook_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(webhooks.c.tenant == tenant, webhooks.c.webhook_id == webhook_id)


# Built once: the dispatcher reads a subscription and records a post for every webhook.
_GET_WEBHOOK = sa.select(webhooks).where(
    webhooks.c.tenant == sa.bindparam("tenant"),
    webhooks.c.webhook_id == sa.bindparam("webhook_id"),
)
_GET_DELIVERY = sa.select(webhook_deliveries).where(
    webhook_deliveries.c.delivery_id == sa.bindparam("delivery_id")
)


def _upsert_delivery(dialect: Any) -> Any:
    """The upsert of a delivery on this dialect's INSERT ... ON CONFLICT: the new row's
    values replace all but its id."""
    insert = dialect.insert(webhook_deliveries)
    columns = [c.name for c in webhook_deliveries.c if c.name != "delivery_id"]
    return insert.on_conflict_do_update(
        index_elements=["delivery_id"], set_={name: insert.excluded[name] for name in columns}
    )


_UPSERT_DELIVERY = {"postgresql": _upsert_delivery(postgresql), "sqlite": _upsert_delivery(sqlite)}


def get_webhook(conn: sa.Connection, tenant: str, webhook_id: str) -> Webhook | None:
    row = conn.execute(_GET_WEBHOOK, {"tenant": tenant, "webhook_id": webhook_id}).one_or_none()
    return None if row is None else _webhook(row)


def delete_webhook(conn: sa.Connection, tenant: str, webhook_id: str) -> bool:
    return conn.execute(sa.delete(webhooks).where(_mine(tenant, webhook_id))).rowcount > 0


def list_webhooks(
    conn: sa.Connection, tenant: str, cursor: str | None, limit: int
) -> Page[Webhook]:
    query = sa.select(webhooks).where(webhooks.c.tenant == tenant)
    order = (webhooks.c.created_at, webhooks.c.webhook_id)
    return keyset_page(conn, "webhooks", query, order, cursor, limit, _webhook)


def webhooks_for(conn: sa.Connection, tenant: str, status_code: str) -> list[Webhook]:
    rows = conn.execute(
        sa.select(webhooks)
        .where(webhooks.c.tenant == tenant)
        .order_by(webhooks.c.created_at, webhooks.c.webhook_id)
    )
    return [hook for hook in map(_webhook, rows) if hook.wants(status_code)]


def _delivery_row(
    delivery_id: str,
    webhook_id: str,
    message_id: str,
    status_code: str,
    state: DeliveryState,
    attempts: int,
    last_error: str | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "webhook_id": webhook_id,
        "message_id": message_id,
        "status_code": status_code,
        "state": DeliveryState(state).value,
        "attempts": attempts,
        "last_error": last_error,
        "updated_at": now,
    }


def record_delivery(conn: sa.Connection, *fields: Any) -> None:
    """Create or update one delivery's record; ``fields`` are ``_delivery_row``'s."""
    conn.execute(_UPSERT_DELIVERY[conn.dialect.name], _delivery_row(*fields))


def record_deliveries(conn: sa.Connection, calls: list[tuple[Any, ...]]) -> list[None]:
    """``record_delivery`` for each of ``calls`` (its arguments after the connection),
    as one executemany of the upsert rather than one statement each (the store's
    delivery group, ``together``). An upsert replaces every field, so of two records
    of one delivery the later is what one after the other would leave: only it is
    written."""
    rows = {row["delivery_id"]: row for row in (_delivery_row(*call) for call in calls)}
    conn.execute(_UPSERT_DELIVERY[conn.dialect.name], list(rows.values()))
    return [None] * len(calls)


def get_delivery(conn: sa.Connection, delivery_id: str) -> WebhookDelivery | None:
    row = conn.execute(_GET_DELIVERY, {"delivery_id": delivery_id}).one_or_none()
    if row is None:
        return None
    return WebhookDelivery(
        delivery_id=row.delivery_id,
        webhook_id=row.webhook_id,
        message_id=row.message_id,
        status_code=row.status_code,
        state=DeliveryState(row.state),
        attempts=row.attempts,
        last_error=row.last_error,
        updated_at=from_db(row.updated_at),
    )


def delivery_target(
    conn: sa.Connection, tenant: str, webhook_id: str, delivery_id: str
) -> tuple[Webhook | None, WebhookDelivery | None]:
    """What a webhook job needs before posting, in one transaction: its subscription (None
    if deleted) and the record of its delivery so far (None if never tried)."""
    return get_webhook(conn, tenant, webhook_id), get_delivery(conn, delivery_id)
