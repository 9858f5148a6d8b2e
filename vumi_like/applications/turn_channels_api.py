"""``TurnChannelsApi``: a channel for Turn (https://whatsapp.turn.io/docs/api/channel_api).

Three HTTP exchanges, documented with examples in ``docs/turn_channels_api.md``:

* **Outbound** - Turn POSTs ``<vumi_api_path>/messages`` to us, signed with
  ``X-Turn-Hook-Signature`` (base64 HMAC-SHA256 of the raw body, keyed with
  ``turn_hmac_secret``). We answer ``{"messages": [{"id": <message_id>}]}`` once the
  outbound is confirmed by the broker, or a problem document (401 bad signature, 400
  bad body or unknown ``reply_to``, 413 too large, 504 not published within
  ``request_timeout``).
* **Inbound** - every inbound on the connector is POSTed to ``<turn_api_url>/messages``.
* **Events** - acks and delivery reports are POSTed to ``<turn_api_url>/statuses``.

Replies. Turn rarely says which message it answers, but session transports (USSD) need
to know. So an outbound with ``reply_to`` replies to that cached inbound, and one
without replies to the last inbound cached from its ``to`` address, if there is one
within the cache's ``inbound_ttl``; otherwise it is a fresh message. A reply keeps the
session open (``resume``) when Turn says it is ``waiting_for_user_input``, else it
closes it.

Posting to Turn, and why retries go through the broker. A failed POST (connection
error, timeout, 408, 429, 5xx) is not retried by sleeping in the handler: that would
hold a prefetch slot for minutes and be lost on a restart. The handler hands the
envelope to ``retry_later`` (a broker-held delay queue) and returns, so the delivery is
acked and the envelope comes back after::

    delay = retry_delay_base * retry_delay_exponent ** attempt   (attempt = 0, 1, 2, ...)

times a random factor in ``[1 - retry_jitter, 1 + retry_jitter]`` so that replicas
retrying after an outage do not hammer Turn in step; a ``Retry-After`` that asks for
longer wins. After ``max_retries`` retries, or at once for any other 4xx (Turn will not
accept it however often we ask), the handler raises and the connector dead-letters the
envelope with the reason, where ``vumi-like dlq`` can show and replay it.

Status mapping (Turn accepts only ``sent`` and ``delivered``): ack -> ``sent``;
delivery report ``delivered`` -> ``delivered``; ``failed`` -> ``sent`` (as vumi2: Turn has
no failed status); ``pending`` -> not forwarded (it says nothing ``sent`` did not);
nack -> not forwarded (the message never left us, so ``sent`` would be false), logged
as a warning. Events for an outbound the cache does not know (sent by someone else, or
older than ``outbound_ttl``, 24 h by default) are logged and dropped, not
dead-lettered: outliving the TTL is expected, not a fault.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import trio
from prometheus_client import Counter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from quart import request
from werkzeug.exceptions import RequestEntityTooLarge

from vumi_like.broker import BrokerError
from vumi_like.caches import CacheError, MessageCache, MessageCacheSettings
from vumi_like.config import BaseConfig
from vumi_like.connectors import current_attempt
from vumi_like.errors import ProblemError
from vumi_like.messages import DeliveryStatus, Event, EventType, Message, SessionEvent
from vumi_like.metrics import REGISTRY
from vumi_like.worker import BaseWorker

SIGNATURE_HEADER = "X-Turn-Hook-Signature"

TURN_POSTS = Counter(
    "vumi_like_turn_posts",
    "POSTs to Turn by endpoint (messages, statuses) and outcome (ok, retry, failed)",
    ("worker", "endpoint", "outcome"),
    registry=REGISTRY,
)

# Statuses a retry can cure: Turn is busy, overloaded or briefly broken.
_RETRYABLE_STATUSES = frozenset({408, 429})


class TurnChannelsApiConfig(BaseConfig, MessageCacheSettings):
    connector_name: str = Field(
        description="Connector: publishes <name>.outbound, consumes <name>.inbound and "
        "<name>.event"
    )
    vumi_api_path: str = Field(
        default="", description="Path prefix of the outbound API: POST <vumi_api_path>/messages"
    )
    turn_api_url: str = Field(
        description="Base URL of Turn's channel API; inbound goes to <url>/messages, "
        "events to <url>/statuses"
    )
    default_from_addr: str = Field(description="from_addr of outbounds whose 'from' is null")
    auth_token: SecretStr = Field(description="Bearer token for requests to Turn")
    turn_hmac_secret: SecretStr = Field(
        description="Key of the HMAC-SHA256 signature Turn puts on its requests to us"
    )
    request_timeout: float = Field(
        default=240, gt=0, description="Seconds allowed to handle one outbound request"
    )
    mo_message_url_timeout: float = Field(
        default=10, gt=0, description="Seconds allowed for one POST of an inbound to Turn"
    )
    event_url_timeout: float = Field(
        default=10, gt=0, description="Seconds allowed for one POST of an event to Turn"
    )
    transport_type: str = Field(default="sms", description="transport_type of non-reply outbound")
    transport_name: str | None = Field(
        default=None,
        description="transport_name of non-reply outbound (default: connector_name, as "
        "vumi2); name the transport when a ToAddressRouter routes by it",
    )
    max_retries: int = Field(
        default=3, ge=0, description="Retries of a POST to Turn before dead-lettering"
    )
    retry_delay_exponent: float = Field(
        default=2, ge=1, description="Growth factor of the retry delay per attempt"
    )
    retry_delay_base: float = Field(
        default=2, gt=0, description="Seconds before the first retry (before jitter)"
    )
    retry_jitter: float = Field(
        default=0.2, ge=0, lt=1, description="Retry delays vary randomly by this fraction"
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1, description="Largest outbound request body accepted (413)"
    )
    status_format: Literal["flat", "turn"] = Field(
        default="flat",
        description='"flat": {user_message_id, timestamp, status}; "turn": '
        "{status: {id, recipient_id, status, timestamp}}",
    )

    @field_validator("vumi_api_path")
    @classmethod
    def _path_is_absolute(cls, path: str) -> str:
        path = path.rstrip("/")
        return path if not path or path.startswith("/") else f"/{path}"

    @field_validator("turn_api_url")
    @classmethod
    def _turn_url_is_http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("should be an http:// or https:// URL")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _serves_http(self) -> TurnChannelsApiConfig:
        if not self.http_bind:
            raise ValueError("http_bind is required: Turn sends outbound messages over HTTP")
        return self


# -- the outbound request body


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


def _describe(exc: ValidationError) -> str:
    """One line naming each problem of a request body, for a problem ``detail``."""
    problems = []
    for error in exc.errors(include_url=False):
        if error["type"] == "json_invalid":
            return "the body is not valid JSON"
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "model_type" and not error["loc"]:
            return "the body should be a JSON object"
        if error["type"] == "missing":
            problems.append(f"{where}: is required")
        else:
            message = error["msg"].removeprefix("Value error, ").removeprefix("Input ")
            problems.append(f"{where}: {message}")
    return "; ".join(problems)


def signature(secret: str, body: bytes) -> str:
    """``X-Turn-Hook-Signature`` for ``body``: base64 of its HMAC-SHA256 keyed by ``secret``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


