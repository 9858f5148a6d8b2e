"""``VcitaChannelApp`` end to end, on the memory broker and on RabbitMQ: a fake VCS on
localhost, the app, a router and the simulator transport."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.applications.conversations.conftest import (
    ACCESS_TOKEN,
    ADDRESS,
    BUSINESS,
    CLIENT,
    Names,
    Pipeline,
    inbound,
    pipeline,
)
from tests.broker.test_contract import nothing_arrives, receive
from vumi_like.applications.conversations.vcs import CHANNELS, MESSAGES, SESSIONS, TYPING
from vumi_like.broker import BrokerInspector
from vumi_like.broker.base import HEADER_DL_ERROR, HEADER_DL_QUEUE
from vumi_like.messages import DeliveryStatus, Event, Message
from vumi_like.stores import MessageStore, StoreUnavailable


async def test_a_channel_is_pending_until_vcs_confirms_it_active(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            requested = await p.add_channel(type="promotional")
            [created] = await p.vcs.wait_for("POST", CHANNELS, 1)
            active = await p.channel_with(requested["channel_id"], "active")
    assert requested["status"] == "pending"
    assert requested["channel_uid"] is None
    assert created.body == {"business_uid": BUSINESS, "type": "promotional"}
    assert created.token == ACCESS_TOKEN
    assert active["channel_uid"].startswith("ch-")
    assert (active["transport_name"], active["address"]) == (names.transport, ADDRESS)


async def test_a_clients_first_message_creates_the_session_then_posts_the_message(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            channel_uid = await p.active_channel()
            first_id = await p.client_writes("hello")
            await p.vcs.wait_for("POST", MESSAGES, 1)
            second_id = await p.client_writes("are you there?")
            messages = await p.vcs.wait_for("POST", MESSAGES, 2)
            assert await nothing_arrives(broker, names.dead_letter, within=0.1)
    [session] = p.vcs.received("POST", SESSIONS)  # one session, reused
    assert session.body == {
        "business_uid": BUSINESS,
        "channel_uid": channel_uid,
        "contact_uid": None,
        "external_uid": CLIENT,
    }
    assert session.token == ACCESS_TOKEN
    assert [m.body for m in messages] == [
        {
            "message": "hello",
            "channel_uid": channel_uid,
            "message_uid": str(uuid.UUID(hex=first_id)),
            "external_uid": CLIENT,
        },
        {
            "message": "are you there?",
            "channel_uid": channel_uid,
            "message_uid": str(uuid.UUID(hex=second_id)),
            "external_uid": CLIENT,
        },
    ]


async def test_a_new_clients_first_messages_sent_together_open_one_session(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            await p.active_channel()
            async with trio.open_nursery() as nursery:
                for text in ("hi", "I have a question", "about my order"):
                    nursery.start_soon(p.client_writes, text)
            messages = await p.vcs.wait_for("POST", MESSAGES, 3)
            assert await nothing_arrives(broker, names.dead_letter, within=0.1)
    assert len(p.vcs.received("POST", SESSIONS)) == 1
    assert sorted(m.body["message"] for m in messages) == [
        "I have a question",
        "about my order",
        "hi",
    ]


async def staff_message(p: Pipeline, channel_uid: str, message_uid: str, text: str) -> None:
    response = await p.vcs_calls_app(
        "POST",
        "/messages",
        {
            "external_uid": CLIENT,
            "message": text,
            "message_uid": message_uid,
            "channel_uid": channel_uid,
            "status": "pending",
        },
    )
    assert response.status_code == 204, response.text


async def test_a_staff_reply_reaches_the_client_and_its_status_flows_back_to_vcs(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            channel_uid = await p.active_channel()
            await staff_message(p, channel_uid, "staff-msg-1", "Hi from the shop")
            # The simulator acks at once and reports delivery after DELIVERY_DELAY.
            [update] = await p.vcs.wait_for("PUT", f"{MESSAGES}/staff-msg-1", 1)
            assert await nothing_arrives(broker, names.dead_letter, within=0.2)
    assert update.body == {"status": "received", "channel_uid": channel_uid}
    assert update.token == ACCESS_TOKEN
    assert len(p.vcs.received("PUT", f"{MESSAGES}/staff-msg-1")) == 1  # the ack adds none


async def test_a_staff_message_is_addressed_from_the_channel_to_the_client_once(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path, simulator=False) as p:
            channel_uid = await p.active_channel()
            await staff_message(p, channel_uid, "staff-msg-1", "Your order is ready")
            await staff_message(p, channel_uid, "staff-msg-1", "Your order is ready")  # again
            [delivery] = await receive(broker, f"{names.transport}.outbound", 1)
            assert await nothing_arrives(broker, f"{names.transport}.outbound", within=0.2)
            sent = Message.from_json(delivery.body)
            # Play the transport: a nack for it is an error at VCS.
            nack = Event.nack(sent, "the number does not exist")
            await broker.publish(f"{names.transport}.event", nack.to_json())
            [update] = await p.vcs.wait_for("PUT", f"{MESSAGES}/staff-msg-1", 1)
    assert (sent.to_addr, sent.from_addr) == (CLIENT, ADDRESS)
    assert (sent.transport_name, sent.content) == (names.transport, "Your order is ready")
    assert update.body == {"status": "error", "channel_uid": channel_uid}


async def test_a_status_is_sent_to_vcs_once_though_the_ack_comes_while_it_is_sent(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    path = f"{MESSAGES}/staff-msg-1"
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path, simulator=False) as p:
            channel_uid = await p.active_channel()
            await staff_message(p, channel_uid, "staff-msg-1", "Your order is ready")
            [delivery] = await receive(broker, f"{names.transport}.outbound", 1)
            sent = Message.from_json(delivery.body)
            # Play the transport: the delivery report first, and while VCS is being
            # told of it (VCS holds its answer), the ack, late.
            p.vcs.hold = trio.Event()
            report = Event.delivery_report(sent, DeliveryStatus.DELIVERED)
            await broker.publish(f"{names.transport}.event", report.to_json())
            await p.vcs.wait_for("PUT", path, 1)
            ack = Event.ack(sent, sent_message_id="provider-1")
            await broker.publish(f"{names.transport}.event", ack.to_json())
            with pytest.raises(trio.TooSlowError):  # the ack has nothing to tell VCS
                await p.vcs.wait_for("PUT", path, 2, within=1)
            p.vcs.hold.set()
            assert await nothing_arrives(broker, names.dead_letter, within=0.2)
    [update] = p.vcs.received("PUT", path)
    assert update.body == {"status": "received", "channel_uid": channel_uid}


async def test_a_reply_sent_again_after_a_store_failure_still_has_its_status_told(
    broker: BrokerInspector, names: Names, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The store fails part-way through both flows of one reply: the POST after the
    # reply was handed on (503), the delivery report's handler after it had moved the
    # status to received. VCS sends the POST again while the report waits for its
    # retry; that retry must still tell VCS.
    path = f"{MESSAGES}/staff-msg-1"
    body = {
        "external_uid": CLIENT,
        "message": "Your order is ready",
        "message_uid": "staff-msg-1",
        "status": "pending",
    }
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path, simulator=False) as p:
            channel_uid = await p.active_channel()
            store = p.app.store
            down = {"set_vcita_message_reported"}
            refused = {m: trio.Event() for m in ("set_vcita_message_reported", "vcita_channel")}
            for method in refused:
                monkeypatch.setattr(store, method, failing_while(down, refused, method, store))
            first = await p.vcs_calls_app(
                "POST", "/messages", {**body, "channel_uid": channel_uid}
            )
            [delivery] = await receive(broker, f"{names.transport}.outbound", 1)
            sent = Message.from_json(delivery.body)
            down.clear()
            down.add("vcita_channel")
            report = Event.delivery_report(sent, DeliveryStatus.DELIVERED)
            await broker.publish(f"{names.transport}.event", report.to_json())
            await refused["vcita_channel"].wait()  # after the status moved
            stored = await store.vcita_message(sent.message_id)
            accepted = await p.vcs_calls_app(
                "POST", "/messages", {**body, "channel_uid": channel_uid}
            )
            down.clear()
            [update] = await p.vcs.wait_for("PUT", path, 1, within=15)
            assert await nothing_arrives(broker, names.dead_letter, within=0.2)
    assert (first.status_code, first.json()["code"]) == (503, "STORE_UNAVAILABLE")
    assert stored is not None and stored.status == "received"
    assert accepted.status_code == 204, accepted.text
    assert update.body == {"status": "received", "channel_uid": channel_uid}


def failing_while(
    down: set[str], refused: dict[str, trio.Event], method: str, store: MessageStore
) -> Any:
    """``store``'s ``method``, raising ``StoreUnavailable`` while ``down`` names it (and
    then setting ``refused[method]``)."""
    original = getattr(store, method)

    async def call(*args: Any, **kwargs: Any) -> Any:
        if method in down:
            refused[method].set()
            raise StoreUnavailable("message store at test unavailable: stopped")
        return await original(*args, **kwargs)

    return call


async def test_vcs_status_updates_are_recorded_forwards_only(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            channel_uid = await p.active_channel()
            message_id = await p.client_writes("hello")
            await p.vcs.wait_for("POST", MESSAGES, 1)
            message_uid = str(uuid.UUID(hex=message_id))
            answers = []
            for status in ["received", "read", "received"]:
                response = await p.vcs_calls_app(
                    "PUT",
                    f"/messages/{message_uid}",
                    {"status": status, "channel_uid": channel_uid},
                )
                answers.append(response.status_code)
            stored = await p.app.store.vcita_message(message_id)
    assert answers == [204, 204, 204]
    assert stored is not None and stored.status == "read"


async def test_typing_goes_both_ways(broker: BrokerInspector, names: Names, tmp_path: Path):
    with trio.fail_after(20):
        async with pipeline(
            broker, names, tmp_path, simulator=False, typing_transports=[names.transport]
        ) as p:
            await p.active_channel()
            # The client writes (playing the transport), which opens their session.
            await broker.publish(f"{names.transport}.inbound", inbound(names).to_json())
            await p.vcs.wait_for("POST", MESSAGES, 1)
            [session] = p.vcs.received("POST", SESSIONS)
            session_uid = await p.session_uid(CLIENT)
            # The client is typing: posted to VCS's typing endpoint.
            typing = inbound(names, content=None, helper_metadata={"typing": True})
            await broker.publish(f"{names.transport}.inbound", typing.to_json())
            [posted] = await p.vcs.wait_for("POST", TYPING, 1)
            # A staff member is typing: recorded, and passed to the transport.
            response = await p.vcs_calls_app("POST", f"/{session_uid}/typing", {"typing": True})
            [delivery] = await receive(broker, f"{names.transport}.outbound", 1)
            stored = await p.app.store.vcita_session_by_uid("whatsapp-app", session_uid)
    assert session.body["external_uid"] == CLIENT
    assert posted.body == {"session_uid": session_uid, "typing": True}
    assert response.status_code == 204
    indication = Message.from_json(delivery.body)
    assert (indication.to_addr, indication.from_addr) == (CLIENT, ADDRESS)
    assert indication.content is None
    assert indication.helper_metadata == {"typing": True}
    assert stored is not None and stored.staff_typing is True


async def test_staff_typing_is_only_recorded_for_a_transport_without_typing(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path, simulator=False) as p:
            await p.active_channel()
            await broker.publish(f"{names.transport}.inbound", inbound(names).to_json())
            await p.vcs.wait_for("POST", MESSAGES, 1)
            session_uid = await p.session_uid(CLIENT)
            response = await p.vcs_calls_app("POST", f"/{session_uid}/typing", {"typing": False})
            assert await nothing_arrives(broker, f"{names.transport}.outbound", within=0.2)
            stored = await p.app.store.vcita_session_by_uid("whatsapp-app", session_uid)
    assert response.status_code == 204
    assert stored is not None and stored.staff_typing is False


async def test_an_inactive_session_is_reactivated_not_recreated(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            await p.active_channel()
            await p.client_writes("first")
            await p.vcs.wait_for("POST", MESSAGES, 1)
            session_uid = await p.session_uid(CLIENT)
            response = await p.vcs_calls_app(
                "PUT", f"/sessions/{session_uid}", {"status": "inactive"}
            )
            await p.client_writes("second")
            await p.vcs.wait_for("POST", MESSAGES, 2)
    assert response.status_code == 204
    assert len(p.vcs.received("POST", SESSIONS)) == 1
    [reactivated] = p.vcs.received("PUT", f"{SESSIONS}/{session_uid}")
    assert reactivated.body == {"status": "active"}


async def test_messages_wait_while_the_channel_is_inactive_and_flow_when_active_again(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            channel_uid = await p.active_channel()
            inactive = await p.vcs_calls_app(
                "PUT", f"/channels/{channel_uid}", {"status": "inactive"}
            )
            await p.client_writes("anyone?")
            await trio.sleep(0.3)
            assert p.vcs.received("POST", MESSAGES) == []
            refused = await p.vcs_calls_app(
                "POST",
                "/messages",
                {
                    "external_uid": CLIENT,
                    "message": "hi",
                    "message_uid": "m-1",
                    "channel_uid": channel_uid,
                },
            )
            active = await p.vcs_calls_app("PUT", f"/channels/{channel_uid}", {"status": "active"})
            [posted] = await p.vcs.wait_for("POST", MESSAGES, 1)
    assert (inactive.status_code, active.status_code) == (204, 204)
    assert refused.status_code == 409
    assert refused.json()["code"] == "channel_not_active"
    assert posted.body["message"] == "anyone?"


async def test_a_client_message_on_a_blocked_channel_is_dead_lettered_with_the_reason(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            channel_uid = await p.active_channel()
            await p.vcs_calls_app("PUT", f"/channels/{channel_uid}", {"status": "blocked"})
            await p.client_writes("hello?")
            [letter] = await receive(broker, names.dead_letter, 1)
    assert letter.headers[HEADER_DL_QUEUE] == f"{names.app}.inbound"
    assert f"channel {channel_uid} is blocked" in letter.headers[HEADER_DL_ERROR]
    assert p.vcs.received("POST", MESSAGES) == []


async def test_a_vcs_outage_loses_nothing_and_each_message_is_posted_once(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(30):
        async with pipeline(broker, names, tmp_path) as p:
            channel_uid = await p.active_channel()
            await p.client_writes("before")
            await p.vcs.wait_for("POST", MESSAGES, 1)
            p.vcs.down = True
            await p.client_writes("during one")
            await p.client_writes("during two")
            await staff_message(p, channel_uid, "staff-msg-1", "sent while VCS is down")
            await p.vcs.wait_for("POST", "down", 4)  # refused calls, being retried
            p.vcs.down = False
            posted = await p.vcs.wait_for("POST", MESSAGES, 3)
            await p.vcs.wait_for("PUT", f"{MESSAGES}/staff-msg-1", 1)
            assert await nothing_arrives(broker, names.dead_letter, within=0.3)
    assert sorted(m.body["message"] for m in posted) == ["before", "during one", "during two"]
    assert len({m.body["message_uid"] for m in posted}) == 3
    assert len(p.vcs.received("PUT", f"{MESSAGES}/staff-msg-1")) == 1


async def test_retries_exhausted_go_to_the_dead_letter_queue_with_the_reason(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path, max_retries=2) as p:
            await p.active_channel()
            p.vcs.down = True
            message_id = await p.client_writes("lost?")
            [letter] = await receive(broker, names.dead_letter, 1)
    assert letter.headers[HEADER_DL_QUEUE] == f"{names.app}.inbound"
    reason = letter.headers[HEADER_DL_ERROR]
    assert "answered 503" in reason and "gave up after 3 attempts" in reason
    assert ACCESS_TOKEN not in reason
    assert Message.from_json(letter.body).message_id == message_id


async def test_a_token_vcs_refuses_is_dead_lettered_at_once(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            await p.active_channel()
            p.vcs.tokens.clear()  # VCS no longer accepts the business's token
            await p.client_writes("hello")
            [letter] = await receive(broker, names.dead_letter, 1)
    assert "answered 401" in letter.headers[HEADER_DL_ERROR]
    assert "not retried" in letter.headers[HEADER_DL_ERROR]
    assert len(p.vcs.received("POST", "unauthorized")) == 1


async def test_a_channel_asked_for_during_an_outage_is_created_when_vcs_is_back(
    broker: BrokerInspector, names: Names, tmp_path: Path
):
    with trio.fail_after(20):
        async with pipeline(broker, names, tmp_path) as p:
            p.vcs.down = True
            channel = await p.add_channel()
            await p.vcs.wait_for("POST", "down", 2)
            p.vcs.down = False
            active = await p.channel_with(channel["channel_id"], "active")
            assert await nothing_arrives(broker, names.dead_letter, within=0.1)
    assert len(p.vcs.received("POST", CHANNELS)) == 1
    assert active["channel_uid"].startswith("ch-")
