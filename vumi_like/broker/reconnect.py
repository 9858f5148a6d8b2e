"""Reconnecting to RabbitMQ: aio-pika's robust connection, with a wait that grows.

The broker connects with aio-pika's ``connect_robust``: when the connection drops it
reconnects by itself and re-declares the exchange, queues and bindings declared
through it, and reopens its robust channels (the broker re-registers its consumers
when their channel reopens, see ``RabbitMQBroker._io_consume``). What aio-pika does
not do is back off: it sleeps the same ``reconnect_interval`` after every failed
attempt, so a fleet of workers hammers a RabbitMQ that is slow to come back.
``BackoffConnection`` makes that wait grow with the outage, about 1.5 times per
attempt, up to ``max_reconnect_interval``, and back to the base once connected.

It does so by overriding two of aio-pika's private hooks (``_on_connection_close``,
``_on_connected``) and by answering the ``reconnect_interval`` attribute that aio-pika
reads before each sleep. If a new aio-pika dropped those hooks the overrides would
silently do nothing and the wait would stay flat, so their presence is checked at
import (``pyproject.toml`` asks for aio-pika 10.2 or later, below 11).

``CONNECTION_ERRORS`` are the errors after which the broker waits for the reconnect
rather than failing (a publish waits up to ``publish_timeout``); ``CONNECT_ERRORS``
adds those meaning that the broker cannot be reached at all when first connecting.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiormq

# Errors that mean "the channel or connection went away": wait for the reconnect.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
)
# ... and, when connecting, that the broker cannot be reached at all.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, OSError, *CONNECTION_ERRORS)

_HOOKS = ("_on_connection_close", "_on_connected")
_missing = [
    name for name in _HOOKS if not callable(getattr(aio_pika.RobustConnection, name, None))
]
if _missing:
    raise ImportError(
        f"aio-pika {aio_pika.__version__} changed: RobustConnection has no"
        f" {', '.join(_missing)}; vumi_like's reconnect backoff needs aio-pika >=10.2,<11"
    )


class BackoffConnection(aio_pika.RobustConnection):
    """A robust connection whose wait between reconnect attempts grows with the outage.

    aio-pika sleeps ``reconnect_interval`` after each failed attempt, reading the
    attribute every time; here it reads as half of how long the connection has been
    down, kept between the configured interval and ``max_reconnect_interval``. So each
    wait is about 1.5 times the one before, and back to the base once connected.
    """

    max_reconnect_interval = 30.0
    _base_interval = 1.0
    _down_since: float | None = None

    @property
    def reconnect_interval(self) -> float:
        if self._down_since is None:
            return self._base_interval
        down_for = asyncio.get_running_loop().time() - self._down_since
        return max(self._base_interval, min(self.max_reconnect_interval, down_for / 2))

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._base_interval = value

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if self._down_since is None and not self.close_called:  # not our own close
            self._down_since = asyncio.get_running_loop().time()
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        self._down_since = None
