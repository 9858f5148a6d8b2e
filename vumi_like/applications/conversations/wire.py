"""The communication-app interface's bodies (the seed's Appendix 1 and 3), the admin
API's, and the mappings between vumi envelopes and VCS's statuses. No I/O."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from vumi_like.messages import DeliveryStatus, Event, EventType, Message
from vumi_like.stores import (
    ChannelStatus,
    ChannelType,
    ConversationMessageStatus,
    SessionStatus,
    VcitaChannel,
)

__all__ = [
    "TYPING_KEY",
    "ChannelUpdate",
    "CreateChannelJob",
    "MessageUpdate",
    "NewChannel",
    "SessionUpdate",
    "StaffMessage",
    "TokenBody",
    "Typing",
    "channel_body",
    "message_uid_for",
    "status_for_event",
    "typing_of",
]

# helper_metadata key of a typing indication, both ways: {"typing": true | false} on
# an envelope without content.
TYPING_KEY = "typing"

# What VCS sends: read tolerantly (keys we do not use are ignored), typed strictly.
_TOLERANT = ConfigDict(extra="ignore")
_UID = Field(min_length=1, max_length=255)


class ChannelUpdate(BaseModel):
    """``PUT /channels/{channel_uid}``."""

    model_config = _TOLERANT
    status: ChannelStatus


class SessionUpdate(BaseModel):
    """``PUT /sessions/{session_uid}``."""

    model_config = _TOLERANT
    status: SessionStatus


class StaffMessage(BaseModel):
    """``POST /messages``: a message a staff member sent to a client."""

    model_config = _TOLERANT
    external_uid: StrictStr = _UID
    message: StrictStr = Field(min_length=1)
    message_uid: StrictStr = _UID
    channel_uid: StrictStr = _UID
    status: ConversationMessageStatus = ConversationMessageStatus.PENDING


class MessageUpdate(BaseModel):
    """``PUT /messages/{message_uid}``."""

    model_config = _TOLERANT
    status: ConversationMessageStatus
    channel_uid: StrictStr = _UID


class Typing(BaseModel):
    """``POST /{session_uid}/typing``."""

    model_config = _TOLERANT
    typing: StrictBool


class TokenBody(BaseModel):
    """Admin: ``PUT /businesses/{business_uid}/token``."""

    model_config = ConfigDict(extra="forbid")
    access_token: StrictStr = Field(min_length=1, max_length=4096)


class NewChannel(BaseModel):
    """Admin: ``POST /channels``: a channel for the business on one of our transports."""

    model_config = ConfigDict(extra="forbid")
    business_uid: StrictStr = _UID
    type: ChannelType = ChannelType.TRANSACTIONAL
    transport_name: StrictStr = _UID
    address: StrictStr = _UID


class CreateChannelJob(BaseModel):
    """Create the channel at VCS (on ``<connector_name>.vcs``)."""

    model_config = ConfigDict(extra="forbid")
    channel_id: StrictStr

    def log_ids(self) -> dict[str, str]:
        return {"channel_id": self.channel_id}


def channel_body(channel: VcitaChannel) -> dict[str, Any]:
    return {
        "channel_id": channel.channel_id,
        "channel_uid": channel.channel_uid,
        "business_uid": channel.business_uid,
        "type": str(channel.channel_type),
        "transport_name": channel.transport_name,
        "address": channel.address,
        "status": str(channel.status),
        "created_at": channel.created_at.isoformat(),
        "updated_at": channel.updated_at.isoformat(),
    }


def message_uid_for(message: Message) -> str:
    """The ``message_uid`` a client's message is posted to VCS with: the same for every
    retry and redelivery of the envelope, so VCS takes it once. A uuid, as the seed's
    are: the envelope's own id when it is one (vumi's are uuid4 hex), else one derived
    from it."""
    try:
        return str(uuid.UUID(hex=message.message_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vumi-message:{message.message_id}"))


def status_for_event(event: Event) -> ConversationMessageStatus | None:
    """The status a staff message takes on ``event``, None for one that changes nothing.

    An ack says the provider took it, which VCS's ``pending`` already says; a delivery
    report says it reached the client (``received``) or never will (``error``), as
    does a nack. None of our transports reports ``read``.
    """
    if event.event_type == EventType.NACK:
        return ConversationMessageStatus.ERROR
    if event.event_type == EventType.DELIVERY_REPORT:
        return {
            DeliveryStatus.DELIVERED: ConversationMessageStatus.RECEIVED,
            DeliveryStatus.FAILED: ConversationMessageStatus.ERROR,
        }.get(event.delivery_status)  # type: ignore[arg-type]
    return None


def typing_of(message: Message) -> bool | None:
    """The typing state an inbound without content carries, None if it is a message."""
    value = (message.helper_metadata or {}).get(TYPING_KEY)
    if message.content is None and isinstance(value, bool):
        return value
    return None
