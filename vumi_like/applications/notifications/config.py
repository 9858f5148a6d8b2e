"""``NotificationsApiConfig``: where the API listens, who may call it, how it publishes."""

from __future__ import annotations

from pydantic import Field, model_validator

from vumi_like.auth import AuthSettings
from vumi_like.config import BaseConfig
from vumi_like.stores import StoreSettings

__all__ = ["NotificationsApiConfig"]


class NotificationsApiConfig(BaseConfig, StoreSettings):
    prefix: str = Field(default="/api/v1/messaging", description="Path the API is served under")
    auth: AuthSettings = Field(
        description="The Messaging API's auth settings (the same jwt_secret, audience and "
        "issuer), so that its tokens are accepted here"
    )
    mqtt_connector: str = Field(
        description="Connector of the MQTT backend: publishes <name>.outbound (an "
        "MqttTransport's transport_name), consumes <name>.event for the outcomes"
    )
    max_message_length: int = Field(
        default=10_000, ge=1, description="Longest message text accepted, in characters"
    )

    @model_validator(mode="after")
    def _checked(self) -> NotificationsApiConfig:
        if not self.http_bind:
            raise ValueError("http_bind is required: the Notifications API is served over HTTP")
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError("prefix must start with '/' and not end with one")
        return self
