"""Idempotency keys: one owner per key, replays of its answer, expiry and release."""

from __future__ import annotations

import hashlib

import pytest
import trio

from tests.stores.conftest import FakeClock, StoreTarget
from vumi_like.openapi.idempotency import idempotent
from vumi_like.stores import (
    ClaimLost,
    ClaimOutcome,
    IdempotencyClaim,
    MessageStore,
    RequestIds,
    StoreError,
)

DAY = 24 * 60 * 60


async def test_the_first_claim_of_a_key_owns_it(store: MessageStore, clock: FakeClock) -> None:
    claim = await store.claim_idempotency_key("acme", "k", "h")
    assert claim == IdempotencyClaim(
        outcome=ClaimOutcome.NEW,
        claim_id=claim.claim_id,
        resumed=False,
        claimed_at=clock.now.replace(tzinfo=None),
    )
    assert claim.claim_id is not None and len(claim.claim_id) == 32


async def test_the_same_request_again_is_in_progress_until_answered(store: MessageStore) -> None:
    await store.claim_idempotency_key("acme", "k", "h")
    claim = await store.claim_idempotency_key("acme", "k", "h")
    assert claim.outcome is ClaimOutcome.IN_PROGRESS
    assert claim.response_status is None


async def test_the_same_request_after_the_answer_replays_it(store: MessageStore) -> None:
    await store.claim_idempotency_key("acme", "k", "h")
    await store.save_idempotent_response("acme", "k", 202, {"messages": [{"id": "m1"}]})
    claim = await store.claim_idempotency_key("acme", "k", "h")
    assert claim == IdempotencyClaim(
        outcome=ClaimOutcome.REPLAY,
        response_status=202,
        response_body={"messages": [{"id": "m1"}]},
    )


async def test_another_request_with_the_key_is_a_mismatch(store: MessageStore) -> None:
    await store.claim_idempotency_key("acme", "k", "h")
    assert (await store.claim_idempotency_key("acme", "k", "other")).outcome is (
        ClaimOutcome.MISMATCH
    )
    await store.save_idempotent_response("acme", "k", 200, {})
    assert (await store.claim_idempotency_key("acme", "k", "other")).outcome is (
        ClaimOutcome.MISMATCH
    )


async def test_an_expired_key_is_claimed_afresh(store: MessageStore, clock: FakeClock) -> None:
    await store.claim_idempotency_key("acme", "k", "h", ttl=DAY)
    await store.save_idempotent_response("acme", "k", 200, {"old": True})
    clock.advance(DAY - 1)
    assert (await store.claim_idempotency_key("acme", "k", "h2", ttl=DAY)).outcome is (
        ClaimOutcome.MISMATCH
    )
    clock.advance(2)
    assert (await store.claim_idempotency_key("acme", "k", "h2", ttl=DAY)).outcome is (
        ClaimOutcome.NEW
    )
    # The new claim starts clean: no response of the old one is replayed.
    assert (await store.claim_idempotency_key("acme", "k", "h2", ttl=DAY)).outcome is (
        ClaimOutcome.IN_PROGRESS
    )


async def test_a_released_key_can_be_claimed_again(store: MessageStore) -> None:
    await store.claim_idempotency_key("acme", "k", "h")
    assert await store.release_idempotency_key("acme", "k") is True
    assert (await store.claim_idempotency_key("acme", "k", "h")).outcome is ClaimOutcome.NEW


async def test_an_answered_key_is_not_released(store: MessageStore) -> None:
    await store.claim_idempotency_key("acme", "k", "h")
    await store.save_idempotent_response("acme", "k", 201, None)
    assert await store.release_idempotency_key("acme", "k") is False
    claim = await store.claim_idempotency_key("acme", "k", "h")
    assert (claim.outcome, claim.response_status) == (ClaimOutcome.REPLAY, 201)


async def test_saving_a_response_needs_a_claim(store: MessageStore) -> None:
    with pytest.raises(StoreError, match="not claimed"):
        await store.save_idempotent_response("acme", "k", 200, {})


@pytest.mark.parametrize("expired", [False, True], ids=["fresh", "expired"])
async def test_of_concurrent_claims_across_replicas_exactly_one_is_new(
    store_target: StoreTarget, clock: FakeClock, expired: bool
) -> None:
    outcomes: list[ClaimOutcome] = []
    async with store_target.open(clock=clock) as one, store_target.open(clock=clock) as two:
        if expired:
            await one.claim_idempotency_key("acme", "k", "h", ttl=60)
            clock.advance(120)

        async def claim(store: MessageStore) -> None:
            outcomes.append((await store.claim_idempotency_key("acme", "k", "h", ttl=60)).outcome)

        async with trio.open_nursery() as nursery:
            for number in range(16):
                nursery.start_soon(claim, one if number % 2 else two)
    assert sorted(outcomes) == sorted([ClaimOutcome.NEW] + [ClaimOutcome.IN_PROGRESS] * 15)


async def test_a_claim_abandoned_in_progress_is_taken_over(
    store: MessageStore, clock: FakeClock
) -> None:
    # The replica that claimed it was killed: it will never answer nor release it.
    await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    clock.advance(39)
    again = await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    assert again.outcome is ClaimOutcome.IN_PROGRESS
    clock.advance(2)
    taken = await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    assert taken.outcome is ClaimOutcome.NEW


