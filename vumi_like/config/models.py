"""The settings every worker shares, and the base of every config model.

Key names and defaults are vumi2's, so a vumi2 worker's config works unchanged. How
values reach these models (file, environment, command line) is ``loader.py``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from vumi_like.logs import LogLevel
from vumi_like.redaction import redact

__all__ = [
    "AmqpConfig",
    "AmqpOptions",
    "AmqpTimeouts",
    "AmqpUrls",
    "BaseConfig",
    "ConfigError",
    "ConfigModel",
    "MiddlewareConfig",
    "QueueType",
    "check_amqp_urls",
    "join_amqp_urls",
    "split_amqp_urls",
]


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is one line fit for an operator.

    ``problems`` holds each problem on its own (several validation errors are reported
    together, joined by ``"; "``).
    """

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        one_line = "; ".join(" ".join(problem.split()) for problem in self.problems)
        super().__init__(f"config error: {one_line}")


# -- broker URLs

# A comma starts the next URL only when a scheme follows it: a comma may appear in a
# URL's user information or query.
_URL_SEPARATOR = re.compile(r"\s*,\s*(?=[a-zA-Z][a-zA-Z0-9+.-]*://)")


def split_amqp_urls(text: str) -> list[str]:
    """The URLs in ``text``: one URL, or several separated by commas (one per node of a
    RabbitMQ cluster)."""
    return [url for url in _URL_SEPARATOR.split(text.strip()) if url]


def join_amqp_urls(value: Any) -> Any:
    """A YAML list of URLs as the one comma-separated string the broker takes; anything
    else unchanged (the field's own validation judges it)."""
    if isinstance(value, list | tuple) and all(isinstance(url, str) for url in value):
        return ",".join(url.strip() for url in value)
    return value


def check_amqp_urls(value: str) -> str:
    """``value``, spaces around its commas dropped, if it is one memory:// URL or one or
    more amqp(s):// URLs."""
    if not value:
        return value
    urls = split_amqp_urls(value)
    schemes = [urlsplit(url).scheme for url in urls]
    if not urls or any(scheme not in {"amqp", "amqps", "memory"} for scheme in schemes):
        raise ValueError("should be an amqp://, amqps:// or memory:// URL")
    if "memory" in schemes and len(urls) > 1:
        raise ValueError("memory:// stands alone: list several amqp:// URLs, or one memory://")
    return ",".join(urls)


# ``amqp_url`` wherever a config takes one: a YAML list or comma-separated URLs.
AmqpUrls = Annotated[str, BeforeValidator(join_amqp_urls), AfterValidator(check_amqp_urls)]


# -- models


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys are errors, secrets stay out of repr."""

    # Numbers become text where text is wanted: YAML reads `password: 1234` and
    # `vhost: 2` as ints, and those are legitimate values.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, _redact_for_repr(name, value)

    def redacted(self) -> dict[str, Any]:
        """The config as a dict, secrets replaced by ``"***"``: safe to log or show."""
        return redact(self.model_dump())


def _redact_for_repr(name: str | None, value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value  # a ConfigModel's own repr is safe; other models are not nested here
    if isinstance(value, list | tuple):
        return type(value)(_redact_for_repr(name, item) for item in value)
    return redact({name: value})[name] if name is not None else redact(value)


class AmqpTimeouts(ConfigModel):
    """How long the broker connection waits for things, in seconds (not vumi2 keys)."""

    connect_timeout: float = Field(
        default=10, gt=0, description="Seconds allowed to connect to RabbitMQ at start-up."
    )
    publish_timeout: float = Field(
        default=30,
        gt=0,
        description="Seconds a publish may wait for its confirm, a reconnect and "
        "publishing again after a nack (a quorum queue electing a leader) included.",
    )
    reconnect_interval: float = Field(
        default=1, gt=0, description="Seconds before the first reconnect attempt."
    )
    max_reconnect_interval: float = Field(
        default=30,
        gt=0,
        description="Longest wait between reconnect attempts; the wait grows with the outage.",
    )
    close_timeout: float = Field(
        default=10, gt=0, description="Seconds allowed to close the connection when stopping."
    )

    def broker_options(self) -> dict[str, Any]:
        """The timeouts, as ``open_broker`` takes them."""
        return {name: getattr(self, name) for name in AmqpTimeouts.model_fields}


QueueType = Literal["classic", "quorum"]


class AmqpOptions(AmqpTimeouts):
    """The connection's timeouts, and the kind of queue the worker declares."""

    queue_type: QueueType = Field(
        default="classic",
        description="Kind of queue declared: `classic` (vumi2's; the default) or `quorum` "
        "(replicated over a RabbitMQ cluster; vumi2 workers cannot declare them, see "
        "docs/cluster.md). Covers the dead-letter queue and the delay buckets too.",
    )

    def broker_options(self) -> dict[str, Any]:
        """The timeouts and the queue type, as ``open_broker`` takes them."""
        return {name: getattr(self, name) for name in AmqpOptions.model_fields}


