"""Message caches: link replies to inbound messages and events to outbound messages.

``MessageCache`` is the interface (``base.py``); ``MemoryMessageCache`` (``memory.py``)
and ``RedisMessageCache`` (``redis.py``) implement it side by side and pass one test
suite. A worker picks one by name in its config with ``make_message_cache``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator

from vumi_like.caches.base import (
    DEFAULT_INBOUND_TTL,
    DEFAULT_OUTBOUND_TTL,
    CacheError,
    CacheUnavailable,
    MessageCache,
    MessageCacheConfig,
)
from vumi_like.caches.memory import MemoryMessageCache, MemoryMessageCacheConfig
from vumi_like.caches.redis import RedisMessageCache, RedisMessageCacheConfig
from vumi_like.class_paths import VUMI2_CLASS_PATHS, ClassPathError, resolve_class
from vumi_like.validation import describe_validation_error

__all__ = [
    "DEFAULT_INBOUND_TTL",
    "DEFAULT_OUTBOUND_TTL",
    "CacheError",
    "CacheUnavailable",
    "MemoryMessageCache",
    "MemoryMessageCacheConfig",
    "MessageCache",
    "MessageCacheConfig",
    "MessageCacheSettings",
    "RedisMessageCache",
    "RedisMessageCacheConfig",
    "make_message_cache",
    "message_cache_class",
]

# Short names a config may use besides a dotted path: ours, and the bare class names
# (vumi2's docs give ``MemoryMessageCache`` as the default). vumi2's class path is one of
# ``VUMI2_CLASS_PATHS``.
_NAMED_CACHES: dict[str, str] = {
    "memory": "vumi_like.caches.MemoryMessageCache",
    "redis": "vumi_like.caches.RedisMessageCache",
    "MemoryMessageCache": "vumi_like.caches.MemoryMessageCache",
    "RedisMessageCache": "vumi_like.caches.RedisMessageCache",
    **VUMI2_CLASS_PATHS,
}


def message_cache_class(class_name: str) -> type[MessageCache]:
    """The cache class named by ``class_name``; ``ValueError`` if there is none.

    ``class_name`` is ``memory``, ``redis``, ``MemoryMessageCache``,
    ``RedisMessageCache``, vumi2's ``vumi2.message_caches.MemoryMessageCache``, or the
    dotted path of any importable concrete ``MessageCache`` subclass (such as
    ``vumi_like.caches.RedisMessageCache``).
    """
    try:
        return resolve_class(
            class_name, MessageCache, what="message cache class", aliases=_NAMED_CACHES
        )
    except ClassPathError as exc:
        raise ValueError(
            f"unknown message cache class {class_name!r}: use 'memory', 'redis' or the dotted "
            f"path of a MessageCache subclass (e.g. 'vumi_like.caches.RedisMessageCache'); {exc}"
        ) from None


def make_message_cache(class_name: str, config: Mapping[str, Any] | None = None) -> MessageCache:
    """A new cache of the class named by ``class_name``, configured by ``config``. Not open.

    The cache is returned unopened, since opening connects and may fail: use it as
    ``async with make_message_cache(...) as cache:`` or ``await cache.open()`` first.
    An unknown ``class_name`` raises ``ValueError`` (see ``message_cache_class``); a bad
    ``config`` raises pydantic's ``ValidationError`` (also a ``ValueError``).
    """
    return message_cache_class(class_name)(config or {})


class MessageCacheSettings(BaseModel):
    """The two config keys of a worker that uses a message cache, checked at load time.

    A worker's config class inherits this beside ``BaseConfig``. A bad class name or a
    bad option stops start-up with one line naming the key, instead of failing when
    ``setup()`` builds the cache. Building one here touches nothing outside.
    """

    message_cache_class: str = Field(
        default="memory",
        description="memory, redis, MemoryMessageCache, or a dotted path to a MessageCache "
        "class; use redis to share the cache between replicas",
    )
    message_cache_config: dict[str, Any] = Field(
        default_factory=dict, description="Options for the message cache (TTLs, redis_url...)"
    )

    @field_validator("message_cache_class")
    @classmethod
    def _cache_class_exists(cls, name: str) -> str:
        message_cache_class(name)  # raises ValueError naming the choices
        return name

    @field_validator("message_cache_config")
    @classmethod
    def _cache_config_fits_its_class(
        cls, options: dict[str, Any], info: ValidationInfo
    ) -> dict[str, Any]:
        name = info.data.get("message_cache_class")
        if name is None:
            return options  # the class itself is wrong, and reported as such
        try:
            make_message_cache(name, options)
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc, subject="value")) from None
        return options

    def make_message_cache(self) -> MessageCache:
        """The configured cache, not yet opened."""
        return make_message_cache(self.message_cache_class, self.message_cache_config)
