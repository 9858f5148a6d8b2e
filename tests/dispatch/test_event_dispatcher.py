"""The event dispatcher end to end: events become statuses, inbound becomes messages,
and both become webhook jobs; what nobody can take is dead-lettered with the reason."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
import trio

from tests.applications.messaging_api.harness import (
    running_pipeline,
    webhook_receiver,
)
from tests.broker.test_contract import receive
from tests.dispatch.conftest import (
    delivery_done,
    publish_event,
    publish_inbound,
    send_sms,
    stored,
    subscribe,
    wait_for_transitions,
    wait_handled,
    wait_settled,
)
from tests.stores.conftest import StoreTarget
from vumi_like.broker import BrokerInspector
from vumi_like.broker.base import HEADER_DL_ERROR, HEADER_DL_QUEUE
from vumi_like.messages import Event, Message
from vumi_like.stores import MessageStatus

# The simulator acks at once; its delivery report would come this much later, so the
# tests' own events are the only ones after the ack.
NO_REPORT = 30.0


def raw(event: Event) -> dict[str, Any]:
    return dict(json.loads(event.to_json()))


async def test_late_duplicate_and_out_of_order_events_never_move_a_message_backwards(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique, delivery_delay=NO_REPORT) as p,
        ):
            await subscribe(p, receiver.hook)
            message_id = await send_sms(p)
            await p.wait_for_status(message_id, "SENT")

            delivered = Event.delivery_report(message_id, "delivered")
            # Late: sent by the transport before the report, it arrives after it.
            late_ack = Event.ack(
                message_id,
                sent_message_id="provider-1",
                timestamp=delivered.timestamp - timedelta(seconds=5),
            )
            late_pending = Event.delivery_report(message_id, "pending")
            # One at a time, each applied before the next is sent, so the order the
            # store sees is the order here: delivered first, the rest late.
            for count, event in enumerate((delivered, late_ack, late_pending), start=3):
                await publish_event(p, event)
                await wait_for_transitions(p, message_id, count)
            await publish_event(p, delivered)  # the broker redelivers it
            await wait_handled(f"{p.connector}.event", 5)
            await wait_settled(f"{p.connector}.webhooks")

            message = (await p.get(f"/v1/messages/{message_id}")).json()
            in_store = await stored(p, message_id)

    assert message["status"] == "DELIVERED"
    assert [
        (t["eventType"], t["previousStatus"], t["status"]) for t in message["transitions"]
    ] == [
        ("created", None, "QUEUED"),
        ("ack", "QUEUED", "SENT"),
        ("delivery_report", "SENT", "DELIVERED"),
        ("ack", "DELIVERED", "DELIVERED"),
        ("delivery_report", "DELIVERED", "DELIVERED"),
    ]
    assert message["transitions"][3]["at"] == late_ack.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    mine = in_store.transitions[2:]
    assert [t.event_id for t in mine] == [e.event_id for e in (delivered, late_ack, late_pending)]
    assert [t.raw for t in mine] == [raw(e) for e in (delivered, late_ack, late_pending)]
    assert [post.body["statusCode"] for post in receiver.posts].count("SENT") == 1
    assert receiver.of("DELIVERY_RETRIED") == []
    # The duplicate may post DELIVERED again (crash safety), but as the same delivery.
    assert len({post.headers["webhook-id"] for post in receiver.of("DELIVERED")}) == 1


async def test_an_event_applied_before_a_crash_gets_its_webhook_out_when_redelivered(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique, delivery_delay=NO_REPORT) as p,
        ):
            await subscribe(p, receiver.hook, "DELIVERED")
            message_id = await send_sms(p)
            await p.wait_for_status(message_id, "SENT")
            delivered = Event.delivery_report(message_id, "delivered")
            # What a dispatcher killed between applying the event and queueing its
            # webhooks leaves: the status moved, no job queued, the event unacked.
            await p.store.apply_event(
                message_id,
                event_id=delivered.event_id,
                event_type="delivery_report",
                proposed_status=MessageStatus.DELIVERED,
                occurred_at=delivered.timestamp,
                raw=raw(delivered),
            )
            await publish_event(p, delivered)
            [post] = await receiver.wait_for(lambda posts: len(posts) == 1)
            message = await stored(p, message_id)

    assert (post.body["statusCode"], post.body["messageId"]) == ("DELIVERED", message_id)
    assert [t.event_type for t in message.transitions] == ["created", "ack", "delivery_report"]


async def test_a_nack_fails_the_message_and_its_webhook_carries_the_reason(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique, delivery_delay=NO_REPORT) as p,
        ):
            await subscribe(p, receiver.hook, "DELIVERY_FAILED")
            message_id = await send_sms(p, context={"order": 7})
            await p.wait_for_status(message_id, "SENT")
            await publish_event(p, Event.nack(message_id, "number is barred"))
            [post] = await receiver.wait_for(lambda posts: len(posts) == 1)
            status = await p.status_of(message_id)

    assert status == "DELIVERY_FAILED"
    assert post.body["statusCode"] == "DELIVERY_FAILED"
    assert post.body["reason"] == "number is barred"
    assert (post.body["messageId"], post.body["context"]) == (message_id, {"order": 7})


async def test_a_pending_report_after_the_ack_makes_the_message_delivery_retried(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique, delivery_delay=NO_REPORT) as p,
        ):
            await subscribe(p, receiver.hook, "DELIVERY_RETRIED", "DELIVERED")
            message_id = await send_sms(p)
            await p.wait_for_status(message_id, "SENT")
            await publish_event(p, Event.delivery_report(message_id, "pending"))
            await receiver.wait_for(lambda _: len(receiver.of("DELIVERY_RETRIED")) == 1)
            retried = await p.status_of(message_id)
            await publish_event(p, Event.delivery_report(message_id, "delivered"))
            await receiver.wait_for(lambda _: len(receiver.of("DELIVERED")) == 1)
            delivered = await p.status_of(message_id)

    assert (retried, delivered) == ("DELIVERY_RETRIED", "DELIVERED")
    assert [post.body["statusCode"] for post in receiver.posts] == [
        "DELIVERY_RETRIED",
        "DELIVERED",
    ]
    assert receiver.posts[0].body["messageId"] == message_id
    assert "reason" not in receiver.posts[0].body


async def test_an_event_for_an_unknown_message_goes_to_dead_letter_naming_it(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    event = Event.ack("no-such-message-42", sent_message_id="provider-9")
    with trio.fail_after(20):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            await publish_event(p, event)
            [dead] = await receive(pipeline_broker, pipeline_broker.dead_letter_queue, 1)

    assert dead.headers[HEADER_DL_QUEUE] == f"{unique}-api.event"
    assert "UnknownMessage" in dead.headers[HEADER_DL_ERROR]
    assert "'no-such-message-42'" in dead.headers[HEADER_DL_ERROR]
    assert Event.from_json(dead.body) == event


def inbound(unique: str, to_addr: str = "1234") -> Message:
    return Message(
        to_addr=to_addr,
        from_addr="+27820000002",
        transport_name=f"{unique}-sms",
        transport_type="sms",
        content="STOP",
    )


async def test_an_inbound_is_stored_for_the_tenant_owning_its_address_and_webhooked(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    message = inbound(unique)
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            await subscribe(p, receiver.hook, "MESSAGE_RECEIVED")
            await publish_inbound(p, message)
            await receiver.wait_for(lambda posts: len(posts) == 1)
            as_acme = await p.get(f"/v1/messages/{message.message_id}")
            as_globex = await p.get(f"/v1/messages/{message.message_id}", "globex")

    assert as_acme.status_code == 200, as_acme.text
    got = as_acme.json()
    assert (got["direction"], got["status"], got["channelName"]) == ("inbound", "RECEIVED", "sms")
    assert (got["sender"], got["receiver"], got["content"]) == ("+27820000002", "1234", "STOP")
    assert as_globex.status_code == 404
    [post] = receiver.posts
    assert post.body["statusCode"] == "MESSAGE_RECEIVED"
    assert post.body["messageId"] == message.message_id
    assert (post.body["sender"], post.body["receiver"], post.body["content"]) == (
        "+27820000002",
        "1234",
        "STOP",
    )
    assert post.body["channelName"] == "sms"


# Read for every event, or kept a minute: either way a job queued again is checked.
@pytest.mark.parametrize("max_age", [0, 60])
async def test_an_inbound_delivered_twice_is_stored_once_and_webhooked_once(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str, max_age: float
):
    message = inbound(unique)
    kept = {"subscriptions_max_age": max_age}
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique, dispatcher=kept) as p,
        ):
            await subscribe(p, receiver.hook, "MESSAGE_RECEIVED")
            await publish_inbound(p, message)
            await receiver.wait_for(lambda posts: len(posts) == 1)
            # Once the store says the delivery got through, a repeat is not posted.
            delivery_id = receiver.posts[0].headers["webhook-id"]
            while not await delivery_done(p, delivery_id):  # noqa: ASYNC110 - polls the store
                await trio.sleep(0.01)
            await publish_inbound(p, message)
            await wait_handled(f"{p.connector}.inbound", 2)
            await wait_settled(f"{p.connector}.webhooks")
            listed = await p.store.list_messages("acme")
            again = await stored(p, message.message_id)

    assert [m.message_id for m in listed.items] == [message.message_id]
    assert [t.event_type for t in again.transitions] == ["created"]
    # The redelivery queued its webhook again (same id), and the dispatcher, seeing
    # that delivery done, did not post it twice.
    [post] = receiver.posts
    assert post.body["statusCode"] == "MESSAGE_RECEIVED"


async def test_an_inbound_to_an_address_no_tenant_owns_goes_to_dead_letter(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    message = inbound(unique, to_addr="9999")
    with trio.fail_after(20):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            await publish_inbound(p, message)
            [dead] = await receive(pipeline_broker, pipeline_broker.dead_letter_queue, 1)
            listed = await p.store.list_messages("acme")

    assert dead.headers[HEADER_DL_QUEUE] == f"{unique}-api.inbound"
    error = dead.headers[HEADER_DL_ERROR]
    assert "UnownedInbound" in error
    assert "'9999'" in error and f"'{unique}-sms'" in error
    assert Message.from_json(dead.body) == message
    assert listed.items == ()


async def test_a_reply_to_a_tenants_web_sender_is_that_tenants_not_another_s(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    # On the web channel both tenants have "*", so each sends as its own name.
    with trio.fail_after(20):
        async with (
            webhook_receiver() as acme,
            webhook_receiver() as globex,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            await subscribe(p, acme.hook, "MESSAGE_RECEIVED")
            await subscribe(p, globex.hook, "MESSAGE_RECEIVED", tenant="globex")
            sent = await send_sms(p, "globex", channel="web", receiver="visitor-1")
            sender = (await p.get(f"/v1/messages/{sent}", "globex")).json()["sender"]
            reply = Message(
                to_addr=sender,
                from_addr="visitor-1",
                transport_name=f"{unique}-web",
                transport_type="web",
                content="thanks",
            )
            await publish_inbound(p, reply)
            await wait_handled(f"{p.connector}.inbound", 1)
            await wait_settled(f"{p.connector}.webhooks")
            as_globex = await p.get(f"/v1/messages/{reply.message_id}", "globex")
            as_acme = await p.get(f"/v1/messages/{reply.message_id}")

    assert sender == "globex"
    assert (as_globex.status_code, as_acme.status_code) == (200, 404)
    assert [post.body["messageId"] for post in globex.posts] == [reply.message_id]
    assert acme.posts == []


async def test_two_apis_and_two_dispatchers_sharing_a_store_deliver_every_message_once(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(30):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique, api_replicas=2, dispatchers=2) as p,
            httpx.AsyncClient(
                base_url=f"http://{p.apis[1].config.http_bind}", timeout=10
            ) as second,
        ):
            await subscribe(p, receiver.hook, "DELIVERED")
            ids: list[str] = []

            async def send(client: httpx.AsyncClient, i: int) -> None:
                response = await client.post(
                    "/v1/messages",
                    json={"channel": "sms", "receiver": f"+2782{i:07}", "content": f"m{i}"},
                    headers=await p.auth(),
                )
                assert response.status_code == 202, response.text
                ids.append(response.json()["messageId"])

            async with trio.open_nursery() as nursery:
                for i in range(30):
                    nursery.start_soon(send, (p.http, second)[i % 2], i)
            await receiver.wait_for(lambda posts: len(posts) >= 30)
            # A DELIVERED webhook can be posted before the other dispatcher has applied
            # that message's ack: every event handled, then read the store.
            await wait_settled(f"{p.connector}.event")
            await wait_settled(f"{p.connector}.webhooks")
            messages = [await stored(p, message_id) for message_id in ids]

    assert len(set(ids)) == 30
    for message in messages:
        assert message.status == "DELIVERED"
        # Each event recorded once. The ack and the report may be applied in either
        # order (each dispatcher takes some of the events), but never backwards.
        first, *events = message.transitions
        assert first.event_type == "created"
        assert sorted(t.event_type for t in events) == ["ack", "delivery_report"]
        assert [t.status_after for t in message.transitions] in (
            ["QUEUED", "SENT", "DELIVERED"],
            ["QUEUED", "DELIVERED", "DELIVERED"],
        )
    # One webhook a message; a POST the receiver answered too late for the dispatcher
    # (a busy machine) goes again, under the same webhook-id, which receivers drop.
    by_webhook_id = {post.headers["webhook-id"]: post.body["messageId"] for post in receiver.posts}
    assert sorted(by_webhook_id.values()) == sorted(ids)
