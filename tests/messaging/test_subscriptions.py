"""A tenant's subscriptions are read from the store at most every max_age seconds."""

from __future__ import annotations

from pathlib import Path

import trio

from vumi_like.messaging.subscriptions import Subscriptions
from vumi_like.stores import open_store


async def test_subscriptions_are_kept_for_max_age_then_read_again(tmp_path: Path):
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        subscriptions = Subscriptions(store, max_age=0.3)
        first = await store.add_webhook("acme", "http://a/", ["DELIVERED"], "s" * 20)
        assert [w.webhook_id for w in await subscriptions.wanting("acme", "DELIVERED")] == [
            first.webhook_id
        ]
        assert await subscriptions.wanting("acme", "SENT") == []
        second = await store.add_webhook("acme", "http://b/", [], "s" * 20)
        # Still the subscriptions read a moment ago.
        cached = await subscriptions.wanting("acme", "DELIVERED")
        assert [w.webhook_id for w in cached] == [first.webhook_id]
        assert await subscriptions.wanting("globex", "DELIVERED") == []
        await trio.sleep(0.35)
        fresh = await subscriptions.wanting("acme", "DELIVERED")
        assert [w.webhook_id for w in fresh] == [first.webhook_id, second.webhook_id]
        assert [w.webhook_id for w in await subscriptions.wanting("acme", "SENT")] == [
            second.webhook_id
        ]


async def test_max_age_zero_reads_the_store_every_time(tmp_path: Path):
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        subscriptions = Subscriptions(store, max_age=0)
        assert await subscriptions.wanting("acme", "SENT") == []
        made = await store.add_webhook("acme", "http://a/", [], "s" * 20)
        assert [w.webhook_id for w in await subscriptions.wanting("acme", "SENT")] == [
            made.webhook_id
        ]


async def test_more_than_a_page_of_subscriptions_is_read_whole(tmp_path: Path):
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        for i in range(105):
            await store.add_webhook("acme", f"http://h/{i}", [], "s" * 20)
        subscriptions = Subscriptions(store, max_age=5)
        assert len(await subscriptions.wanting("acme", "QUEUED")) == 105


def _counting_reads(store, monkeypatch, *, fail: Exception | None = None, hold: float = 0.05):
    """Count the store reads of subscriptions; each takes ``hold`` s (and raises ``fail``)."""
    reads: list[str] = []
    real = store.list_webhooks

    async def list_webhooks(tenant, **kwargs):
        reads.append(tenant)
        await trio.sleep(hold)
        if fail is not None:
            raise fail
        return await real(tenant, **kwargs)

    monkeypatch.setattr(store, "list_webhooks", list_webhooks)
    return reads


async def test_calls_finding_the_entry_stale_at_once_share_one_read(tmp_path: Path, monkeypatch):
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        made = await store.add_webhook("acme", "http://a/", [], "s" * 20)
        reads = _counting_reads(store, monkeypatch)
        subscriptions = Subscriptions(store, max_age=5)
        answers: list[list[str]] = []

        async def ask() -> None:
            answers.append([w.webhook_id for w in await subscriptions.wanting("acme", "SENT")])

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(ask)
            nursery.start_soon(
                lambda: subscriptions.wanting("globex", "SENT")  # another tenant: its own read
            )
        assert answers == [[made.webhook_id]] * 20
        assert sorted(reads) == ["acme", "globex"]


async def test_a_failed_shared_read_fails_every_call_waiting_for_it(tmp_path: Path, monkeypatch):
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        reads = _counting_reads(store, monkeypatch, fail=RuntimeError("store down"))
        subscriptions = Subscriptions(store, max_age=5)
        errors: list[str] = []

        async def ask() -> None:
            try:
                await subscriptions.wanting("acme", "SENT")
            except RuntimeError as exc:
                errors.append(str(exc))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(ask)
        assert errors == ["store down"] * 5
        assert reads == ["acme"]  # one read, not one per call


async def test_a_cancelled_reader_leaves_the_read_to_those_waiting(tmp_path: Path, monkeypatch):
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        made = await store.add_webhook("acme", "http://a/", [], "s" * 20)
        reads = _counting_reads(store, monkeypatch, hold=0.2)
        subscriptions = Subscriptions(store, max_age=5)
        answers: list[list[str]] = []

        async def ask() -> None:
            answers.append([w.webhook_id for w in await subscriptions.wanting("acme", "SENT")])

        async with trio.open_nursery() as nursery:
            with trio.move_on_after(0.05):  # the first caller gives up mid-read
                async with trio.open_nursery() as first:
                    first.start_soon(ask)
                    await trio.sleep(0.01)
                    nursery.start_soon(ask)
                    nursery.start_soon(ask)
                    await trio.sleep(1)
        assert answers == [[made.webhook_id]] * 2
        assert reads == ["acme", "acme"]  # the cancelled read, then one for both waiters
