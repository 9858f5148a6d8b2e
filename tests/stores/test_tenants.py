"""A tenant never sees, changes or deletes another tenant's rows."""

from __future__ import annotations

import pytest

from tests.stores.conftest import new_message
from vumi_like.stores import ClaimOutcome, MessageStore, NewBatch, StoreError


async def test_messages_batches_and_history_are_the_tenants_own(store: MessageStore) -> None:
    batch = NewBatch(tenant="acme")
    [message] = await store.create_messages(
        [new_message(batch_id=batch.batch_id, party_id="p")], batch=batch
    )
    inbound = await store.record_inbound(new_message(party_id="p"))

    assert await store.get_message("acme", message.message_id) is not None
    assert await store.get_message("globex", message.message_id) is None
    assert await store.get_message("globex", inbound.message_id) is None
    assert await store.batch_statuses("globex", batch.batch_id) is None
    assert (await store.history("globex", "p")).items == ()
    assert (await store.list_messages("globex")).items == ()
    assert len((await store.history("acme", "p")).items) == 2


async def test_webhooks_are_the_tenants_own(store: MessageStore) -> None:
    hook = await store.add_webhook("acme", "https://acme.example/hook", [], "s3cret")

    assert await store.get_webhook("globex", hook.webhook_id) is None
    assert (await store.list_webhooks("globex")).items == ()
    assert await store.webhooks_for("globex", "DELIVERED") == []
    assert await store.delete_webhook("globex", hook.webhook_id) is False
    assert await store.get_webhook("acme", hook.webhook_id) == hook


async def test_parties_are_the_tenants_own(store: MessageStore) -> None:
    await store.set_party("acme", "p", "sms", "+27820000001")
    await store.set_party("globex", "p", "email", "p@globex.example")  # same id, its own

    acme = await store.get_party("acme", "p")
    assert acme is not None and acme.address == "+27820000001"
    assert await store.delete_party("globex", "p") is True
    assert await store.get_party("globex", "p") is None
    assert await store.get_party("acme", "p") == acme
    assert [p.tenant for p in (await store.list_parties("acme")).items] == ["acme"]
    assert (await store.list_parties("globex")).items == ()


async def test_idempotency_keys_are_the_tenants_own(store: MessageStore) -> None:
    assert (await store.claim_idempotency_key("acme", "k", "h1")).outcome is ClaimOutcome.NEW
    assert (await store.claim_idempotency_key("globex", "k", "h2")).outcome is ClaimOutcome.NEW
    await store.save_idempotent_response("globex", "k", 201, {"who": "globex"})

    claim = await store.claim_idempotency_key("acme", "k", "h1")
    assert claim.outcome is ClaimOutcome.IN_PROGRESS
    assert await store.release_idempotency_key("globex", "nope") is False
    with pytest.raises(StoreError):
        await store.save_idempotent_response("initech", "k", 200, {})
