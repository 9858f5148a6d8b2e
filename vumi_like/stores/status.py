"""A message's status, and the one rule for how it may change: only forwards.

Why monotonic
-------------
Events about one message reach us out of order and more than once. A transport acks a
submission and the provider's delivery report arrives later, but the two travel on
different paths (the ack from the transport's own worker, the report through a provider
callback, possibly to another replica), the broker redelivers whatever was in flight
when a worker died, and delayed retries bring an event back minutes after its
successors. Taking "the latest event wins" would let a late ack turn a DELIVERED
message back into SENT, and a client polling the status would watch it go backwards.

So each status has a rank, and an event may only move a message to a status of higher
rank::

    QUEUED (0) -> SENT (1) -> DELIVERY_RETRIED (2) -> DELIVERED | DELIVERY_FAILED (3)

A rank-3 status is terminal: once a message is DELIVERED or DELIVERY_FAILED, the first
of them to arrive stays, because a provider does not deliver a message and then fail it
(a "failed" after "delivered" is a confused or duplicated report, and the reverse is a
retry that eventually worked, which providers report as delivered only). RECEIVED (an
inbound message) and NO_FEEDBACK_SETTINGS_FOUND (an outbound to a party we have no
contact settings for: never sent) are terminal from the start.

DELIVERY_RETRIED ranks above SENT because a "pending" delivery report means the
provider has the message and is still trying: it is news beyond the ack, and an ack
arriving after it says nothing new. The whole history (every event, whether it moved
the status or not) is kept by the store beside the status, so nothing is lost by
refusing to move backwards.

The rule is the same whoever applies it and in whatever order, so two dispatchers
applying events for one message concurrently end in the same status, provided each
change is a read-modify-write under a lock (the store's job).

Legacy status codes
-------------------
Seed 003's API reported four codes. ``legacy_status`` maps ours onto them for clients
that still read those:

=============================  =============================  ==========================
status                          legacy code                    why
=============================  =============================  ==========================
QUEUED                          PENDING                        not yet handed over
DELIVERY_RETRIED                PENDING                        the provider still tries
SENT                            SENT                           handed to the provider
DELIVERED                       SENT                           legacy had no "delivered"
DELIVERY_FAILED                 FAILED
NO_FEEDBACK_SETTINGS_FOUND      NO_FEEDBACK_SETTINGS_FOUND     same code, never sent
RECEIVED                        SENT                           no inbound code; final
=============================  =============================  ==========================
"""

from __future__ import annotations

from enum import StrEnum

from vumi_like.messages import DeliveryStatus, EventType

__all__ = [
    "TERMINAL_STATUSES",
    "LegacyStatus",
    "MessageStatus",
    "is_terminal",
    "legacy_status",
    "next_status",
    "rank",
    "status_for_event",
]


class MessageStatus(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    DELIVERY_RETRIED = "DELIVERY_RETRIED"
    DELIVERED = "DELIVERED"
    DELIVERY_FAILED = "DELIVERY_FAILED"
    RECEIVED = "RECEIVED"
    NO_FEEDBACK_SETTINGS_FOUND = "NO_FEEDBACK_SETTINGS_FOUND"


class LegacyStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    NO_FEEDBACK_SETTINGS_FOUND = "NO_FEEDBACK_SETTINGS_FOUND"


_TERMINAL_RANK = 3

_RANKS: dict[MessageStatus, int] = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERY_RETRIED: 2,
    MessageStatus.DELIVERED: _TERMINAL_RANK,
    MessageStatus.DELIVERY_FAILED: _TERMINAL_RANK,
    MessageStatus.RECEIVED: _TERMINAL_RANK,
    MessageStatus.NO_FEEDBACK_SETTINGS_FOUND: _TERMINAL_RANK,
}

TERMINAL_STATUSES = frozenset(s for s, r in _RANKS.items() if r == _TERMINAL_RANK)

_LEGACY: dict[MessageStatus, LegacyStatus] = {
    MessageStatus.QUEUED: LegacyStatus.PENDING,
    MessageStatus.DELIVERY_RETRIED: LegacyStatus.PENDING,
    MessageStatus.SENT: LegacyStatus.SENT,
    MessageStatus.DELIVERED: LegacyStatus.SENT,
    MessageStatus.DELIVERY_FAILED: LegacyStatus.FAILED,
    MessageStatus.NO_FEEDBACK_SETTINGS_FOUND: LegacyStatus.NO_FEEDBACK_SETTINGS_FOUND,
    MessageStatus.RECEIVED: LegacyStatus.SENT,
}


def rank(status: MessageStatus) -> int:
    """How far along its life a message with this status is (0 to 3)."""
    return _RANKS[status]


def is_terminal(status: MessageStatus) -> bool:
    """True if no event can change this status any more."""
    return status in TERMINAL_STATUSES


def status_for_event(
    event_type: EventType | str, delivery_status: DeliveryStatus | str | None = None
) -> MessageStatus:
    """The status a vumi event proposes for the message it is about.

    ``ack`` -> SENT, ``nack`` -> DELIVERY_FAILED (the transport refused it for good), and
    a ``delivery_report`` by its ``delivery_status``: ``delivered`` -> DELIVERED,
    ``failed`` -> DELIVERY_FAILED, ``pending`` -> DELIVERY_RETRIED. Anything else
    raises ``ValueError`` (``messages.Event`` never carries anything else).
    """
    event_type = EventType(event_type)
    if event_type is EventType.ACK:
        return MessageStatus.SENT
    if event_type is EventType.NACK:
        return MessageStatus.DELIVERY_FAILED
    if delivery_status is None:
        raise ValueError("a delivery_report needs a delivery_status")
    return {
        DeliveryStatus.DELIVERED: MessageStatus.DELIVERED,
        DeliveryStatus.FAILED: MessageStatus.DELIVERY_FAILED,
        DeliveryStatus.PENDING: MessageStatus.DELIVERY_RETRIED,
    }[DeliveryStatus(delivery_status)]


def next_status(current: MessageStatus, proposed: MessageStatus) -> MessageStatus:
    """The status after an event proposing ``proposed``: it, if that moves forwards.

    ``current`` stays if it is terminal or if ``proposed`` ranks no higher (an older or
    repeated event); see the module docstring for why.
    """
    if is_terminal(current) or rank(proposed) <= rank(current):
        return current
    return proposed


def legacy_status(status: MessageStatus) -> LegacyStatus:
    """Seed 003's code for ``status`` (the table in the module docstring)."""
    return _LEGACY[status]
