"""``HttpSmsTransportConfig``: one provider's HTTP API, described by keys, checked at load.

Everything that can be checked before the first message is: templates name only known
placeholders, and only config values that are set; regular expressions compile; the
credentials an ``auth`` needs are there; callbacks served over HTTP have a way to be
verified. A mistake stops start-up with one line naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from vumi_like.messages import DeliveryStatus
from vumi_like.transports.base import TransportConfig
from vumi_like.transports.http_sms.presets import with_preset
from vumi_like.transports.http_sms.templates import (
    CONFIG_PLACEHOLDERS,
    placeholders,
    template_strings,
)

__all__ = ["HttpSmsTransportConfig"]

JsonScalar = str | int | float | bool


class HttpSmsTransportConfig(TransportConfig):
    preset: Literal["kannel", "twilio"] | None = Field(
        default=None,
        description="Fill the keys not set here with a provider's: kannel or twilio "
        "(see docs/transports/http_sms.md)",
    )
    transport_type: str = Field(default="sms", description="transport_type of inbound messages")

    # -- the request
    url: str = Field(
        description="The provider's send URL; may hold {placeholders} (their values are "
        "URL-quoted), e.g. {account_sid}"
    )
    method: Literal["GET", "POST"] = Field(default="POST", description="GET or POST")
    query: dict[str, str] = Field(
        default_factory=dict, description="Query parameters: name -> template"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers: name -> template"
    )
    body: dict[str, Any] = Field(
        default_factory=dict,
        description="POST body: name -> template (a JSON body may nest objects and lists)",
    )
    body_format: Literal["form", "json"] = Field(
        default="form", description="form (application/x-www-form-urlencoded) or json"
    )
    timeout: float = Field(
        default=10, gt=0, description="Seconds allowed for one request, answer included"
    )

    # -- authentication
    auth: Literal["none", "basic", "bearer", "query"] = Field(
        default="none",
        description="none; basic (username, password); bearer (token); query (token in "
        "the query parameter auth_query_param)",
    )
    username: str | None = Field(default=None, description="User for basic auth; {username}")
    password: SecretStr | None = Field(
        default=None, description="Password for basic auth; {password}"
    )
    token: SecretStr | None = Field(
        default=None, description="Token for bearer or query auth; {token}"
    )
    auth_query_param: str = Field(
        default="api_key", description="Query parameter carrying the token for auth: query"
    )
    account_sid: str | None = Field(
        default=None, description="Twilio Account SID; {account_sid}; the default username"
    )

    # -- reading the answer
    success_statuses: list[int] = Field(
        default_factory=list,
        description="HTTP statuses meaning accepted (empty: any 2xx); others are refusals, "
        "or temporary for 408, 429 and 5xx",
    )
    success_json_path: str | None = Field(
        default=None,
        description="Dotted path in a JSON answer that must equal success_json_value for "
        "the message to count as accepted",
    )
    success_json_value: JsonScalar | None = Field(
        default=None, description="The value expected at success_json_path"
    )
    success_regex: str | None = Field(
        default=None,
        description="Regular expression the answer's text must contain for the message to "
        "count as accepted",
    )
    id_json_path: str | None = Field(
        default=None, description="Dotted path of the provider id in a JSON answer ('sid')"
    )
    id_regex: str | None = Field(
        default=None,
        description="Regular expression finding the provider id in the answer's text "
        "(group 'id', else group 1, else the match)",
    )
    id_header: str | None = Field(
        default=None, description="Answer header holding the provider id"
    )

    # -- callbacks: delivery reports and inbound messages
    callback_base_url: str | None = Field(
        default=None,
        description="This worker's HTTP server as the provider reaches it "
        "(https://gw.example.org); {callback_base_url}, {dlr_url}, {inbound_url}",
    )
    dlr_path: str = Field(default="/dlr", description="Path of the delivery report callback")
    inbound_path: str = Field(default="/inbound", description="Path of the inbound callback")
    callback_auth: Literal["none", "secret", "twilio_signature"] = Field(
        default="secret",
        description="How callbacks are verified: secret (callback_secret in the query "
        "parameter callback_verify_param or the header callback_verify_header), "
        "twilio_signature (X-Twilio-Signature keyed by callback_secret), or none",
    )
    callback_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of callbacks, or Twilio's auth token; {callback_secret}",
    )
    callback_verify_param: str = Field(
        default="secret", description="Query parameter that may carry callback_secret"
    )
    callback_verify_header: str = Field(
        default="X-Callback-Secret", description="Header that may carry callback_secret"
    )
    dlr_id_field: str = Field(
        default="id", description="Callback field (query, form or JSON path) of the provider id"
    )
    dlr_status_field: str = Field(
        default="status", description="Callback field of the provider's delivery status"
    )
    dlr_error_field: str | None = Field(
        default=None, description="Callback field of the provider's error code, if any"
    )
    status_map: dict[str, DeliveryStatus] = Field(
        default_factory=lambda: {status.value: status for status in DeliveryStatus},
        description="Provider status -> pending, delivered or failed",
    )
    unknown_status: DeliveryStatus = Field(
        default=DeliveryStatus.PENDING,
        description="Delivery status of a provider status not in status_map (logged)",
    )
    inbound_from_field: str = Field(default="from", description="Inbound callback: sender")
    inbound_to_field: str = Field(default="to", description="Inbound callback: our number")
    inbound_content_field: str = Field(default="content", description="Inbound callback: text")
    inbound_id_field: str | None = Field(
        default=None, description="Inbound callback: the provider's id for the message"
    )
    inbound_answer: Literal["empty", "twiml"] = Field(
        default="empty",
        description="Body of the answer to an inbound callback: empty, or twiml "
        "(<Response/>: Twilio sends no reply)",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        return with_preset(data) if isinstance(data, Mapping) else data

    @field_validator("url", "callback_base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("should be an http:// or https:// URL")
        return url.rstrip("/") if url is not None else None

    @field_validator("dlr_path", "inbound_path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("should start with /")
        return path

    @field_validator("url", "query", "headers", "body")
    @classmethod
    def _known_placeholders(cls, value: Any) -> Any:
        for where, text in template_strings(value, ""):
            try:
                placeholders(text)
            except ValueError as exc:
                where = where.lstrip(".")
                raise ValueError(f"in {where!r}: {exc}" if where else str(exc)) from None
        return value

    @field_validator("success_regex", "id_regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> HttpSmsTransportConfig:
        needs = {"basic": ("username", "password"), "bearer": ("token",), "query": ("token",)}
        for key in needs.get(self.auth, ()):
            if getattr(self, key) is None:
                raise ValueError(f"{key} is required for auth: {self.auth}")
        if self.method == "GET" and self.body:
            raise ValueError("body: a GET request has no body (use query)")
        if self.body_format == "form":
            for name, value in self.body.items():
                if isinstance(value, Mapping | list):
                    raise ValueError(f"body.{name}: a form field is text, not an object or list")
        sources = [key for key in ("id_json_path", "id_regex", "id_header") if getattr(self, key)]
        if len(sources) > 1:
            raise ValueError(f"{' and '.join(sources)}: set one place to find the provider id")
        if (self.success_json_path is None) != (self.success_json_value is None):
            raise ValueError("success_json_path and success_json_value go together")
        if self.http_bind and self.callback_auth != "none" and self.callback_secret is None:
            raise ValueError(
                f"callback_secret is required to verify callbacks (callback_auth: "
                f"{self.callback_auth}), or set callback_auth: none"
            )
        values = self.placeholder_values()
        for where, name in self._config_placeholders():
            if values[name] is None:
                needed = "callback_base_url" if name in ("dlr_url", "inbound_url") else name
                raise ValueError(f"{needed} is required: {where} uses {{{name}}}")
        return self

    def _config_placeholders(self) -> Iterator[tuple[str, str]]:
        templates = [("url", self.url)]
        for key in ("query", "headers", "body"):
            templates += list(template_strings(getattr(self, key), key))
        for where, text in templates:
            for name in placeholders(text):
                if name in CONFIG_PLACEHOLDERS:
                    yield where, name

    def placeholder_values(self) -> dict[str, str | None]:
        """The config's values for templates (secrets revealed: for requests only)."""

        def reveal(secret: SecretStr | None) -> str | None:
            return secret.get_secret_value() if secret is not None else None

        base = self.callback_base_url
        return {
            "username": self.username,
            "password": reveal(self.password),
            "token": reveal(self.token),
            "account_sid": self.account_sid,
            "callback_secret": reveal(self.callback_secret),
            "callback_base_url": base,
            "dlr_url": f"{base}{self.dlr_path}" if base else None,
            "inbound_url": f"{base}{self.inbound_path}" if base else None,
        }
