"""Vumi envelopes: ``Message`` and ``Event``, on the wire exactly as vumi2 writes them.

Every hop of every worker decodes and encodes these, and a vumi2 worker may sit on the
other end of any queue, so this module is the one place that knows the wire format:

* ``serialise()`` / ``to_json()`` write every key vumi2 writes, in vumi2's order, with
  ``None`` as ``null``, enums as their string values and ``timestamp`` as
  ``%Y-%m-%d %H:%M:%S.%f`` in naive UTC. Nothing else is written.
* ``deserialise()`` / ``from_json()`` / ``parse_envelope()`` read tolerantly: unknown keys
  are ignored (and so dropped when the envelope is written again), and the timestamp may
  also carry a ``T`` separator, no fraction, a ``Z`` or an offset. Anything that would make
  vumi2 refuse the envelope too (a missing required field, a wrong type, an unknown enum
  value, the wrong ``message_type``, an event without the field its ``event_type`` needs)
  raises ``InvalidEnvelope``, the only exception a bad envelope ever raises here: the
  connectors catch it and dead-letter the body with ``str(exc)`` as the reason.

Where we deliberately differ from vumi2:

* ``transport_type`` is any string, not vumi2's closed enum, because this project has
  channels vumi2 never listed (whatsapp, email, mqtt, web). ``TransportType`` lists
  vumi2's values; a vumi2 worker refuses an envelope whose transport_type is not one of
  them, so only send others to workers built here.
* ``to_addr_type`` / ``from_addr_type`` stay a closed enum (``AddressType``), as in vumi2,
  so what we write a vumi2 worker can always read.
* ``Message.reply()`` also copies ``helper_metadata`` (as the original vumi did) and swaps
  the address types along with the addresses.

Validation is pydantic v2 (``model_validate_json`` parses and validates in one pass in
Rust, which keeps a router's per-hop cost to a few microseconds); every pydantic error is
translated into ``InvalidEnvelope`` at the boundary, so callers never see pydantic.
"""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "ENVELOPE_KINDS",
    "MESSAGE_VERSION",
    "VUMI_DATE_FORMAT",
    "AddressType",
    "DeliveryStatus",
    "EnvelopeKind",
    "Event",
    "EventType",
    "InvalidEnvelope",
    "Message",
    "SessionEvent",
    "TransportType",
    "format_timestamp",
    "parse_envelope",
    "parse_timestamp",
]

VUMI_DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
MESSAGE_VERSION = "20110921"

# The three kinds of envelope traffic, named as their queues are (``<connector>.<kind>``).
EnvelopeKind = Literal["inbound", "outbound", "event"]
ENVELOPE_KINDS: tuple[EnvelopeKind, ...] = ("inbound", "outbound", "event")


