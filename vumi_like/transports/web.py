"""``WebTransport``: messages to and from a web portal, as signed JSON over HTTP.

For web messages (seed 003's ``/webmessage``: a message a party reads in a portal, not
on a phone) and anything else that speaks plain signed webhooks.

Every request either way is signed as the project's own webhooks are
(``vumi_like.messaging.webhooks``, the Standard Webhooks scheme) with the one shared
``secret``: ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{raw body}">``.
A portal can check ours with any Standard Webhooks library.

* **Outbound**: ``POST {url}`` with ``{"id", "from", "to", "content", "in_reply_to",
  "session_event", "timestamp", "metadata"}``; ``id`` is the message id, also the
  ``webhook-id`` (the same on every retry, so the portal can drop a repeat);
  ``timestamp`` is the message's, ISO 8601 UTC; ``metadata`` is the message's
  ``helper_metadata`` (the Messaging API puts the tenant, the channel and the party's
  headers and external references there). A 2xx is an ack, under the answer's JSON
  ``id`` if it has one, else under our message id (the portal has the message either
  way); other 4xx is a nack; 408, 429, 5xx, timeouts and connection errors are retried
  (``Retry-After`` honoured).
* **Inbound** (with ``http_bind``): ``POST /inbound`` with ``{"from", "to", "content"}``
  and optionally ``in_reply_to``, ``session_event``, ``metadata`` -> an inbound message
  (``transport_type`` ``web``), answered ``{"message_id": ...}``.
* **Statuses** (with ``http_bind``): ``POST /status`` with ``{"id", "status"}``, ``id``
  being what the ack carried and ``status`` one of ``delivered``, ``read`` (reported as
  delivered) or ``failed``, optionally with a ``reason`` -> a delivery report, 204.

Both routes refuse (403, one log line, nothing published) a request whose signature is
missing, is not of its body with our secret, or is more than ``signature_tolerance``
seconds away from now: a captured request cannot be replayed later. Within that window
a repeat is possible, as with any at-least-once sender; ``webhook-id`` is kept in
``transport_metadata`` for whoever needs to drop it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import httpx
import trio
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictStr,
    ValidationError,
    field_validator,
)
from quart import request

from vumi_like.errors import ProblemError
from vumi_like.messages import DeliveryStatus, Message, SessionEvent
from vumi_like.messaging.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_ID_HEADER,
    signature_headers,
    verify,
)
from vumi_like.retry import retry_after_seconds
from vumi_like.transports.base import BaseTransport, TransportConfig
from vumi_like.transports.outcomes import TemporaryFailure, classify_http_status
from vumi_like.validation import describe_validation_error
from vumi_like.worker import PublishFailed

__all__ = [
    "TRANSPORT_TYPE",
    "InboundRequest",
    "StatusRequest",
    "WebTransport",
    "WebTransportConfig",
    "outbound_body",
]

TRANSPORT_TYPE = "web"
_STATUSES = {
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.DELIVERED,
    "failed": DeliveryStatus.FAILED,
}


class WebTransportConfig(TransportConfig):
    url: str = Field(description="Where outbound messages are POSTed (http:// or https://)")
    secret: SecretStr = Field(
        description="Shared signing secret, both ways (whsec_<base64> or any text)"
    )
    request_timeout: float = Field(
        default=10, gt=0, description="Seconds allowed for one POST of an outbound"
    )
    signature_tolerance: float = Field(
        default=300,
        gt=0,
        description="Seconds a signed request's webhook-timestamp may be from now",
    )

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("should be an http:// or https:// URL")
        return url


class InboundRequest(BaseModel):
    """What the portal POSTs to ``/inbound``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_addr: StrictStr = Field(alias="from")
    to_addr: StrictStr = Field(alias="to")
    content: StrictStr | None = None
    in_reply_to: StrictStr | None = None
    session_event: SessionEvent | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class StatusRequest(BaseModel):
    """What the portal POSTs to ``/status``."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr
    status: Literal["delivered", "read", "failed"]
    reason: StrictStr | None = None


def outbound_body(message: Message) -> dict[str, Any]:
    """The JSON POSTed for ``message`` (see the module docstring)."""
    return {
        "id": message.message_id,
        "from": message.from_addr,
        "to": message.to_addr,
        "content": message.content,
        "in_reply_to": message.in_reply_to,
        "session_event": message.session_event,
        "timestamp": message.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "metadata": message.helper_metadata,
    }


def _provider_id(answer: bytes) -> str | None:
    try:
        provider_id = json.loads(answer).get("id")
    except (ValueError, AttributeError):
        return None
    return provider_id if isinstance(provider_id, str) and provider_id else None


class WebTransport(BaseTransport):
    config_class = WebTransportConfig
    config: WebTransportConfig

    async def setup_provider(self) -> None:
        self.client = httpx.AsyncClient(timeout=self.config.request_timeout)
        if self.http is not None:
            self.http.add_url_rule(
                "/inbound", "web_inbound", self._inbound_route, methods=["POST"]
            )
            self.http.add_url_rule("/status", "web_status", self._status_route, methods=["POST"])

    async def teardown_provider(self) -> None:
        await self.client.aclose()

    async def send(self, message: Message) -> Sequence[str]:
        body = json.dumps(outbound_body(message), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            **signature_headers(self.config.secret.get_secret_value(), message.message_id, body),
        }
        url, timeout = self.config.url, self.config.request_timeout
        try:
            # httpx's timeout bounds each phase of the request; this bounds the whole.
            with trio.fail_after(timeout):
                response = await self.client.post(url, content=body, headers=headers)
        except (trio.TooSlowError, httpx.TimeoutException):
            raise TemporaryFailure(f"POST {url}: no answer within {timeout} s") from None
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"POST {url} failed: {type(exc).__name__}: {exc}") from None
        snippet = response.content[:200].decode("utf-8", "replace").strip()
        classify_http_status(
            response.status_code,
            snippet or "(empty body)",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
        return [_provider_id(response.content) or message.message_id]

    # -- what the portal sends us

    async def _signed_body(self) -> tuple[bytes, str]:
        """The raw body and its webhook-id, if signed with our secret and recent enough."""
        raw: bytes = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        headers = request.headers
        names = (WEBHOOK_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
        missing = [name for name in names if not headers.get(name)]
        if missing:
            self.log.warning("web request refused: no signature", path=request.path)
            raise ProblemError(
                403, f"missing header(s): {', '.join(missing)}", code="missing_signature"
            )
        secret = self.config.secret.get_secret_value()
        tolerance = self.config.signature_tolerance
        if not verify(secret, dict(headers), raw, tolerance=tolerance):
            self.log.warning("web request refused: bad or stale signature", path=request.path)
            raise ProblemError(
                403,
                f"{SIGNATURE_HEADER} does not sign the body with the shared secret, or "
                f"{TIMESTAMP_HEADER} is more than {tolerance:g} s from now",
                code="invalid_signature",
            )
        return raw, headers[WEBHOOK_ID_HEADER]

    def _invalid(self, exc: ValidationError) -> ProblemError:
        detail = describe_validation_error(exc, subject="the body")
        self.log.warning("web request refused: invalid body", path=request.path, error=detail)
        return ProblemError(400, detail, code="invalid_body")

    async def _inbound_route(self) -> tuple[dict[str, str], int]:
        raw, webhook_id = await self._signed_body()
        try:
            body = InboundRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise self._invalid(exc) from None
        message = Message(
            to_addr=body.to_addr,
            from_addr=body.from_addr,
            transport_name=self.config.transport_name,
            transport_type=TRANSPORT_TYPE,
            content=body.content,
            in_reply_to=body.in_reply_to,
            session_event=body.session_event,
            transport_metadata={"web": {"webhook_id": webhook_id, "metadata": body.metadata}},
        )
        try:
            await self.publish_inbound(message)
        except PublishFailed as exc:
            raise self._unavailable(exc) from None
        return {"message_id": message.message_id}, 200

    async def _status_route(self) -> tuple[str, int]:
        raw, webhook_id = await self._signed_body()
        try:
            body = StatusRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise self._invalid(exc) from None
        metadata: dict[str, Any] = {"status": body.status, "webhook_id": webhook_id}
        if body.reason is not None:
            metadata["reason"] = body.reason
        try:
            await self.delivery_report(body.id, _STATUSES[body.status], {"web": metadata})
        except PublishFailed as exc:
            raise self._unavailable(exc) from None
        return "", 204

    def _unavailable(self, exc: PublishFailed) -> ProblemError:
        self.log.error("web request not published", path=request.path, error=str(exc))
        return ProblemError(503, "not published; try again", code="broker_unavailable")
