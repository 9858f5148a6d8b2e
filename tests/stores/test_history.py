"""History per party, the tenant's message list, and the paging of every listing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime

import pytest

from tests.stores.conftest import FakeClock, new_message
from vumi_like.stores import MAX_PAGE_SIZE, InvalidCursor, MessageStore, StoreError


async def messages_on_days(store: MessageStore, clock: FakeClock) -> dict[int, list[str]]:
    """Two messages to party p (one out, one in) on each of 1-3 May; one to q each day."""
    ids: dict[int, list[str]] = {}
    for day in (1, 2, 3):
        clock.set(datetime(2024, 5, day, 0, 0, tzinfo=UTC))
        [out] = await store.create_messages([new_message(party_id="p")])
        clock.set(datetime(2024, 5, day, 23, 59, 59, tzinfo=UTC))
        inbound = await store.record_inbound(new_message(party_id="p"))
        await store.create_messages([new_message(party_id="q")])
        ids[day] = [out.message_id, inbound.message_id]
    return ids


async def test_history_is_the_partys_messages_oldest_first(
    store: MessageStore, clock: FakeClock
) -> None:
    ids = await messages_on_days(store, clock)
    page = await store.history("acme", "p")
    assert [m.message_id for m in page.items] == ids[1] + ids[2] + ids[3]
    assert page.next_cursor is None


@pytest.mark.parametrize(
    ("from_date", "to_date", "days"),
    [
        (date(2024, 5, 2), None, [2, 3]),
        (None, date(2024, 5, 2), [1, 2]),  # inclusive: all of the 2nd, to 23:59:59
        (date(2024, 5, 2), date(2024, 5, 2), [2]),
        (date(2024, 5, 4), None, []),
    ],
)
async def test_history_filters_by_utc_date_inclusive(
    store: MessageStore,
    clock: FakeClock,
    from_date: date | None,
    to_date: date | None,
    days: list[int],
) -> None:
    ids = await messages_on_days(store, clock)
    page = await store.history("acme", "p", from_date=from_date, to_date=to_date)
    assert [m.message_id for m in page.items] == [i for day in days for i in ids[day]]


async def test_history_pages_neither_skip_nor_repeat(
    store: MessageStore, clock: FakeClock
) -> None:
    ids = await messages_on_days(store, clock)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.history("acme", "p", cursor=cursor, limit=4)
        seen += [m.message_id for m in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[1] + ids[2] + ids[3]
    assert pages == 2


async def test_paging_keeps_its_filters_on_every_page(
    store: MessageStore, clock: FakeClock
) -> None:
    ids = await messages_on_days(store, clock)
    first = await store.history("acme", "p", from_date=date(2024, 5, 2), limit=1)
    assert first.next_cursor is not None
    rest = await store.history("acme", "p", from_date=date(2024, 5, 2), cursor=first.next_cursor)
    assert [m.message_id for m in first.items + rest.items] == ids[2] + ids[3]


async def test_messages_created_in_one_instant_page_by_id(store: MessageStore) -> None:
    # A batch shares one created_at: the id breaks the tie, so no page boundary loses one.
    created = await store.create_messages([new_message() for _ in range(7)])
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_messages("acme", cursor=cursor, limit=3)
        seen += [m.message_id for m in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == sorted(m.message_id for m in created)


async def test_the_message_list_has_both_directions_and_no_transitions(
    store: MessageStore,
) -> None:
    [out] = await store.create_messages([new_message()])
    inbound = await store.record_inbound(new_message())
    page = await store.list_messages("acme")
    assert [m.message_id for m in page.items] == [out.message_id, inbound.message_id]
    assert all(m.transitions == () for m in page.items)


async def test_a_page_is_at_most_max_page_size(store: MessageStore) -> None:
    await store.create_messages([new_message() for _ in range(MAX_PAGE_SIZE + 5)])
    page = await store.list_messages("acme", limit=1000)
    assert len(page.items) == MAX_PAGE_SIZE
    assert page.next_cursor is not None
    rest = await store.list_messages("acme", cursor=page.next_cursor, limit=1000)
    assert len(rest.items) == 5 and rest.next_cursor is None


async def test_a_limit_below_one_is_refused(store: MessageStore) -> None:
    with pytest.raises(StoreError, match="limit"):
        await store.list_messages("acme", limit=0)


def forged(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 at all!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
        forged([1, 2]),  # JSON, but not ours
        forged({"v": 1, "l": "history", "k": ["yesterday", "abc"]}),  # not a time
        forged({"v": 1, "l": "history", "k": ["2024-05-01T00:00:00"]}),  # short key
        forged({"v": 1, "l": "history", "k": ["2024-05-01T00:00:00+02:00", "a"]}),
        forged({"v": 9, "l": "history", "k": ["2024-05-01T00:00:00", "a"]}),
    ],
)
async def test_a_malformed_cursor_is_invalid(store: MessageStore, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        await store.history("acme", "p", cursor=cursor)


async def test_a_cursor_of_another_listing_is_invalid(store: MessageStore) -> None:
    for number in range(2):
        await store.set_party("acme", f"p{number}", "sms", "+27820000001")
    page = await store.list_parties("acme", limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await store.history("acme", "p", cursor=page.next_cursor)
    with pytest.raises(InvalidCursor):
        await store.list_webhooks("acme", cursor=page.next_cursor)
