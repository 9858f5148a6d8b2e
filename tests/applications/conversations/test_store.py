"""The store's conversation tables, on SQLite and PostgreSQL: the rules the app leans on."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from tests.stores.conftest import StoreTarget
from tests.stores.conftest import postgres_target as postgres_target  # the fixtures,
from tests.stores.conftest import store_target as store_target  # re-exported
from vumi_like.stores import (
    AlreadyExists,
    ChannelStatus,
    ConversationMessageStatus,
    SessionStatus,
    new_id,
)
from vumi_like.stores.queries import conversations

APP = "whatsapp-app"


async def test_tokens_are_per_app_and_business_and_never_listed(store_target: StoreTarget):
    async with store_target.open() as store:
        assert await store.set_vcita_token(APP, "biz-1", "token-1") is True
        assert await store.set_vcita_token(APP, "biz-1", "token-2") is False
        await store.set_vcita_token("other-app", "biz-1", "other-token")
        assert await store.vcita_access_token(APP, "biz-1") == "token-2"
        assert await store.vcita_access_token(APP, "biz-2") is None
        [business] = await store.list_vcita_businesses(APP)
        assert business.business_uid == "biz-1"
        assert "token" not in repr(business)


async def test_a_channel_is_pending_until_created_then_follows_vcs(store_target: StoreTarget):
    async with store_target.open() as store:
        channel = await store.add_vcita_channel(APP, "biz-1", "transactional", "sms", "1234")
        assert (channel.status, channel.channel_uid) == (ChannelStatus.PENDING, None)
        with pytest.raises(AlreadyExists):
            await store.add_vcita_channel(APP, "biz-2", "transactional", "sms", "1234")
        created = await store.vcita_channel_created(APP, channel.channel_id, "ch-1", "pending")
        assert created is not None and created.channel_uid == "ch-1"
        active = await store.set_vcita_channel_status(APP, "ch-1", "active")
        assert active is not None and active.status == ChannelStatus.ACTIVE
        found = await store.vcita_channel_for_address(APP, "sms", "1234")
        assert found == active
        assert await store.set_vcita_channel_status(APP, "ch-unknown", "active") is None


async def test_a_deleted_channel_makes_way_for_a_new_one(store_target: StoreTarget):
    async with store_target.open() as store:
        old = await store.add_vcita_channel(APP, "biz-1", "transactional", "sms", "1234")
        await store.vcita_channel_created(APP, old.channel_id, "ch-old", "pending")
        await store.save_vcita_session(APP, old.channel_id, "+2782", "s-old", "active")
        await store.set_vcita_channel_status(APP, "ch-old", "deleted")
        new = await store.add_vcita_channel(APP, "biz-1", "promotional", "sms", "1234")
        assert new.channel_id != old.channel_id
        assert await store.vcita_session_by_uid(APP, "s-old") is None


async def test_one_session_per_client_and_channel_reused(store_target: StoreTarget):
    async with store_target.open() as store:
        channel = await store.add_vcita_channel(APP, "biz-1", "transactional", "sms", "1234")
        first = await store.save_vcita_session(APP, channel.channel_id, "+2782", "s-1", "pending")
        await store.set_vcita_session_status(APP, "s-1", "inactive")
        again = await store.save_vcita_session(APP, channel.channel_id, "+2782", "s-1", "active")
        assert again.session_id == first.session_id
        assert again.status == SessionStatus.ACTIVE
        typed = await store.record_vcita_typing(APP, "s-1", True)
        assert typed is not None and typed.staff_typing is True and typed.typing_at is not None


async def test_one_handler_at_a_time_claims_the_opening_of_a_session(store_target: StoreTarget):
    async with store_target.open() as store:
        channel = await store.add_vcita_channel(APP, "biz-1", "transactional", "sms", "1234")
        claim = functools.partial(store.claim_vcita_session, APP, channel.channel_id, "+2782")
        first, mine = await claim(stale_after=60)
        assert mine and (first.session_uid, first.status) == (None, SessionStatus.PENDING)
        second, theirs = await claim(stale_after=60)
        assert not theirs and second.session_id == first.session_id
        # Its opener's call failed: released, the next handler claims it anew.
        await store.release_vcita_session_claim(first)
        assert await store.vcita_session(APP, channel.channel_id, "+2782") is None
        again, mine = await claim(stale_after=60)
        assert mine
        # An opener that died: its claim, once older than stale_after, is taken over,
        # and its late release (it was not dead after all) drops nothing.
        await trio.sleep(0.01)
        taken, mine = await claim(stale_after=0.001)
        assert mine and taken.session_id == again.session_id
        await store.release_vcita_session_claim(again)
        assert await store.vcita_session(APP, channel.channel_id, "+2782") == taken
        opened = await store.save_vcita_session(APP, channel.channel_id, "+2782", "s-1", "pending")
        found, mine = await claim(stale_after=0)
        assert not mine and found == opened and found.session_uid == "s-1"


async def test_a_message_uid_is_stored_once_and_its_status_only_moves_forwards(
    store_target: StoreTarget,
):
    async with store_target.open() as store:
        channel = await store.add_vcita_channel(APP, "biz-1", "transactional", "sms", "1234")
        fields = {
            "channel_id": channel.channel_id,
            "message_uid": "m-1",
            "direction": "outbound",
            "external_uid": "+2782",
            "content": "hi",
        }
        message, created = await store.add_vcita_message(APP, message_id=new_id(), **fields)
        again, created_again = await store.add_vcita_message(APP, message_id=new_id(), **fields)
        assert (created, created_again) == (True, False)
        assert again.message_id == message.message_id
        with pytest.raises(AlreadyExists):  # the same envelope under another uid
            await store.add_vcita_message(
                APP, message_id=message.message_id, **{**fields, "message_uid": "m-2"}
            )
        steps = ["received", "pending", "read", "received", "error"]
        seen = []
        for proposed in steps:
            moved = await store.update_vcita_message_status(message.message_id, proposed)
            assert moved is not None
            seen.append(moved.status)
        assert seen == ["received", "received", "read", "read", "read"]
        await store.set_vcita_message_reported(message.message_id, "read")
        stored = await store.vcita_message(message.message_id)
        assert stored is not None and stored.reported_status == ConversationMessageStatus.READ


def test_error_is_final_and_read_only_follows_pending_or_received():
    pending, received, read, error = list(ConversationMessageStatus)
    assert pending.advance(error) == error
    assert error.advance(received) == error
    assert received.advance(error) == received
    assert received.advance(read) == read


async def test_what_vcs_was_told_never_moves_back(store_target: StoreTarget):
    async with store_target.open() as store:
        channel = await store.add_vcita_channel(APP, "biz-1", "transactional", "sms", "1234")
        message, _ = await store.add_vcita_message(
            APP,
            message_id=new_id(),
            channel_id=channel.channel_id,
            message_uid="m-1",
            direction="outbound",
            external_uid="+2782",
            content="hi",
        )
        await store.set_vcita_message_reported(message.message_id, "received")
        await store.set_vcita_message_reported(message.message_id, "pending")  # overtaken
        stored = await store.vcita_message(message.message_id)
    assert stored is not None and stored.reported_status == ConversationMessageStatus.RECEIVED


async def test_a_reactivation_answer_does_not_undo_an_overtaking_confirmation(
    store_target: StoreTarget,
):
    async with store_target.open() as store:
        channel = await store.add_vcita_channel(APP, "biz-1", "transactional", "sms", "1234")
        await store.save_vcita_session(APP, channel.channel_id, "+2782", "s-1", "active")
        # VCS confirmed it active before its answer to the reactivation (pending) arrived.
        after = await store.set_vcita_session_status(APP, "s-1", "pending", only_from="inactive")
        await store.set_vcita_session_status(APP, "s-1", "inactive")
        reactivated = await store.set_vcita_session_status(
            APP, "s-1", "pending", only_from="inactive"
        )
    assert after is not None and after.status == SessionStatus.ACTIVE
    assert reactivated is not None and reactivated.status == SessionStatus.PENDING


async def test_a_confirmation_meeting_the_sessions_save_midway_is_refused_to_come_again(
    postgres_target: StoreTarget,
):
    # VCS confirms a new session as soon as it has answered its creation, so the
    # confirmation can come while the app that created it is saving its uid. Here the
    # save commits between the confirmation's update (no row yet) and the read after
    # it: the confirmation is refused ("no such session", VCS calls again), not
    # answered with the pending session, which would end VCS's calls and leave the
    # session pending for good.
    async with postgres_target.open() as store:
        channel = await store.add_vcita_channel(APP, "biz-1", "transactional", "sms", "1234")
        await store.claim_vcita_session(APP, channel.channel_id, "+2782", stale_after=60)
        with postgres_target.psycopg_connect() as creator:

            class SavedAfterTheUpdate:
                """The confirmation's connection: the creator's save commits after its
                first statement."""

                def __init__(self, conn: sa.Connection) -> None:
                    self.conn, self.statements = conn, 0

                def execute(self, *args: Any, **kwargs: Any) -> Any:
                    result = self.conn.execute(*args, **kwargs)
                    self.statements += 1
                    if self.statements == 1:
                        creator.execute(
                            "UPDATE vcita_sessions SET session_uid = 's-1' "
                            "WHERE external_uid = '+2782'"
                        )
                    return result

            def confirm(conn: sa.Connection) -> Any:
                now = datetime.now(UTC)
                active = SessionStatus.ACTIVE
                return conversations.set_session_status(
                    SavedAfterTheUpdate(conn), APP, "s-1", active, None, now
                )

            # The store's own transaction, reached past its methods (_run) to put the
            # save between the two statements.
            assert await store._run(confirm) is None
        saved = await store.vcita_session_by_uid(APP, "s-1")
        assert saved is not None and saved.status == SessionStatus.PENDING
        again = await store.set_vcita_session_status(APP, "s-1", "active")
    assert again is not None and again.status == SessionStatus.ACTIVE