# -- what we POST to Turn


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


class TurnPostFailed(Exception):
    """A POST to Turn failed for good; the envelope is dead-lettered with this reason."""


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from now, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# -- the worker


_TO_ADDR = "to_addr"


def _ids(envelope: Message | Event) -> dict[str, str]:
    if isinstance(envelope, Event):
        return {"event_id": envelope.event_id, "message_id": envelope.user_message_id}
    return {"message_id": envelope.message_id}


class TurnChannelsApi(BaseWorker):
    config_class = TurnChannelsApiConfig
    config: TurnChannelsApiConfig

    async def setup(self) -> None:
        self.random = random.Random()
        # One client for the worker's life: its connection pool is what makes a busy
        # channel cheap. Timeouts are per request (each endpoint has its own).
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {self.config.auth_token.get_secret_value()}"}
        )
        # Built before anything can fail, so teardown always has both to close.
        self.message_cache: MessageCache = self.config.make_message_cache()
        await self.message_cache.open()
        assert self.http is not None  # http_bind is required by the config
        self.http.config["MAX_CONTENT_LENGTH"] = self.config.max_body_bytes
        self.http.add_url_rule(
            f"{self.config.vumi_api_path}/messages",
            "turn_outbound",
            self._outbound_route,
            methods=["POST"],
        )
        self.connector = await self.setup_receive_inbound_connector(
            self.config.connector_name,
            inbound_handler=self.handle_inbound,
            event_handler=self.handle_event,
        )

    async def teardown(self) -> None:
        await self.client.aclose()
        await self.message_cache.aclose()

    # -- outbound: Turn -> us

    async def _outbound_route(self) -> tuple[dict[str, Any], int]:
        try:
            with trio.fail_after(self.config.request_timeout):
                message = await self._accept_outbound()
        except trio.TooSlowError:
            raise ProblemError(
                504,
                f"the message was not accepted within {self.config.request_timeout} s; "
                "it may or may not be sent",
                code="timeout",
            ) from None
        except CacheError as exc:
            self.log.error("message cache failed", error=str(exc))
            raise ProblemError(
                503, "the message cache is unavailable; try again", code="cache_unavailable"
            ) from None
        except BrokerError as exc:
            self.log.error("publishing the outbound failed", error=str(exc))
            raise ProblemError(
                503, "the message could not be queued; try again", code="broker_unavailable"
            ) from None
        return {"messages": [{"id": message.message_id}]}, 200

    async def _accept_outbound(self) -> Message:
        try:
            raw: bytes | None = await request.get_data(
                cache=False, as_text=False, parse_form_data=False
            )
        except RequestEntityTooLarge:
            raw = None
        # Quart refuses a body over MAX_CONTENT_LENGTH by its Content-Length or, sent
        # chunked, as it is read; the length check is for a server that did not.
        if raw is None or len(raw) > self.config.max_body_bytes:
            raise ProblemError(
                413,
                f"the body is larger than {self.config.max_body_bytes} bytes",
                code="body_too_large",
            )
        self._check_signature(raw)
        try:
            body = OutboundRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise ProblemError(400, _describe(exc), code="invalid_body") from None
        message = await self._build_outbound(body)
        # Stored before publishing, so events arriving at once find it.
        await self.message_cache.store_outbound(message.message_id, {_TO_ADDR: message.to_addr})
        await self.connector.publish_outbound(message)
        self.log.info(
            "outbound accepted",
            message_id=message.message_id,
            in_reply_to=message.in_reply_to,
            session_event=message.session_event,
        )
        return message

    def _check_signature(self, raw: bytes) -> None:
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            raise ProblemError(
                401, f"the {SIGNATURE_HEADER} header is missing", code="missing_signature"
            )
        expected = signature(self.config.turn_hmac_secret.get_secret_value(), raw)
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise ProblemError(
                401,
                f"the {SIGNATURE_HEADER} header does not match the body",
                code="invalid_signature",
            )

    async def _build_outbound(self, body: OutboundRequest) -> Message:
        content = body.turn.content()
        if body.reply_to is not None:
            inbound = await self.message_cache.get_inbound(body.reply_to)
            if inbound is None:
                raise ProblemError(
                    400,
                    f"reply_to {body.reply_to!r} is not a known inbound message "
                    "(never received, or older than the cache's inbound_ttl)",
                    code="unknown_reply_to",
                )
        else:
            # Turn does not say which message it answers; a session transport (USSD)
            # needs to know, so the last message from this address is the one.
            inbound = await self.message_cache.get_last_inbound_from(body.to)
        if inbound is not None:
            session_event = SessionEvent.RESUME if body.waiting else SessionEvent.CLOSE
            return inbound.reply(content, session_event=session_event)
        return Message(
            to_addr=body.to,
            from_addr=body.from_addr or self.config.default_from_addr,
            transport_name=self.config.transport_name or self.config.connector_name,
            transport_type=self.config.transport_type,
            content=content,
            session_event=SessionEvent.NEW if body.waiting else None,
        )

    # -- inbound and events: us -> Turn

    async def handle_inbound(self, message: Message) -> None:
        if current_attempt() == 0:
            # Not again on a retry: "the last inbound from" must stay the newest one.
            await self.message_cache.store_inbound(message)
        await self._post_to_turn(
            "messages", turn_inbound(message), self.config.mo_message_url_timeout, message
        )

    async def handle_event(self, event: Event) -> None:
        status = turn_status(event)
        if status is None:
            log = self.log.warning if event.event_type == EventType.NACK else self.log.debug
            log(
                "event not forwarded to Turn",
                event_id=event.event_id,
                message_id=event.user_message_id,
                event_type=str(event.event_type),
                nack_reason=event.nack_reason,
            )
            return
        info = await self.message_cache.get_outbound(event.user_message_id)
        if info is None:
            self.log.info(
                "event for an unknown outbound not forwarded (not ours, or older than the "
                "cache's outbound_ttl)",
                event_id=event.event_id,
                message_id=event.user_message_id,
            )
            return
        body = turn_status_body(event, status, info.get(_TO_ADDR, ""), self.config.status_format)
        await self._post_to_turn("statuses", body, self.config.event_url_timeout, event)

    async def _post_to_turn(
        self, endpoint: str, body: dict[str, Any], time_allowed: float, envelope: Message | Event
    ) -> None:
        """POST ``body``; on failure retry through the broker, or raise to dead-letter."""
        url = f"{self.config.turn_api_url}/{endpoint}"
        attempt = current_attempt()
        retry_after = None
        try:
            # httpx's timeout bounds each phase; the cancel scope bounds the whole.
            with trio.fail_after(time_allowed):
                response = await self.client.post(url, json=body, timeout=time_allowed)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            failure = f"POST {url} failed: {type(exc).__name__}: {exc}".rstrip(": ")
        else:
            if response.is_success:
                TURN_POSTS.labels(self.name, endpoint, "ok").inc()
                return
            failure = f"POST {url} answered {response.status_code}: {response.text[:200]}"
            if response.status_code < 500 and response.status_code not in _RETRYABLE_STATUSES:
                TURN_POSTS.labels(self.name, endpoint, "failed").inc()
                raise TurnPostFailed(f"{failure} (not retried)")
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if attempt >= self.config.max_retries:
            TURN_POSTS.labels(self.name, endpoint, "failed").inc()
            raise TurnPostFailed(f"{failure} (gave up after {attempt + 1} attempts)")
        delay = self.retry_delay(attempt, retry_after)
        self.log.warning(
            "POST to Turn failed; retrying",
            failure=failure,
            attempt=attempt,
            delay=delay,
            **_ids(envelope),
        )
        TURN_POSTS.labels(self.name, endpoint, "retry").inc()
        await self.connector.retry_later(envelope, delay)

    def retry_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt + 1``; see the module docstring for the formula."""
        delay = self.config.retry_delay_base * self.config.retry_delay_exponent**attempt
        jitter = self.config.retry_jitter
        delay *= 1 + self.random.uniform(-jitter, jitter)
        if retry_after is not None and retry_after > delay:
            return retry_after
        return delay


__all__ = [
    "SIGNATURE_HEADER",
    "OutboundRequest",
    "TurnChannelsApi",
    "TurnChannelsApiConfig",
    "TurnPostFailed",
    "retry_after_seconds",
    "signature",
    "turn_inbound",
    "turn_status",
    "turn_status_body",
]
