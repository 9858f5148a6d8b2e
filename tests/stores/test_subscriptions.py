"""Webhooks and their deliveries, parties and OAuth2 clients."""

from __future__ import annotations

import pytest
import trio

from tests.stores.conftest import new_message
from vumi_like.stores import (
    AlreadyExists,
    DeliveryState,
    MessageStore,
    StoreError,
    hash_secret,
    verify_secret,
)
from vumi_like.stores.queries.webhooks import record_deliveries

# -- webhooks -----------------------------------------------------------------------


async def test_a_webhook_is_kept_with_its_secret(store: MessageStore) -> None:
    hook = await store.add_webhook("acme", "https://acme.example/h", ["DELIVERED"], "s3cret")
    got = await store.get_webhook("acme", hook.webhook_id)
    assert got == hook
    assert got is not None and got.secret == "s3cret" and got.event_types == ("DELIVERED",)
    assert "s3cret" not in repr(got)


async def test_webhooks_for_a_status_are_those_listing_it_or_none(store: MessageStore) -> None:
    every = await store.add_webhook("acme", "https://a.example/all", [], "s")
    delivered = await store.add_webhook("acme", "https://a.example/d", ["DELIVERED"], "s")
    received = await store.add_webhook("acme", "https://a.example/r", ["MESSAGE_RECEIVED"], "s")

    assert await store.webhooks_for("acme", "DELIVERED") == [every, delivered]
    assert await store.webhooks_for("acme", "MESSAGE_RECEIVED") == [every, received]
    assert await store.webhooks_for("acme", "SENT") == [every]


async def test_webhooks_list_in_pages_and_delete(store: MessageStore) -> None:
    hooks = [await store.add_webhook("acme", f"https://a.example/{n}", [], "s") for n in range(3)]
    first = await store.list_webhooks("acme", limit=2)
    assert first.items == tuple(hooks[:2]) and first.next_cursor is not None
    rest = await store.list_webhooks("acme", cursor=first.next_cursor, limit=2)
    assert rest.items == (hooks[2],) and rest.next_cursor is None

    assert await store.delete_webhook("acme", hooks[0].webhook_id) is True
    assert await store.delete_webhook("acme", hooks[0].webhook_id) is False
    assert await store.get_webhook("acme", hooks[0].webhook_id) is None


async def test_event_types_must_be_a_list(store: MessageStore) -> None:
    with pytest.raises(StoreError, match="list"):
        await store.add_webhook("acme", "https://a.example/", "DELIVERED", "s")


async def test_a_delivery_is_updated_under_its_id(store: MessageStore) -> None:
    [message] = await store.create_messages([new_message()])
    hook = await store.add_webhook("acme", "https://a.example/", [], "s")
    args = ("d-1", hook.webhook_id, message.message_id, "DELIVERED")
    await store.record_delivery(*args, DeliveryState.PENDING, 0)
    await store.record_delivery(*args, "pending", 1, "HTTP 503")
    first = await store.get_delivery("d-1")
    assert first is not None
    assert (first.state, first.attempts, first.last_error) == (
        DeliveryState.PENDING,
        1,
        "HTTP 503",
    )
    await store.record_delivery(*args, DeliveryState.DELIVERED, 2)
    done = await store.get_delivery("d-1")
    assert done is not None
    assert (done.state, done.attempts, done.last_error) == (DeliveryState.DELIVERED, 2, None)
    assert (done.webhook_id, done.message_id, done.status_code) == args[1:]
    assert done.updated_at > first.updated_at
    assert await store.get_delivery("d-2") is None


async def test_records_made_as_one_are_those_made_one_after_the_other(
    store: MessageStore,
) -> None:
    # How a busy dispatcher's records are written (queries.webhooks.record_deliveries).
    [message] = await store.create_messages([new_message()])
    hook = await store.add_webhook("acme", "https://a.example/", [], "s")
    await store.record_delivery("d-0", hook.webhook_id, message.message_id, "SENT", "pending", 1)
    now = store._now()

    def record(
        delivery_id: str, state: str, attempts: int, error: str | None
    ) -> tuple[object, ...]:
        return (
            delivery_id,
            hook.webhook_id,
            message.message_id,
            "SENT",
            state,
            attempts,
            error,
            now,
        )

    calls = [
        record("d-1", "pending", 1, "HTTP 503"),
        record("d-0", "delivered", 2, None),  # one recorded before
        record("d-2", "failed", 13, "gone"),
        record("d-1", "delivered", 2, None),  # the same delivery again, later
    ]
    assert await store._run(record_deliveries, calls) == [None] * 4
    found = {d: await store.get_delivery(d) for d in ("d-0", "d-1", "d-2")}
    assert {d: (r.state, r.attempts, r.last_error) for d, r in found.items() if r is not None} == {
        "d-0": (DeliveryState.DELIVERED, 2, None),
        "d-1": (DeliveryState.DELIVERED, 2, None),
        "d-2": (DeliveryState.FAILED, 13, "gone"),
    }


