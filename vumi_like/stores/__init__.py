"""The message store: message status and history, batches, webhook subscriptions and
deliveries, idempotency keys, parties and OAuth2 clients, in SQLite or PostgreSQL.

``MessageStore`` (``store.py``) is the async interface; ``status.py`` the rule by which a
message's status moves; ``schema.py`` and ``migrations/`` the tables; ``migrate.py``
upgrades a database's schema.
"""

from __future__ import annotations

from vumi_like.stores.client_secrets import hash_secret, verify_secret
from vumi_like.stores.errors import (
    AlreadyExists,
    ClaimLost,
    InvalidCursor,
    StoreError,
    StoreUnavailable,
)
from vumi_like.stores.migrate import current_revision, head_revision, upgrade
from vumi_like.stores.models import (
    ChannelStatus,
    ChannelType,
    ClaimOutcome,
    ClientInfo,
    ConversationMessageStatus,
    DeliveryState,
    Direction,
    EventOutcome,
    IdempotencyClaim,
    NewBatch,
    NewMessage,
    Notification,
    NotificationTarget,
    NotificationUser,
    Page,
    Party,
    Permission,
    RequestIds,
    SessionStatus,
    StoredMessage,
    Transition,
    VcitaBusiness,
    VcitaChannel,
    VcitaMessage,
    VcitaSession,
    Webhook,
    WebhookDelivery,
    new_id,
)
from vumi_like.stores.pagination import MAX_PAGE_SIZE
from vumi_like.stores.settings import DEFAULT_STORE_URL, StoreSettings
from vumi_like.stores.status import (
    LegacyStatus,
    MessageStatus,
    legacy_status,
    next_status,
    status_for_event,
)
from vumi_like.stores.store import MessageStore, open_store

__all__ = [
    "DEFAULT_STORE_URL",
    "MAX_PAGE_SIZE",
    "AlreadyExists",
    "ChannelStatus",
    "ChannelType",
    "ClaimLost",
    "ClaimOutcome",
    "ClientInfo",
    "ConversationMessageStatus",
    "DeliveryState",
    "Direction",
    "EventOutcome",
    "IdempotencyClaim",
    "InvalidCursor",
    "LegacyStatus",
    "MessageStatus",
    "MessageStore",
    "NewBatch",
    "NewMessage",
    "Notification",
    "NotificationTarget",
    "NotificationUser",
    "Page",
    "Party",
    "Permission",
    "RequestIds",
    "SessionStatus",
    "StoreError",
    "StoreSettings",
    "StoreUnavailable",
    "StoredMessage",
    "Transition",
    "VcitaBusiness",
    "VcitaChannel",
    "VcitaMessage",
    "VcitaSession",
    "Webhook",
    "WebhookDelivery",
    "current_revision",
    "hash_secret",
    "head_revision",
    "legacy_status",
    "new_id",
    "next_status",
    "open_store",
    "status_for_event",
    "upgrade",
    "verify_secret",
]
