"""``MessagingApiConfig``: where the API listens, what it sends on, who may call it."""

from __future__ import annotations

from pydantic import Field, model_validator

from vumi_like.auth import AuthSettings
from vumi_like.config import BaseConfig
from vumi_like.messaging.channels import ChannelsSettings
from vumi_like.outbound.unsent import UnsentSettings
from vumi_like.stores import StoreSettings

__all__ = ["MessagingApiConfig"]

E164 = r"^\+[1-9]\d{6,14}$"


class MessagingApiConfig(BaseConfig, ChannelsSettings, StoreSettings, UnsentSettings):
    connector_name: str = Field(
        description="Connector: publishes <name>.outbound (the event dispatcher consumes "
        "<name>.inbound and <name>.event)"
    )
    auth: AuthSettings = Field(description="Access tokens and the clients known from config")
    webhook_queue: str | None = Field(
        default=None,
        description="The event dispatcher's webhook job queue (default <connector_name>.webhooks)",
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted (413 above); e-mail attachments count",
    )
    max_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Most messages in one batch request"
    )
    max_webhooks: int = Field(
        default=20,
        ge=1,
        le=100,
        description="Most webhook subscriptions a tenant may have (each status change is "
        "posted to every one of them)",
    )
    subscriptions_max_age: float = Field(
        default=1.0,
        ge=0,
        description="Seconds a tenant's webhook subscriptions are kept between reads "
        "(0: read for every message)",
    )
    request_timeout: float = Field(
        default=30, gt=0, description="Seconds allowed to accept one request (then 503)"
    )
    sms_number_pattern: str = Field(
        default=E164,
        description="Regular expression a /sms mobileNumber must match (default E.164)",
    )

    @model_validator(mode="after")
    def _serves_http(self) -> MessagingApiConfig:
        if not self.http_bind:
            raise ValueError("http_bind is required: the Messaging API is served over HTTP")
        return self

    def webhook_queue_name(self) -> str:
        return self.webhook_queue or f"{self.connector_name}.webhooks"

    def batch_queue_name(self) -> str:
        """The API's own queue of accepted batches, sent by whichever replica takes them."""
        return f"{self.connector_name}.batches"
