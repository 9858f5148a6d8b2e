"""The notification registry and notifications in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from vumi_like.stores import AlreadyExists, InvalidCursor, MessageStore, Permission, StoreError


async def test_users_are_found_by_name_and_by_the_client_they_sign_in_as(store: MessageStore):
    user = await store.add_notification_user("acme", "bob", "Bob Smith", "bob-client")
    assert await store.notification_user("acme", "bob") == user
    assert await store.notification_user_by_client("bob-client") == user
    assert await store.notification_user("globex", "bob") is None
    assert await store.notification_user_by_client("nobody") is None
    with pytest.raises(AlreadyExists):
        await store.add_notification_user("acme", "bob", "Other Bob", "other-client")
    with pytest.raises(AlreadyExists):  # one client, one user
        await store.add_notification_user("acme", "robert", "Robert", "bob-client")


async def test_targets_carry_their_members_permissions(store: MessageStore):
    await store.set_notification_target("acme", "xform", "1337", "Survey", form_id="survey_v1")
    await store.set_notification_member("acme", "xform", "1337", "bob", "view")
    await store.set_notification_member("acme", "xform", "1337", "ann", Permission.ADMIN)
    await store.set_notification_member("acme", "xform", "1337", "bob", "edit")  # replaces
    target = await store.notification_target("acme", "xform", "1337")
    assert target is not None
    assert (target.name, target.form_id) == ("Survey", "survey_v1")
    assert target.members == {"bob": Permission.EDIT, "ann": Permission.ADMIN}
    assert await store.notification_target("acme", "project", "1337") is None
    assert await store.notification_target("globex", "xform", "1337") is None

    assert await store.remove_notification_member("acme", "xform", "1337", "bob")
    assert not await store.remove_notification_member("acme", "xform", "1337", "bob")
    target = await store.notification_target("acme", "xform", "1337")
    assert target is not None and target.members == {"ann": Permission.ADMIN}


async def test_a_target_is_created_with_its_admin_in_one_transaction(store: MessageStore):
    created = await store.create_notification_target(
        "acme", "project", "7", "Project", None, "ann"
    )
    assert created.members == {"ann": Permission.ADMIN}
    assert await store.notification_target("acme", "project", "7") == created
    with pytest.raises(AlreadyExists):  # and the existing one is left as it was
        await store.create_notification_target("acme", "project", "7", "Taken", None, "carl")
    assert await store.notification_target("acme", "project", "7") == created


async def test_a_member_needs_an_existing_target(store: MessageStore):
    with pytest.raises(StoreError):
        await store.set_notification_member("acme", "project", "9", "bob", "view")


def test_permissions_include_the_lesser_ones():
    assert Permission.ADMIN.includes(Permission.VIEW)
    assert Permission.EDIT.includes(Permission.EDIT)
    assert not Permission.VIEW.includes(Permission.EDIT)


async def test_notifications_are_stored_with_their_id_in_the_payload(store: MessageStore):
    payload = {"payload": {"message": "Hello"}, "time": "2024-05-01T12:00:00+00:00"}
    created = await store.create_notification(
        "acme", "project", "7", "bob", "Hello", payload, {"mqtt": {"state": "pending"}}
    )
    assert created.payload == {**payload, "id": created.id}
    assert await store.get_notification("acme", created.id) == created
    assert await store.get_notification("globex", created.id) is None

    assert await store.record_notification_delivery(created.id, "mqtt", {"state": "delivered"})
    again = await store.get_notification("acme", created.id)
    assert again is not None and again.deliveries == {"mqtt": {"state": "delivered"}}

    assert not await store.delete_notification("globex", created.id)
    assert await store.delete_notification("acme", created.id)
    assert await store.get_notification("acme", created.id) is None
    # An id past what the column holds (or none at all) names no notification.
    for pk in (2**31, 2**63, 0, -1):
        assert await store.get_notification("acme", pk) is None
        assert not await store.delete_notification("acme", pk)
    assert not await store.record_notification_delivery(created.id, "mqtt", {"state": "x"})


async def test_a_targets_notifications_list_newest_first_in_pages(store: MessageStore):
    ids = []
    for n in range(5):
        created = await store.create_notification(
            "acme", "xform", "1", "bob", f"message {n}", {}, {}
        )
        ids.append(created.id)
    await store.create_notification("acme", "xform", "2", "bob", "elsewhere", {}, {})
    first = await store.list_notifications("acme", "xform", "1", limit=3)
    assert [n.id for n in first.items] == ids[::-1][:3]
    assert first.next_cursor is not None
    rest = await store.list_notifications("acme", "xform", "1", cursor=first.next_cursor, limit=3)
    assert [n.id for n in rest.items] == ids[::-1][3:]
    assert rest.next_cursor is None
    assert (await store.list_notifications("globex", "xform", "1")).items == ()
    with pytest.raises(InvalidCursor):
        await store.list_notifications("acme", "xform", "1", cursor="garbage")