async def test_concurrent_records_each_take_effect(store: MessageStore) -> None:
    [message] = await store.create_messages([new_message()])
    hook = await store.add_webhook("acme", "https://a.example/", [], "s")
    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(
                store.record_delivery,
                f"d-{i}",
                hook.webhook_id,
                message.message_id,
                "SENT",
                "delivered",
                1,
            )
    for i in range(30):
        got = await store.get_delivery(f"d-{i}")
        assert got is not None and got.state == DeliveryState.DELIVERED


async def test_a_delivery_outlives_its_webhook(store: MessageStore) -> None:
    hook = await store.add_webhook("acme", "https://a.example/", [], "s")
    await store.delete_webhook("acme", hook.webhook_id)
    await store.record_delivery("d-1", hook.webhook_id, "m" * 32, "SENT", "failed", 5, "gone")
    assert (await store.get_delivery("d-1")) is not None


# -- parties ------------------------------------------------------------------------


async def test_a_party_is_set_replaced_and_deleted(store: MessageStore) -> None:
    first = await store.set_party("acme", "p", "sms", "+27820000001")
    assert await store.get_party("acme", "p") == first
    second = await store.set_party("acme", "p", "email", "p@acme.example")
    assert await store.get_party("acme", "p") == second
    assert second.updated_at > first.updated_at
    assert await store.delete_party("acme", "p") is True
    assert await store.get_party("acme", "p") is None
    assert await store.delete_party("acme", "p") is False


async def test_parties_list_by_id_in_pages(store: MessageStore) -> None:
    for party_id in ("c", "a", "b"):
        await store.set_party("acme", party_id, "sms", "+27820000001")
    first = await store.list_parties("acme", limit=2)
    rest = await store.list_parties("acme", cursor=first.next_cursor, limit=2)
    assert [p.party_id for p in first.items + rest.items] == ["a", "b", "c"]
    assert rest.next_cursor is None


# -- OAuth2 clients -----------------------------------------------------------------


async def test_a_client_is_verified_by_its_secret(store: MessageStore) -> None:
    await store.add_client("app-1", "acme", "correct horse")
    assert await store.verify_client("app-1", "correct horse") == "acme"
    assert await store.verify_client("app-1", "wrong horse") is None
    assert await store.verify_client("app-2", "correct horse") is None


async def test_a_client_id_is_used_once(store: MessageStore) -> None:
    await store.add_client("app-1", "acme", "s")
    with pytest.raises(AlreadyExists):
        await store.add_client("app-1", "globex", "t")
    assert await store.verify_client("app-1", "s") == "acme"


async def test_clients_are_listed_without_their_secrets_and_removed(store: MessageStore) -> None:
    await store.add_client("app-2", "globex", "s2")
    await store.add_client("app-1", "acme", "s1")
    listed = await store.list_clients()
    assert [(c.client_id, c.tenant) for c in listed] == [("app-1", "acme"), ("app-2", "globex")]
    assert not any(hasattr(c, "secret_hash") or hasattr(c, "secret") for c in listed)
    assert await store.remove_client("app-1") is True
    assert await store.remove_client("app-1") is False
    assert await store.verify_client("app-1", "s1") is None


def test_a_secret_hash_is_salted_and_checks_only_its_secret() -> None:
    one, two = hash_secret("s3cret"), hash_secret("s3cret")
    assert one != two and "s3cret" not in one
    assert one.startswith("scrypt$")
    assert verify_secret("s3cret", one) and verify_secret("s3cret", two)
    assert not verify_secret("s3cret ", one)


@pytest.mark.parametrize(
    "stored", ["", "plain", "bcrypt$1$2$3$YQ$YQ", "scrypt$x$8$1$YQ$YQ", "scrypt$16384$8$1$!$YQ"]
)
def test_a_malformed_hash_matches_nothing(stored: str) -> None:
    assert verify_secret("anything", stored) is False


def test_a_hash_too_costly_to_check_matches_nothing() -> None:
    assert verify_secret("x", "scrypt$1048576$64$1$YWJj$YWJj") is False