async def test_the_same_request_taking_over_its_abandoned_claim_resumes_it(
    store: MessageStore, clock: FakeClock
) -> None:
    first = await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    clock.advance(41)
    taken = await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    assert (taken.outcome, taken.claim_id, taken.resumed) == (
        ClaimOutcome.NEW,
        first.claim_id,
        True,
    )
    # The same ids, in the same order: what the first run stored is found again.
    ids, again = first.request_ids(), taken.request_ids()
    assert [ids.new() for _ in range(3)] == [again.new() for _ in range(3)]
    # Taken over again (the second run died too): still the same claim.
    clock.advance(41)
    third = await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    assert (third.claim_id, third.resumed) == (first.claim_id, True)


@pytest.mark.parametrize("same_request", [True, False], ids=["resumed", "other-request"])
async def test_a_request_that_outlived_its_claim_leaves_the_takeover_alone(
    store: MessageStore, clock: FakeClock, same_request: bool
) -> None:
    # The first request was stopped past the abandon time, and a retry took its key over.
    retry_hash = "h" if same_request else "h2"
    first = await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    clock.advance(41)
    retry = await store.claim_idempotency_key("acme", "k", retry_hash, abandoned_after=40)
    assert retry.outcome is ClaimOutcome.NEW
    # The first comes back: it neither frees the key under the retry...
    released = await store.release_idempotency_key("acme", "k", claimed_at=first.claimed_at)
    assert released is False
    still = await store.claim_idempotency_key("acme", "k", retry_hash)
    assert still.outcome is ClaimOutcome.IN_PROGRESS
    # ...nor answers for it.
    with pytest.raises(ClaimLost):
        await store.save_idempotent_response(
            "acme", "k", 202, {"first": True}, claimed_at=first.claimed_at
        )
    await store.save_idempotent_response(
        "acme", "k", 202, {"retry": True}, claimed_at=retry.claimed_at
    )
    replay = await store.claim_idempotency_key("acme", "k", retry_hash)
    assert (replay.outcome, replay.response_body) == (ClaimOutcome.REPLAY, {"retry": True})


async def test_a_request_that_outlived_its_claim_still_answers_its_client(
    store: MessageStore, clock: FakeClock
) -> None:
    request_hash = hashlib.sha256(b"request").hexdigest()

    async def work(ids: RequestIds) -> tuple[dict[str, bool], int]:
        # Stopped past the abandon time: the client's retry takes the key over meanwhile.
        clock.advance(41)
        retry = await store.claim_idempotency_key("acme", "k", request_hash, abandoned_after=40)
        assert (retry.outcome, retry.resumed) == (ClaimOutcome.NEW, True)
        return {"first": True}, 202

    answer = await idempotent(store, "acme", "k", b"request", work, abandoned_after=40)
    assert answer == ({"first": True}, 202, {})
    # Its answer was not kept: the key is the retry's, still in progress.
    still = await store.claim_idempotency_key("acme", "k", request_hash, abandoned_after=40)
    assert still.outcome is ClaimOutcome.IN_PROGRESS


async def test_a_claim_releases_itself_by_its_time(store: MessageStore) -> None:
    claim = await store.claim_idempotency_key("acme", "k", "h")
    assert await store.release_idempotency_key("acme", "k", claimed_at=claim.claimed_at)
    assert (await store.claim_idempotency_key("acme", "k", "h")).outcome is ClaimOutcome.NEW


async def test_another_request_taking_over_an_abandoned_claim_starts_afresh(
    store: MessageStore, clock: FakeClock
) -> None:
    first = await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    clock.advance(41)
    other = await store.claim_idempotency_key("acme", "k", "h2", abandoned_after=40)
    assert other.outcome is ClaimOutcome.NEW
    assert not other.resumed
    assert other.claim_id not in (None, first.claim_id)


async def test_an_expired_claim_taken_by_the_same_request_starts_afresh(
    store: MessageStore, clock: FakeClock
) -> None:
    # A day on, the key names a new request, even with the same body: new ids.
    first = await store.claim_idempotency_key("acme", "k", "h", ttl=DAY, abandoned_after=40)
    clock.advance(DAY + 1)
    again = await store.claim_idempotency_key("acme", "k", "h", ttl=DAY, abandoned_after=40)
    assert again.outcome is ClaimOutcome.NEW
    assert not again.resumed
    assert again.claim_id != first.claim_id


def test_ids_without_a_claim_are_fresh_and_with_one_derived() -> None:
    fresh = RequestIds()
    assert not fresh.keyed
    assert fresh.new() != fresh.new()
    claim_id = "0" * 31 + "1"
    one, two = RequestIds(claim_id=claim_id), RequestIds(claim_id=claim_id)
    first = [one.new(), one.new()]
    assert first == [two.new(), two.new()]
    assert first[0] != first[1]
    assert all(len(i) == 32 for i in first)
    assert RequestIds(claim_id="0" * 31 + "2").new() != first[0]


async def test_an_answered_claim_is_replayed_past_the_abandon_time(
    store: MessageStore, clock: FakeClock
) -> None:
    await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    await store.save_idempotent_response("acme", "k", 202, {"id": "m1"})
    clock.advance(3600)
    claim = await store.claim_idempotency_key("acme", "k", "h", abandoned_after=40)
    assert claim.outcome is ClaimOutcome.REPLAY
