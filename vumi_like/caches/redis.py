"""``RedisMessageCache``: the message cache in Redis, shared by replicas, kept over restarts.

Bridging to trio
----------------
redis-py's asyncio client runs only on asyncio, and this project runs on trio. The
options were: run it under trio-asyncio (a second event loop, for a handful of GETs and
SETs), speak RESP ourselves over trio sockets (a protocol client to write and maintain:
auth, TLS, reconnects, Sentinel someday), or call redis-py's **synchronous** client in a
worker thread with ``trio.to_thread.run_sync``. We do the last: it is redis-py as
everyone uses it, a thread hop costs tens of microseconds against a network round trip,
and the synchronous ``ConnectionPool`` is thread-safe, so concurrent trio tasks each
borrow a connection for one command and give it back.

Threads are bounded by a ``CapacityLimiter`` of ``max_connections`` per cache, the same
number as the pool's connections, so a thread never waits for (or, as redis-py does,
fails for lack of) a pooled connection; tasks beyond that wait in trio, cancellably.

A command in its thread cannot be interrupted, so ``to_thread.run_sync`` is left to wait
for it when the calling task is cancelled (the default, not ``abandon_on_cancel``): an
abandoned thread could still be using a connection when ``aclose`` disconnects the pool.
Each wait is instead bounded by the socket timeouts (``connect_timeout``,
``command_timeout``), with up to two retries after a connection error (a pooled
connection gone stale when Redis restarted is the usual cause), so a cancelled task
resumes within about three times the timeout at worst, and typically at once.

Keys and values
---------------
Under ``key_prefix`` (default ``vumi_like:``), with every TTL set by Redis itself in
milliseconds (``SET ... PX``), so expiry needs no sweeper and holds across replicas:

* ``<prefix>inbound:<message_id>``: the inbound's JSON (``Message.to_json()``);
* ``<prefix>last_inbound:<from_addr>``: the same JSON again, so "last inbound from"
  is one GET. Both keys are written in one MULTI/EXEC, so no replica ever sees one
  without the other; the copy costs one message per active sender for ``inbound_ttl``.
* ``<prefix>outbound:<message_id>``: the outbound info as a JSON object (one SET with
  its TTL, atomic, where a hash would need HSET and EXPIRE).

Different prefixes keep different deployments (or tests) apart on one Redis database.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis
import trio
from pydantic import PositiveFloat, PositiveInt, field_validator
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from vumi_like.caches.base import (
    CacheError,
    CacheUnavailable,
    MessageCache,
    MessageCacheConfig,
    checked_outbound_info,
    decode_message,
)
from vumi_like.messages import Message
from vumi_like.redaction import redact_text

__all__ = ["RedisMessageCache", "RedisMessageCacheConfig"]

T = TypeVar("T")

_SCHEMES = ("redis", "rediss", "unix")
_RETRIES = 2


class RedisMessageCacheConfig(MessageCacheConfig):
    """``inbound_ttl``, ``outbound_ttl`` and where and how to reach Redis.

    * ``redis_url``: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for
      TLS, or ``unix:///path/to/socket``;
    * ``key_prefix``: put before every key; replicas sharing data must share it;
    * ``connect_timeout`` / ``command_timeout``: seconds allowed to connect and for one
      command's reply;
    * ``max_connections``: pooled connections, and so concurrent commands, per cache.
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "vumi_like:"
    connect_timeout: PositiveFloat = 5.0
    command_timeout: PositiveFloat = 5.0
    max_connections: PositiveInt = 10

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme not in _SCHEMES:
            raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {scheme!r}")
        return url


