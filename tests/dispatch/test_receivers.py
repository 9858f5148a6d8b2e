"""``Receivers``: per receiver, a cap on posts in flight and a growing rest after failures.

Pure logic on trio's clock; ``autojump_clock`` makes the rests pass at once.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from vumi_like.dispatch.receivers import Receivers, receiver_of

HOOK = "http://hooks.example:8000/acme"


def receivers(
    *, per_receiver_concurrency: int = 4, first_rest: float = 1.0, max_rest: float = 60.0
) -> Receivers:
    return Receivers(
        per_receiver_concurrency=per_receiver_concurrency,
        first_rest=first_rest,
        max_rest=max_rest,
        rng=random.Random(7),
    )


async def test_a_receiver_at_its_concurrency_defers_further_posts_for_a_jittered_while():
    r = receivers(per_receiver_concurrency=2)
    r.started(HOOK)
    assert r.wait_before(HOOK) is None
    r.started(HOOK)
    first = r.wait_before(HOOK)
    assert first is not None and 0.1 <= first <= 0.3
    waits = [r.wait_before(HOOK) for _ in range(200)]
    assert all(w is not None for w in waits)
    assert len(set(waits)) > 1  # jittered, so deferred jobs do not all come back together
    # The more jobs sent back, the later they come: a backlog waits on the broker...
    assert min(w for w in waits[-20:] if w is not None) > 0.3
    assert max(w for w in waits if w is not None) <= 0.3 * 20
    r.finished(HOOK, ok=True)
    assert r.wait_before(HOOK) is None


async def test_a_backlog_once_cleared_defers_briefly_again():
    r = receivers(per_receiver_concurrency=1)
    assert await r.claim(HOOK, patience=0) is None
    for _ in range(100):
        r.wait_before(HOOK)
    r.finished(HOOK, ok=True)
    assert await r.claim(HOOK, patience=0) is None  # room at once: the backlog is gone
    wait = r.wait_before(HOOK)
    assert wait is not None and 0.1 <= wait <= 0.3


@pytest.mark.parametrize(
    ("other", "shared"),
    [
        ("http://hooks.example:8000/globex?x=1", True),
        ("http://hooks.example:8001/acme", False),
        ("https://hooks.example:8000/acme", False),
        ("http://other.example:8000/acme", False),
    ],
)
async def test_a_receiver_is_its_scheme_host_and_port_not_its_path(other: str, shared: bool):
    r = receivers(per_receiver_concurrency=1)
    r.started(HOOK)
    assert (r.wait_before(other) is not None) is shared
    assert (receiver_of(other) == receiver_of(HOOK)) is shared


async def test_a_failed_post_rests_its_receiver_for_a_time_doubling_up_to_the_cap(
    autojump_clock: trio.testing.MockClock,
):
    r = receivers(first_rest=1.0, max_rest=4.0)
    for rest in (1.0, 2.0, 4.0, 4.0):
        r.started(HOOK)
        r.finished(HOOK, ok=False)
        wait = r.wait_before(HOOK)
        assert wait is not None and rest <= wait <= 1.5 * rest
        await trio.sleep(rest - 0.01)
        assert r.wait_before(HOOK) is not None
        await trio.sleep(0.01)
        assert r.wait_before(HOOK) is None


async def test_a_rest_shrinks_as_it_passes(autojump_clock: trio.testing.MockClock):
    r = receivers(first_rest=2.0)
    r.started(HOOK)
    r.finished(HOOK, ok=False)
    await trio.sleep(1.5)
    wait = r.wait_before(HOOK)
    assert wait is not None and 0.5 <= wait <= 0.75


async def test_a_success_ends_the_rest_and_forgets_earlier_failures(
    autojump_clock: trio.testing.MockClock,
):
    r = receivers(first_rest=1.0)
    for _ in range(3):
        r.started(HOOK)
        r.finished(HOOK, ok=False)
    r.started(HOOK)  # a post already in flight when the rest began
    r.finished(HOOK, ok=True)
    assert r.wait_before(HOOK) is None
    r.started(HOOK)
    r.finished(HOOK, ok=False)
    wait = r.wait_before(HOOK)
    assert wait is not None and 1.0 <= wait <= 1.5


async def test_a_failure_does_not_rest_another_receiver(autojump_clock: trio.testing.MockClock):
    r = receivers()
    r.started(HOOK)
    r.finished(HOOK, ok=False)
    assert r.wait_before("http://other.example:8000/acme") is None


async def test_claiming_a_busy_receiver_waits_briefly_for_a_slot(
    autojump_clock: trio.testing.MockClock,
):
    r = receivers(per_receiver_concurrency=1)
    assert await r.claim(HOOK, patience=0.1) is None  # free: taken at once
    claimed: list[float | None] = []

    async def claim() -> None:
        claimed.append(await r.claim(HOOK, patience=0.1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(claim)
        await trio.sleep(0.05)
        r.finished(HOOK, ok=True)  # within its patience: the waiting job takes the slot
    assert claimed == [None]
    start = trio.current_time()
    wait = await r.claim(HOOK, patience=0.1)  # nothing frees it this time
    assert trio.current_time() - start == pytest.approx(0.1)
    assert wait is not None and 0.1 <= wait <= 0.3


async def test_claiming_a_resting_receiver_does_not_wait(autojump_clock: trio.testing.MockClock):
    r = receivers(first_rest=5.0)
    assert await r.claim(HOOK, patience=1.0) is None
    r.finished(HOOK, ok=False)
    start = trio.current_time()
    wait = await r.claim(HOOK, patience=1.0)
    assert trio.current_time() == start
    assert wait is not None and 5.0 <= wait <= 7.5


async def test_no_more_jobs_wait_for_a_receiver_than_its_concurrency(
    autojump_clock: trio.testing.MockClock,
):
    r = receivers(per_receiver_concurrency=2)
    for _ in range(2):
        assert await r.claim(HOOK, patience=10) is None
    outcomes: list[tuple[float, float | None]] = []

    async def claim() -> None:
        wait = await r.claim(HOOK, patience=10)
        outcomes.append((trio.current_time(), wait))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(claim)
        await trio.sleep(1)
        r.finished(HOOK, ok=True)
        r.finished(HOOK, ok=True)
    # The third found two waiting already: sent back at once, not made to wait.
    deferred = [(at, wait) for at, wait in outcomes if wait is not None]
    assert len(deferred) == 1 and deferred[0][0] == 0
    assert sorted(at for at, wait in outcomes if wait is None) == [1, 1]


async def _waiting_allowed(r: Receivers, patience: float, jobs: int) -> tuple[int, int]:
    """Start ``jobs`` claims on a receiver whose slots are all taken; how many were let
    wait and how many sent back at once (the clock stands still meanwhile)."""
    outcomes: list[float | None] = []

    async def claim() -> None:
        outcomes.append(await r.claim(HOOK, patience=patience))

    async with trio.open_nursery() as nursery:
        for _ in range(jobs):
            nursery.start_soon(claim)
        await trio.testing.wait_all_tasks_blocked()
        sent_back = len(outcomes)
        nursery.cancel_scope.cancel()
    return jobs - sent_back, sent_back


async def test_a_fast_receivers_backlog_waits_in_the_dispatcher_up_to_max_waiting(
    mock_clock: trio.testing.MockClock,
):
    r = Receivers(per_receiver_concurrency=2, max_waiting=30, rng=random.Random(7))
    for _ in range(2):  # its pace: 10 ms a post
        r.started(HOOK)
        mock_clock.jump(0.01)
        r.finished(HOOK, ok=True)
    r.started(HOOK)
    r.started(HOOK)
    # In patience / 8 = 0.25 s at 10 ms a post, two slots serve 50 jobs: capped at 30.
    assert await _waiting_allowed(r, patience=2.0, jobs=40) == (30, 10)


async def test_a_slow_receiver_keeps_to_its_concurrency_in_waiting_jobs(
    mock_clock: trio.testing.MockClock,
):
    r = Receivers(per_receiver_concurrency=2, max_waiting=30, rng=random.Random(7))
    r.started(HOOK)
    mock_clock.jump(0.01)
    r.finished(HOOK, ok=True)  # fast so far...
    r.started(HOOK)
    r.started(HOOK)
    mock_clock.jump(3)  # ...but the posts in flight have hung for 3 s
    assert await _waiting_allowed(r, patience=2.0, jobs=10) == (2, 8)


async def test_a_receivers_pace_follows_its_recent_posts(mock_clock: trio.testing.MockClock):
    r = Receivers(per_receiver_concurrency=1, max_waiting=30, rng=random.Random(7))
    for _ in range(20):  # slow: 1 s a post
        r.started(HOOK)
        mock_clock.jump(1)
        r.finished(HOOK, ok=True)
    r.started(HOOK)
    assert (await _waiting_allowed(r, patience=2.0, jobs=5))[0] == 1
    r.finished(HOOK, ok=True)
    for _ in range(40):  # then fast: 1 ms a post
        r.started(HOOK)
        mock_clock.jump(0.001)
        r.finished(HOOK, ok=True)
    r.started(HOOK)
    assert (await _waiting_allowed(r, patience=2.0, jobs=40))[0] == 30


async def test_a_first_attempt_at_once_takes_only_a_free_slot_of_a_quick_receiver(
    mock_clock: trio.testing.MockClock,
):
    r = Receivers(per_receiver_concurrency=2, rng=random.Random(7))
    assert r.claim_now(HOOK, patience=2.0)  # never posted to yet: tried
    mock_clock.jump(0.01)
    r.finished(HOOK, ok=True)
    assert r.claim_now(HOOK, patience=2.0)
    assert r.claim_now(HOOK, patience=2.0)
    assert not r.claim_now(HOOK, patience=2.0)  # both slots taken
    r.finished(HOOK, ok=True)
    mock_clock.jump(0.3)
    # A slot is free, but the post still in flight is older than patience / 8.
    assert r.wait_before(HOOK) is None
    assert not r.claim_now(HOOK, patience=2.0)
    r.finished(HOOK, ok=False)
    assert not r.claim_now(HOOK, patience=2.0)  # resting
    mock_clock.jump(1.0)
    assert r.claim_now(HOOK, patience=2.0)  # rested, and quick enough on average
