"""The message store's tables, as SQLAlchemy Core metadata, the same on SQLite and PostgreSQL.

This is the schema the code expects; ``migrations/versions`` builds it, and a test checks
that a freshly migrated database matches this metadata exactly on both databases. A
change here needs a new migration beside it.

Choices that hold for every table:

* Times are ``DateTime`` without a time zone, always UTC. Both databases then store and
  compare them the same way (SQLite has no time zones; PostgreSQL's ``timestamptz``
  would hand back the session's zone). The store converts to aware UTC on the way out.
* Ids we mint are uuid4 hex; ids a client chooses (batch, party, idempotency key) and
  free text are unbounded ``String``/``Text``, so SQLite and PostgreSQL accept the
  same values. Limits on what a client may send belong to the API that reads it.
* JSON columns are ``sa.JSON``: ``json`` on PostgreSQL, text on SQLite. Nothing queries
  inside them; they are handed back whole.
* Constraint and index names are fixed (the naming convention, or given), so the
  migration names them identically on both databases.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "batches",
    "clients",
    "idempotency_keys",
    "message_events",
    "messages",
    "metadata",
    "notification_members",
    "notification_targets",
    "notification_users",
    "notifications",
    "parties",
    "unsent_messages",
    "unsent_notifications",
    "vcita_businesses",
    "vcita_channels",
    "vcita_messages",
    "vcita_sessions",
    "webhook_deliveries",
    "webhooks",
]

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

_ID = sa.String(32)  # uuid4 hex
_JSON = sa.JSON(none_as_null=True)  # Python None is SQL NULL, not the JSON text "null"


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(), nullable=nullable)


messages = sa.Table(
    "messages",
    metadata,
    sa.Column("message_id", _ID, primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),  # outbound | inbound
    sa.Column("channel", sa.String(), nullable=False),
    sa.Column("message_type", sa.String(), nullable=False),  # SMS, EMAIL, WEB_MESSAGE...
    sa.Column("sender", sa.String(), nullable=False),
    sa.Column("receiver", sa.String(), nullable=False),
    sa.Column("content", sa.Text(), nullable=True),
    sa.Column("payload", _JSON, nullable=False),
    sa.Column("context", _JSON, nullable=False),
    sa.Column("batch_id", sa.String(), nullable=True),
    sa.Column("party_id", sa.String(), nullable=True),
    sa.Column("origin", sa.String(), nullable=True),  # x-origin
    sa.Column("issuer", sa.String(), nullable=True),  # x-issuer
    sa.Column("in_reply_to", sa.String(), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    _time("created_at"),
    _time("updated_at"),
    # History of a party, by date; the whole tenant's list, in keyset order; a batch.
    sa.Index("ix_messages_tenant_party_created", "tenant", "party_id", "created_at"),
    sa.Index("ix_messages_tenant_created_id", "tenant", "created_at", "message_id"),
    sa.Index("ix_messages_batch_id", "batch_id"),
)

# The audit trail: one row per event applied to a message (and one for its creation).
message_events = sa.Table(
    "message_events",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("message_id", _ID, sa.ForeignKey("messages.message_id"), nullable=False),
    sa.Column("event_id", sa.String(), nullable=True),
    sa.Column("event_type", sa.String(), nullable=False),
    sa.Column("status_before", sa.String(32), nullable=True),
    sa.Column("status_after", sa.String(32), nullable=False),
    _time("occurred_at"),
    _time("recorded_at"),
    sa.Column("raw", _JSON, nullable=True),
    # A redelivered event is recorded once. NULL event ids never collide (SQL's NULLs
    # are distinct on both databases), so events without an id are all kept.
    sa.UniqueConstraint("message_id", "event_id"),
    sa.Index("ix_message_events_message_id_id", "message_id", "id"),
)

# The outbound messages stored and not yet known to be published: a row goes in with
# its message and out once the API replica has the broker's confirm (``outbox.py``).
# A row left long after its request's time limit is a request whose replica died in
# between; ``fail_abandoned_unsent`` marks its message failed, and dates the row anew
# until the sweeping replica has queued the message's webhooks.
unsent_messages = sa.Table(
    "unsent_messages",
    metadata,
    sa.Column("message_id", _ID, primary_key=True),
    _time("created_at"),
    sa.Index("ix_unsent_messages_created_at", "created_at"),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("batch_id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    _time("created_at"),
    sa.Column("message_count", sa.Integer(), nullable=False),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("webhook_id", _ID, primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("event_types", _JSON, nullable=False),  # status codes; [] means all
    sa.Column("secret", sa.Text(), nullable=False),  # needed to sign, so not hashed
    _time("created_at"),
    sa.Index("ix_webhooks_tenant_created", "tenant", "created_at"),
)

# No foreign keys here: a delivery is a log line about a post, and a webhook deleted
# while one of its posts is being retried must not make recording that post fail.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("delivery_id", sa.String(), primary_key=True),
    sa.Column("webhook_id", _ID, nullable=False),
    sa.Column("message_id", _ID, nullable=False),
    sa.Column("status_code", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    _time("updated_at"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("tenant", sa.String(), primary_key=True),
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("request_hash", sa.String(), nullable=False),
    sa.Column("response_status", sa.Integer(), nullable=True),  # NULL until answered
    sa.Column("response_body", _JSON, nullable=True),
    _time("created_at"),
    # Set when the key is claimed, kept when the same request takes over an abandoned
    # claim: the ids of what the request stores are derived from it (``RequestIds``).
    sa.Column("claim_id", sa.String(32), nullable=True),
)

parties = sa.Table(
    "parties",
    metadata,
    sa.Column("tenant", sa.String(), primary_key=True),
    sa.Column("party_id", sa.String(), primary_key=True),
    sa.Column("channel", sa.String(), nullable=False),
    sa.Column("address", sa.String(), nullable=False),
    _time("updated_at"),
)

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("secret_hash", sa.Text(), nullable=False),  # see client_secrets.py
    _time("created_at"),
)

# Notifications to users, forms and projects (seed 004): who may post and read what.

notification_users = sa.Table(
    "notification_users",
    metadata,
    sa.Column("tenant", sa.String(), primary_key=True),
    sa.Column("username", sa.String(), primary_key=True),
    sa.Column("real_name", sa.String(), nullable=False),
    # The OAuth2 client this user signs in as: its token's client is the author.
    sa.Column("client_id", sa.String(), nullable=False, unique=True),
    _time("created_at"),
)

notification_targets = sa.Table(
    "notification_targets",
    metadata,
    sa.Column("tenant", sa.String(), primary_key=True),
    sa.Column("target_type", sa.String(16), primary_key=True),  # xform | project
    sa.Column("target_id", sa.String(), primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("form_id", sa.String(), nullable=True),  # forms only
    _time("created_at"),
)

notification_members = sa.Table(
    "notification_members",
    metadata,
    sa.Column("tenant", sa.String(), primary_key=True),
    sa.Column("target_type", sa.String(16), primary_key=True),
    sa.Column("target_id", sa.String(), primary_key=True),
    sa.Column("username", sa.String(), primary_key=True),
    sa.Column("permission", sa.String(8), nullable=False),  # view | edit | admin
    sa.ForeignKeyConstraint(
        ["tenant", "target_type", "target_id"],
        [
            notification_targets.c.tenant,
            notification_targets.c.target_type,
            notification_targets.c.target_id,
        ],
        ondelete="CASCADE",
    ),
)

notifications = sa.Table(
    "notifications",
    metadata,
    # An integer, as the seed's messages have ("id": 3).
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("target_type", sa.String(16), nullable=False),  # user | xform | project
    sa.Column("target_id", sa.String(), nullable=False),
    sa.Column("author", sa.String(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("payload", _JSON, nullable=False),  # as published
    sa.Column("deliveries", _JSON, nullable=False),  # backend -> its outcome
    _time("created_at"),
    # The id its request gave it, under an Idempotency-Key (``RequestIds``): a request
    # taking over its own abandoned claim finds the notification the first run stored.
    sa.Column("request_id", sa.String(32), nullable=True),
    sa.Index("ix_notifications_target", "tenant", "target_type", "target_id", "id"),
    sa.Index("ix_notifications_request", "tenant", "request_id", unique=True),
)

# Conversations (seed 002): a vcita communication app's businesses, channels, sessions
# and messages. ``tenant`` names the communication app (its VCS tokens are its own).

# The notifications stored and not yet known to be published, as ``unsent_messages``
# for messages (``outbound/unsent.py``).
unsent_notifications = sa.Table(
    "unsent_notifications",
    metadata,
    sa.Column("notification_id", sa.Integer(), primary_key=True, autoincrement=False),
    _time("created_at"),
    sa.Index("ix_unsent_notifications_created_at", "created_at"),
)

vcita_businesses = sa.Table(
    "vcita_businesses",
    metadata,
    sa.Column("tenant", sa.String(), primary_key=True),
    sa.Column("business_uid", sa.String(), primary_key=True),
    # The business's OAuth token for VCS: needed to call VCS, so kept as given.
    sa.Column("access_token", sa.Text(), nullable=False),
    _time("created_at"),
    _time("updated_at"),
)

vcita_channels = sa.Table(
    "vcita_channels",
    metadata,
    sa.Column("channel_id", _ID, primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("business_uid", sa.String(), nullable=False),
    sa.Column("channel_uid", sa.String(), nullable=True, unique=True),  # VCS's, once known
    sa.Column("channel_type", sa.String(16), nullable=False),
    sa.Column("transport_name", sa.String(), nullable=False),
    sa.Column("address", sa.String(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    _time("created_at"),
    _time("updated_at"),
    # An inbound names the transport and our address: that finds its channel.
    sa.UniqueConstraint("tenant", "transport_name", "address"),
)

vcita_sessions = sa.Table(
    "vcita_sessions",
    metadata,
    sa.Column("session_id", _ID, primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column(
        "channel_id",
        _ID,
        sa.ForeignKey("vcita_channels.channel_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("external_uid", sa.String(), nullable=False),
    sa.Column("session_uid", sa.String(), nullable=True, unique=True),  # VCS's, once known
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("staff_typing", sa.Boolean(), nullable=True),
    _time("typing_at", nullable=True),
    _time("created_at"),
    _time("updated_at"),
    # One session per client and channel (the seed's rule).
    sa.UniqueConstraint("channel_id", "external_uid"),
)

vcita_messages = sa.Table(
    "vcita_messages",
    metadata,
    sa.Column("message_id", _ID, primary_key=True),  # the vumi envelope's
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("channel_id", _ID, nullable=False),
    sa.Column("message_uid", sa.String(), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),  # inbound | outbound
    sa.Column("external_uid", sa.String(), nullable=False),
    sa.Column("content", sa.Text(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reported_status", sa.String(16), nullable=True),
    _time("created_at"),
    _time("updated_at"),
    # message_uid is unique per channel (the seed's word); a repeated POST finds it.
    sa.UniqueConstraint("channel_id", "message_uid"),
)
