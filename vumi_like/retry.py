"""The one retry policy: how long to wait before trying again, and when to stop.

Every worker that talks to something outside (Turn, webhooks, providers) fails now and
then in ways a retry cures: a timeout, a 429, a 503. They all retry the same way, with
the same config keys, so an operator learns it once:

    delay = retry_delay_base * retry_delay_exponent ** attempt     (attempt = 0, 1, 2, ...)

capped at ``retry_delay_max``, then spread by a random factor in ``[1 - retry_jitter, 1 +
retry_jitter]`` so that replicas retrying after an outage do not hammer the other side
in step. A ``Retry-After`` that asks for longer wins, itself capped at
``retry_after_max`` so that a confused server cannot park a message for a week. After
``max_retries`` retries the policy gives up: ``RetriesExhausted``, which dead-letters the
envelope with the reason (a worker that must record the failure first catches it, does
so, and raises it again).

Why the wait is not a ``trio.sleep`` in the handler: that would hold a prefetch slot
for minutes and be lost on a restart. A handler raises ``RetryLater`` instead; its
connector hands the delivery to the broker, which keeps it in a TTL queue and brings it
back on the same queue with its attempt number one higher, and acks the original.
The attempt number reaches the handler as an argument (see ``vumi_like.connectors``),
so nothing about a retry is hidden in ambient state.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NoReturn

import attrs
from pydantic import BaseModel, Field

__all__ = [
    "RetriesExhausted",
    "RetryLater",
    "RetryPolicy",
    "RetrySettings",
    "ServiceUnavailable",
    "Unprocessable",
    "retry_after_seconds",
]


class RetryLater(Exception):
    """Raised by a handler: bring the delivery it is handling back after ``delay`` seconds.

    ``reason`` says what failed, for the log line and the metrics. ``counts`` False
    brings it back with the same attempt number: for work put off without being tried
    (its receiver is busy), which must not use up the retries allowed.
    """

    def __init__(self, delay: float, reason: str = "", *, counts: bool = True) -> None:
        super().__init__(f"retry in {delay:.3g} s" + (f": {reason}" if reason else ""))
        self.delay = delay
        self.reason = reason
        self.counts = counts


class ServiceUnavailable(Exception):
    """Something a handler needs (its message store, its cache) cannot be reached now.

    Not the envelope's fault, so it is never dead-lettered for it: the connector hands
    the delivery to the broker to come back later, without using up an attempt, for as
    long as the outage lasts (``vumi_like.connectors``). ``StoreUnavailable`` and
    ``CacheUnavailable`` are ones.
    """


class Unprocessable(Exception):
    """Raised by a handler for an envelope it can never handle, for a reason it knows.

    The envelope goes to the dead-letter queue with this reason, and the log says so in
    one warning line. It is not a bug in the worker: unlike any other exception from a
    handler, it is logged without a traceback and not reported to Sentry. (Poison in
    the stream, an event for a message nobody knows, would otherwise cost a formatted
    traceback each, and bury the worker's real errors among them.)
    """


class RetriesExhausted(Unprocessable):
    """The last attempt allowed failed too; the envelope goes to the dead-letter queue."""


@attrs.frozen
class RetryPolicy:
    """Exponential backoff with jitter, ``Retry-After`` honoured and capped, a max count.

    Build one from a worker's config with ``RetrySettings.retry_policy()``.
    """

    max_retries: int = 3
    delay_base: float = 2.0
    delay_exponent: float = 2.0
    jitter: float = 0.2
    delay_max: float = 3600.0
    retry_after_max: float = 3600.0
    random: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt + 1`` (``attempt`` 0 is the first try)."""
        delay = min(self.delay_max, self.delay_base * self.delay_exponent**attempt)
        delay *= 1 + self.random.uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay

    def gives_up_after(self, attempt: int) -> bool:
        """Whether ``attempt`` (0 is the first try) was the last one allowed."""
        return attempt >= self.max_retries

    def retry(self, attempt: int, reason: str, *, retry_after: float | None = None) -> NoReturn:
        """Raise ``RetryLater`` with the delay for ``attempt``, or ``RetriesExhausted``."""
        if self.gives_up_after(attempt):
            raise RetriesExhausted(f"{reason} (gave up after {attempt + 1} attempts)")
        raise RetryLater(self.delay(attempt, retry_after), reason)


class RetrySettings(BaseModel):
    """The retry keys, the same in every worker's config that retries anything.

    A worker's config class inherits this beside ``BaseConfig``. The defaults are
    vumi2's Turn app's (``max_retries``, ``retry_delay_base``, ``retry_delay_exponent``);
    a worker may override a default by declaring the field again.
    """

    max_retries: int = Field(
        default=3, ge=0, description="Retries after the first attempt before giving up"
    )
    retry_delay_base: float = Field(
        default=2, gt=0, description="Seconds before the first retry (before jitter)"
    )
    retry_delay_exponent: float = Field(
        default=2, ge=1, description="Growth factor of the retry delay per attempt"
    )
    retry_jitter: float = Field(
        default=0.2, ge=0, lt=1, description="Retry delays vary randomly by this fraction"
    )
    retry_delay_max: float = Field(
        default=3600, gt=0, description="Longest backoff between two attempts, in seconds"
    )
    retry_after_max: float = Field(
        default=3600,
        ge=0,
        description="Longest Retry-After honoured, in seconds; a longer one is cut to this",
    )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            delay_base=self.retry_delay_base,
            delay_exponent=self.retry_delay_exponent,
            jitter=self.retry_jitter,
            delay_max=self.retry_delay_max,
            retry_after_max=self.retry_after_max,
        )


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from now, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
