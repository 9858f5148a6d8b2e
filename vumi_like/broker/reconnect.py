"""Reconnecting to RabbitMQ: aio-pika's robust connection, with a wait that grows.

The broker connects with aio-pika's ``connect_robust``: when the connection drops it
reconnects by itself and re-declares the exchange, queues and bindings declared
through it, and reopens its robust channels (the broker re-registers its consumers
when their channel reopens, see ``RabbitMQBroker._io_consume``). What aio-pika does
not do is back off: it sleeps the same ``reconnect_interval`` after every failed
attempt, so a fleet of workers hammers a RabbitMQ that is slow to come back.
``BackoffConnection`` makes that wait grow with the outage, about 1.5 times per
attempt, up to ``max_reconnect_interval``, and back to the base once connected.

Failover: given the URLs of several nodes of a RabbitMQ cluster, ``BackoffConnection``
connects to the first, and every later connection attempt (after losing a connection,
or after an attempt failed) goes to the next URL, round robin. After a loss the node
just lost is the least likely to answer, so moving on at once is the better bet; the
growing wait applies between attempts as before, so a cluster that is wholly down is
not hammered either. Connection options in a URL's query string (``heartbeat``...) are
read from the first URL only.

It does so by overriding three of aio-pika's private hooks (``_on_connection_close``,
``_on_connected``, and the name-mangled ``__connect_transport`` that makes each
attempt) and by answering the ``reconnect_interval`` attribute that aio-pika
reads before each sleep. If a new aio-pika dropped those hooks the overrides would
silently do nothing and the wait would stay flat, so their presence is checked at
import (``pyproject.toml`` asks for aio-pika 10.2 or later, below 11).

``CONNECTION_ERRORS`` are the errors after which the broker waits for the reconnect
rather than failing (a publish waits up to ``publish_timeout``); ``CONNECT_ERRORS``
adds those meaning that the broker cannot be reached at all when first connecting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiormq
import structlog
from yarl import URL

from vumi_like.redaction import redact_text

log = structlog.get_logger(__name__)

# Errors that mean "the channel or connection went away": wait for the reconnect.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
)
# ... and, when connecting, that the broker cannot be reached at all.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, OSError, *CONNECTION_ERRORS)

_HOOKS = ("_on_connection_close", "_on_connected", "_RobustConnection__connect_transport")
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

    def __init__(self, urls: Sequence[str], **kwargs: Any) -> None:
        if not urls:
            raise ValueError("no broker URL given")
        super().__init__(URL(urls[0]), **kwargs)
        self.urls = [URL(url) for url in urls]
        self._next_url = 0

    async def _RobustConnection__connect_transport(self) -> None:
        """One connection attempt (aio-pika's private hook): to the next URL in turn."""
        url = self.urls[self._next_url % len(self.urls)]
        if len(self.urls) > 1 and self._next_url:
            log.info("amqp connecting to the next node", url=redact_text(str(url)))
        self._next_url += 1
        self.url = url
        await super()._RobustConnection__connect_transport()  # type: ignore[misc]

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
