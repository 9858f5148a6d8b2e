"""``VcitaChannelAppConfig``: where VCS is, how its calls are made and authenticated."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from vumi_like.config import BaseConfig
from vumi_like.retry import RetrySettings
from vumi_like.stores import StoreSettings

__all__ = ["VcitaChannelAppConfig"]


def _prefix(path: str) -> str:
    path = path.rstrip("/")
    return path if not path or path.startswith("/") else f"/{path}"


class VcitaChannelAppConfig(BaseConfig, StoreSettings, RetrySettings):
    connector_name: str = Field(
        description="Connector: consumes <name>.inbound and <name>.event, publishes "
        "<name>.outbound (to a router, or a transport directly) and uses <name>.vcs for "
        "its own jobs"
    )
    tenant: str = Field(
        default="vcita",
        min_length=1,
        description="Name of this communication app in the store: its businesses, "
        "tokens, channels and sessions are kept under it (a token belongs to one app)",
    )
    vcs_url: str = Field(description="Base URL of the vcita Communication Service API")
    vcs_timeout: float = Field(default=10, gt=0, description="Seconds allowed for one call to VCS")
    interface_prefix: str = Field(
        default="",
        description="Path of the app's registered URI: VCS calls <prefix>/channels/{uid}, "
        "<prefix>/sessions/{uid}, <prefix>/messages, <prefix>/{session_uid}/typing",
    )
    webhook_secret: SecretStr = Field(
        description="Shared secret VCS sends as 'Authorization: Bearer <secret>' on its "
        "calls to the interface"
    )
    admin_prefix: str = Field(
        default="/admin", description="Path of the admin API (tokens and channels)"
    )
    admin_token: SecretStr = Field(
        description="Bearer token the admin API requires ('Authorization: Bearer <token>')"
    )
    transport_type: str = Field(
        default="sms", description="transport_type of the outbound messages staff send"
    )
    typing_transports: list[str] = Field(
        default_factory=list,
        description="Transports that take typing indications (an outbound without "
        "content, helper_metadata.typing = true|false); for others a staff member's "
        "typing is recorded and goes no further",
    )
    typing_max_age: float = Field(
        default=30,
        gt=0,
        description="Seconds after which a client's typing indication is stale: not "
        "posted to VCS any more (after retries, say)",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1, description="Largest request body accepted (413)"
    )

    @field_validator("interface_prefix", "admin_prefix")
    @classmethod
    def _path_is_absolute(cls, path: str) -> str:
        return _prefix(path)

    @field_validator("vcs_url")
    @classmethod
    def _vcs_url_is_http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("should be an http:// or https:// URL")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _checked(self) -> VcitaChannelAppConfig:
        if not self.http_bind:
            raise ValueError("http_bind is required: VCS calls the app over HTTP")
        if not self.admin_prefix:
            raise ValueError("admin_prefix must not be empty: the admin API needs a path")
        if self.admin_prefix == self.interface_prefix:
            raise ValueError("admin_prefix and interface_prefix must differ")
        return self
