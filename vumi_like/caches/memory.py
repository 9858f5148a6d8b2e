"""``MemoryMessageCache``: the message cache in this process's memory.

For one worker process, tests and development. It is not shared (two replicas each
see only what they stored themselves) and does not survive a restart; use
``RedisMessageCache`` for either.

Time is trio's clock (``trio.current_time()``), so tests with ``autojump_clock`` can
let hours pass instantly.

Each kind of entry (inbounds by id, last inbound by sender, outbound info by id) is an
``_ExpiringMap``: an ``OrderedDict`` in store order holding ``(expires_at, value)``. All
entries of a map share one TTL and the clock is monotonic, so store order is also expiry
order, and expired entries are always at the front: each store or get drops them from
there, stopping at the first live one, which costs O(1) amortised (every entry is
dropped once) instead of a sweep of the whole map. Memory is freed on the next call,
not at the moment of expiry; an idle cache keeps what it held until then.

Provider ids and message parts each have a TTL of their own (a final delivery report
shortens its id's life), so they live in a ``_TimedMap``: a dict beside a heap of
expiry times, swept from the heap's top on each call, also O(log n) amortised.

``max_entries`` bounds each map, so memory stays bounded under any load: when a store
would exceed it, the oldest entry goes (FIFO by store time, which for one TTL is the
entry closest to expiry anyway). Reads do not refresh an entry: they do not extend its
TTL either, and an LRU order would break the "front is oldest" property the expiry
sweep relies on. ``OrderedDict`` rather than ``dict`` because popping a plain dict's
first item again and again is quadratic (CPython leaves deleted slots at the front for
``iter`` to skip until the next resize); ``OrderedDict.popitem(last=False)`` is O(1).

Inbounds are held as their JSON bytes, not as ``Message`` objects: a message costs one
buffer (shared between the two maps that point to it) rather than a tree of Python
objects, and every read returns a fresh copy, as Redis does, so a caller changing a
returned message cannot change the cache.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

import trio
from pydantic import PositiveInt

from vumi_like.caches.base import (
    MessageCache,
    MessageCacheConfig,
    checked_outbound_info,
    decode_message,
)
from vumi_like.messages import Message

__all__ = ["MemoryMessageCache", "MemoryMessageCacheConfig"]

V = TypeVar("V")


class MemoryMessageCacheConfig(MessageCacheConfig):
    """``inbound_ttl``, ``outbound_ttl`` (seconds) and ``max_entries``.

    ``max_entries`` bounds each of the three maps (inbounds, last inbound per sender,
    outbound info). At the default of 100 000 and ~1 KB per inbound, the cache tops out
    around 100-200 MB; lower it for small workers.
    """

    max_entries: PositiveInt = 100_000


class _ExpiringMap(Generic[V]):
    """``str -> V``; entries live ``ttl`` seconds from their last store; ``max_entries`` cap."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def set(self, key: str, value: V) -> None:
        now = trio.current_time()
        self._drop_expired(now)
        # pop then insert, so a re-stored key moves to the back: store order stays
        # expiry order.
        self._entries.pop(key, None)
        self._entries[key] = (now + self._ttl, value)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def get(self, key: str) -> V | None:
        self._drop_expired(trio.current_time())
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def _drop_expired(self, now: float) -> None:
        entries = self._entries
        while entries:
            expires_at, _ = next(iter(entries.values()))
            if expires_at > now:
                return
            entries.popitem(last=False)


