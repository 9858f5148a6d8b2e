"""``TurnChannelsApiConfig``: vumi2's Turn Channels API keys, validated at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from vumi_like.caches import MessageCacheSettings
from vumi_like.config import BaseConfig
from vumi_like.retry import RetrySettings

__all__ = ["TurnChannelsApiConfig"]


class TurnChannelsApiConfig(BaseConfig, MessageCacheSettings, RetrySettings):
    """vumi2's keys for this app, plus ``retry_jitter``, ``retry_delay_max``,
    ``retry_after_max`` (``vumi_like.retry``), ``max_body_bytes`` and ``status_format``."""

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
