"""Notifications (seed 004): the registry of users, forms and projects with their
members, and the notifications sent to them.

Users are a tenant's, each tied to the OAuth2 client it signs in as. A form or project
is set whole by upsert (its name, and a form's ``form_id``); members are set one by
one, each with one permission, and go with their target. Notifications are listed
newest first, by their integer id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vumi_like.stores.database import dialect_insert
from vumi_like.stores.errors import AlreadyExists, InvalidCursor
from vumi_like.stores.models import (
    Notification,
    NotificationTarget,
    NotificationUser,
    Page,
    Permission,
)
from vumi_like.stores.pagination import decode_cursor, encode_cursor, page_size
from vumi_like.stores.queries import date_unsent, forget_unsent, from_db, take_unsent
from vumi_like.stores.schema import (
    notification_members,
    notification_targets,
    notification_users,
    notifications,
    unsent_notifications,
)

__all__ = [
    "add_user",
    "create_notification",
    "create_target",
    "delete_notification",
    "fail_abandoned_unsent",
    "get_notification",
    "get_target",
    "list_notifications",
    "record_delivery",
    "remove_member",
    "resume_notification",
    "set_member",
    "set_target",
    "user_by_client",
    "user_by_name",
]


def _user(row: sa.Row[Any]) -> NotificationUser:
    return NotificationUser(
        tenant=row.tenant, username=row.username, real_name=row.real_name, client_id=row.client_id
    )


def add_user(
    conn: sa.Connection, tenant: str, username: str, real_name: str, client_id: str, now: datetime
) -> NotificationUser:
    values = {"real_name": real_name, "client_id": client_id, "created_at": now}
    try:
        conn.execute(
            notification_users.insert().values(tenant=tenant, username=username, **values)
        )
    except sa.exc.IntegrityError:
        raise AlreadyExists(
            f"user {username!r} or a user signing in as {client_id!r} exists already"
        ) from None
    return NotificationUser(
        tenant=tenant, username=username, real_name=real_name, client_id=client_id
    )


def user_by_client(conn: sa.Connection, client_id: str) -> NotificationUser | None:
    query = sa.select(notification_users).where(notification_users.c.client_id == client_id)
    row = conn.execute(query).one_or_none()
    return None if row is None else _user(row)


def user_by_name(conn: sa.Connection, tenant: str, username: str) -> NotificationUser | None:
    query = sa.select(notification_users).where(
        notification_users.c.tenant == tenant, notification_users.c.username == username
    )
    row = conn.execute(query).one_or_none()
    return None if row is None else _user(row)


def _target_key(table: sa.Table, tenant: str, target_type: str, target_id: str) -> Any:
    return sa.and_(
        table.c.tenant == tenant,
        table.c.target_type == target_type,
        table.c.target_id == target_id,
    )


def set_target(
    conn: sa.Connection,
    tenant: str,
    target_type: str,
    target_id: str,
    name: str,
    form_id: str | None,
    now: datetime,
) -> None:
    values = {"name": name, "form_id": form_id}
    insert = dialect_insert(conn, notification_targets).values(
        tenant=tenant, target_type=target_type, target_id=target_id, created_at=now, **values
    )
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["tenant", "target_type", "target_id"], set_=values
        )
    )


def create_target(
    conn: sa.Connection,
    tenant: str,
    target_type: str,
    target_id: str,
    name: str,
    form_id: str | None,
    admin: str,
    now: datetime,
) -> NotificationTarget:
    """Create a form or project with ``admin`` as its first member, in one transaction:
    never a target nobody administers. ``AlreadyExists`` if it exists."""
    try:
        conn.execute(
            notification_targets.insert().values(
                tenant=tenant,
                target_type=target_type,
                target_id=target_id,
                name=name,
                form_id=form_id,
                created_at=now,
            )
        )
    except sa.exc.IntegrityError:
        raise AlreadyExists(f"{target_type} {target_id!r} exists already") from None
    set_member(conn, tenant, target_type, target_id, admin, Permission.ADMIN)
    return NotificationTarget(
        tenant=tenant,
        target_type=target_type,
        target_id=target_id,
        name=name,
        form_id=form_id,
        members={admin: Permission.ADMIN},
    )


def get_target(
    conn: sa.Connection, tenant: str, target_type: str, target_id: str
) -> NotificationTarget | None:
    key = _target_key(notification_targets, tenant, target_type, target_id)
    row = conn.execute(sa.select(notification_targets).where(key)).one_or_none()
    if row is None:
        return None
    members = conn.execute(
        sa.select(notification_members.c.username, notification_members.c.permission).where(
            _target_key(notification_members, tenant, target_type, target_id)
        )
    ).all()
    return NotificationTarget(
        tenant=tenant,
        target_type=target_type,
        target_id=target_id,
        name=row.name,
        form_id=row.form_id,
        members={username: Permission(permission) for username, permission in members},
    )


def set_member(
    conn: sa.Connection,
    tenant: str,
    target_type: str,
    target_id: str,
    username: str,
    permission: Permission,
) -> None:
    """Give ``username`` ``permission`` on the target (which must exist: else an
    integrity error, as the foreign key says)."""
    values = {"permission": Permission(permission).value}
    insert = dialect_insert(conn, notification_members).values(
        tenant=tenant, target_type=target_type, target_id=target_id, username=username, **values
    )
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["tenant", "target_type", "target_id", "username"], set_=values
        )
    )


def remove_member(
    conn: sa.Connection, tenant: str, target_type: str, target_id: str, username: str
) -> bool:
    key = _target_key(notification_members, tenant, target_type, target_id)
    query = sa.delete(notification_members).where(key, notification_members.c.username == username)
    return conn.execute(query).rowcount > 0


def _notification(fields: Mapping[Any, Any]) -> Notification:
    """A notification from its row's columns. Its payload is published with its id,
    which is the row's: added here rather than stored twice."""
    return Notification(
        id=fields["id"],
        tenant=fields["tenant"],
        target_type=fields["target_type"],
        target_id=fields["target_id"],
        author=fields["author"],
        message=fields["message"],
        payload={**fields["payload"], "id": fields["id"]},
        deliveries=fields["deliveries"],
        created_at=from_db(fields["created_at"]),
    )


