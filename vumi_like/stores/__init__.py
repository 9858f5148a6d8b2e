"""The message store: message status and history, batches, webhook subscriptions and
deliveries, idempotency keys, parties and OAuth2 clients, in SQLite or PostgreSQL.

``status.py`` holds the rule by which a message's status moves.
"""

from __future__ import annotations

from vumi_like.stores.status import (
    LegacyStatus,
    MessageStatus,
    legacy_status,
    next_status,
    status_for_event,
)

__all__ = [
    "LegacyStatus",
    "MessageStatus",
    "legacy_status",
    "next_status",
    "status_for_event",
]
