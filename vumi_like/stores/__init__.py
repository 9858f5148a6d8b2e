"""The message store: message status and history, batches, webhook subscriptions and
deliveries, idempotency keys, parties and OAuth2 clients, in SQLite or PostgreSQL.

``status.py`` holds the rule by which a message's status moves; ``schema.py`` and
``migrations/`` the tables; ``migrate.py`` upgrades a database's schema.
"""

from __future__ import annotations

from vumi_like.stores.errors import AlreadyExists, InvalidCursor, StoreError, StoreUnavailable
from vumi_like.stores.migrate import current_revision, head_revision, upgrade
from vumi_like.stores.status import (
    LegacyStatus,
    MessageStatus,
    legacy_status,
    next_status,
    status_for_event,
)

__all__ = [
    "AlreadyExists",
    "InvalidCursor",
    "LegacyStatus",
    "MessageStatus",
    "StoreError",
    "StoreUnavailable",
    "current_revision",
    "head_revision",
    "legacy_status",
    "next_status",
    "status_for_event",
    "upgrade",
]