class InvalidEnvelope(Exception):
    """An envelope that cannot be read: not JSON, not an object, or not a valid Message/Event.

    ``errors`` lists ``(field, problem)`` pairs, such as
    ``("content", "should be a valid string, got 5")``; ``str(exc)`` joins them into one
    line fit for a log or a dead-letter header. The field is ``"body"`` when the bytes are
    not JSON and ``"envelope"`` when the JSON is not an object.
    """

    def __init__(self, errors: list[tuple[str, str]], what: str = "envelope") -> None:
        self.errors = errors
        self.what = what
        details = "; ".join(f"{field}: {problem}" for field, problem in errors)
        super().__init__(f"invalid {what}: {details}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors, self.what))


class SessionEvent(StrEnum):
    NEW = "new"
    RESUME = "resume"
    CLOSE = "close"


class EventType(StrEnum):
    ACK = "ack"
    NACK = "nack"
    DELIVERY_REPORT = "delivery_report"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    FAILED = "failed"
    DELIVERED = "delivered"


class AddressType(StrEnum):
    """vumi2's address types; ``to_addr_type`` / ``from_addr_type`` accept only these."""

    IRC_NICKNAME = "irc_nickname"
    TWITTER_HANDLE = "twitter_handle"
    MSISDN = "msisdn"
    GTALK_ID = "gtalk_id"
    JABBER_ID = "jabber_id"
    MXIT_ID = "mxit_id"
    WECHAT_ID = "wechat_id"


class TransportType(StrEnum):
    """vumi2's transport types. ``transport_type`` accepts any string; see the module doc."""

    HTTP_API = "http_api"
    IRC = "irc"
    TELNET = "telnet"
    TWITTER = "twitter"
    SMS = "sms"
    USSD = "ussd"
    XMPP = "xmpp"
    MXIT = "mxit"
    WECHAT = "wechat"


# ---------------------------------------------------------------------------------------
# Timestamps

# The shapes we accept, checked before fromisoformat, which alone would also take dates
# without a time, week dates and compact forms that no vumi ever wrote.
_TIMESTAMP_SHAPE = re.compile(
    r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?", re.ASCII
)


def parse_timestamp(value: str) -> datetime:
    """Read a vumi timestamp into a naive UTC datetime, or raise ``ValueError``.

    Accepts the canonical ``2024-01-31 12:00:00.123456`` and the variants other producers
    write: ``T`` for the space, no fraction (or 1 to 9 digits of one; beyond microseconds
    is truncated), and a trailing ``Z`` or ``+HH:MM`` offset (converted to UTC).
    """
    if not _TIMESTAMP_SHAPE.fullmatch(value):
        raise ValueError(f"not a timestamp: {value!r}")
    parsed = datetime.fromisoformat(value)  # ValueError for 2024-13-45 and the like
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def format_timestamp(value: datetime) -> str:
    """Write a naive UTC datetime as vumi does: ``%Y-%m-%d %H:%M:%S.%f``."""
    # isoformat gives the same text as strftime(VUMI_DATE_FORMAT), several times faster.
    return value.isoformat(sep=" ", timespec="microseconds")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _new_id() -> str:
    return uuid.uuid4().hex


def _validate_timestamp(value: object) -> datetime:
    if isinstance(value, datetime):
        # Aware datetimes from our own code are converted; naive ones are taken as UTC.
        if value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value
    if isinstance(value, str):
        try:
            return parse_timestamp(value)
        except ValueError:
            pass
    raise PydanticCustomError(
        "vumi_timestamp",
        "should be a UTC time like '2024-01-31 12:00:00.000000'",
    )


Timestamp = Annotated[
    datetime,
    PlainValidator(_validate_timestamp),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]


# ---------------------------------------------------------------------------------------
# Pydantic errors -> InvalidEnvelope


# The message_type values, which parse_envelope also uses as its union tags.
_ENVELOPE_TAGS = frozenset({"user_message", "event"})


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# A body this long that opens an array or a string is refused without parsing the rest:
# a megabyte of poison would otherwise be parsed whole to learn it is no object.
_LOOK_AHEAD_BYTES = 64 * 1024
_OPENERS = {ord("["): "an array", ord('"'): "a string", "[": "an array", '"': "a string"}


def _refuse_unread(body: bytes | str, what: str) -> None:
    """Raise ``InvalidEnvelope`` for a long ``body`` that cannot be a JSON object."""
    if len(body) <= _LOOK_AHEAD_BYTES:
        return
    head = body[:64].lstrip()
    kind = _OPENERS.get(head[0]) if head else None
    if kind is not None:
        problem = f"should be a JSON object, got what opens as {kind} ({len(body)} bytes)"
        raise InvalidEnvelope([("envelope", problem)], what)


def _invalid(exc: ValidationError, what: str) -> InvalidEnvelope:
    """Translate pydantic's errors into ours: one ``(field, problem)`` per error."""
    errors: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        kind, loc, ctx, given = error["type"], error["loc"], error.get("ctx") or {}, error["input"]
        if loc and loc[0] in _ENVELOPE_TAGS:
            # parse_envelope's union puts the kind it chose first: name it, not the field.
            what, loc = str(loc[0]), loc[1:]
        if kind == "json_invalid":
            errors.append(("body", f"not valid JSON ({ctx.get('error', error['msg'])})"))
        elif kind == "union_tag_not_found" and isinstance(given, dict):
            # parse_envelope could not tell which kind of envelope this is.
            if "message_type" in given:
                got = _short_repr(given["message_type"])
                errors.append(("message_type", f"should be 'user_message' or 'event', got {got}"))
            else:
                errors.append(("message_type", "required field is missing"))
        elif kind in {"model_type", "union_tag_not_found"} and not loc:
            errors.append(("envelope", f"should be a JSON object, got {_json_type(given)}"))
        elif "field" in ctx:  # our cross-field checks name the field they are about
            errors.append((str(ctx["field"]), error["msg"]))
        elif kind == "missing":
            errors.append((_dotted(loc), "required field is missing"))
        else:
            problem = error["msg"].removeprefix("Input ")  # "should be a valid string"
            errors.append((_dotted(loc), f"{problem}, got {_short_repr(given)}"))
    return InvalidEnvelope(errors, what)


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "envelope"


# ---------------------------------------------------------------------------------------
# Envelopes


class _Envelope(BaseModel):
    """What Message and Event share: config, (de)serialisation, and error translation."""

    # extra="ignore": unknown keys are read past and never written back.
    model_config = ConfigDict(extra="ignore")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _invalid(exc, self._what()) from None

    # This __init__ only translates errors. The marker (pydantic's own, set on
    # BaseModel.__init__) tells pydantic so; without it, pydantic would call this method
    # from Python for every envelope validated inside another schema (parse_envelope's
    # union), instead of validating in Rust.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def _what(cls) -> str:
        return cls.__name__

    def serialise(self) -> dict[str, Any]:
        """Every wire key, JSON-ready: enums as strings, timestamp in vumi's format."""
        return self.model_dump(mode="json")

    @classmethod
    def deserialise(cls, data: dict[str, Any]) -> Self:
        """Read an envelope from a decoded JSON object; raises ``InvalidEnvelope``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc, cls._what()) from None

    def to_json(self) -> bytes:
        """The envelope as UTF-8 JSON bytes, ready to publish."""
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json(cls, body: bytes | str) -> Self:
        """Read an envelope from JSON; raises ``InvalidEnvelope``, whatever is wrong."""
        _refuse_unread(body, cls._what())
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            raise _invalid(exc, cls._what()) from None


class Message(_Envelope):
    """A user message (``message_type`` ``"user_message"``), inbound or outbound.

    ``to_addr``, ``from_addr``, ``transport_name`` and ``transport_type`` are required;
    ``message_id`` defaults to a fresh uuid4 hex and ``timestamp`` to now (naive UTC).
    Field order is the wire order.
    """

    to_addr: StrictStr
    from_addr: StrictStr
    transport_name: StrictStr
    transport_type: StrictStr
    message_version: StrictStr = MESSAGE_VERSION
    message_type: Literal["user_message"] = "user_message"
    timestamp: Timestamp = Field(default_factory=_utcnow)
    routing_metadata: dict[str, Any] = Field(default_factory=dict)
    helper_metadata: dict[str, Any] = Field(default_factory=dict)
    message_id: StrictStr = Field(default_factory=_new_id)
    in_reply_to: StrictStr | None = None
    provider: StrictStr | None = None
    session_event: SessionEvent | None = None
    content: StrictStr | None = None
    transport_metadata: dict[str, Any] = Field(default_factory=dict)
    group: StrictStr | None = None
    to_addr_type: AddressType | None = None
    from_addr_type: AddressType | None = None

    @classmethod
    def _what(cls) -> str:
        return "user_message"

    def reply(
        self,
        content: str | None = None,
        session_event: SessionEvent | str | None = SessionEvent.RESUME,
        **overrides: Any,
    ) -> Message:
        """A new message back to the sender, on the same transport, in reply to this one.

        Addresses (and their types) are swapped; ``in_reply_to`` is this message's id;
        ``transport_name``, ``transport_type``, ``provider`` and ``group`` are kept;
        ``transport_metadata`` and ``helper_metadata`` are copied (deeply, so changing the
        reply's never changes this message's). ``session_event`` defaults to ``resume``,
        as in vumi2; pass ``SessionEvent.CLOSE`` to end a session.

        ``overrides`` set any other field. The fields that make it a reply
        (``REPLY_FIXED_FIELDS``) cannot be overridden: like an unknown keyword, trying
        raises ``TypeError`` (a bug in the caller, not a bad envelope; vumi2 does the same).
        """
        fixed = REPLY_FIXED_FIELDS.intersection(overrides)
        if fixed:
            names = ", ".join(sorted(fixed))
            raise TypeError(f"reply() may not override {names}: a reply goes back the same way")
        unknown = overrides.keys() - type(self).model_fields.keys()
        if unknown:
            raise TypeError(
                f"reply() got unexpected keyword arguments: {', '.join(sorted(unknown))}"
            )
        fields: dict[str, Any] = {
            "to_addr": self.from_addr,
            "from_addr": self.to_addr,
            "transport_name": self.transport_name,
            "transport_type": self.transport_type,
            "in_reply_to": self.message_id,
            "provider": self.provider,
            "group": self.group,
            "transport_metadata": copy.deepcopy(self.transport_metadata),
            "helper_metadata": copy.deepcopy(self.helper_metadata),
            "to_addr_type": self.from_addr_type,
            "from_addr_type": self.to_addr_type,
            "content": content,
            "session_event": session_event,
        }
        fields.update(overrides)
        return Message(**fields)


REPLY_FIXED_FIELDS = frozenset(
    {
        "to_addr",
        "from_addr",
        "transport_name",
        "transport_type",
        "in_reply_to",
        "provider",
        "group",
        "transport_metadata",
    }
)

# Which field each event type cannot do without (vumi2 enforces the same).
_REQUIRED_FOR_EVENT_TYPE = {
    EventType.ACK: "sent_message_id",
    EventType.NACK: "nack_reason",
    EventType.DELIVERY_REPORT: "delivery_status",
}


class Event(_Envelope):
    """An event about a message we sent (``message_type`` ``"event"``).

    ``user_message_id`` is the ``message_id`` of that message. An ``ack`` needs
    ``sent_message_id`` (the provider's id for it), a ``nack`` needs ``nack_reason``, a
    ``delivery_report`` needs ``delivery_status``. The classmethods ``ack``, ``nack`` and
    ``delivery_report`` build each kind. ``transport_metadata`` may be null, as in vumi2.
    """

    user_message_id: StrictStr
    event_type: EventType
    message_version: StrictStr = MESSAGE_VERSION
    message_type: Literal["event"] = "event"
    timestamp: Timestamp = Field(default_factory=_utcnow)
    routing_metadata: dict[str, Any] = Field(default_factory=dict)
    helper_metadata: dict[str, Any] = Field(default_factory=dict)
    transport_metadata: dict[str, Any] | None = Field(default_factory=dict)
    event_id: StrictStr = Field(default_factory=_new_id)
    sent_message_id: StrictStr | None = None
    nack_reason: StrictStr | None = None
    delivery_status: DeliveryStatus | None = None

    @classmethod
    def _what(cls) -> str:
        return "event"

    @model_validator(mode="after")
    def _has_what_its_type_needs(self) -> Self:
        field = _REQUIRED_FOR_EVENT_TYPE[self.event_type]
        if getattr(self, field) is None:
            raise PydanticCustomError(
                "event_field_required",
                "required when event_type is '{event_type}'",
                {"field": field, "event_type": self.event_type.value},
            )
        return self

    @classmethod
    def ack(cls, message: Message | str, sent_message_id: str, **fields: Any) -> Event:
        """The provider accepted ``message`` (a Message or its id) as ``sent_message_id``."""
        return cls(
            user_message_id=_message_id(message),
            event_type=EventType.ACK,
            sent_message_id=sent_message_id,
            **fields,
        )

    @classmethod
    def nack(cls, message: Message | str, reason: str, **fields: Any) -> Event:
        """The provider refused ``message`` (a Message or its id), for ``reason``."""
        return cls(
            user_message_id=_message_id(message),
            event_type=EventType.NACK,
            nack_reason=reason,
            **fields,
        )

    @classmethod
    def delivery_report(
        cls, message: Message | str, status: DeliveryStatus | str, **fields: Any
    ) -> Event:
        """``message`` (a Message or its id) is now pending, failed or delivered."""
        # A string status is validated (and refused) like any other field value.
        status_field: dict[str, Any] = {"delivery_status": status}
        return cls(
            user_message_id=_message_id(message),
            event_type=EventType.DELIVERY_REPORT,
            **status_field,
            **fields,
        )


def _message_id(message: Message | str) -> str:
    return message.message_id if isinstance(message, Message) else message


# ---------------------------------------------------------------------------------------
# Either kind


def _envelope_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        tag = value.get("message_type")
        return tag if tag in _ENVELOPE_TAGS else None
    return None


# One pass over the bytes for both kinds: pydantic reads message_type, then validates
# the rest against the matching model, so a router pays no second parse to dispatch.
_ANY_ENVELOPE: TypeAdapter[Message | Event] = TypeAdapter(
    Annotated[
        Annotated[Message, Tag("user_message")] | Annotated[Event, Tag("event")],
        Discriminator(_envelope_tag),
    ]
)


def parse_envelope(body: bytes | str) -> Message | Event:
    """Read a Message or an Event, by its ``message_type``; raises ``InvalidEnvelope``.

    For queues that carry both. Unlike ``Message.from_json``, which takes a missing
    ``message_type`` to mean ``user_message`` as vumi2 does, this needs it present.
    """
    _refuse_unread(body, "envelope")
    try:
        return _ANY_ENVELOPE.validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc, "envelope") from None
