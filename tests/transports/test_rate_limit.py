"""GCRA rate limiters: in process (on a mock clock) and shared through the real Redis."""

from __future__ import annotations

import os
import uuid

import pytest
import redis
import trio
from trio.testing import MockClock

from tests.conftest import require_service
from vumi_like.transports.rate_limit import LocalRateLimiter, RedisRateLimiter

REDIS_URL = os.environ.get("VUMI_LIKE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def test_local_limiter_spaces_sends_at_max_tps(autojump_clock: MockClock):
    limiter = LocalRateLimiter(max_tps=10)
    start = trio.current_time()
    times = []
    for _ in range(5):
        await limiter.acquire()
        times.append(trio.current_time() - start)
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


async def test_local_limiter_lets_a_burst_through_after_an_idle_spell(autojump_clock: MockClock):
    limiter = LocalRateLimiter(max_tps=10, burst=3)
    await trio.sleep(5)
    start = trio.current_time()
    times = []
    for _ in range(5):
        await limiter.acquire()
        times.append(trio.current_time() - start)
    assert times == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2])


async def test_local_limiter_counts_several_sends_at_once(autojump_clock: MockClock):
    limiter = LocalRateLimiter(max_tps=10)
    await limiter.acquire(4)
    start = trio.current_time()
    await limiter.acquire()
    assert trio.current_time() - start == pytest.approx(0.4)


def test_limits_must_make_sense():
    with pytest.raises(ValueError):
        LocalRateLimiter(max_tps=0)
    with pytest.raises(ValueError):
        LocalRateLimiter(max_tps=1, burst=0)


async def test_replicas_share_one_budget_through_redis():
    require_service(REDIS_URL, 6379, "Redis")
    key = f"test-rate-{uuid.uuid4().hex[:10]}"
    limiters = [RedisRateLimiter(REDIS_URL, key, max_tps=100) for _ in range(2)]
    start = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            for limiter in limiters:

                async def send_ten(limiter: RedisRateLimiter = limiter) -> None:
                    for _ in range(10):
                        await limiter.acquire()

                nursery.start_soon(send_ten)
    finally:
        for limiter in limiters:
            limiter.close()
        redis.Redis.from_url(REDIS_URL).delete(key)
    # Twenty sends at 100/s between both: at least nineteen intervals, though each
    # replica alone would have been done in nine.
    assert trio.current_time() - start >= 0.19 - 0.01


async def test_without_redis_the_limit_holds_in_process(autojump_clock: MockClock):
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", "unused", max_tps=10, timeout=0.2)
    start = trio.current_time()
    for _ in range(3):
        await limiter.acquire()
    limiter.close()
    assert trio.current_time() - start == pytest.approx(0.2, abs=0.05)
