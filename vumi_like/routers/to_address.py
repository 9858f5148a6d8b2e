"""``ToAddressRouter``: applications on one side, transports on the other.

* Outbound from an application connector goes to the transport its ``transport_name``
  names (``<transport_name>.outbound``). The router remembers which application sent
  it, in the message cache, so that the transport's events can find their way back.
* Inbound from a transport goes to the first application whose pattern matches the
  message's ``to_addr`` (``re.match``, in configuration order), else to
  ``default_app``.
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
from vumi_like.config import BaseConfig
from vumi_like.messages import Event, Message
from vumi_like.worker import BaseWorker

_SENDER = "connector"


class RoutingError(Exception):
    """The router has nowhere to send an envelope; it is dead-lettered with this reason."""


class ToAddressRouterConfig(BaseConfig, MessageCacheSettings):
    transport_names: list[str] = Field(
        default_factory=list, description="Transport connectors the router feeds and listens to"
    )
    to_address_mappings: dict[str, str] = Field(
        default_factory=dict,
        description="Application connector name -> regular expression matched against to_addr",
    )
    default_app: str | None = Field(
        default=None, description="Application connector for inbound no pattern matches"
    )

    @field_validator("to_address_mappings")
    @classmethod
    def _patterns_compile(cls, mappings: dict[str, str]) -> dict[str, str]:
        for name, pattern in mappings.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern for {name!r} is not a regular expression: {exc}"
                ) from None
        return mappings

    @model_validator(mode="after")
    def _default_app_is_an_app(self) -> ToAddressRouterConfig:
        if self.default_app is not None and self.default_app not in self.to_address_mappings:
            # The default app needs a connector too; give it one that matches nothing.
            self.to_address_mappings = {**self.to_address_mappings, self.default_app: r"(?!)"}
        return self


class ToAddressRouter(BaseWorker):
    config_class = ToAddressRouterConfig
    config: ToAddressRouterConfig

    async def setup(self) -> None:
        self.message_cache: MessageCache = self.config.make_message_cache()
        await self.message_cache.open()
        self.mappings = [
            (name, re.compile(pattern))
            for name, pattern in self.config.to_address_mappings.items()
        ]
        for name in self.config.to_address_mappings:
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
