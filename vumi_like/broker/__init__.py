"""Message brokers: the ``Broker`` interface, RabbitMQ (aio-pika) and in-memory.

Workers get a ``Broker`` from ``open_broker``; operator tools get a ``BrokerInspector``
(the same operations plus ``get``, ``purge`` and ``delete_queue``) from
``open_inspector``. See ``base.py`` for why the two are apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from vumi_like.broker.base import (
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    Broker,
    BrokerError,
    BrokerInspector,
    Delivery,
    PublishError,
    Subscription,
)

__all__ = [
    "DEAD_LETTER_QUEUE",
    "EXCHANGE",
    "Broker",
    "BrokerError",
    "BrokerInspector",
    "Delivery",
    "PublishError",
    "Subscription",
    "open_broker",
    "open_inspector",
]


def open_broker(url: str, **options: object) -> AbstractAsyncContextManager[Broker]:
    """Open the broker named by ``url``: ``memory://`` or ``amqp://user:pass@host:port/vhost``
    (several nodes of a RabbitMQ cluster: their URLs separated by commas).

    ``options`` go to the implementation: ``dead_letter_queue`` to both, and RabbitMQ's
    timeouts (``connect_timeout``, ``publish_timeout``, ``reconnect_interval``,
    ``max_reconnect_interval``, ``close_timeout``) and ``queue_type`` (``classic`` or
    ``quorum``; see ``RabbitMQBroker``) to RabbitMQ only.
    """
    return open_inspector(url, **options)


@asynccontextmanager
async def open_inspector(url: str, **options: object) -> AsyncIterator[BrokerInspector]:
    """Open the broker named by ``url`` for an operator tool: ``open_broker``, plus
    ``get``, ``purge`` and ``delete_queue``. Takes the same ``options``."""
    if url.startswith("memory://"):
        from vumi_like.broker.memory import open_memory_broker

        # Connection options (timeouts, reconnect interval, queue type) mean nothing
        # in-process.
        memory_options = {k: v for k, v in options.items() if k == "dead_letter_queue"}
        async with open_memory_broker(**memory_options) as broker:  # type: ignore[arg-type]
            yield broker
    elif url.startswith(("amqp://", "amqps://")):
        from vumi_like.broker.rabbitmq import open_rabbitmq_broker

        async with open_rabbitmq_broker(url, **options) as broker:
            yield broker
    else:
        raise ValueError(
            f"unsupported broker URL scheme in {url.split('://')[0]!r}: use memory:// or amqp://"
        )
