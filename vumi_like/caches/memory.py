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

from collections import OrderedDict
from collections.abc import Mapping
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

    async def aclose(self) -> None:
        for entries in (self._inbound, self._last_inbound, self._outbound):
            entries.clear()
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
