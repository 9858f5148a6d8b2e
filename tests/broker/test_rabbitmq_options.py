"""RabbitMQ's timeouts are options of ``open_broker``; the memory broker ignores them."""

from __future__ import annotations

import asyncio

import trio

from vumi_like.broker import open_broker
from vumi_like.broker.rabbitmq import RabbitMQBroker

TIMEOUTS = {
    "connect_timeout": 5.0,
    "publish_timeout": 7.0,
    "reconnect_interval": 0.25,
    "max_reconnect_interval": 3.0,
    "close_timeout": 0.2,
}


async def test_open_broker_hands_the_timeouts_to_rabbitmq(amqp_url: str) -> None:
    async with open_broker(amqp_url, **TIMEOUTS) as broker:
        assert isinstance(broker, RabbitMQBroker)
        for name, value in TIMEOUTS.items():
            assert getattr(broker, name) == value


async def test_the_memory_broker_ignores_connection_options() -> None:
    async with open_broker("memory://", **TIMEOUTS) as broker:
        assert broker.connected


async def test_close_stops_waiting_for_a_stuck_close_after_close_timeout(amqp_url: str) -> None:
    async with open_broker(amqp_url, close_timeout=0.2) as broker:
        assert isinstance(broker, RabbitMQBroker)

        async def never_closes() -> None:
            await asyncio.sleep(3600)

        broker._io_close = never_closes  # type: ignore[method-assign]
        with trio.fail_after(5):
            await broker.aclose()
    assert not broker.connected
