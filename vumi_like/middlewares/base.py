"""``BaseMiddleware``, and ``load_middlewares`` to build a worker's from its config.

A middleware is code the *config* puts between a worker's connectors and its
handlers, without the worker knowing: logging, rewriting content, counting. Each
entry of ``middlewares:`` (a ``MiddlewareConfig``) names the class, the connectors
it applies to and the kinds of envelope it sees (``inbound_enabled``,
``outbound_enabled``, ``event_enabled``; all off by default).

As in vumi2, an enabled middleware sees an envelope of its kind on its connector
whichever way the envelope goes through that connector:

* consumed: after the connector decodes it, before the worker's handler gets it;
* published: before the connector encodes it (``publish_inbound``,
  ``publish_outbound``, ``publish_event``).

So on a transport, an ``inbound_enabled`` middleware sees what the transport
publishes; on an application, what it consumes. Middlewares run in config order,
each given what the one before returned; a handler may return the envelope it was
given (changed or not) or a new one of the same kind. One that raises while an
envelope is consumed fails that delivery as a raising handler does (it goes to the
dead-letter queue with the reason); one that raises while publishing raises out of
the publish call, and nothing is published.

Middlewares run every time an envelope is consumed: again after a redelivery, and
again after ``retry_later`` (which republishes the envelope the handler holds, that
is, after the consuming middlewares ran). A middleware that changes envelopes should
be idempotent, or mark what it has done.

Life cycle, kept by ``BaseWorker``: ``load_middlewares`` runs when the worker is
built, so a bad class path or a bad option stops start-up before anything is
consumed; ``setup()`` runs once before the worker's first connector exists;
``teardown()`` runs once every connector is closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from vumi_like.class_paths import ClassPathError, resolve_class
from vumi_like.config import ConfigError, ConfigModel, MiddlewareConfig, config_from_data
from vumi_like.messages import ENVELOPE_KINDS, EnvelopeKind, Event, Message

__all__ = [
    "BaseMiddleware",
    "BaseMiddlewareConfig",
    "filters_for",
    "load_middlewares",
]

# A middleware's bound handle_inbound / handle_outbound / handle_event.
EnvelopeFilter = Callable[[Any, str], Awaitable[Any]]


class BaseMiddlewareConfig(ConfigModel):
    """A middleware's own options; none here. Subclass it for a middleware that has some.

    Unknown options are errors (``ConfigModel`` forbids extra keys), so a misspelt
    option stops start-up instead of being silently ignored.
    """


class BaseMiddleware:
    """Subclass, set ``config_class`` if there are options, and override the handlers.

    ``settings`` is the ``MiddlewareConfig`` entry (where and when it applies);
    ``config`` is ``settings.config`` validated as ``config_class``. The handlers
    return the envelope unchanged here.
    """

    config_class: ClassVar[type[BaseModel]] = BaseMiddlewareConfig

    def __init__(self, settings: MiddlewareConfig) -> None:
        self.settings = settings
        # Raises ConfigError, one line, naming the option and never quoting a secret.
        self.config: Any = config_from_data(
            self.config_class,
            settings.config,
            source=f"the options of middleware {settings.class_path}",
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} for {self.settings.enable_for_connectors}>"

    async def setup(self) -> None:
        """Take what the middleware needs (clients, caches). Called once, before use."""

    async def teardown(self) -> None:
        """Release what ``setup`` took. Called once, after the worker's connectors close."""

    def enabled_for(self, connector_name: str, kind: EnvelopeKind) -> bool:
        """Whether ``kind`` envelopes through connector ``connector_name`` pass through here.

        Connectors ask once, when they are created, not per envelope.
        """
        if connector_name not in self.settings.enable_for_connectors:
            return False
        if kind == "inbound":
            return self.settings.inbound_enabled
        if kind == "outbound":
            return self.settings.outbound_enabled
        if kind == "event":
            return self.settings.event_enabled
        raise ValueError(f"kind should be one of {', '.join(ENVELOPE_KINDS)}, not {kind!r}")

    async def handle_inbound(self, message: Message, connector_name: str) -> Message:
        return message

    async def handle_outbound(self, message: Message, connector_name: str) -> Message:
        return message

    async def handle_event(self, event: Event, connector_name: str) -> Event:
        return event


def filters_for(
    middlewares: Sequence[BaseMiddleware], connector_name: str
) -> dict[EnvelopeKind, tuple[EnvelopeFilter, ...]]:
    """Per kind of envelope, the handlers of ``middlewares`` enabled for it on
    ``connector_name``, in order: what a connector is given to apply.

    Worked out once, when the connector is created, not per envelope.
    """
    return {
        kind: tuple(
            getattr(middleware, f"handle_{kind}")
            for middleware in middlewares
            if middleware.enabled_for(connector_name, kind)
        )
        for kind in ENVELOPE_KINDS
    }


def load_middlewares(configs: list[MiddlewareConfig]) -> list[BaseMiddleware]:
    """Import and build each middleware, in config order.

    Raises one ``ConfigError`` naming every entry whose class cannot be imported, is
    not a ``BaseMiddleware``, or does not accept its options.
    """
    middlewares: list[BaseMiddleware] = []
    problems: list[str] = []
    for index, settings in enumerate(configs):
        where = f"middlewares.{index}"
        try:
            cls = _middleware_class(settings.class_path)
        except ConfigError as exc:
            problems.extend(f"{where}.class_path: {problem}" for problem in exc.problems)
            continue
        try:
            middlewares.append(cls(settings))
        except ConfigError as exc:
            problems.extend(f"{where}: {problem}" for problem in exc.problems)
    if problems:
        raise ConfigError(problems)
    return middlewares


def _middleware_class(class_path: str) -> type[BaseMiddleware]:
    try:
        return resolve_class(class_path, BaseMiddleware, what="middleware")
    except ClassPathError as exc:
        raise ConfigError(str(exc)) from None
