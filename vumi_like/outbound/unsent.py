"""What an API replica stored to send and has not yet sent, and what a dead one left.

A sending request stores what it accepts, then publishes it, then answers. A replica
that dies between the two leaves it stored, looking sent to whoever reads it, with
nothing to send it. So each thing to send is stored with a row among the unsent, in
the same transaction, and the replica strikes it off once the broker has confirmed
it (or the request has marked it failed), a second's worth at a time. A row still
there ``UNSENT_MARGIN`` seconds past its request's time limit belongs to a request
whose replica died before it published or answered. Every replica sweeps for those
now and then, and marks them failed, as that request would have had it failed before
dying; its client, who got no answer, sends again. A replica sweeps only once it has
reached the store for ``STORE_BACK_GRACE`` seconds in a row, so the others had time
to strike off what they published while the store was away.

``Unsent`` is that bookkeeping, for whichever store table holds the rows: the Messaging
API's messages (``outbox.py``) and the Notifications API's notifications.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog
import trio
from pydantic import BaseModel, Field

from vumi_like.stores import StoreError

__all__ = ["FORGET_INTERVAL", "STORE_BACK_GRACE", "UNSENT_MARGIN", "Unsent", "UnsentSettings"]

log = structlog.get_logger(__name__)

Id = TypeVar("Id")

# Seconds between two strikings off of what a replica settled.
FORGET_INTERVAL = 1.0

# A row still unsent this long after its request's time limit was left by a replica
# that died: a live request marks what it did not send within a few seconds of its
# limit, and what it settled is struck off within a ``FORGET_INTERVAL`` or two. It is
# twice the margin after which a retry with the request's Idempotency-Key takes the
# dead run's claim over (``ABANDONED_CLAIM_MARGIN``), so that a retry made then resumes
# the request and sends what it stored rather than finding it marked failed.
UNSENT_MARGIN = 20.0

# How long a replica waits, from its start or from reaching the store again after it
# could not, before it sweeps: the others strike off meanwhile what they published
# while the store was away, which would otherwise look abandoned.
STORE_BACK_GRACE = 5 * FORGET_INTERVAL


class UnsentSettings(BaseModel):
    """Inherited by the config class of an API that stores what it sends."""

    unsent_sweep_interval: float = Field(
        default=30,
        gt=0,
        description="Seconds between two sweeps for what a stopped replica stored and "
        f"never sent; what was stored over request_timeout + {UNSENT_MARGIN:g} s ago is "
        "marked failed",
    )


class Unsent(Generic[Id]):
    """One replica's unsent rows of one kind: ``forget(ids)`` strikes rows off,
    ``sweep(older_than)`` marks failed what was stored over ``older_than`` seconds ago
    and never struck off, and returns the ids it marked."""

    def __init__(
        self,
        *,
        forget: Callable[[Sequence[Id]], Awaitable[None]],
        sweep: Callable[[float], Awaitable[list[Id]]],
        what: str,
    ) -> None:
        self._forget = forget
        self._sweep = sweep
        self._what = what  # for the log: "messages", "notifications"
        # Sent (or marked failed) since the rows were last struck off.
        self._settled: list[Id] = []

    def settled(self, *ids: Id) -> None:
        """``ids`` were published (the broker confirmed them) or marked failed."""
        self._settled += ids

    async def forget_settled(self) -> None:
        """Strike off what was settled since last time (``StoreError`` if the store
        cannot be reached: they wait for the next time)."""
        settled, self._settled = self._settled, []
        if not settled:
            return
        try:
            await self._forget(settled)
        except BaseException:
            self._settled += settled
            raise

    async def keep(self, *, request_timeout: float, sweep_every: float) -> None:
        """For the replica's life: strike off what it settled every ``FORGET_INTERVAL``
        seconds and, every ``sweep_every`` seconds, mark failed what a dead replica
        left unsent for ``request_timeout + UNSENT_MARGIN`` seconds."""
        reachable_since: float | None = trio.current_time()
        next_sweep = trio.current_time() + sweep_every
        while True:
            await trio.sleep(FORGET_INTERVAL)
            try:
                await self.forget_settled()
                now = trio.current_time()
                reachable_since = now if reachable_since is None else reachable_since
                if now >= next_sweep and now - reachable_since >= STORE_BACK_GRACE:
                    next_sweep = now + sweep_every
                    failed = await self._sweep(request_timeout + UNSENT_MARGIN)
                    if failed:
                        log.warning(
                            f"marked failed {self._what} a stopped replica never sent",
                            count=len(failed),
                            ids=failed[:20],
                        )
            except StoreError as exc:
                if reachable_since is not None:
                    log.warning(
                        f"cannot strike off the unsent {self._what}: store unavailable",
                        error=str(exc),
                    )
                reachable_since = None
