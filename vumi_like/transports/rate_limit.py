"""A transport's send rate limit: GCRA, in this process or shared through Redis.

GCRA (the generic cell rate algorithm) keeps one number per limit, the *theoretical
arrival time* (TAT): when the next send would be due if sends went out exactly every
``1 / max_tps`` seconds. A send may go at ``TAT - burst_tolerance`` or later; each send
moves the TAT on by one interval. ``burst`` sends may go back to back after an idle
spell (``burst_tolerance`` is ``(burst - 1)`` intervals), and over any longer time the
rate never exceeds ``max_tps``.

Excess waits, it never fails: ``acquire`` reserves the next free slot and sleeps until
it, so callers are served in arrival order and a burst spreads out instead of being
refused. The reservation is taken before sleeping, so a caller cancelled while it waits
leaves its slot unused (the limit errs towards sending less, never more).

``RedisRateLimiter`` keeps the TAT in Redis, updated by one Lua script against Redis's
own clock, so every replica of a transport draws on one budget. If Redis cannot be
reached it falls back to the in-process limiter at the full rate (each replica then
keeps ``max_tps`` on its own until Redis is back) and logs that once per outage:
waiting for Redis would stop sending altogether, which is worse than a short excess.
"""

from __future__ import annotations

import functools
from typing import Protocol

import redis
import structlog
import trio

log = structlog.get_logger(__name__)

__all__ = ["LocalRateLimiter", "RateLimiter", "RedisRateLimiter"]


class RateLimiter(Protocol):
    max_tps: float

    async def acquire(self, count: int = 1) -> None:
        """Wait until ``count`` more sends fit within the limit."""

    def close(self) -> None:
        """Release what the limiter holds."""


class LocalRateLimiter:
    """GCRA in this process, on trio's clock."""

    def __init__(self, max_tps: float, burst: int = 1) -> None:
        if max_tps <= 0 or burst < 1:
            raise ValueError("max_tps must be positive and burst at least 1")
        self.max_tps = max_tps
        self._interval = 1 / max_tps
        self._tolerance = (burst - 1) * self._interval
        self._tat = 0.0

    def reserve(self, count: int = 1) -> float:
        """Take the next ``count`` slots; return how many seconds until they are due."""
        now = trio.current_time()
        tat = max(self._tat, now)
        self._tat = tat + count * self._interval
        return max(0.0, tat - self._tolerance - now)

    async def acquire(self, count: int = 1) -> None:
        delay = self.reserve(count)
        if delay > 0:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()

    def close(self) -> None:
        pass


# KEYS[1]: the limit's TAT (microseconds, Redis clock). ARGV: interval, tolerance (both
# microseconds), count. Returns the wait in microseconds.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * tonumber(ARGV[3])
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1000)
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
return string.format('%.0f', wait)
"""


class RedisRateLimiter:
    """GCRA with its state in Redis under ``key``, shared by every replica using it."""

    def __init__(
        self, redis_url: str, key: str, max_tps: float, burst: int = 1, timeout: float = 1.0
    ) -> None:
        self.max_tps = max_tps
        self._fallback = LocalRateLimiter(max_tps, burst)
        self._interval_us = round(1_000_000 / max_tps)
        self._tolerance_us = (burst - 1) * self._interval_us
        self._key = key
        self._client = redis.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._script = self._client.register_script(_GCRA)
        self._limiter = trio.CapacityLimiter(4)
        self._failing = False

    async def acquire(self, count: int = 1) -> None:
        call = functools.partial(
            self._script,
            keys=[self._key],
            args=[self._interval_us, self._tolerance_us, count],
        )
        try:
            wait_us = int(await trio.to_thread.run_sync(call, limiter=self._limiter))
        except redis.RedisError as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "rate limit store unavailable: limiting in this process",
                    key=self._key,
                    error=str(exc),
                )
            await self._fallback.acquire(count)
            return
        if self._failing:
            self._failing = False
            log.info("rate limit store back", key=self._key)
        if wait_us > 0:
            await trio.sleep(wait_us / 1_000_000)

    def close(self) -> None:
        self._client.close()