def create_notification(
    conn: sa.Connection,
    tenant: str,
    target_type: str,
    target_id: str,
    author: str,
    message: str,
    payload: dict[str, Any],
    deliveries: dict[str, Any],
    now: datetime,
    request_id: str | None = None,
) -> Notification:
    """Store a notification; its ``payload`` comes back with the id the database chose.
    ``request_id`` is the id its request gave it (``RequestIds``), if it had a key."""
    values = {
        "tenant": tenant,
        "target_type": target_type,
        "target_id": target_id,
        "author": author,
        "message": message,
        "payload": payload,
        "deliveries": deliveries,
        "created_at": now,
        "request_id": request_id,
    }
    inserted = conn.execute(notifications.insert().values(**values)).inserted_primary_key
    assert inserted is not None
    conn.execute(
        sa.insert(unsent_notifications).values(notification_id=inserted[0], created_at=now)
    )
    return _notification({"id": inserted[0], **values})


def resume_notification(
    conn: sa.Connection, tenant: str, request_id: str, now: datetime
) -> Notification | None:
    """The notification its request gave ``request_id``, if it was stored, for that
    request run again. Its unsent row is dated ``now`` first, so that no sweep fails
    what this run is about to publish, and a sweep holding it is waited for and what
    it did is read."""
    mine = notifications.c.tenant == tenant, notifications.c.request_id == request_id
    date_unsent(conn, unsent_notifications, sa.select(notifications.c.id).where(*mine), now)
    row = conn.execute(sa.select(notifications).where(*mine)).one_or_none()
    return None if row is None else _notification(row._mapping)


# The largest id a notification can have (its column is a 32-bit integer on
# PostgreSQL): a larger one names no notification, and the database would refuse it.
MAX_ID = 2**31 - 1


def get_notification(conn: sa.Connection, tenant: str, pk: int) -> Notification | None:
    if not 0 < pk <= MAX_ID:
        return None
    query = sa.select(notifications).where(
        notifications.c.tenant == tenant, notifications.c.id == pk
    )
    row = conn.execute(query).one_or_none()
    return None if row is None else _notification(row._mapping)


def delete_notification(conn: sa.Connection, tenant: str, pk: int) -> bool:
    if not 0 < pk <= MAX_ID:
        return False
    query = sa.delete(notifications).where(
        notifications.c.tenant == tenant, notifications.c.id == pk
    )
    deleted = conn.execute(query).rowcount > 0
    if deleted:  # its id may be given again (SQLite reuses the highest)
        forget_unsent(conn, unsent_notifications, [pk])
    return deleted


def list_notifications(
    conn: sa.Connection,
    tenant: str,
    target_type: str,
    target_id: str,
    author: str | None,
    cursor: str | None,
    limit: int,
) -> Page[Notification]:
    """The target's notifications (only ``author``'s, if given), newest first."""
    size = page_size(limit)
    query = sa.select(notifications).where(
        _target_key(notifications, tenant, target_type, target_id)
    )
    if author is not None:
        query = query.where(notifications.c.author == author)
    if cursor is not None:
        (before,) = decode_cursor("notifications", cursor, 1)
        if not before.isdigit():
            raise InvalidCursor("the cursor is not one this listing gave")
        query = query.where(notifications.c.id < int(before))
    rows = conn.execute(query.order_by(notifications.c.id.desc()).limit(size + 1)).all()
    next_cursor = None
    if len(rows) > size:
        next_cursor = encode_cursor("notifications", [str(rows[size - 1].id)])
    return Page(tuple(_notification(row._mapping) for row in rows[:size]), next_cursor)


def record_delivery(conn: sa.Connection, pk: int, backend: str, outcome: dict[str, Any]) -> bool:
    """Set ``backend``'s outcome on notification ``pk``; False if it has gone."""
    row = conn.execute(
        sa.select(notifications.c.deliveries).where(notifications.c.id == pk).with_for_update()
    ).one_or_none()
    if row is None:
        return False
    deliveries = {**row.deliveries, backend: outcome}
    conn.execute(
        sa.update(notifications).where(notifications.c.id == pk).values(deliveries=deliveries)
    )
    return True


def fail_abandoned_unsent(
    conn: sa.Connection, stored_before: datetime, outcome: dict[str, Any], limit: int
) -> list[int]:
    """Set ``outcome`` on every backend still ``queued`` of the unsent notifications
    stored before ``stored_before``, and strike them all from the unsent (at most
    ``limit``, oldest first); the ids of those changed. Replicas sweeping at once never
    mark one twice (``take_unsent``)."""
    pks = take_unsent(conn, unsent_notifications, stored_before, limit)
    if not pks:
        return []
    rows = conn.execute(
        sa.select(notifications.c.id, notifications.c.deliveries)
        .where(notifications.c.id.in_(pks))
        .order_by(notifications.c.id)
        .with_for_update()
    )
    changed = []
    for row in rows:
        queued = [b for b, done in row.deliveries.items() if done.get("state") == "queued"]
        if queued:
            deliveries = {**row.deliveries, **dict.fromkeys(queued, outcome)}
            conn.execute(
                sa.update(notifications)
                .where(notifications.c.id == row.id)
                .values(deliveries=deliveries)
            )
            changed.append(row.id)
    forget_unsent(conn, unsent_notifications, pks)
    return changed
