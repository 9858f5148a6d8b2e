"""The values the message store takes and returns: frozen attrs classes, no rows or dicts.

Times that come out of the store are aware datetimes in UTC. Times going in may be aware
(converted to UTC) or naive (taken as UTC already, as vumi envelopes write them).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

import attrs
from attrs import validators

from vumi_like.stores.status import MessageStatus

__all__ = [
    "MESSAGE_ID_LENGTH",
    "ClaimOutcome",
    "ClientInfo",
    "DeliveryState",
    "Direction",
    "EventOutcome",
    "IdempotencyClaim",
    "NewBatch",
    "NewMessage",
    "Page",
    "Party",
    "StoredMessage",
    "Transition",
    "Webhook",
    "WebhookDelivery",
    "new_id",
]

T = TypeVar("T")

# A vumi message_id is a uuid4 in hex; the column is sized for it, and checking the
# length here makes SQLite (which ignores column sizes) refuse what PostgreSQL would.
MESSAGE_ID_LENGTH = 32

_message_id = validators.and_(
    validators.instance_of(str), validators.min_len(1), validators.max_len(MESSAGE_ID_LENGTH)
)


def new_id() -> str:
    """A fresh id as vumi makes them: a uuid4 in hex."""
    return uuid.uuid4().hex


@attrs.define
class RequestIds:
    """The ids a request gives what it stores, in the order it asks for them.

    Fresh ones (uuid4) unless the request came with an ``Idempotency-Key``: then they
    are derived from the key's claim (uuid5 of ``claim_id`` and their number), so the
    same request run again under the same claim gives the same ids. That is how a
    request taking over a claim abandoned by a replica that died (``resumed``) finds
    what the first run stored, and finishes it instead of storing it again.
    """

    claim_id: str | None = None
    resumed: bool = False
    _given: int = 0

    @classmethod
    def derived(cls, *names: str) -> RequestIds:
        """Ids for work named by ``names`` that may run more than once (a job the
        broker hands out again): the same each time, and what an earlier run stored
        is looked for first."""
        seed = uuid.uuid5(uuid.NAMESPACE_OID, "\n".join(names))
        return cls(claim_id=seed.hex, resumed=True)

    @property
    def keyed(self) -> bool:
        return self.claim_id is not None

    def new(self) -> str:
        if self.claim_id is None:
            return new_id()
        self._given += 1
        return uuid.uuid5(uuid.UUID(hex=self.claim_id), str(self._given)).hex


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


@attrs.frozen(kw_only=True)
class NewMessage:
    """A message to store: outbound (``create_messages``) or inbound (``record_inbound``).

    ``payload`` holds what only some channels have (an e-mail's subject, html and
    attachments); ``context`` is the client's own data, echoed in every webhook about the
    message. ``status`` is the initial status of an outbound message: QUEUED, or
    NO_FEEDBACK_SETTINGS_FOUND for a party we cannot reach. An inbound one is RECEIVED.
    """

    tenant: str
    channel: str
    message_type: str
    sender: str
    receiver: str
    content: str | None = None
    payload: dict[str, Any] = attrs.field(factory=dict)
    context: dict[str, Any] = attrs.field(factory=dict)
    batch_id: str | None = None
    party_id: str | None = None
    origin: str | None = None
    issuer: str | None = None
    in_reply_to: str | None = None
    status: MessageStatus = MessageStatus.QUEUED
    message_id: str = attrs.field(factory=new_id, validator=_message_id)


@attrs.frozen(kw_only=True)
class NewBatch:
    """A batch to create with its messages (each of which names it as ``batch_id``)."""

    tenant: str
    batch_id: str = attrs.field(factory=new_id)


@attrs.frozen(kw_only=True)
class Transition:
    """One event in a message's history, in the order the store applied them.

    Every event is recorded, not only those that moved the status: an ack arriving
    after the delivery report shows with ``status_before == status_after == DELIVERED``.
    The first one of every message is ``event_type="created"``, ``status_before=None``.
    ``occurred_at`` is the event's own time; ``recorded_at`` when the store applied it.
    """

    event_type: str
    event_id: str | None
    status_before: MessageStatus | None
    status_after: MessageStatus
    occurred_at: datetime
    recorded_at: datetime
    raw: dict[str, Any] | None

    @property
    def changed(self) -> bool:
        return self.status_before != self.status_after


@attrs.frozen(kw_only=True)
class StoredMessage:
    """A message as stored, with its current status.

    ``transitions`` is filled by ``get_message`` only. Listings (``history``,
    ``list_messages``) and ``apply_event`` leave it empty to stay one query; since every
    stored message has at least its "created" transition, empty means "not loaded".
    """

    message_id: str
    tenant: str
    direction: Direction
    channel: str
    message_type: str
    sender: str
    receiver: str
    content: str | None
    payload: dict[str, Any]
    context: dict[str, Any]
    batch_id: str | None
    party_id: str | None
    origin: str | None
    issuer: str | None
    in_reply_to: str | None
    status: MessageStatus
    created_at: datetime
    updated_at: datetime
    transitions: tuple[Transition, ...] = ()


@attrs.frozen(kw_only=True)
class EventOutcome:
    """What ``apply_event`` did: the message as it is now, and the status move, if any.

    ``duplicate`` means this event id was recorded for the message before, so nothing was
    recorded or changed this time (a redelivery): don't send a webhook again for it.
    """

    message: StoredMessage
    status_before: MessageStatus
    status_after: MessageStatus
    duplicate: bool

    @property
    def changed(self) -> bool:
        return self.status_before != self.status_after


@attrs.frozen
class Page(Generic[T]):
    """One page of a listing; pass ``next_cursor`` back for the next (None: last page)."""

    items: tuple[T, ...]
    next_cursor: str | None


@attrs.frozen(kw_only=True)
class Webhook:
    """A tenant's subscription: POST to ``url`` when a message takes a status listed.

    ``event_types`` are status codes (``DELIVERED``, ``MESSAGE_RECEIVED``...); empty means
    all of them. ``secret`` signs the posts, so it is kept as given; it is left out of
    ``repr`` so that it does not end up in a log.
    """

    webhook_id: str
    tenant: str
    url: str
    event_types: tuple[str, ...]
    secret: str = attrs.field(repr=False)
    created_at: datetime

    def wants(self, status_code: str) -> bool:
        return not self.event_types or status_code in self.event_types


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class WebhookDelivery:
    """Where one webhook post stands. ``delivery_id`` stays the same across retries."""

    delivery_id: str
    webhook_id: str
    message_id: str
    status_code: str
    state: DeliveryState
    attempts: int
    last_error: str | None
    updated_at: datetime


class ClaimOutcome(StrEnum):
    NEW = "new"  # the caller owns the key now: do the work, then save the response
    REPLAY = "replay"  # done before with the same request: answer with the saved response
    IN_PROGRESS = "in_progress"  # the same request is being handled elsewhere right now
    MISMATCH = "mismatch"  # the key was used for a different request


@attrs.frozen(kw_only=True)
class IdempotencyClaim:
    """The answer to ``claim_idempotency_key``; the response is set for REPLAY only.

    A NEW claim has its ``claim_id``, and the time it was taken (``claimed_at``), by
    which the request saves its answer or releases the key. It is ``resumed`` when the
    same request took over its own abandoned claim: the ids are the first run's
    (``RequestIds``)."""

    outcome: ClaimOutcome
    response_status: int | None = None
    response_body: Any = None
    claim_id: str | None = None
    resumed: bool = False
    claimed_at: datetime | None = None

    def request_ids(self) -> RequestIds:
        return RequestIds(claim_id=self.claim_id, resumed=self.resumed)


@attrs.frozen(kw_only=True)
class Party:
    """How to reach a party (a recipient named by the client): a channel and an address."""

    tenant: str
    party_id: str
    channel: str
    address: str
    updated_at: datetime


@attrs.frozen(kw_only=True)
class ClientInfo:
    """An OAuth2 client, as operators list them: never its secret or the secret's hash."""

    client_id: str
    tenant: str
    created_at: datetime


