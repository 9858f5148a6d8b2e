"""``WhatsAppCloudConfig``: where the Graph API is, the phone number, and the three secrets."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from vumi_like.transports.base import TransportConfig

__all__ = ["WhatsAppCloudConfig"]


class WhatsAppCloudConfig(TransportConfig):
    api_base_url: str = Field(
        default="https://graph.facebook.com",
        description="Base URL of the Graph API (http:// or https://)",
    )
    api_version: str = Field(
        default="v21.0",
        pattern=r"^v\d+\.\d+$",
        description="Graph API version in the request paths, like v21.0",
    )
    phone_number_id: str = Field(
        description="The business phone number's id: messages are sent from it"
    )
    access_token: SecretStr = Field(description="Bearer token for the Graph API")
    app_secret: SecretStr = Field(
        description="The Meta app's secret: key of the X-Hub-Signature-256 on webhooks"
    )
    verify_token: SecretStr = Field(
        description="Token Meta must echo in the webhook verification request (GET)"
    )
    webhook_path: str = Field(
        default="/whatsapp/webhook",
        description="Path of the webhook Meta calls (GET to verify it, POST to notify)",
    )
    request_timeout: float = Field(
        default=10, gt=0, description="Seconds allowed for one Graph API request"
    )
    auth_check_interval: float = Field(
        default=60,
        gt=0,
        description="Seconds between checks of a refused access token (outbound is "
        "paused until the Graph API takes it again)",
    )

    @field_validator("api_base_url")
    @classmethod
    def _url_is_http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("should be an http:// or https:// URL")
        return url.rstrip("/")

    @field_validator("webhook_path")
    @classmethod
    def _path_is_absolute(cls, path: str) -> str:
        path = path.rstrip("/")
        return path if path.startswith("/") else f"/{path}"

    @model_validator(mode="after")
    def _serves_http(self) -> WhatsAppCloudConfig:
        if not self.http_bind:
            raise ValueError(
                "http_bind is required: Meta delivers inbound messages and statuses by webhook"
            )
        return self
