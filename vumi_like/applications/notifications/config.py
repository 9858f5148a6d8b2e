"""``NotificationsApiConfig``: where the API listens, who may call it, how it delivers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vumi_like.auth import AuthSettings
from vumi_like.config import BaseConfig
from vumi_like.messaging.channels import ChannelsSettings
from vumi_like.outbound.unsent import UnsentSettings
from vumi_like.retry import RetrySettings
from vumi_like.stores import StoreSettings

__all__ = ["BACKENDS", "NotificationsApiConfig"]

BACKENDS = ("mqtt", "channels")


class NotificationsApiConfig(
    BaseConfig, StoreSettings, ChannelsSettings, RetrySettings, UnsentSettings
):
    prefix: str = Field(default="/api/v1/messaging", description="Path the API is served under")
    auth: AuthSettings = Field(
        description="The Messaging API's auth settings (the same jwt_secret, audience and "
        "issuer), so that its tokens are accepted here"
    )
    backends: list[Literal["mqtt", "channels"]] = Field(
        default=["mqtt"],
        min_length=1,
        description="How notifications are delivered: mqtt (published on the target's "
        "topic), channels (sent to each recipient's preferred channel through the "
        "Messaging API's channels), or both",
    )
    mqtt_connector: str | None = Field(
        default=None,
        description="mqtt backend: its connector, publishes <name>.outbound (an "
        "MqttTransport's transport_name), consumes <name>.event for the outcomes",
    )
    connector_name: str | None = Field(
        default=None,
        description="channels backend: the Messaging API's connector_name; messages are "
        "published on <name>.outbound and followed by its event dispatcher; the fan-out "
        "jobs wait on <name>.notifications",
    )
    webhook_queue: str | None = Field(
        default=None,
        description="channels backend: the event dispatcher's webhook job queue (default "
        "<connector_name>.webhooks), for QUEUED webhooks",
    )
    channel_senders: dict[str, str] = Field(
        default_factory=dict,
        description="channels backend: channel name -> sender to send as (default: the "
        "tenant's first sender on that channel)",
    )
    email_subject: str = Field(
        default="{author}: a new message on {name}",
        description="channels backend: subject of the e-mails sent; {author}, {name} (of "
        "the user, form or project), {type} and {id} are filled in",
    )
    subscriptions_max_age: float = Field(
        default=1.0,
        ge=0,
        description="channels backend: seconds a tenant's webhook subscriptions are kept "
        "between reads",
    )
    max_retries: int = Field(
        default=5, ge=0, description="channels backend: fan-out retries before giving up"
    )
    max_message_length: int = Field(
        default=10_000, ge=1, description="Longest message text accepted, in characters"
    )
    request_timeout: float = Field(
        default=30, gt=0, description="Seconds allowed to accept one notification (then 503)"
    )

    @model_validator(mode="after")
    def _checked(self) -> NotificationsApiConfig:
        if not self.http_bind:
            raise ValueError("http_bind is required: the Notifications API is served over HTTP")
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError("prefix must start with '/' and not end with one")
        if len(set(self.backends)) != len(self.backends):
            raise ValueError("backends: each backend at most once")
        if "mqtt" in self.backends and not self.mqtt_connector:
            raise ValueError("mqtt_connector is required by the mqtt backend")
        if "channels" in self.backends:
            if not self.connector_name:
                raise ValueError("connector_name is required by the channels backend")
            try:
                self.email_subject.format(author="", name="", type="", id="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"email_subject: not a valid template ({exc})") from None
        if unknown := sorted(set(self.channel_senders) - {c.name for c in self.channels}):
            raise ValueError(f"channel_senders: no channel named {', '.join(unknown)}")
        return self

    def fanout_queue_name(self) -> str:
        """The channels backend's job queue: one job per notification to fan out."""
        return f"{self.connector_name}.notifications"

    def webhook_queue_name(self) -> str:
        return self.webhook_queue or f"{self.connector_name}.webhooks"

    def batch_queue_name(self) -> str:
        """The Messaging API's batch queue (the outbox needs it; the fan-out sends no
        asynchronous batches)."""
        return f"{self.connector_name}.batches"