class _AmqpAddress(ConfigModel):
    hostname: str = Field(default="127.0.0.1", description="Host name or IP address of RabbitMQ.")
    port: int = Field(default=5672, ge=1, le=65535, description="AMQP port of RabbitMQ.")
    username: str = Field(default="guest", description="User to log in to RabbitMQ as.")
    password: SecretStr = Field(default=SecretStr("guest"), description="Password of that user.")
    vhost: str = Field(default="/", description="RabbitMQ virtual host.")

    def url(self) -> str:
        """``amqp://user:password@host:port/vhost``, each part URL-quoted (``/`` is ``%2F``)."""
        username = quote(self.username, safe="")
        password = quote(self.password.get_secret_value(), safe="")
        host = self.hostname
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # a bare IPv6 address
        return f"amqp://{username}:{password}@{host}:{self.port}/{quote(self.vhost, safe='')}"


# Bases in this order so that the address keys come first (pydantic lists the fields of
# the last base first), as vumi2 documents them.
class AmqpConfig(AmqpOptions, _AmqpAddress):
    """Where RabbitMQ is, as separate parts (``BaseConfig.amqp_url`` wins when set), and
    the connection's timeouts and queue type (which apply with ``amqp_url`` too)."""


class MiddlewareConfig(ConfigModel):
    """One entry of ``middlewares``: which class, for which connectors and directions.

    vumi2 puts a middleware's own options beside ``class_path`` (``log_level: debug``);
    those keys are collected into ``config``, where the middleware's own config model
    validates them when the worker builds it. They may also be written under
    ``config:`` directly; a key in both places is an error.
    """

    class_path: str = Field(description="Import path of the middleware class.")
    enable_for_connectors: list[str] = Field(
        description="Connectors the middleware applies to; it does nothing on others."
    )
    inbound_enabled: bool = Field(default=False, description="Apply to inbound messages.")
    outbound_enabled: bool = Field(default=False, description="Apply to outbound messages.")
    event_enabled: bool = Field(default=False, description="Apply to events.")
    config: dict[str, Any] = Field(
        default_factory=dict, description="The middleware's own options."
    )

    @model_validator(mode="before")
    @classmethod
    def _collect_middleware_options(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        own = {key: value for key, value in data.items() if key in cls.model_fields}
        options = {key: value for key, value in data.items() if key not in cls.model_fields}
        if not options:
            return data
        config = own.get("config", {})
        if not isinstance(config, Mapping):
            return data  # the `config` field itself reports the wrong type
        if clash := sorted(str(key) for key in options.keys() & config.keys()):
            raise ValueError(f"{', '.join(clash)} set both beside class_path and under config")
        return {**own, "config": {**config, **options}}


class BaseConfig(ConfigModel):
    """Settings every worker has. A worker's config subclasses this."""

    amqp: AmqpConfig = Field(
        default=AmqpConfig(),
        description="RabbitMQ, as parts, and the connection's timeouts and queue type.",
    )
    amqp_url: AmqpUrls = Field(
        default="",
        description="Broker URL (amqp://user:pass@host:port/vhost, or memory://); "
        "when set it is used instead of `amqp`. Several RabbitMQ nodes of one cluster: a "
        "YAML list of URLs, or the URLs separated by commas; the connection goes to the "
        "first that answers and, when lost, on to the next.",
    )
    worker_concurrency: int = Field(
        default=20, ge=1, description="Deliveries prefetched and handled at once, per connector."
    )
    sentry_dsn: str | None = Field(
        default=None,
        description="Sentry DSN; errors logged with a traceback are reported there (a "
        "handler's `Unprocessable`, a known reason, is not).",
    )
    http_bind: str | None = Field(
        default=None,
        description="host:port (or unix:/path) for the HTTP server (/health, /metrics, "
        "APIs); no server when unset.",
    )
    log_level: LogLevel = Field(
        default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
    middlewares: list[MiddlewareConfig] = Field(
        default_factory=list, description="Middlewares, applied in order."
    )
    shutdown_timeout: float = Field(
        default=10.0, ge=0, description="Seconds in-flight handlers get to finish when stopping."
    )

    def broker_options(self) -> dict[str, Any]:
        """The broker connection's timeouts (``amqp.*_timeout``, ``amqp.*_interval``) and
        ``amqp.queue_type``."""
        return self.amqp.broker_options()

    def broker_url(self) -> str:
        """``amqp_url`` when set (several URLs joined by commas), else the URL built from
        ``amqp``. Holds the password."""
        return self.amqp_url or self.amqp.url()

    @field_validator("http_bind")
    @classmethod
    def _check_http_bind(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("unix:"):
            if len(value) > len("unix:"):
                return value
        else:
            host, _, port = value.rpartition(":")
            bracketed = host.startswith("[") and host.endswith("]")
            if host and (bracketed or ":" not in host) and port.isdigit() and int(port) <= 65535:
                return value
        raise ValueError("should be host:port (like 0.0.0.0:8000), [ipv6]:port or unix:/path")