class RedisMessageCache(MessageCache):
    """The message cache in Redis; see the module docstring.

    ``open`` connects and PINGs, raising ``CacheUnavailable`` (naming the URL, password
    hidden) if Redis cannot be reached. Later connection failures raise
    ``CacheUnavailable`` too, and any other Redis error ``CacheError``; the cache keeps
    working once Redis is back, as the pool reconnects.
    """

    def __init__(self, config: RedisMessageCacheConfig | Mapping[str, Any] | None = None) -> None:
        if not isinstance(config, RedisMessageCacheConfig):
            config = RedisMessageCacheConfig.model_validate(config or {})
        self.config = config
        self._where = redact_text(config.redis_url)
        self._limiter = trio.CapacityLimiter(config.max_connections)
        self._inbound_ttl_ms = _milliseconds(config.inbound_ttl)
        self._outbound_ttl_ms = _milliseconds(config.outbound_ttl)
        self._pool: redis.ConnectionPool | None = None
        self._client: redis.Redis | None = None
        self._add_part: Any = None

    def __repr__(self) -> str:
        return f"<RedisMessageCache {self._where} prefix={self.config.key_prefix!r}>"

    async def open(self) -> None:
        if self._client is not None:
            return
        self._check_can_open()
        config = self.config
        pool = redis.ConnectionPool.from_url(
            config.redis_url,
            max_connections=config.max_connections,
            socket_connect_timeout=config.connect_timeout,
            socket_timeout=config.command_timeout,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), _RETRIES),
        )
        client = redis.Redis(connection_pool=pool)
        try:
            await self._in_thread(client.ping)
        except BaseException:
            pool.disconnect()
            raise
        self._pool, self._client = pool, client
        await super().open()

    async def aclose(self) -> None:
        pool, self._pool, self._client = self._pool, None, None
        if pool is not None:
            pool.disconnect()
        await super().aclose()

    async def store_inbound(self, msg: Message) -> None:
        client = self._open_client()
        body = msg.to_json()
        inbound_key = self._key("inbound", msg.message_id)
        last_key = self._key("last_inbound", msg.from_addr)
        ttl_ms = self._inbound_ttl_ms

        def store() -> None:
            with client.pipeline(transaction=True) as pipe:
                pipe.set(inbound_key, body, px=ttl_ms)
                pipe.set(last_key, body, px=ttl_ms)
                pipe.execute()

        await self._in_thread(store)

    async def get_inbound(self, message_id: str) -> Message | None:
        return await self._get_message(self._key("inbound", message_id))

    async def get_last_inbound_from(self, from_addr: str) -> Message | None:
        return await self._get_message(self._key("last_inbound", from_addr))

    async def store_outbound(self, message_id: str, info: Mapping[str, str]) -> None:
        client = self._open_client()
        body = json.dumps(checked_outbound_info(info), separators=(",", ":"))
        key = self._key("outbound", message_id)
        await self._in_thread(client.set, key, body, px=self._outbound_ttl_ms)

    async def get_outbound(self, message_id: str) -> dict[str, str] | None:
        client = self._open_client()
        key = self._key("outbound", message_id)
        body = cast("bytes | None", await self._in_thread(client.get, key))
        if body is None:
            return None
        try:
            return checked_outbound_info(json.loads(body))
        except (ValueError, TypeError) as exc:
            raise CacheError(f"unreadable outbound info at {key!r}: {exc}") from exc

    async def store_provider_ids(
        self, namespace: str, provider_ids: Sequence[str], message_id: str, ttl: float
    ) -> None:
        client = self._open_client()
        keys = [self._key(f"provider:{namespace}", provider_id) for provider_id in provider_ids]
        ttl_ms = _milliseconds(ttl)

        def store() -> None:
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, message_id, px=ttl_ms)
                pipe.execute()

        await self._in_thread(store)

    async def get_provider_message_id(self, namespace: str, provider_id: str) -> str | None:
        client = self._open_client()
        key = self._key(f"provider:{namespace}", provider_id)
        value = cast("bytes | None", await self._in_thread(client.get, key))
        return None if value is None else value.decode()

    async def expire_provider_id(self, namespace: str, provider_id: str, ttl: float) -> None:
        client = self._open_client()
        key = self._key(f"provider:{namespace}", provider_id)
        # LT: only ever shortens; a key without a TTL or already gone is left alone.
        await self._in_thread(client.pexpire, key, _milliseconds(ttl), lt=True)

    async def add_part(
        self, key: str, number: int, total: int, part: bytes, ttl: float
    ) -> list[bytes] | None:
        client = self._open_client()
        script = self._add_part_script(client)
        result = await self._in_thread(
            script, keys=[self._key("parts", key)], args=[number, total, part, _milliseconds(ttl)]
        )
        if not result:
            return None
        return [bytes(value) for value in cast("list[bytes]", result)]

    def _add_part_script(self, client: redis.Redis) -> Any:
        if self._add_part is None:
            self._add_part = client.register_script(_ADD_PART)
        return self._add_part

    async def _get_message(self, key: str) -> Message | None:
        client = self._open_client()
        body = cast("bytes | None", await self._in_thread(client.get, key))
        return None if body is None else decode_message(body, repr(key))

    def _key(self, kind: str, name: str) -> str:
        return f"{self.config.key_prefix}{kind}:{name}"

    def _open_client(self) -> redis.Redis:
        self._check_open()
        assert self._client is not None
        return self._client

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking redis-py call in a worker thread, translating its errors."""
        try:
            return await trio.to_thread.run_sync(
                functools.partial(fn, *args, **kwargs), limiter=self._limiter
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise CacheUnavailable(f"Redis at {self._where} is unavailable: {exc}") from exc
        except redis.RedisError as exc:
            raise CacheError(f"Redis at {self._where} failed: {exc}") from exc


# One part into the set's hash; the TTL runs from the first part. When the set is
# complete, the parts come back in order and the hash goes, in the same atomic step,
# so exactly one caller sees it complete.
_ADD_PART = """
local created = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3])
if redis.call('HLEN', KEYS[1]) == 1 and created == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
if redis.call('HLEN', KEYS[1]) < tonumber(ARGV[2]) then
  return false
end
local parts = {}
for n = 1, tonumber(ARGV[2]) do
  parts[n] = redis.call('HGET', KEYS[1], tostring(n))
end
redis.call('DEL', KEYS[1])
return parts
"""


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))
