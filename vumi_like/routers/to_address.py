"""``ToAddressRouter``: applications on one side, transports on the other.

* Outbound from an application connector goes to the transport its ``transport_name``
  names (``<transport_name>.outbound``). The router remembers which application sent
  it, in the message cache, so that the transport's events can find their way back.
* Inbound from a transport goes to the first application whose pattern matches the
  message's ``to_addr`` (``re.match``, in the order of ``to_address_mappings``), else
  to ``default_app``.
* Events go to the application that sent the outbound they are about.

Where vumi2's router drops an envelope with a log line, this one raises, so the
connector dead-letters it with the reason: an outbound for a transport the router
does not serve, an inbound no pattern matches and no ``default_app`` takes, an event
for an outbound the cache does not know (never seen, or older than the cache's
``outbound_ttl``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from vumi_like.caches import MessageCache, MessageCacheSettings
from vumi_like.config import BaseConfig, ConfigModel
from vumi_like.messages import Event, Message
from vumi_like.retry import Unprocessable
from vumi_like.worker import BaseWorker

_SENDER = "connector"


class RoutingError(Unprocessable):
    """The router has nowhere to send an envelope; it is dead-lettered with this reason."""


class ToAddressMapping(ConfigModel):
    """One entry of ``to_address_mappings``: an application and the addresses it takes."""

    name: str = Field(description="Application connector name")
    pattern: str = Field(description="Regular expression matched (re.match) against to_addr")

    @model_validator(mode="after")
    def _pattern_compiles(self) -> ToAddressMapping:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(
                f"pattern for {self.name!r} is not a regular expression: {exc}"
            ) from None
        return self


class ToAddressRouterConfig(BaseConfig, MessageCacheSettings):
    transport_names: list[str] = Field(
        default_factory=list, description="Transport connectors the router feeds and listens to"
    )
    to_address_mappings: list[ToAddressMapping] = Field(
        default_factory=list,
        description="Applications and their to_addr patterns, tried in order, first match "
        "wins: a list of {name, pattern} (vumi2's form), or a mapping name -> pattern",
    )
    default_app: str | None = Field(
        default=None, description="Application connector for inbound no pattern matches"
    )

    @field_validator("to_address_mappings", mode="before")
    @classmethod
    def _mapping_shorthand(cls, value: Any) -> Any:
        # {app: pattern, ...} is read as the list of its items, in the order written.
        if isinstance(value, dict):
            return [{"name": name, "pattern": pattern} for name, pattern in value.items()]
        return value

    def app_names(self) -> list[str]:
        """Every application connector, each once, in config order, ``default_app`` last."""
        names = [mapping.name for mapping in self.to_address_mappings]
        if self.default_app is not None:
            names.append(self.default_app)
        return list(dict.fromkeys(names))


class ToAddressRouter(BaseWorker):
    config_class = ToAddressRouterConfig
    config: ToAddressRouterConfig

    async def setup(self) -> None:
        self.message_cache: MessageCache = self.config.make_message_cache()
        await self.message_cache.open()
        self.mappings = [
            (mapping.name, re.compile(mapping.pattern))
            for mapping in self.config.to_address_mappings
        ]
        for name in self.config.app_names():
            await self.setup_receive_outbound_connector(name, self._outbound_handler(name))
        for name in self.config.transport_names:
            await self.setup_receive_inbound_connector(
                name, inbound_handler=self.handle_inbound, event_handler=self.handle_event
            )

    async def teardown(self) -> None:
        await self.message_cache.aclose()

    def _outbound_handler(self, app: str) -> Any:
        async def handle_outbound(message: Message) -> None:
            await self.handle_outbound(app, message)

        return handle_outbound

    async def handle_outbound(self, app: str, message: Message) -> None:
        transport = self.receive_inbound_connectors.get(message.transport_name)
        if transport is None:
            raise RoutingError(
                f"no transport connector {message.transport_name!r} "
                f"(this router serves {sorted(self.receive_inbound_connectors)})"
            )
        await self.message_cache.store_outbound(message.message_id, {_SENDER: app})
        await transport.publish_outbound(message)

    async def handle_inbound(self, message: Message) -> None:
        app = next(
            (name for name, pattern in self.mappings if pattern.match(message.to_addr)),
            self.config.default_app,
        )
        if app is None:
            raise RoutingError(f"no application pattern matches to_addr {message.to_addr!r}")
        await self.receive_outbound_connectors[app].publish_inbound(message)

    async def handle_event(self, event: Event) -> None:
        info = await self.message_cache.get_outbound(event.user_message_id)
        if info is None:
            raise RoutingError(
                f"event for unknown outbound {event.user_message_id!r} "
                "(never routed here, or older than the cache's outbound_ttl)"
            )
        app = self.receive_outbound_connectors.get(info.get(_SENDER, ""))
        if app is None:
            raise RoutingError(f"event's outbound came from unknown application {info!r}")
        await app.publish_event(event)
