"""Conversations with vcita (seed 002): businesses and their VCS tokens, channels,
sessions and messages, each under the ``tenant`` naming the communication app.

Channels and sessions get an id of ours when we first know of them and VCS's uid when
VCS answers the create call, so a retried create finds the row it started. A message
is keyed by its vumi envelope id, and unique per channel by ``message_uid``: adding one
that is there returns the stored row, which is what makes repeated posts harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vumi_like.stores.database import dialect_insert
from vumi_like.stores.errors import AlreadyExists
from vumi_like.stores.models import (
    ChannelStatus,
    ChannelType,
    ConversationMessageStatus,
    Direction,
    SessionStatus,
    VcitaBusiness,
    VcitaChannel,
    VcitaMessage,
    VcitaSession,
    new_id,
)
from vumi_like.stores.queries import from_db
from vumi_like.stores.schema import (
    vcita_businesses,
    vcita_channels,
    vcita_messages,
    vcita_sessions,
)

__all__ = [
    "access_token",
    "add_channel",
    "add_message",
    "channel",
    "channel_by_uid",
    "channel_created",
    "channel_for_address",
    "get_message",
    "list_businesses",
    "list_channels",
    "message_by_uid",
    "record_typing",
    "save_session",
    "session",
    "session_by_uid",
    "set_channel_status",
    "set_message_reported",
    "set_session_status",
    "set_token",
    "update_message_status",
]


# -- businesses


def set_token(
    conn: sa.Connection, tenant: str, business_uid: str, token: str, now: datetime
) -> bool:
    """Set the business's access token; True if the business is new."""
    key = (vcita_businesses.c.tenant == tenant, vcita_businesses.c.business_uid == business_uid)
    updated = conn.execute(
        sa.update(vcita_businesses).where(*key).values(access_token=token, updated_at=now)
    ).rowcount
    if updated:
        return False
    conn.execute(
        vcita_businesses.insert().values(
            tenant=tenant,
            business_uid=business_uid,
            access_token=token,
            created_at=now,
            updated_at=now,
        )
    )
    return True


def access_token(conn: sa.Connection, tenant: str, business_uid: str) -> str | None:
    query = sa.select(vcita_businesses.c.access_token).where(
        vcita_businesses.c.tenant == tenant, vcita_businesses.c.business_uid == business_uid
    )
    return conn.execute(query).scalar_one_or_none()


def list_businesses(conn: sa.Connection, tenant: str) -> list[VcitaBusiness]:
    columns = [c for c in vcita_businesses.c if c.name != "access_token"]
    query = (
        sa.select(*columns)
        .where(vcita_businesses.c.tenant == tenant)
        .order_by(vcita_businesses.c.business_uid)
    )
    return [
        VcitaBusiness(
            tenant=row.tenant,
            business_uid=row.business_uid,
            created_at=from_db(row.created_at),
            updated_at=from_db(row.updated_at),
        )
        for row in conn.execute(query)
    ]


# -- channels


def _channel(row: Mapping[Any, Any]) -> VcitaChannel:
    return VcitaChannel(
        channel_id=row["channel_id"],
        tenant=row["tenant"],
        business_uid=row["business_uid"],
        channel_uid=row["channel_uid"],
        channel_type=ChannelType(row["channel_type"]),
        transport_name=row["transport_name"],
        address=row["address"],
        status=ChannelStatus(row["status"]),
        created_at=from_db(row["created_at"]),
        updated_at=from_db(row["updated_at"]),
    )


def _one_channel(conn: sa.Connection, *where: Any) -> VcitaChannel | None:
    row = conn.execute(sa.select(vcita_channels).where(*where)).one_or_none()
    return None if row is None else _channel(row._mapping)


def add_channel(
    conn: sa.Connection,
    tenant: str,
    business_uid: str,
    channel_type: ChannelType,
    transport_name: str,
    address: str,
    now: datetime,
) -> VcitaChannel:
    """A new pending channel for the business on ``transport_name`` at ``address``.

    ``AlreadyExists`` if that address has a channel, unless it was deleted: a deleted
    channel (with its sessions) makes way for the new one.
    """
    where = (
        vcita_channels.c.tenant == tenant,
        vcita_channels.c.transport_name == transport_name,
        vcita_channels.c.address == address,
    )
    existing = _one_channel(conn, *where)
    if existing is not None:
        if existing.status != ChannelStatus.DELETED:
            raise AlreadyExists(
                f"{transport_name} address {address!r} has a channel already "
                f"({existing.channel_id}, {existing.status})"
            )
        conn.execute(
            sa.delete(vcita_sessions).where(vcita_sessions.c.channel_id == existing.channel_id)
        )
        conn.execute(sa.delete(vcita_channels).where(*where))
    values = {
        "channel_id": new_id(),
        "tenant": tenant,
        "business_uid": business_uid,
        "channel_uid": None,
        "channel_type": ChannelType(channel_type).value,
        "transport_name": transport_name,
        "address": address,
        "status": ChannelStatus.PENDING.value,
        "created_at": now,
        "updated_at": now,
    }
    conn.execute(vcita_channels.insert().values(**values))
    return _channel(values)


