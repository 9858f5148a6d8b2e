"""Turn's wire shapes: what Turn POSTs to us, what we POST to Turn, and the signature.

Pure functions and models, no I/O: the worker (``worker.py``) does the talking.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from vumi_like.messages import DeliveryStatus, Event, EventType, Message

__all__ = [
    "SIGNATURE_HEADER",
    "TURN_MESSAGE_TYPES",
    "OutboundRequest",
    "signature",
    "turn_inbound",
    "turn_status",
    "turn_status_body",
]

SIGNATURE_HEADER = "X-Turn-Hook-Signature"


class TurnText(BaseModel):
    body: StrictStr


class TurnTextMessage(BaseModel):
    type: Literal["text"]
    text: TurnText
    waiting_for_user_input: StrictBool = False

    def content(self) -> str:
        return self.text.body


# Each supported ``turn.type`` and its model. To add one: write its model with a
# ``content()`` and put it here (and in ``OutboundRequest.turn``'s annotation).
TURN_MESSAGE_TYPES: dict[str, type[BaseModel]] = {"text": TurnTextMessage}


class OutboundRequest(BaseModel):
    """What Turn POSTs to ``<vumi_api_path>/messages``. Keys we do not use are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    to: StrictStr
    from_addr: StrictStr | None = Field(default=None, alias="from")
    reply_to: StrictStr | None = None
    turn: TurnTextMessage
    waiting_for_user_input: StrictBool = False

    @field_validator("turn", mode="before")
    @classmethod
    def _supported_type(cls, value: Any) -> Any:
        if isinstance(value, dict) and "type" in value:
            kind = value["type"]
            if kind not in TURN_MESSAGE_TYPES:
                supported = ", ".join(repr(name) for name in TURN_MESSAGE_TYPES)
                raise ValueError(f"only {supported} messages are supported, got {kind!r}")
        return value

    @property
    def waiting(self) -> bool:
        # Accepted on the message or beside it: either asks for the session to stay open.
        return self.waiting_for_user_input or self.turn.waiting_for_user_input


def signature(secret: str, body: bytes) -> str:
    """``X-Turn-Hook-Signature`` for ``body``: base64 of its HMAC-SHA256 keyed by ``secret``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _unix_seconds(timestamp: datetime) -> str:
    return str(int(timestamp.replace(tzinfo=UTC).timestamp()))


def turn_inbound(message: Message) -> dict[str, Any]:
    """The body POSTed to ``<turn_api_url>/messages`` for an inbound message.

    We know no contact names, so the profile name is the address, as vumi2 does.
    """
    return {
        "contact": {"id": message.from_addr, "profile": {"name": message.from_addr}},
        "message": {
            "type": "text",
            "text": {"body": message.content or ""},
            "from": message.from_addr,
            "id": message.message_id,
            "timestamp": _unix_seconds(message.timestamp),
        },
    }


def turn_status(event: Event) -> str | None:
    """The status Turn gets for ``event``, or None if it is not forwarded (module doc)."""
    if event.event_type == EventType.ACK:
        return "sent"
    if event.event_type == EventType.DELIVERY_REPORT:
        return {DeliveryStatus.DELIVERED: "delivered", DeliveryStatus.FAILED: "sent"}.get(
            event.delivery_status  # type: ignore[arg-type]
        )
    return None


def turn_status_body(
    event: Event, status: str, recipient_id: str, status_format: str
) -> dict[str, Any]:
    if status_format == "turn":
        return {
            "status": {
                "id": event.user_message_id,
                "recipient_id": recipient_id,
                "status": status,
                "timestamp": _unix_seconds(event.timestamp),
            }
        }
    return {
        "user_message_id": event.user_message_id,
        "timestamp": event.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
        "status": status,
    }
