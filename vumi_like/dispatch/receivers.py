"""Keeping one slow or dead webhook receiver from holding up everyone else's.

Each webhook job holds one of the dispatcher's ``worker_concurrency`` delivery slots
while it is being posted. A receiver that hangs until the timeout, or one with a deep
backlog, could fill every slot and delay every other tenant's webhooks. Two limits,
both per receiver (scheme, host and port of the URL), keep it to its share:

* at most ``per_receiver_concurrency`` posts to one receiver at a time. A job that
  finds its receiver at the limit waits in the dispatcher for one of its posts to end
  (a trip through the broker and back costs far more than the milliseconds a healthy
  receiver takes to free a slot), none longer than ``patience``. How many may wait
  follows how fast the receiver answers: as many as it would serve within a short
  while (``patience / 8``) at its recent pace (the moving average of its posts, or the
  age of the oldest post still in flight if that is longer), but never fewer than
  ``per_receiver_concurrency`` nor more than ``max_waiting``. So a fast receiver's
  backlog is served from the dispatcher's prefetched jobs instead of cycling through
  the broker, while a slow one holds at most twice its concurrency in delivery slots.
  Jobs beyond that go back to the broker for a short, jittered while, longer the more
  have gone back since one last found room (up to twenty times), so its backlog waits
  on the broker rather than cycling through the dispatcher;
* after a failed post, the receiver rests for a while that grows with consecutive
  failures (capped); jobs for a resting receiver go back to the broker until the rest
  is over, so a dead receiver costs one timed-out post per rest, not one per job.

The state is per dispatcher process and only a hint: replicas learn separately, and a
restart forgets. Nothing is lost either way; jobs only wait.
"""

from __future__ import annotations

import functools
import random
from collections import deque
from urllib.parse import urlsplit

import attrs
import trio

__all__ = ["Receivers"]


@functools.lru_cache(maxsize=4096)
def receiver_of(url: str) -> str:
    """Scheme, host and port of ``url``: asked several times per post, parsed once."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"


@attrs.define
class _Receiver:
    in_flight: int = 0
    failures: int = 0
    resting_until: float = 0.0
    freed: trio.Event = attrs.field(factory=trio.Event)  # set when a post ends
    waiting: int = 0  # jobs waiting in ``claim`` for a slot
    busy_streak: int = 0  # jobs sent back as busy since one last found a free slot
    pace: float = 0.0  # moving average of its posts' durations, in seconds (0: none yet)
    # When each post in flight began, oldest first (posts mostly end in the order they
    # began; when one doesn't, the oldest's age is a little off, and only a hint).
    starts: deque[float] = attrs.field(factory=deque)

    def start_one(self) -> None:
        self.in_flight += 1
        self.starts.append(trio.current_time())

    def free_one(self) -> float:
        """End a post; how long it took."""
        self.in_flight -= 1
        took = trio.current_time() - self.starts.popleft() if self.starts else 0.0
        self.freed.set()
        self.freed = trio.Event()
        return took

    def recent_pace(self) -> float:
        oldest = trio.current_time() - self.starts[0] if self.starts else 0.0
        return max(self.pace, oldest)


class Receivers:
    def __init__(
        self,
        *,
        per_receiver_concurrency: int = 8,
        first_rest: float = 1.0,
        max_rest: float = 60.0,
        max_waiting: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.per_receiver_concurrency = per_receiver_concurrency
        # Jobs that may wait for one receiver's slots: default, its concurrency.
        self.max_waiting = max(max_waiting or 0, per_receiver_concurrency)
        self.first_rest = first_rest
        self.max_rest = max_rest
        self._random = rng or random.Random()
        self._receivers: dict[str, _Receiver] = {}

    def _state(self, url: str) -> _Receiver:
        return self._receivers.setdefault(receiver_of(url), _Receiver())

    def resting(self, url: str) -> float | None:
        """Seconds a job for ``url`` should go back to wait while its receiver rests
        after failures (jittered), or None if it is not resting."""
        resting = self._state(url).resting_until - trio.current_time()
        return resting * self._random.uniform(1.0, 1.5) if resting > 0 else None

    def wait_before(self, url: str) -> float | None:
        """Seconds a job for ``url`` should go back to wait, or None to post it now."""
        resting = self.resting(url)
        if resting is not None:
            return resting
        state = self._state(url)
        if state.in_flight >= self.per_receiver_concurrency:
            # Busy, not failing: back soon, but the later the more jobs have been sent
            # back since one last found room, so that a backlog waits on the broker
            # instead of cycling through the dispatcher every few hundred milliseconds.
            state.busy_streak += 1
            backlog = 1 + state.busy_streak / (2 * self.per_receiver_concurrency)
            return self._random.uniform(0.1, 0.3) * min(backlog, 20.0)
        return None

    async def claim(self, url: str, patience: float) -> float | None:
        """Take a posting slot for ``url`` (None), waiting up to ``patience`` seconds for
        one while the receiver is busy; or the seconds the job should go back to wait.

        A slot taken is given back by ``finished``, after the post.
        """
        state = self._state(url)
        if state.in_flight < self.per_receiver_concurrency and state.waiting == 0:
            state.busy_streak = 0  # room without waiting: no backlog left
        if state.waiting < self._may_wait(state, patience):
            state.waiting += 1
            try:
                with trio.move_on_after(patience):
                    while (
                        state.in_flight >= self.per_receiver_concurrency
                        and state.resting_until <= trio.current_time()
                    ):
                        await state.freed.wait()
            finally:
                state.waiting -= 1
        wait = self.wait_before(url)
        if wait is None:
            self.started(url)
        return wait

    def claim_now(self, url: str, patience: float) -> bool:
        """Take a posting slot for ``url`` only if one is free now, no job is waiting
        for one, the receiver is not resting, and it answers within ``patience / 8`` at
        its recent pace (or has not been posted to yet). Given back as ``claim``'s."""
        state = self._state(url)
        if (
            state.in_flight >= self.per_receiver_concurrency
            or state.waiting
            or state.resting_until > trio.current_time()
            or state.recent_pace() > patience / 8
        ):
            return False
        state.start_one()
        return True

    def _may_wait(self, state: _Receiver, patience: float) -> int:
        """How many jobs may wait for ``state``'s slots: those it would serve within
        ``patience / 8`` at its recent pace, within [concurrency, max_waiting]."""
        pace = state.recent_pace()
        if pace <= 0:
            return self.per_receiver_concurrency
        served = int(self.per_receiver_concurrency * (patience / 8) / pace)
        return max(self.per_receiver_concurrency, min(self.max_waiting, served))

    def started(self, url: str) -> None:
        self._state(url).start_one()

    def finished(self, url: str, *, ok: bool) -> None:
        state = self._state(url)
        took = state.free_one()
        # Failures too: a receiver that times out is slow, whatever else it is.
        state.pace = took if state.pace <= 0 else 0.8 * state.pace + 0.2 * took
        if ok:
            state.failures = 0
            state.resting_until = 0.0
            return
        state.failures += 1
        rest = min(self.max_rest, self.first_rest * 2 ** (state.failures - 1))
        state.resting_until = max(state.resting_until, trio.current_time() + rest)