def channel(conn: sa.Connection, tenant: str, channel_id: str) -> VcitaChannel | None:
    return _one_channel(
        conn, vcita_channels.c.tenant == tenant, vcita_channels.c.channel_id == channel_id
    )


def channel_by_uid(conn: sa.Connection, tenant: str, channel_uid: str) -> VcitaChannel | None:
    return _one_channel(
        conn, vcita_channels.c.tenant == tenant, vcita_channels.c.channel_uid == channel_uid
    )


def channel_for_address(
    conn: sa.Connection, tenant: str, transport_name: str, address: str
) -> VcitaChannel | None:
    return _one_channel(
        conn,
        vcita_channels.c.tenant == tenant,
        vcita_channels.c.transport_name == transport_name,
        vcita_channels.c.address == address,
    )


def list_channels(conn: sa.Connection, tenant: str) -> list[VcitaChannel]:
    query = (
        sa.select(vcita_channels)
        .where(vcita_channels.c.tenant == tenant)
        .order_by(vcita_channels.c.created_at, vcita_channels.c.channel_id)
    )
    return [_channel(row._mapping) for row in conn.execute(query)]


def channel_created(
    conn: sa.Connection,
    tenant: str,
    channel_id: str,
    channel_uid: str,
    status: ChannelStatus,
    now: datetime,
) -> VcitaChannel | None:
    """Record VCS's answer to the create call: its uid and the status it gave.

    A confirmation that overtook the answer (the channel is active already) keeps
    its status; None if the channel has gone."""
    where = (vcita_channels.c.tenant == tenant, vcita_channels.c.channel_id == channel_id)
    found = _one_channel(conn, *where)
    if found is None:
        return None
    values: dict[str, Any] = {"channel_uid": channel_uid, "updated_at": now}
    if found.channel_uid is None:
        values["status"] = ChannelStatus(status).value
    conn.execute(sa.update(vcita_channels).where(*where).values(**values))
    return _one_channel(conn, *where)


def set_channel_status(
    conn: sa.Connection, tenant: str, channel_uid: str, status: ChannelStatus, now: datetime
) -> VcitaChannel | None:
    where = (vcita_channels.c.tenant == tenant, vcita_channels.c.channel_uid == channel_uid)
    values = {"status": ChannelStatus(status).value, "updated_at": now}
    if not conn.execute(sa.update(vcita_channels).where(*where).values(**values)).rowcount:
        return None
    return _one_channel(conn, *where)


# -- sessions


def _session(row: Mapping[Any, Any]) -> VcitaSession:
    typing_at = row["typing_at"]
    return VcitaSession(
        session_id=row["session_id"],
        tenant=row["tenant"],
        channel_id=row["channel_id"],
        external_uid=row["external_uid"],
        session_uid=row["session_uid"],
        status=SessionStatus(row["status"]),
        staff_typing=row["staff_typing"],
        typing_at=None if typing_at is None else from_db(typing_at),
        created_at=from_db(row["created_at"]),
        updated_at=from_db(row["updated_at"]),
    )


def _one_session(conn: sa.Connection, *where: Any) -> VcitaSession | None:
    row = conn.execute(sa.select(vcita_sessions).where(*where)).one_or_none()
    return None if row is None else _session(row._mapping)


def _clients(tenant: str, channel_id: str, external_uid: str) -> tuple[Any, ...]:
    """The conditions naming a client's one session row on a channel."""
    return (
        vcita_sessions.c.tenant == tenant,
        vcita_sessions.c.channel_id == channel_id,
        vcita_sessions.c.external_uid == external_uid,
    )


def session(
    conn: sa.Connection, tenant: str, channel_id: str, external_uid: str
) -> VcitaSession | None:
    return _one_session(conn, *_clients(tenant, channel_id, external_uid))


