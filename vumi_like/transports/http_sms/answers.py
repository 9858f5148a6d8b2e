"""Reading a provider's answer to a send: accepted (with its id, if any), or which failure.

The rule, in order:

1. **Status.** Not a success status (``success_statuses``, or any 2xx when that is
   empty): 408, 429 and 5xx are temporary (``Retry-After`` kept), anything else is a
   refusal. The reason quotes the start of the answer's text, where providers say why.
2. **Body check**, when configured (``success_json_path`` = ``success_json_value``,
   ``success_regex``): a success status whose body does not pass is a refusal. The
   provider answered, and said no in its body (or said something we cannot read, which
   the operator asked us to treat as no by configuring the check). Sending the same
   request again would get the same answer.
3. **Provider id**, from ``id_json_path``, ``id_regex`` or ``id_header``. When none is
   configured (Kannel gives no id), the transport uses our ``message_id``. When one is
   configured but the answer has no id there (garbage, a changed API),
   ``MissingProviderId`` says why; the message was accepted all the same.

Why an accepted message without an id is acked, not retried nor nacked: the provider
said it took the message, so a retry would send the phone a second copy and a nack
would report as failed a message that is on its way. Acking it under our own
``message_id`` (the transport does this, and logs a warning) only costs the delivery
reports that quote the provider's id, which then find no message; reports that echo
our id through a callback URL template still match.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import httpx

from vumi_like.retry import retry_after_seconds
from vumi_like.transports.http_sms.config import HttpSmsTransportConfig
from vumi_like.transports.http_sms.lookup import find_text
from vumi_like.transports.outcomes import PermanentFailure, TemporaryFailure

__all__ = ["AnswerRules", "MissingProviderId"]

_EXCERPT = 200
_NOT_JSON = object()


class MissingProviderId(Exception):
    """The provider accepted the message, but its answer has no id where configured."""


def excerpt(text: str) -> str:
    """The start of ``text`` on one line, for a reason or a log line."""
    flat = " ".join(text.split())
    if not flat:
        return "(empty answer)"
    return flat if len(flat) <= _EXCERPT else flat[: _EXCERPT - 3] + "..."


def _as_compared(value: Any) -> str:
    # YAML's 0 and JSON's "0" say the same thing to a person writing a config.
    return value if isinstance(value, str) else json.dumps(value)


@attrs.frozen
class AnswerRules:
    """The reading rules of ``HttpSmsTransportConfig``, compiled once."""

    success_statuses: frozenset[int]
    success_json_path: str | None
    success_json_value: Any
    success_regex: re.Pattern[str] | None
    id_json_path: str | None
    id_regex: re.Pattern[str] | None
    id_header: str | None

    @classmethod
    def from_config(cls, config: HttpSmsTransportConfig) -> AnswerRules:
        return cls(
            success_statuses=frozenset(config.success_statuses),
            success_json_path=config.success_json_path,
            success_json_value=config.success_json_value,
            success_regex=re.compile(config.success_regex) if config.success_regex else None,
            id_json_path=config.id_json_path,
            id_regex=re.compile(config.id_regex) if config.id_regex else None,
            id_header=config.id_header,
        )

    @property
    def reads_an_id(self) -> bool:
        return bool(self.id_json_path or self.id_regex or self.id_header)

    def provider_id(self, response: httpx.Response) -> str | None:
        """The provider's id for the message it accepted (None: no id is configured).

        Raises ``PermanentFailure`` / ``TemporaryFailure`` when it did not accept it,
        ``MissingProviderId`` when it did but its id is not where configured.
        """
        status = response.status_code
        if not self._success_status(status):
            reason = f"HTTP {status}: {excerpt(response.text)}"
            if status in (408, 429) or status >= 500:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                raise TemporaryFailure(reason, retry_after=retry_after)
            raise PermanentFailure(reason)
        body = _json(response) if self.success_json_path or self.id_json_path else _NOT_JSON
        self._check_body(response, body)
        return self._find_id(response, body)

    def _success_status(self, status: int) -> bool:
        if self.success_statuses:
            return status in self.success_statuses
        return 200 <= status < 300

    def _check_body(self, response: httpx.Response, body: Any) -> None:
        if self.success_json_path is not None:
            found = find_text(body, self.success_json_path) if body is not _NOT_JSON else None
            if found is None or found != _as_compared(self.success_json_value):
                raise PermanentFailure(
                    f"HTTP {response.status_code} but not accepted: {excerpt(response.text)}"
                )
        if self.success_regex is not None and not self.success_regex.search(response.text):
            raise PermanentFailure(
                f"HTTP {response.status_code} but not accepted: {excerpt(response.text)}"
            )

    def _find_id(self, response: httpx.Response, body: Any) -> str | None:
        if self.id_json_path is not None:
            if body is _NOT_JSON:
                raise MissingProviderId(f"the answer is not JSON: {excerpt(response.text)}")
            found = find_text(body, self.id_json_path)
            if found is None:
                raise MissingProviderId(f"no {self.id_json_path!r} in the answer")
            return found
        if self.id_regex is not None:
            match = self.id_regex.search(response.text)
            group: int | str = 0
            if "id" in self.id_regex.groupindex:
                group = "id"
            elif self.id_regex.groups:
                group = 1
            found = match[group] if match is not None else None
            if not found:
                raise MissingProviderId(f"no id in the answer: {excerpt(response.text)}")
            return str(found)
        if self.id_header is not None:
            found = response.headers.get(self.id_header, "").strip()
            if not found:
                raise MissingProviderId(f"no {self.id_header} header in the answer")
            return found
        return None


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return _NOT_JSON