class _TimedMap(Generic[V]):
    """``str -> V`` where each entry has its own expiry time; ``max_entries`` cap.

    The heap holds ``(expires_at, key)`` for every expiry ever set; one that no longer
    matches its key's current expiry is stale and skipped when it reaches the top.
    """

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, V]] = {}
        self._expiries: list[tuple[float, str]] = []

    def set(self, key: str, value: V, ttl: float) -> None:
        now = trio.current_time()
        self._drop_expired(now)
        self._entries[key] = (now + ttl, value)
        heapq.heappush(self._expiries, (now + ttl, key))
        while len(self._entries) > self._max_entries:
            self._drop_first()

    def get(self, key: str) -> V | None:
        self._drop_expired(trio.current_time())
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def shorten(self, key: str, ttl: float) -> None:
        now = trio.current_time()
        self._drop_expired(now)
        entry = self._entries.get(key)
        if entry is not None and now + ttl < entry[0]:
            self._entries[key] = (now + ttl, entry[1])
            heapq.heappush(self._expiries, (now + ttl, key))

    def pop(self, key: str) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        self._entries.clear()
        self._expiries.clear()

    def _drop_first(self) -> None:
        expires_at, key = heapq.heappop(self._expiries)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == expires_at:
            del self._entries[key]

    def _drop_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            self._drop_first()
        # Stale heap items of keys stored again pile up under steady re-stores; rebuild
        # the heap from the live entries when they outnumber those.
        if len(self._expiries) > 2 * len(self._entries) + 64:
            self._expiries = [(expires_at, key) for key, (expires_at, _) in self._entries.items()]
            heapq.heapify(self._expiries)


class MemoryMessageCache(MessageCache):
    """The message cache in memory; see the module docstring. Needs ``open`` like any cache."""

    def __init__(self, config: MemoryMessageCacheConfig | Mapping[str, Any] | None = None) -> None:
        if not isinstance(config, MemoryMessageCacheConfig):
            config = MemoryMessageCacheConfig.model_validate(config or {})
        self.config = config
        self._inbound: _ExpiringMap[bytes] = _ExpiringMap(config.inbound_ttl, config.max_entries)
        self._last_inbound: _ExpiringMap[bytes] = _ExpiringMap(
            config.inbound_ttl, config.max_entries
        )
        self._outbound: _ExpiringMap[dict[str, str]] = _ExpiringMap(
            config.outbound_ttl, config.max_entries
        )
        self._provider_ids: _TimedMap[str] = _TimedMap(config.max_entries)
        self._parts: _TimedMap[dict[int, bytes]] = _TimedMap(config.max_entries)

    async def aclose(self) -> None:
        for entries in (self._inbound, self._last_inbound, self._outbound):
            entries.clear()
        self._provider_ids.clear()
        self._parts.clear()
        await super().aclose()

    async def store_inbound(self, msg: Message) -> None:
        self._check_open()
        body = msg.to_json()
        self._inbound.set(msg.message_id, body)
        self._last_inbound.set(msg.from_addr, body)

    async def get_inbound(self, message_id: str) -> Message | None:
        self._check_open()
        body = self._inbound.get(message_id)
        return None if body is None else decode_message(body, f"inbound {message_id!r}")

    async def get_last_inbound_from(self, from_addr: str) -> Message | None:
        self._check_open()
        body = self._last_inbound.get(from_addr)
        return None if body is None else decode_message(body, f"last inbound {from_addr!r}")

    async def store_outbound(self, message_id: str, info: Mapping[str, str]) -> None:
        self._check_open()
        self._outbound.set(message_id, checked_outbound_info(info))

    async def get_outbound(self, message_id: str) -> dict[str, str] | None:
        self._check_open()
        info = self._outbound.get(message_id)
        return None if info is None else dict(info)

    async def store_provider_ids(
        self, namespace: str, provider_ids: Sequence[str], message_id: str, ttl: float
    ) -> None:
        self._check_open()
        for provider_id in provider_ids:
            self._provider_ids.set(f"{namespace}:{provider_id}", message_id, ttl)

    async def get_provider_message_id(self, namespace: str, provider_id: str) -> str | None:
        self._check_open()
        return self._provider_ids.get(f"{namespace}:{provider_id}")

    async def expire_provider_id(self, namespace: str, provider_id: str, ttl: float) -> None:
        self._check_open()
        self._provider_ids.shorten(f"{namespace}:{provider_id}", ttl)

    async def add_part(
        self, key: str, number: int, total: int, part: bytes, ttl: float
    ) -> list[bytes] | None:
        self._check_open()
        parts = self._parts.get(key)
        if parts is None:
            parts = {}
            self._parts.set(key, parts, ttl)
        parts[number] = part
        if len(parts) < total:
            return None
        self._parts.pop(key)
        return [parts[n] for n in sorted(parts)]
