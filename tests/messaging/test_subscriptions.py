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
