"""The message cache interface, its errors and the configuration every cache shares.

A message cache holds the short-lived links a worker needs to answer later traffic:

* **inbound messages**, by ``message_id`` and as "the last one from this address", so an
  outbound reply can be tied to the inbound it answers (``in_reply_to``, and the session
  of a USSD flow when the caller, like Turn, does not say which message it replies to);
* **outbound info**, a small ``str -> str`` mapping per outbound ``message_id`` (the
  connector that sent it, the Turn message id, an event URL...), so that events for that
  outbound can be routed or forwarded;
* **provider ids**: the id a provider gave what a transport sent, mapped to the
  ``message_id`` it came from, so a delivery report is matched however late (within the
  TTL), on whichever replica it arrives;
* **message parts**: the parts of a long inbound message received so far, so it is
  reassembled whichever replica received each part.

Entries live for a TTL counted from when they were (last) stored: ``inbound_ttl``
(default 1 hour, as vumi2: long enough for a USSD session or a prompt reply to an SMS,
short enough that "the last inbound from this address" does not tie a reply to a
conversation that ended long ago) and ``outbound_ttl`` (default 24 hours: events are
forwarded for 24 hours after a message is sent). A cache is a cache: an entry may go
early (a bounded memory cache evicts its oldest), and callers treat ``None`` as "no
longer known", never as an error.

Life cycle, the same for every implementation: construct (cheap, validates the config
and touches nothing), then ``await cache.open()`` (or ``async with cache:``), which
connects and raises ``CacheUnavailable`` if the backing service cannot be reached; then
use it; then ``await cache.aclose()``. Calling a method on a cache that is not open is a
bug in the caller and raises ``RuntimeError``, on the memory cache too, so the fake
catches what the real thing would.

Values come back as copies: changing a returned ``Message`` or dict never changes what
the cache holds, as with Redis, where every read decodes fresh bytes.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, PositiveFloat, model_validator

from vumi_like.messages import InvalidEnvelope, Message
from vumi_like.retry import ServiceUnavailable

__all__ = [
    "DEFAULT_INBOUND_TTL",
    "DEFAULT_OUTBOUND_TTL",
    "CacheError",
    "CacheUnavailable",
    "MessageCache",
    "MessageCacheConfig",
]

DEFAULT_INBOUND_TTL = 60 * 60.0
DEFAULT_OUTBOUND_TTL = 24 * 60 * 60.0


class CacheError(Exception):
    """The cache could not do what was asked (the service refused, an entry is unreadable)."""


class CacheUnavailable(CacheError, ServiceUnavailable):
    """The service behind the cache cannot be reached; the message names where it was sought.

    A handler raising it has its delivery retried later, not dead-lettered."""


class MessageCacheConfig(BaseModel):
    """What every cache's configuration has: the two TTLs, in seconds.

    vumi2's caches take a single ``timeout`` (seconds) for everything they hold; it is
    accepted so that a vumi2 ``message_cache_config`` works unchanged, and sets whichever
    of ``inbound_ttl`` and ``outbound_ttl`` is not given explicitly.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    inbound_ttl: PositiveFloat = DEFAULT_INBOUND_TTL
    outbound_ttl: PositiveFloat = DEFAULT_OUTBOUND_TTL

    @model_validator(mode="before")
    @classmethod
    def _vumi2_timeout(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "timeout" in data:
            data = dict(data)
            timeout = data.pop("timeout")
            data.setdefault("inbound_ttl", timeout)
            data.setdefault("outbound_ttl", timeout)
        return data


class MessageCache(abc.ABC):
    """Inbound messages and outbound info, for a while. See the module docstring.

    Subclasses take their configuration as the only constructor argument (a mapping, as
    found in a worker's config file, or their config model), implement the five data
    methods, and extend ``open`` / ``aclose`` if they hold resources, calling ``super()``
    so the open/closed checks stay in one place.
    """

    _is_open = False
    _is_closed = False

    @abc.abstractmethod
    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        """Validate ``config`` (as read from a config file); touch nothing outside."""

    async def open(self) -> None:
        """Make the cache ready for use; raises ``CacheUnavailable`` if it cannot be.

        Opening an open cache does nothing. A closed cache cannot be opened again.
        """
        self._check_can_open()
        self._is_open = True

    async def aclose(self) -> None:
        """Release what the cache holds. Safe to call more than once."""
        self._is_open = False
        self._is_closed = True

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_can_open(self) -> None:
        if self._is_closed:
            raise RuntimeError(f"{type(self).__name__} is closed and cannot be reopened")

    def _check_open(self) -> None:
        if not self._is_open:
            state = "closed" if self._is_closed else "not open"
            raise RuntimeError(
                f"{type(self).__name__} is {state}: use 'async with cache:' or "
                "'await cache.open()' before using it"
            )

    @abc.abstractmethod
    async def store_inbound(self, msg: Message) -> None:
        """Keep ``msg`` for ``inbound_ttl``, by its id and as the last from its sender.

        "Last" means most recently stored, which for one sender is the newest message
        in practice; a later store always wins, even of an older message.
        """

    @abc.abstractmethod
    async def get_inbound(self, message_id: str) -> Message | None:
        """The inbound message stored under ``message_id``, or None if unknown or expired."""

    @abc.abstractmethod
    async def get_last_inbound_from(self, from_addr: str) -> Message | None:
        """The inbound most recently stored from ``from_addr``, or None. O(1)."""

    @abc.abstractmethod
    async def store_outbound(self, message_id: str, info: Mapping[str, str]) -> None:
        """Keep ``info`` (``str -> str``) about outbound ``message_id`` for ``outbound_ttl``.

        Storing again for the same id replaces the info and restarts its TTL.
        """

    @abc.abstractmethod
    async def get_outbound(self, message_id: str) -> dict[str, str] | None:
        """The info stored for outbound ``message_id``, or None if unknown or expired."""

    @abc.abstractmethod
    async def store_provider_ids(
        self, namespace: str, provider_ids: Sequence[str], message_id: str, ttl: float
    ) -> None:
        """Map each of ``provider_ids`` (in ``namespace``, a transport's) to ``message_id``
        for ``ttl`` seconds; storing an id again replaces its mapping and TTL."""

    @abc.abstractmethod
    async def get_provider_message_id(self, namespace: str, provider_id: str) -> str | None:
        """The ``message_id`` ``provider_id`` was mapped to, or None if unknown or expired."""

    @abc.abstractmethod
    async def expire_provider_id(self, namespace: str, provider_id: str, ttl: float) -> None:
        """Let ``provider_id``'s mapping live at most ``ttl`` more seconds (never longer
        than it would have); unknown ids are ignored."""

    @abc.abstractmethod
    async def add_part(
        self, key: str, number: int, total: int, part: bytes, ttl: float
    ) -> list[bytes] | None:
        """Keep part ``number`` (1-based) of ``total`` of the multipart message ``key``.

        Returns every part in order when this one completes the set, exactly once
        however many callers race (a repeated part does not complete it twice); until
        then None. An incomplete set is forgotten ``ttl`` seconds after its first part.
        """


def checked_outbound_info(info: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``info``, or ``TypeError`` if it is not all strings.

    Checked at the door, on every cache alike, because Redis would only fail on the way
    back out, long after the caller that stored a number or a None has gone.
    """
    copied = dict(info)
    for key, value in copied.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"outbound info must map str to str, got {key!r}: {value!r} "
                f"({type(key).__name__} -> {type(value).__name__})"
            )
    return copied


def decode_message(body: bytes, where: str) -> Message:
    """Read a cached inbound back; an unreadable entry is a ``CacheError`` naming ``where``."""
    try:
        return Message.from_json(body)
    except InvalidEnvelope as exc:
        raise CacheError(f"unreadable cached message at {where}: {exc}") from exc