class Permission(StrEnum):
    """A member's permission on a form or project, each including the ones before it."""

    VIEW = "view"
    EDIT = "edit"
    ADMIN = "admin"

    def includes(self, other: Permission) -> bool:
        order = list(Permission)
        return order.index(self) >= order.index(other)


@attrs.frozen(kw_only=True)
class NotificationUser:
    """A user notifications can be sent to and sent by; signs in as OAuth2 ``client_id``."""

    tenant: str
    username: str
    real_name: str
    client_id: str


@attrs.frozen(kw_only=True)
class NotificationTarget:
    """A form (``xform``, with its ``form_id``) or project, and its members' permissions."""

    tenant: str
    target_type: str
    target_id: str
    name: str
    form_id: str | None
    members: Mapping[str, Permission]


@attrs.frozen(kw_only=True)
class Notification:
    """A message to a user, form or project: ``payload`` as published, ``deliveries``
    each backend's outcome so far."""

    id: int
    tenant: str
    target_type: str
    target_id: str
    author: str
    message: str
    payload: Mapping[str, Any]
    deliveries: Mapping[str, Any]
    created_at: datetime


# -- conversations (seed 002): a vcita communication app's channels, sessions, messages


class ChannelStatus(StrEnum):
    """A VCS channel's status (the seed's ChannelStatus): pending until VCS confirms it."""

    PENDING = "pending"
    ACTIVE = "active"
    INACTIVE = "inactive"
    BLOCKED = "blocked"
    DELETED = "deleted"


