"""Sequence number allocators: a counter from a random start, and one in Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import require_service
from vumi_like.transports.smpp.sequence import MAX_SEQUENCE, RandomStartSequence, RedisSequence

REDIS_URL = os.environ.get("VUMI_LIKE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def test_counts_up_from_a_random_start_and_wraps_after_the_maximum():
    starts = {await RandomStartSequence().next_sequence() for _ in range(20)}
    assert len(starts) > 1
    assert all(1 <= start <= MAX_SEQUENCE for start in starts)
    sequence = RandomStartSequence(start=MAX_SEQUENCE - 1)
    assert [await sequence.next_sequence() for _ in range(4)] == [
        MAX_SEQUENCE - 1,
        MAX_SEQUENCE,
        1,
        2,
    ]


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    require_service(REDIS_URL, 6379, "Redis")
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


async def test_redis_sequence_is_shared_by_allocators_of_one_key(redis_client: redis.Redis):
    key = f"test-smpp-sequence-{uuid.uuid4().hex}"
    try:
        first, second = RedisSequence(redis_client, key), RedisSequence(redis_client, key)
        numbers = [await first.next_sequence(), await second.next_sequence()]
        numbers += [await first.next_sequence()]
        assert numbers == [1, 2, 3]
    finally:
        redis_client.delete(key)


async def test_redis_sequence_wraps_after_the_maximum(redis_client: redis.Redis):
    key = f"test-smpp-sequence-{uuid.uuid4().hex}"
    try:
        redis_client.set(key, MAX_SEQUENCE - 1)
        sequence = RedisSequence(redis_client, key)
        assert [await sequence.next_sequence() for _ in range(3)] == [MAX_SEQUENCE, 1, 2]
    finally:
        redis_client.delete(key)