def session_by_uid(conn: sa.Connection, tenant: str, session_uid: str) -> VcitaSession | None:
    return _one_session(
        conn, vcita_sessions.c.tenant == tenant, vcita_sessions.c.session_uid == session_uid
    )


def claim_session(
    conn: sa.Connection,
    tenant: str,
    channel_id: str,
    external_uid: str,
    now: datetime,
    stale_before: datetime,
) -> tuple[VcitaSession, bool]:
    """Claim the opening of the client's session on the channel: the row, and whether
    this call claimed it. The claim is a row without ``session_uid`` (one per client,
    the table's unique key), taken by inserting it, or by updating one whose claim was
    made before ``stale_before`` (its opener died, or gave up without releasing it)."""
    where = _clients(tenant, channel_id, external_uid)
    insert = (
        dialect_insert(conn, vcita_sessions)
        .values(
            session_id=new_id(),
            tenant=tenant,
            channel_id=channel_id,
            external_uid=external_uid,
            session_uid=None,
            status=SessionStatus.PENDING.value,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    # SQLAlchemy reports an INSERT's rowcount only when asked to.
    claimed = conn.execute(insert, execution_options={"preserve_rowcount": True}).rowcount == 1
    if not claimed:
        taken_over = (
            sa.update(vcita_sessions)
            .where(
                *where,
                vcita_sessions.c.session_uid.is_(None),
                vcita_sessions.c.updated_at < stale_before,
            )
            .values(updated_at=now)
        )
        claimed = bool(conn.execute(taken_over).rowcount)
    found = _one_session(conn, *where)
    assert found is not None
    return found, claimed


def release_session_claim(
    conn: sa.Connection, tenant: str, channel_id: str, external_uid: str, claimed_at: datetime
) -> None:
    """Drop the claim made at ``claimed_at`` (its opening failed), unless it was taken
    over or the session opened since."""
    conn.execute(
        sa.delete(vcita_sessions).where(
            *_clients(tenant, channel_id, external_uid),
            vcita_sessions.c.session_uid.is_(None),
            vcita_sessions.c.updated_at == claimed_at,
        )
    )


def save_session(
    conn: sa.Connection,
    tenant: str,
    channel_id: str,
    external_uid: str,
    session_uid: str,
    status: SessionStatus,
    now: datetime,
) -> VcitaSession:
    """Record the client's session on the channel as VCS gave it (created or
    reactivated), creating the row or updating the one there (one per client)."""
    where = _clients(tenant, channel_id, external_uid)
    values = {"session_uid": session_uid, "status": SessionStatus(status).value}
    if not conn.execute(
        sa.update(vcita_sessions).where(*where).values(updated_at=now, **values)
    ).rowcount:
        conn.execute(
            vcita_sessions.insert().values(
                session_id=new_id(),
                tenant=tenant,
                channel_id=channel_id,
                external_uid=external_uid,
                created_at=now,
                updated_at=now,
                **values,
            )
        )
    found = _one_session(conn, *where)
    assert found is not None
    return found


def set_session_status(
    conn: sa.Connection,
    tenant: str,
    session_uid: str,
    status: SessionStatus,
    only_from: SessionStatus | None,
    now: datetime,
) -> VcitaSession | None:
    """Set the session's status (if ``only_from`` is given, only if it has that one:
    VCS's confirmation may overtake its answer to a reactivation). The session as it is
    now; None if there is no such session.

    Without ``only_from``, None also when the update found no row, even if the read
    after it does: VCS's confirmation of a new session can come while its creator is
    saving the session's uid, and the save may commit between the two statements.
    Answered "no such session", VCS calls again; the status is never dropped."""
    where = (vcita_sessions.c.tenant == tenant, vcita_sessions.c.session_uid == session_uid)
    update = sa.update(vcita_sessions).where(*where)
    if only_from is not None:
        update = update.where(vcita_sessions.c.status == SessionStatus(only_from).value)
    values = {"status": SessionStatus(status).value, "updated_at": now}
    if not conn.execute(update.values(**values)).rowcount and only_from is None:
        return None
    return _one_session(conn, *where)


def record_typing(
    conn: sa.Connection, tenant: str, session_uid: str, typing: bool, now: datetime
) -> VcitaSession | None:
    where = (vcita_sessions.c.tenant == tenant, vcita_sessions.c.session_uid == session_uid)
    values = {"staff_typing": typing, "typing_at": now}
    if not conn.execute(sa.update(vcita_sessions).where(*where).values(**values)).rowcount:
        return None
    return _one_session(conn, *where)


# -- messages


def _message(row: Mapping[Any, Any]) -> VcitaMessage:
    reported = row["reported_status"]
    return VcitaMessage(
        message_id=row["message_id"],
        tenant=row["tenant"],
        channel_id=row["channel_id"],
        message_uid=row["message_uid"],
        direction=Direction(row["direction"]),
        external_uid=row["external_uid"],
        content=row["content"],
        status=ConversationMessageStatus(row["status"]),
        reported_status=None if reported is None else ConversationMessageStatus(reported),
        created_at=from_db(row["created_at"]),
        updated_at=from_db(row["updated_at"]),
    )


def _one_message(conn: sa.Connection, *where: Any) -> VcitaMessage | None:
    row = conn.execute(sa.select(vcita_messages).where(*where)).one_or_none()
    return None if row is None else _message(row._mapping)


def add_message(
    conn: sa.Connection,
    tenant: str,
    message_id: str,
    channel_id: str,
    message_uid: str,
    direction: Direction,
    external_uid: str,
    content: str | None,
    status: ConversationMessageStatus,
    now: datetime,
) -> tuple[VcitaMessage, bool]:
    """Store a message; if the channel has its ``message_uid`` already, the stored one.
    True with a message stored now."""
    where = (
        vcita_messages.c.channel_id == channel_id,
        vcita_messages.c.message_uid == message_uid,
    )
    existing = _one_message(conn, *where)
    if existing is not None:
        return existing, False
    values = {
        "message_id": message_id,
        "tenant": tenant,
        "channel_id": channel_id,
        "message_uid": message_uid,
        "direction": Direction(direction).value,
        "external_uid": external_uid,
        "content": content,
        "status": ConversationMessageStatus(status).value,
        "reported_status": None,
        "created_at": now,
        "updated_at": now,
    }
    # Without a conflict target: either key taken (the same message_uid, stored by a
    # concurrent call a moment ago, or the same envelope id) inserts nothing.
    insert = dialect_insert(conn, vcita_messages).values(**values).on_conflict_do_nothing()
    if conn.execute(insert, execution_options={"preserve_rowcount": True}).rowcount != 1:
        existing = _one_message(conn, *where)
        if existing is None:
            raise AlreadyExists(f"message {message_id} is stored already")
        return existing, False
    return _message(values), True


def get_message(conn: sa.Connection, message_id: str) -> VcitaMessage | None:
    return _one_message(conn, vcita_messages.c.message_id == message_id)


def message_by_uid(
    conn: sa.Connection, tenant: str, channel_id: str, message_uid: str
) -> VcitaMessage | None:
    return _one_message(
        conn,
        vcita_messages.c.tenant == tenant,
        vcita_messages.c.channel_id == channel_id,
        vcita_messages.c.message_uid == message_uid,
    )


def update_message_status(
    conn: sa.Connection, message_id: str, proposed: ConversationMessageStatus, now: datetime
) -> VcitaMessage | None:
    """Move the message's status forwards to ``proposed`` if it is a step forwards
    (``ConversationMessageStatus.advance``); the message as it is now, None if unknown."""
    where = vcita_messages.c.message_id == message_id
    row = conn.execute(
        sa.select(vcita_messages.c.status).where(where).with_for_update()
    ).one_or_none()
    if row is None:
        return None
    status = ConversationMessageStatus(row.status).advance(ConversationMessageStatus(proposed))
    if status.value != row.status:
        conn.execute(
            sa.update(vcita_messages).where(where).values(status=status.value, updated_at=now)
        )
    return _one_message(conn, where)


def set_message_reported(
    conn: sa.Connection, message_id: str, status: ConversationMessageStatus, now: datetime
) -> None:
    """Record that VCS was told ``status``, unless it was told of a later one already
    (a status report that overtook the record of the message being handed on)."""
    where = vcita_messages.c.message_id == message_id
    row = conn.execute(
        sa.select(vcita_messages.c.reported_status).where(where).with_for_update()
    ).one_or_none()
    if row is None:
        return
    status = ConversationMessageStatus(status)
    if row.reported_status is not None:
        status = ConversationMessageStatus(row.reported_status).advance(status)
    conn.execute(
        sa.update(vcita_messages).where(where).values(reported_status=status.value, updated_at=now)
    )
