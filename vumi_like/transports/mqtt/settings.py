"""``MqttSettings``: where the MQTT broker is and how to stay connected to it.

The keys follow the settings of the MQTT backend this transport replaces (``HOST``,
``PORT``, ``SECURE``, ``CA_CERT_FILE``, ``CERT_FILE``, ``KEY_FILE``, in lower case);
what to publish (QoS, retain, the topic layout) belongs to the transport's own config,
which nests these settings.

TLS files given while ``secure`` is false are an error rather than ignored: an
operator who names a CA file means to use TLS, and a silent plain-text connection is
the worse outcome.
"""

from __future__ import annotations

import ssl
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from vumi_like.config import ConfigError, ConfigModel

__all__ = ["MqttSettings"]


class MqttSettings(ConfigModel):
    host: str = Field(default="127.0.0.1", description="Host name or IP address of the broker.")
    port: int = Field(default=1883, ge=1, le=65535, description="Port of the broker.")
    protocol: Literal["mqtt5", "mqtt311"] = Field(
        default="mqtt5",
        description="MQTT version. MQTT 5 brokers say why they refuse a publish "
        "(reason codes); with MQTT 3.1.1 a refused publish cannot be told apart.",
    )
    client_id: str = Field(
        default="",
        description="Client identifier; empty lets the broker (MQTT 5) or the client "
        "library (MQTT 3.1.1) choose one. Required when clean_start is false.",
    )
    username: str | None = Field(default=None, description="User to log in as, if any.")
    password: SecretStr | None = Field(default=None, description="Password of that user.")
    keepalive: int = Field(
        default=60,
        ge=1,
        le=65535,
        description="Seconds between pings when idle; a broker silent for this long "
        "is taken as gone.",
    )
    clean_start: bool = Field(
        default=True,
        description="Start a new session on every connection. False keeps the session "
        "(subscriptions, unacknowledged messages) across reconnects.",
    )
    session_expiry_interval: int = Field(
        default=3600,
        ge=0,
        description="MQTT 5, clean_start false: seconds the broker keeps the session "
        "after a disconnect.",
    )
    secure: bool = Field(default=False, description="Connect with TLS.")
    ca_cert_file: str | None = Field(
        default=None,
        description="PEM file of the certificate authorities to trust; the system's when unset.",
    )
    cert_file: str | None = Field(
        default=None, description="PEM file of the client certificate, if the broker asks."
    )
    key_file: str | None = Field(
        default=None,
        description="PEM file of the client certificate's private key, if not in cert_file.",
    )
    connect_timeout: float = Field(
        default=10,
        gt=0,
        description="Seconds allowed to open the connection (TCP and TLS) and again to "
        "get the broker's CONNACK.",
    )
    ack_timeout: float = Field(
        default=30,
        gt=0,
        description="Seconds a publish waits to be written (QoS 0) or acknowledged "
        "(QoS 1 and 2), and a subscribe for its SUBACK.",
    )
    close_timeout: float = Field(
        default=5, gt=0, description="Seconds allowed to disconnect cleanly when stopping."
    )
    reconnect_interval: float = Field(
        default=1, gt=0, description="Seconds before the first reconnect attempt."
    )
    max_reconnect_interval: float = Field(
        default=60,
        gt=0,
        description="Longest wait between reconnect attempts; the wait doubles with "
        "each failed attempt.",
    )
    inbound_qos0_backlog: int = Field(
        default=1000,
        ge=1,
        description="QoS 0 messages received while this many inbound messages wait to "
        "be taken are dropped (QoS 1 and 2 are never dropped; the broker stops "
        "sending them while they are unacknowledged).",
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        if not self.clean_start and not self.client_id:
            raise ValueError("clean_start false needs a client_id: a session is found by it")
        if not self.secure:
            given = [
                name for name in ("ca_cert_file", "cert_file", "key_file") if getattr(self, name)
            ]
            if given:
                raise ValueError(f"{', '.join(given)} set but secure is false")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file set without cert_file")
        if self.password is not None and self.username is None:
            raise ValueError("password set without username")
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context to connect with (``None`` when ``secure`` is false).

        Certificates are verified and the host name checked against the broker's
        certificate (``ssl.create_default_context``). A missing or unreadable file is a
        ``ConfigError`` naming it.
        """
        if not self.secure:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_cert_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except OSError as exc:  # ssl.SSLError included
            files = [f for f in (self.ca_cert_file, self.cert_file, self.key_file) if f]
            raise ConfigError(f"mqtt TLS files {', '.join(files)}: {exc}") from None
        return context

    def where(self) -> str:
        """``host:port`` (with ``tls`` when secure), for log lines and error reasons."""
        return f"{self.host}:{self.port}" + (" (tls)" if self.secure else "")
