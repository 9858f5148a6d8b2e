"""Sending through the Graph API: the request body, the answer, what an error means.

Pure functions, no I/O: the transport does the talking, and each mapping is tested
on its own.

What an error means is decided by the Graph API's ``error.code`` first (Meta asks
clients to act on the code, not on titles or subcodes), then by the HTTP status:

* ``190`` (access token expired or invalid) or HTTP 401: ``TokenRejected``, a
  ``ProviderUnavailable``. A refused token fails every message alike, so nacking them
  one by one would fail the whole queue for one operator mistake; instead the
  transport pauses outbound (messages wait on the broker) and checks the token now
  and then until the Graph API takes it (``auth_check_interval``), or until it is
  restarted with a new one.
* Throttling (``4`` app call limit, ``80007`` account limit, ``130429`` throughput,
  ``131048`` spam limit, ``131056`` pair limit) and service trouble (``2``,
  ``131016``), and any 408, 429 or 5xx: ``TemporaryFailure``, retried with backoff.
* Anything else (``100`` invalid parameter, ``131026`` undeliverable, ``131047``
  outside the 24-hour window, ...): ``PermanentFailure``, a ``nack`` whose reason
  carries the code and Meta's message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from vumi_like.messages import Message
from vumi_like.transports.outcomes import (
    PermanentFailure,
    ProviderError,
    ProviderUnavailable,
    TemporaryFailure,
)
from vumi_like.validation import describe_validation_error

__all__ = [
    "HELPER_KEY",
    "TEMPORARY_CODES",
    "TOKEN_REJECTED_CODE",
    "GraphError",
    "Template",
    "TokenRejected",
    "graph_failure",
    "message_request",
    "reply_context",
    "sent_message_id",
]

# Our key in helper_metadata (templates) and transport_metadata (provider ids).
HELPER_KEY = "whatsapp"

TOKEN_REJECTED_CODE = 190
TEMPORARY_CODES: Mapping[int, str] = {
    2: "service temporarily unavailable",
    4: "app call rate limit",
    80007: "business account rate limit",
    130429: "throughput limit",
    131016: "service unavailable",
    131048: "spam rate limit",
    131056: "pair rate limit",
}
_RETRYABLE_STATUSES = frozenset({408, 429})


class TokenRejected(ProviderUnavailable):
    """The Graph API refused the access token: no message can be sent until it takes it."""


class TemplateLanguage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: StrictStr = Field(min_length=1)
    policy: StrictStr | None = None


class Template(BaseModel):
    """``helper_metadata["whatsapp"]["template"]``: a template message instead of text.

    ``language`` is a code (``"en_US"``) or Meta's object (``{"code": "en_US"}``);
    ``components`` (header, body and button parameters) go to Meta as given.
    """

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1)
    language: TemplateLanguage
    components: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("language", mode="before")
    @classmethod
    def _code_alone(cls, value: Any) -> Any:
        return {"code": value} if isinstance(value, str) else value

    def request(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "language": self.language.model_dump(exclude_none=True),
        }
        if self.components:
            body["components"] = self.components
        return body


def _template(message: Message) -> Template | None:
    ours = message.helper_metadata.get(HELPER_KEY)
    if not isinstance(ours, dict) or "template" not in ours:
        return None
    try:
        return Template.model_validate(ours["template"])
    except ValidationError as exc:
        subject = f"helper_metadata.{HELPER_KEY}.template"
        detail = describe_validation_error(exc, subject=subject)
        raise PermanentFailure(f"invalid {subject}: {detail}") from None


def reply_context(message: Message) -> str | None:
    """The WhatsApp id of the inbound ``message`` replies to, if it is a reply and known.

    An inbound carries its WhatsApp id in ``transport_metadata["whatsapp"]["message_id"]``
    and ``Message.reply()`` copies that metadata, so a reply finds it there.
    """
    if message.in_reply_to is None:
        return None
    ours = message.transport_metadata.get(HELPER_KEY)
    provider_id = ours.get("message_id") if isinstance(ours, dict) else None
    return provider_id if isinstance(provider_id, str) and provider_id else None


def message_request(message: Message) -> dict[str, Any]:
    """The body of ``POST /{phone_number_id}/messages`` for ``message``.

    A template when ``helper_metadata`` names one, else a text message of ``content``.
    Raises ``PermanentFailure`` when there is nothing to send or the template is invalid.
    """
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to_addr,
    }
    template = _template(message)
    if template is not None:
        body["type"] = "template"
        body["template"] = template.request()
    elif message.content:
        body["type"] = "text"
        body["text"] = {"body": message.content}
    else:
        raise PermanentFailure(
            f"nothing to send: no content and no helper_metadata.{HELPER_KEY}.template"
        )
    context = reply_context(message)
    if context is not None:
        body["context"] = {"message_id": context}
    return body


def sent_message_id(answer: bytes) -> str | None:
    """``messages[0].id`` of a successful send's answer, or None if it has none."""
    try:
        parsed = json.loads(answer)
        provider_id = parsed["messages"][0]["id"]
    except (ValueError, LookupError, TypeError):
        return None
    return provider_id if isinstance(provider_id, str) and provider_id else None


class GraphError(BaseModel):
    """The ``error`` object of a Graph API error answer (what we use of it)."""

    code: StrictInt | None = None
    message: StrictStr = ""
    error_subcode: StrictInt | None = None
    error_data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_answer(cls, answer: bytes) -> GraphError | None:
        try:
            parsed = json.loads(answer)
        except ValueError:
            return None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), dict):
            return None
        try:
            return cls.model_validate(parsed["error"])
        except ValidationError:
            return None

    def reason(self, status: int) -> str:
        code = "unknown" if self.code is None else str(self.code)
        if self.error_subcode is not None:
            code += f"/{self.error_subcode}"
        text = f"WhatsApp error {code} (HTTP {status}): {self.message or 'no message'}"
        details = self.error_data.get("details")
        if isinstance(details, str) and details and details not in text:
            text += f": {details}"
        return text


def graph_failure(status: int, answer: bytes, retry_after: float | None = None) -> ProviderError:
    """The outcome a non-2xx answer means (see the module docstring)."""
    error = GraphError.from_answer(answer)
    if error is None:
        snippet = answer[:200].decode("utf-8", "replace").strip() or "(empty body)"
        reason = f"HTTP {status}: {snippet}"
        code = None
    else:
        reason = error.reason(status)
        code = error.code
    if code == TOKEN_REJECTED_CODE or status == 401:
        return TokenRejected(reason)
    if code in TEMPORARY_CODES or status in _RETRYABLE_STATUSES or status >= 500:
        return TemporaryFailure(reason, retry_after=retry_after)
    return PermanentFailure(reason)
