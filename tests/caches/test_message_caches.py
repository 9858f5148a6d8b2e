"""The MessageCache contract, on the memory cache and on real Redis, plus each one's own.

Redis is found at ``VUMI_LIKE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
Each test uses a key prefix of its own and deletes its keys afterwards. When Redis is
unreachable the Redis variants skip with the reason, unless ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis
import trio
from pydantic import ValidationError
from trio.testing import MockClock

from tests.conftest import require_service
from vumi_like.caches import (
    CacheUnavailable,
    MemoryMessageCache,
    MemoryMessageCacheConfig,
    MessageCache,
    RedisMessageCache,
    RedisMessageCacheConfig,
    make_message_cache,
)
from vumi_like.messages import Message, SessionEvent
from vumi_like.redaction import redact_text as redact_url

REDIS_URL = os.environ.get("VUMI_LIKE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
UNREACHABLE_REDIS_URL = "redis://someone:s3cret@127.0.0.1:1/0"

# Short enough to keep the Redis expiry tests quick; the memory ones jump the clock.
SHORT_TTL = 0.5
PAST_SHORT_TTL = SHORT_TTL + 0.3


def inbound(from_addr: str = "+27820000001", content: str = "hello", **fields: Any) -> Message:
    return Message(
        to_addr="*120*1234#",
        from_addr=from_addr,
        transport_name="ussd_transport",
        transport_type="ussd",
        content=content,
        session_event=SessionEvent.RESUME,
        helper_metadata={"turn": {"id": "turn-1"}},
        **fields,
    )


def delete_redis_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def key_prefix(unique: str) -> str:
    return f"vumi_like_test:{unique}:"


@pytest.fixture
def redis_prefix(key_prefix: str) -> Iterator[str]:
    """``key_prefix``, once Redis is known to be there; its keys are deleted afterwards."""
    require_service(REDIS_URL, 6379, "Redis")
    yield key_prefix
    delete_redis_keys(key_prefix)


@pytest.fixture(params=["memory", "redis"])
def cache_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_cache(cache_kind: str, request: pytest.FixtureRequest) -> Callable[..., MessageCache]:
    """Build an unopened cache of the kind under test, with ``config`` overrides."""
    if cache_kind == "memory":
        return lambda **config: MemoryMessageCache(config)
    prefix = request.getfixturevalue("redis_prefix")
    return lambda **config: RedisMessageCache(
        {"redis_url": REDIS_URL, "key_prefix": prefix, **config}
    )


@pytest.fixture
async def cache(make_cache: Callable[..., MessageCache]) -> AsyncIterator[MessageCache]:
    async with make_cache() as opened:
        yield opened


@pytest.fixture
def ttl_clock(cache_kind: str) -> MockClock | None:
    """An autojumping clock for the memory cache, so its TTLs pass instantly.

    Redis keeps its own time, so its tests run on the real clock and really wait.
    """
    return MockClock(autojump_threshold=0) if cache_kind == "memory" else None


# ---------------------------------------------------------------------------------------
# The contract: every cache


async def test_stored_inbound_is_found_by_its_id(cache: MessageCache):
    msg = inbound()
    await cache.store_inbound(msg)
    assert await cache.get_inbound(msg.message_id) == msg


async def test_stored_inbound_is_the_last_from_its_sender(cache: MessageCache):
    msg = inbound(from_addr="+27820000001")
    await cache.store_inbound(msg)
    assert await cache.get_last_inbound_from("+27820000001") == msg


async def test_last_inbound_from_address_is_the_newest_stored(cache: MessageCache):
    first = inbound(from_addr="+27820000001", content="1")
    other = inbound(from_addr="+27820000002", content="other")
    second = inbound(from_addr="+27820000001", content="2")
    for msg in (first, other, second):
        await cache.store_inbound(msg)

    assert await cache.get_last_inbound_from("+27820000001") == second
    assert await cache.get_last_inbound_from("+27820000002") == other
    # Older inbounds are still found by id.
    assert await cache.get_inbound(first.message_id) == first


async def test_outbound_info_round_trips(cache: MessageCache):
    info = {"connector": "sms_out", "turn_message_id": "turn-msg-1"}
    await cache.store_outbound("out-1", info)
    assert await cache.get_outbound("out-1") == info


async def test_storing_outbound_info_again_replaces_it(cache: MessageCache):
    await cache.store_outbound("out-1", {"connector": "a", "extra": "x"})
    await cache.store_outbound("out-1", {"connector": "b"})
    assert await cache.get_outbound("out-1") == {"connector": "b"}


async def test_empty_outbound_info_is_stored_not_unknown(cache: MessageCache):
    await cache.store_outbound("out-1", {})
    assert await cache.get_outbound("out-1") == {}


async def test_unknown_ids_give_none(cache: MessageCache):
    await cache.store_inbound(inbound(from_addr="+27820000001"))
    await cache.store_outbound("out-1", {"connector": "a"})

    assert await cache.get_inbound("no-such-message") is None
    assert await cache.get_last_inbound_from("+27829999999") is None
    assert await cache.get_outbound("no-such-message") is None
    # Inbound and outbound ids are separate namespaces.
    assert await cache.get_inbound("out-1") is None


async def test_returned_values_are_copies(cache: MessageCache):
    msg = inbound()
    await cache.store_inbound(msg)
    await cache.store_outbound("out-1", {"connector": "a"})

    got = await cache.get_inbound(msg.message_id)
    assert got is not None
    got.content = "changed"
    got.helper_metadata["turn"]["id"] = "changed"
    info = await cache.get_outbound("out-1")
    assert info is not None
    info["connector"] = "changed"

    assert await cache.get_inbound(msg.message_id) == inbound(
        message_id=msg.message_id, timestamp=msg.timestamp
    )
    assert await cache.get_outbound("out-1") == {"connector": "a"}


async def test_outbound_info_must_map_str_to_str(cache: MessageCache):
    with pytest.raises(TypeError, match="str to str"):
        await cache.store_outbound("out-1", {"attempt": 3})  # type: ignore[dict-item]
    assert await cache.get_outbound("out-1") is None


async def test_inbound_expires_after_inbound_ttl(
    make_cache: Callable[..., MessageCache], ttl_clock: MockClock | None
):
    async with make_cache(inbound_ttl=SHORT_TTL, outbound_ttl=60) as cache:
        msg = inbound()
        await cache.store_inbound(msg)
        await cache.store_outbound("out-1", {"connector": "a"})
        assert await cache.get_inbound(msg.message_id) == msg

        await trio.sleep(PAST_SHORT_TTL)

        assert await cache.get_inbound(msg.message_id) is None
        assert await cache.get_last_inbound_from(msg.from_addr) is None
        assert await cache.get_outbound("out-1") == {"connector": "a"}


async def test_outbound_expires_after_outbound_ttl(
    make_cache: Callable[..., MessageCache], ttl_clock: MockClock | None
):
    async with make_cache(inbound_ttl=60, outbound_ttl=SHORT_TTL) as cache:
        msg = inbound()
        await cache.store_inbound(msg)
        await cache.store_outbound("out-1", {"connector": "a"})
        assert await cache.get_outbound("out-1") == {"connector": "a"}

        await trio.sleep(PAST_SHORT_TTL)

        assert await cache.get_outbound("out-1") is None
        assert await cache.get_inbound(msg.message_id) == msg


async def test_a_cache_must_be_open_to_be_used(make_cache: Callable[..., MessageCache]):
    cache = make_cache()
    with pytest.raises(RuntimeError, match="not open"):
        await cache.get_outbound("out-1")

    async with cache:
        await cache.store_outbound("out-1", {"connector": "a"})

    with pytest.raises(RuntimeError, match="closed"):
        await cache.get_outbound("out-1")
    with pytest.raises(RuntimeError, match="closed"):
        await cache.open()
    await cache.aclose()  # closing twice is fine


async def test_provider_ids_map_to_their_message_in_their_namespace(cache: MessageCache):
    await cache.store_provider_ids("smpp", ["1a2b", "1a2c"], "msg-1", ttl=60)
    assert await cache.get_provider_message_id("smpp", "1a2b") == "msg-1"
    assert await cache.get_provider_message_id("smpp", "1a2c") == "msg-1"
    assert await cache.get_provider_message_id("http_sms", "1a2b") is None
    assert await cache.get_provider_message_id("smpp", "1a2d") is None


async def test_provider_id_mapping_expires_after_its_ttl(
    cache: MessageCache, ttl_clock: MockClock | None
):
    await cache.store_provider_ids("smpp", ["short"], "msg-1", ttl=SHORT_TTL)
    await cache.store_provider_ids("smpp", ["long"], "msg-2", ttl=60)
    await trio.sleep(PAST_SHORT_TTL)
    assert await cache.get_provider_message_id("smpp", "short") is None
    assert await cache.get_provider_message_id("smpp", "long") == "msg-2"


async def test_expiring_a_provider_id_only_ever_shortens_its_life(
    cache: MessageCache, ttl_clock: MockClock | None
):
    await cache.store_provider_ids("smpp", ["a", "b"], "msg-1", ttl=60)
    await cache.store_provider_ids("smpp", ["c"], "msg-2", ttl=SHORT_TTL)
    await cache.expire_provider_id("smpp", "a", ttl=SHORT_TTL)
    await cache.expire_provider_id("smpp", "c", ttl=600)  # not lengthened
    await cache.expire_provider_id("smpp", "unknown", ttl=SHORT_TTL)  # ignored
    assert await cache.get_provider_message_id("smpp", "a") == "msg-1"  # not deleted
    await trio.sleep(PAST_SHORT_TTL)
    assert await cache.get_provider_message_id("smpp", "a") is None
    assert await cache.get_provider_message_id("smpp", "b") == "msg-1"
    assert await cache.get_provider_message_id("smpp", "c") is None


async def test_parts_come_back_in_order_once_when_complete(cache: MessageCache):
    assert await cache.add_part("ref-1", 3, 3, b"three", ttl=60) is None
    assert await cache.add_part("ref-1", 1, 3, b"one", ttl=60) is None
    assert await cache.add_part("ref-1", 1, 3, b"one", ttl=60) is None  # repeated part
    assert await cache.add_part("ref-2", 1, 2, b"other", ttl=60) is None
    assert await cache.add_part("ref-1", 2, 3, b"two", ttl=60) == [b"one", b"two", b"three"]
    assert await cache.add_part("ref-2", 2, 2, b"set", ttl=60) == [b"other", b"set"]


async def test_racing_last_parts_complete_the_set_exactly_once(cache: MessageCache):
    await cache.add_part("ref-1", 1, 2, b"one", ttl=60)
    results: list[list[bytes] | None] = []

    async def add_last() -> None:
        results.append(await cache.add_part("ref-1", 2, 2, b"two", ttl=60))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(add_last)
    assert [r for r in results if r is not None] == [[b"one", b"two"]]


async def test_an_incomplete_set_of_parts_is_forgotten_after_its_ttl(
    cache: MessageCache, ttl_clock: MockClock | None
):
    await cache.add_part("ref-1", 1, 2, b"one", ttl=SHORT_TTL)
    await trio.sleep(PAST_SHORT_TTL)
    assert await cache.add_part("ref-1", 2, 2, b"two", ttl=SHORT_TTL) is None


# ---------------------------------------------------------------------------------------
# Memory only


async def test_memory_cache_evicts_the_oldest_beyond_max_entries():
    async with MemoryMessageCache({"max_entries": 3}) as cache:
        messages = [inbound(from_addr=f"+2782000000{i}") for i in range(5)]
        for i, msg in enumerate(messages):
            await cache.store_inbound(msg)
            await cache.store_outbound(f"out-{i}", {"n": str(i)})

        for i, msg in enumerate(messages[:2]):
            assert await cache.get_inbound(msg.message_id) is None
            assert await cache.get_last_inbound_from(msg.from_addr) is None
            assert await cache.get_outbound(f"out-{i}") is None
        for i, msg in enumerate(messages[2:], start=2):
            assert await cache.get_inbound(msg.message_id) == msg
            assert await cache.get_last_inbound_from(msg.from_addr) == msg
            assert await cache.get_outbound(f"out-{i}") == {"n": str(i)}


async def test_memory_cache_size_stays_bounded_under_load():
    async with MemoryMessageCache({"max_entries": 100}) as cache:
        for i in range(5_000):
            await cache.store_inbound(inbound(from_addr=f"+27{i:09d}"))
            await cache.store_outbound(f"out-{i}", {"n": str(i)})
        maps = (cache._inbound, cache._last_inbound, cache._outbound)
        assert [len(m) for m in maps] == [100, 100, 100]


async def test_memory_entry_lives_exactly_its_ttl_from_its_last_store(autojump_clock: MockClock):
    async with MemoryMessageCache({"outbound_ttl": 60}) as cache:
        await cache.store_outbound("out-1", {"connector": "a"})
        await trio.sleep(59.9)
        assert await cache.get_outbound("out-1") == {"connector": "a"}

        await cache.store_outbound("out-1", {"connector": "b"})  # restarts its TTL
        await trio.sleep(59.9)
        assert await cache.get_outbound("out-1") == {"connector": "b"}
        await trio.sleep(0.2)
        assert await cache.get_outbound("out-1") is None


async def test_memory_cache_frees_expired_entries_on_next_use(autojump_clock: MockClock):
    async with MemoryMessageCache({"inbound_ttl": 10, "outbound_ttl": 10}) as cache:
        for i in range(50):
            await cache.store_inbound(inbound(from_addr=f"+27{i:09d}"))
            await cache.store_outbound(f"out-{i}", {"n": str(i)})
        await trio.sleep(11)

        await cache.store_inbound(inbound())
        await cache.store_outbound("out-new", {"n": "new"})
        maps = (cache._inbound, cache._last_inbound, cache._outbound)
        assert [len(m) for m in maps] == [1, 1, 1]


# ---------------------------------------------------------------------------------------
# Redis only


def redis_cache(prefix: str, **config: Any) -> RedisMessageCache:
    return RedisMessageCache({"redis_url": REDIS_URL, "key_prefix": prefix, **config})


async def test_redis_replicas_with_one_prefix_share_entries(redis_prefix: str):
    msg = inbound()
    async with redis_cache(redis_prefix) as replica_a, redis_cache(redis_prefix) as replica_b:
        await replica_a.store_inbound(msg)
        await replica_b.store_outbound("out-1", {"connector": "a"})

        assert await replica_b.get_inbound(msg.message_id) == msg
        assert await replica_b.get_last_inbound_from(msg.from_addr) == msg
        assert await replica_a.get_outbound("out-1") == {"connector": "a"}


async def test_redis_entries_survive_a_restart_of_the_worker(redis_prefix: str):
    msg = inbound()
    async with redis_cache(redis_prefix) as before:
        await before.store_inbound(msg)
        await before.store_outbound("out-1", {"connector": "a"})

    async with redis_cache(redis_prefix) as after:
        assert await after.get_last_inbound_from(msg.from_addr) == msg
        assert await after.get_outbound("out-1") == {"connector": "a"}


async def test_redis_caches_with_other_prefixes_do_not_share(redis_prefix: str):
    other_prefix = f"{redis_prefix}other:"
    msg = inbound()
    try:
        async with redis_cache(redis_prefix) as ours, redis_cache(other_prefix) as theirs:
            await ours.store_inbound(msg)
            await ours.store_outbound("out-1", {"connector": "a"})

            assert await theirs.get_inbound(msg.message_id) is None
            assert await theirs.get_last_inbound_from(msg.from_addr) is None
            assert await theirs.get_outbound("out-1") is None
    finally:
        delete_redis_keys(other_prefix)


async def test_redis_runs_more_concurrent_calls_than_it_has_connections(redis_prefix: str):
    async with redis_cache(redis_prefix, max_connections=2) as cache:
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(cache.store_outbound, f"out-{i}", {"n": str(i)})
        for i in range(50):
            assert await cache.get_outbound(f"out-{i}") == {"n": str(i)}


async def test_redis_keys_are_under_the_prefix_and_expire_in_redis(redis_prefix: str):
    msg = inbound()
    async with redis_cache(redis_prefix, inbound_ttl=600, outbound_ttl=86_400) as cache:
        await cache.store_inbound(msg)
        await cache.store_outbound("out-1", {"connector": "a"})

    client = redis.Redis.from_url(REDIS_URL)
    try:
        ttls = {
            key.decode().removeprefix(redis_prefix): client.pttl(key)
            for key in client.scan_iter(match=f"{redis_prefix}*")
        }
    finally:
        client.close()
    assert set(ttls) == {
        f"inbound:{msg.message_id}",
        f"last_inbound:{msg.from_addr}",
        "outbound:out-1",
    }
    assert 590_000 < ttls[f"inbound:{msg.message_id}"] <= 600_000
    assert 590_000 < ttls[f"last_inbound:{msg.from_addr}"] <= 600_000
    assert 86_390_000 < ttls["outbound:out-1"] <= 86_400_000


async def test_unreachable_redis_raises_cache_unavailable_naming_the_url():
    cache = RedisMessageCache({"redis_url": UNREACHABLE_REDIS_URL, "connect_timeout": 2})
    with pytest.raises(CacheUnavailable) as caught:
        await cache.open()
    message = str(caught.value)
    assert "redis://someone:***@127.0.0.1:1/0" in message
    assert "s3cret" not in message
    with pytest.raises(RuntimeError, match="not open"):
        await cache.get_outbound("out-1")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@redis.internal:6379/2", "redis://:***@redis.internal:6379/2"),
        ("rediss://user:p%40ss@[::1]:6380/0", "rediss://user:***@[::1]:6380/0"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock?db=1&password=***"),
    ],
)
def test_redis_url_is_shown_without_its_password(url: str, shown: str):
    assert redact_url(url) == shown


# ---------------------------------------------------------------------------------------
# Configuration and the factory


class RecordingMessageCache(MemoryMessageCache):
    """A cache of our own, to be found by its dotted path."""


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [
        ("memory", MemoryMessageCache),
        ("redis", RedisMessageCache),
        ("MemoryMessageCache", MemoryMessageCache),
        ("RedisMessageCache", RedisMessageCache),
        ("vumi2.message_caches.MemoryMessageCache", MemoryMessageCache),
        ("vumi_like.caches.MemoryMessageCache", MemoryMessageCache),
        ("vumi_like.caches.RedisMessageCache", RedisMessageCache),
        ("vumi_like.caches.memory.MemoryMessageCache", MemoryMessageCache),
        ("tests.caches.test_message_caches.RecordingMessageCache", RecordingMessageCache),
    ],
)
def test_factory_builds_the_named_cache_configured_and_unopened(
    class_name: str, expected: type[MessageCache]
):
    cache = make_message_cache(class_name, {"inbound_ttl": 5})
    assert type(cache) is expected
    assert isinstance(cache, MemoryMessageCache | RedisMessageCache)
    assert cache.config.inbound_ttl == 5
    assert not cache._is_open


@pytest.mark.parametrize(
    "class_name",
    [
        "",
        "lru",
        "vumi2.message_caches.RedisMessageCache",
        "no.such.module.Cache",
        "vumi_like.caches.NoSuchCache",
        "collections.OrderedDict",
        "vumi_like.caches.MessageCache",
    ],
)
def test_factory_refuses_an_unknown_class_in_one_line(class_name: str):
    with pytest.raises(ValueError, match="unknown message cache class") as caught:
        make_message_cache(class_name, {})
    assert repr(class_name) in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_factory_cache_opens_as_a_context_manager():
    async with make_message_cache("memory", {}) as cache:
        await cache.store_outbound("out-1", {"connector": "a"})
        assert await cache.get_outbound("out-1") == {"connector": "a"}


@pytest.mark.parametrize("class_name", ["memory", "redis"])
def test_factory_refuses_unknown_config_keys(class_name: str):
    with pytest.raises(ValidationError, match="inbound_tll"):
        make_message_cache(class_name, {"inbound_tll": 5})


def test_defaults_are_an_hour_for_inbounds_and_a_day_for_outbounds():
    for config in (MemoryMessageCacheConfig(), RedisMessageCacheConfig()):
        assert config.inbound_ttl == 3600
        assert config.outbound_ttl == 24 * 3600
    assert RedisMessageCacheConfig().redis_url == "redis://127.0.0.1:6379/0"
    assert RedisMessageCacheConfig().key_prefix == "vumi_like:"


def test_vumi2_timeout_sets_both_ttls_unless_given():
    config = MemoryMessageCacheConfig.model_validate({"timeout": 120})
    assert (config.inbound_ttl, config.outbound_ttl) == (120, 120)
    config = MemoryMessageCacheConfig.model_validate({"timeout": 120, "outbound_ttl": 900})
    assert (config.inbound_ttl, config.outbound_ttl) == (120, 900)


@pytest.mark.parametrize(
    "config",
    [
        {"inbound_ttl": 0},
        {"outbound_ttl": -1},
        {"max_connections": 0},
        {"redis_url": "http://127.0.0.1:6379/0"},
    ],
)
def test_redis_config_refuses_bad_values(config: dict[str, Any]):
    with pytest.raises(ValidationError):
        RedisMessageCacheConfig.model_validate(config)


def test_memory_config_refuses_a_max_entries_below_one():
    with pytest.raises(ValidationError):
        MemoryMessageCacheConfig.model_validate({"max_entries": 0})