class ChannelType(StrEnum):
    TRANSACTIONAL = "transactional"
    PROMOTIONAL = "promotional"


class SessionStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    INACTIVE = "inactive"


class ConversationMessageStatus(StrEnum):
    """A conversation message's status (the seed's MessageStatus).

    It only moves forwards: ``pending`` to ``received``, ``read`` or ``error``;
    ``received`` to ``read``. ``read`` and ``error`` are final, so a late or repeated
    report never moves a message back (``advance``).
    """

    PENDING = "pending"
    RECEIVED = "received"
    READ = "read"
    ERROR = "error"

    def advance(self, proposed: ConversationMessageStatus) -> ConversationMessageStatus:
        """The status after ``proposed`` is reported: ``proposed`` if it is a step
        forwards, else this one."""
        forwards = {
            ConversationMessageStatus.PENDING: {"received", "read", "error"},
            ConversationMessageStatus.RECEIVED: {"read"},
        }
        return proposed if proposed.value in forwards.get(self, set()) else self


@attrs.frozen(kw_only=True)
class VcitaBusiness:
    """A business the app works for. Its OAuth access token is kept in the store but
    never returned in this value: ``MessageStore.vcita_access_token`` reads it."""

    tenant: str
    business_uid: str
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class VcitaChannel:
    """A business's channel: the VCS channel (``channel_uid``, None until VCS answered
    the create call) bound to one of our transports and the address we use on it."""

    channel_id: str
    tenant: str
    business_uid: str
    channel_uid: str | None
    channel_type: ChannelType
    transport_name: str
    address: str
    status: ChannelStatus
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class VcitaSession:
    """The one session of a client (``external_uid``, their address) on a channel.

    ``session_uid`` is None until VCS answered the create call. ``staff_typing`` is the
    last typing indication VCS sent for it (None: none yet)."""

    session_id: str
    tenant: str
    channel_id: str
    external_uid: str
    session_uid: str | None
    status: SessionStatus
    staff_typing: bool | None
    typing_at: datetime | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class VcitaMessage:
    """A message of a conversation: ``inbound`` from a client, ``outbound`` from staff.

    ``message_id`` is the vumi envelope's; ``message_uid`` VCS's (unique per channel).
    ``reported_status`` is the last status VCS was told of (outbound messages), so a
    retried report knows whether it is still owed."""

    message_id: str
    tenant: str
    channel_id: str
    message_uid: str
    direction: Direction
    external_uid: str
    content: str | None
    status: ConversationMessageStatus
    reported_status: ConversationMessageStatus | None
    created_at: datetime
    updated_at: datetime
