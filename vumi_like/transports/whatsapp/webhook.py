"""What Meta POSTs to the webhook: its signature, and the messages and statuses in it.

Pure functions and models, no I/O. A notification is
``{"object": ..., "entry": [{"changes": [{"field": "messages", "value": {...}}]}]}``;
a ``value`` holds the business number (``metadata``), the senders' profiles
(``contacts``), inbound ``messages`` and the ``statuses`` of what we sent. Changes of
other fields (account and template updates) are not ours to handle and are skipped.

The whole body is read before anything is published, so a body with one bad item is
refused whole (400), not half published.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import attrs
from pydantic import BaseModel, Field, StrictStr, ValidationError, model_validator

from vumi_like.messages import DeliveryStatus, Message
from vumi_like.transports.whatsapp.graph import HELPER_KEY
from vumi_like.validation import describe_validation_error

__all__ = [
    "SIGNATURE_HEADER",
    "STATUSES",
    "TRANSPORT_TYPE",
    "InvalidNotification",
    "Notification",
    "ReceivedMessage",
    "StatusUpdate",
    "inbound_message",
    "read_notification",
    "signature",
    "signature_matches",
]

SIGNATURE_HEADER = "X-Hub-Signature-256"
TRANSPORT_TYPE = "whatsapp"

# Meta's message statuses and what each is as a vumi delivery report. "read" implies
# "delivered" (Meta skips "delivered" when both come at once), so it is reported as
# delivered, with the raw status kept in transport_metadata. Others (a "deleted"
# inbound, a catalogue "warning") say nothing about delivery and are skipped.
STATUSES = {
    "sent": DeliveryStatus.PENDING,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.DELIVERED,
    "failed": DeliveryStatus.FAILED,
}


def signature(app_secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` for ``body``: ``sha256=`` + hex HMAC-SHA256 keyed by the secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(app_secret: str, header: str | None, body: bytes) -> bool:
    """Whether ``header`` signs ``body``; compared in constant time."""
    if not header:
        return False
    expected = signature(app_secret, body).encode()
    return hmac.compare_digest(header.strip().lower().encode(), expected)


class InvalidNotification(Exception):
    """The body is not a notification we can read; ``str()`` says why, in one line."""


class _Raw(BaseModel):
    """A model that also keeps the object it was read from, as ``raw``."""

    raw: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _keep_raw(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {**data, "raw": dict(data)}
        return data


class _Text(BaseModel):
    body: StrictStr


class _Button(BaseModel):
    text: StrictStr | None = None


class _Choice(BaseModel):
    title: StrictStr | None = None


class _Interactive(BaseModel):
    button_reply: _Choice | None = None
    list_reply: _Choice | None = None


class _Message(_Raw):
    from_: StrictStr = Field(alias="from")
    id: StrictStr
    type: StrictStr
    timestamp: StrictStr | None = None
    text: _Text | None = None
    button: _Button | None = None
    interactive: _Interactive | None = None
    context: dict[str, Any] | None = None

    def content(self) -> str | None:
        """What the user wrote or chose: a text's body, a button's or list row's title."""
        if self.type == "text" and self.text is not None:
            return self.text.body
        if self.type == "button" and self.button is not None:
            return self.button.text
        if self.type == "interactive" and self.interactive is not None:
            choice = self.interactive.button_reply or self.interactive.list_reply
            return choice.title if choice is not None else None
        return None


class _Status(_Raw):
    id: StrictStr
    status: StrictStr


class _Metadata(BaseModel):
    display_phone_number: StrictStr | None = None
    phone_number_id: StrictStr | None = None


class _Profile(BaseModel):
    name: StrictStr | None = None


class _Contact(BaseModel):
    wa_id: StrictStr | None = None
    profile: _Profile | None = None


class _Value(BaseModel):
    metadata: _Metadata = Field(default_factory=_Metadata)
    contacts: list[_Contact] = Field(default_factory=list)
    messages: list[_Message] = Field(default_factory=list)
    statuses: list[_Status] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)


class _Change(BaseModel):
    field: StrictStr = ""
    value: dict[str, Any] = Field(default_factory=dict)


class _Entry(BaseModel):
    changes: list[_Change] = Field(default_factory=list)


class _Notification(BaseModel):
    entry: list[_Entry]


@attrs.frozen
class ReceivedMessage:
    """An inbound message, with what its change says about the number and the sender."""

    message: _Message
    metadata: _Metadata
    profile_name: str | None = None


@attrs.frozen
class StatusUpdate:
    """A status of a message we sent: its WhatsApp id, Meta's status, the raw object."""

    provider_id: str
    status: str
    raw: dict[str, Any]

    @property
    def delivery_status(self) -> DeliveryStatus | None:
        return STATUSES.get(self.status)


@attrs.define
class Notification:
    """Everything in one webhook body: what concerns us, in the order Meta gave it,
    the fields of the changes skipped, and the errors Meta reported in it."""

    items: list[ReceivedMessage | StatusUpdate] = attrs.Factory(list)
    skipped_fields: list[str] = attrs.Factory(list)
    errors: list[dict[str, Any]] = attrs.Factory(list)


def read_notification(body: bytes) -> Notification:
    """Read a webhook body; raises ``InvalidNotification`` if any part of it is unreadable."""
    try:
        notification = _Notification.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidNotification(describe_validation_error(exc, subject="the body")) from None
    result = Notification()
    for e, entry in enumerate(notification.entry):
        for c, change in enumerate(entry.changes):
            if change.field != "messages":
                result.skipped_fields.append(change.field)
                continue
            try:
                value = _Value.model_validate(change.value)
            except ValidationError as exc:
                where = f"entry.{e}.changes.{c}.value"
                detail = describe_validation_error(exc, subject=where)
                raise InvalidNotification(f"in {where}: {detail}") from None
            names = {
                contact.wa_id: contact.profile.name
                for contact in value.contacts
                if contact.wa_id and contact.profile
            }
            for message in value.messages:
                result.items.append(
                    ReceivedMessage(
                        message=message,
                        metadata=value.metadata,
                        profile_name=names.get(message.from_),
                    )
                )
            for status in value.statuses:
                result.items.append(
                    StatusUpdate(provider_id=status.id, status=status.status, raw=status.raw)
                )
            result.errors.extend(value.errors)
    return result


def inbound_message(
    received: ReceivedMessage,
    *,
    transport_name: str,
    phone_number_id: str,
    in_reply_to: str | None = None,
) -> Message:
    """The vumi message for an inbound WhatsApp message.

    ``to_addr`` is the business's display number (else the phone number id Meta or,
    failing that, the config gives). ``transport_metadata["whatsapp"]`` holds the
    WhatsApp id (which a reply quotes), the type, the time, the sender's profile name,
    the message it answers (``context``) and, for anything but text, the raw message.
    """
    message, metadata = received.message, received.metadata
    ours: dict[str, Any] = {
        "message_id": message.id,
        "type": message.type,
        "timestamp": message.timestamp,
        "phone_number_id": metadata.phone_number_id,
    }
    if received.profile_name:
        ours["profile_name"] = received.profile_name
    if message.context:
        ours["context"] = message.context
    if message.type != "text":
        ours["message"] = message.raw
    return Message(
        to_addr=metadata.display_phone_number or metadata.phone_number_id or phone_number_id,
        from_addr=message.from_,
        transport_name=transport_name,
        transport_type=TRANSPORT_TYPE,
        content=message.content(),
        in_reply_to=in_reply_to,
        transport_metadata={HELPER_KEY: ours},
    )
