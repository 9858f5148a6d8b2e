"""Sequence numbers for the PDUs an ESME sends.

A response is matched to its request by sequence_number, so two requests waiting at
once must never share one. Within a session a counter is enough. Across replicas
(each with its own bind to the same SMSC account) it is not required by the spec,
but some SMSCs key their state, and their logs, by account and sequence number, and
an operator reading those logs should not find one number used by several replicas
at the same moment. Hence:

* ``RandomStartSequence`` (the default): counts up from a random point in
  1..0x7FFFFFFF, wrapping to 1 after 0x7FFFFFFF. Two replicas collide only if their
  counters come within the number of PDUs in flight of each other, out of two
  billion.
* ``RedisSequence``: one counter in Redis (INCR) for all replicas of an account, when
  even that is too much. Each number costs a round trip to Redis, run in a worker
  thread because redis-py's client is synchronous.
"""

from __future__ import annotations

import random
from typing import Protocol

import redis
import trio

__all__ = ["MAX_SEQUENCE", "RandomStartSequence", "RedisSequence", "SequenceAllocator"]

# sequence_number is 4 octets, but the spec allows 0x00000001..0x7FFFFFFF only.
MAX_SEQUENCE = 0x7FFFFFFF


class SequenceAllocator(Protocol):
    async def next_sequence(self) -> int:
        """A sequence number in 1..MAX_SEQUENCE."""
        ...


class RandomStartSequence:
    def __init__(self, start: int | None = None) -> None:
        self._next = random.randint(1, MAX_SEQUENCE) if start is None else start

    async def next_sequence(self) -> int:
        value = self._next
        self._next = value % MAX_SEQUENCE + 1
        return value


class RedisSequence:
    """Numbers from the Redis counter at ``key``, shared by every allocator using it.

    The counter itself grows without bound (Redis counts to 2**63); the numbers wrap.
    ``limiter`` bounds the threads waiting on Redis at once (default 4).
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self._client = client
        self._key = key
        self._limiter = limiter or trio.CapacityLimiter(4)

    async def next_sequence(self) -> int:
        count = await trio.to_thread.run_sync(self._incr, limiter=self._limiter)
        return (count - 1) % MAX_SEQUENCE + 1

    def _incr(self) -> int:
        return int(self._client.incr(self._key))
