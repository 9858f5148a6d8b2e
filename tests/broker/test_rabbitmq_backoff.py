"""The wait between reconnect attempts grows with the outage, within bounds."""

from __future__ import annotations

import asyncio

from vumi_like.broker.reconnect import BackoffConnection


def intervals_after_down_for(seconds: list[float]) -> list[float]:
    async def measure() -> list[float]:
        connection = BackoffConnection(
            "amqp://guest:guest@127.0.0.1:5672/", reconnect_interval=0.5
        )
        connection.max_reconnect_interval = 20.0
        now = asyncio.get_running_loop().time()
        seen = [connection.reconnect_interval]  # connected: the configured interval
        for down_for in seconds:
            connection._down_since = now - down_for
            seen.append(round(connection.reconnect_interval, 1))
        return seen

    return asyncio.run(measure())


def test_reconnect_interval_grows_with_the_outage_between_its_bounds() -> None:
    assert intervals_after_down_for([0.2, 4.0, 16.0, 100.0]) == [0.5, 0.5, 2.0, 8.0, 20.0]


def test_reconnect_waits_grow_about_one_and_a_half_times_each() -> None:
    # Replays aio-pika's loop: attempt, then sleep reconnect_interval, while down.
    async def waits() -> list[float]:
        connection = BackoffConnection(
            "amqp://guest:guest@127.0.0.1:5672/", reconnect_interval=1.0
        )
        connection.max_reconnect_interval = 30.0
        connection._down_since = asyncio.get_running_loop().time()
        elapsed, seen = 0.0, []
        while elapsed < 120:
            wait = connection.reconnect_interval
            seen.append(round(wait, 2))
            elapsed += wait
            connection._down_since -= wait  # as if ``wait`` seconds passed
        return seen

    seen = asyncio.run(waits())
    assert seen[:5] == [1.0, 1.0, 1.0, 1.5, 2.25]
    assert max(seen) == 30.0
    assert len(seen) < 15  # against 120 attempts at a fixed 1 s
