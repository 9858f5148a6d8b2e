"""The /v1 API end to end: token, send, statuses, webhooks, batches, channels, parties."""

from __future__ import annotations

import trio
from standardwebhooks.webhooks import Webhook

from tests.applications.messaging_api.harness import running_pipeline, webhook_receiver
from tests.stores.conftest import StoreTarget
from vumi_like.broker import BrokerInspector

SMS = {"channel": "sms", "receiver": "+27820000001", "content": "hello"}


async def test_an_sms_goes_from_queued_to_delivered_with_signed_webhooks(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(30):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            hook = await p.post("/v1/webhooks", {"url": receiver.hook})
            assert hook.status_code == 201, hook.text
            secret = hook.json()["secret"]

            sent = await p.post("/v1/messages", {**SMS, "context": {"order": 42}})
            assert sent.status_code == 202, sent.text
            assert sent.json()["status"] == "QUEUED"
            message_id = sent.json()["messageId"]

            await receiver.wait_for(lambda _: len(receiver.of("DELIVERED", message_id)) == 1)
            message = (await p.get(f"/v1/messages/{message_id}")).json()

    assert message["status"] == "DELIVERED"
    assert (message["sender"], message["receiver"], message["channelName"]) == (
        "1234",
        "+27820000001",
        "sms",
    )
    assert [t["status"] for t in message["transitions"]] == ["QUEUED", "SENT", "DELIVERED"]
    assert [t["eventType"] for t in message["transitions"]] == [
        "created",
        "ack",
        "delivery_report",
    ]
    codes = [post.body["statusCode"] for post in receiver.posts]
    assert sorted(codes) == ["DELIVERED", "QUEUED", "SENT"]
    for post in receiver.posts:
        # Verified by the Standard Webhooks reference library.
        assert Webhook(secret).verify(post.raw, post.headers) == post.body
        assert post.headers["webhook-id"] == post.body["id"]
        assert post.body["messageId"] == message_id
        assert post.body["channelName"] == "sms"
        assert post.body["context"] == {"order": 42}


async def test_a_batch_is_accepted_at_once_and_each_message_is_sent(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    messages = [{**SMS, "receiver": f"+2782000000{i}"} for i in range(5)]
    messages.append(
        {
            "channel": "email",
            "receiver": "a@example.org",
            "content": {"text": "hi", "subject": "Greetings", "html": "<p>hi</p>"},
        }
    )
    with trio.fail_after(30):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            response = await p.post("/v1/messages/batch", {"messages": messages})
            assert response.status_code == 202, response.text
            accepted = response.json()
            ids = [m["messageId"] for m in accepted["messages"]]
            assert len(ids) == 6 and all(m["status"] == "QUEUED" for m in accepted["messages"])
            for message_id in ids:
                await p.wait_for_status(message_id, "DELIVERED")
            email = (await p.get(f"/v1/messages/{ids[-1]}")).json()
            statuses = await p.store.batch_statuses("acme", accepted["batchId"])
            stored = [await p.store.get_message("acme", i) for i in (ids[0], ids[-1])]
    assert email["content"] == "hi"
    assert email["sender"] == "noreply@acme.example"
    assert statuses is not None and {str(s) for _, s in statuses} == {"DELIVERED"}
    # The channel's type gives the message type shown in history.
    assert [m.message_type for m in stored if m is not None] == ["SMS", "EMAIL"]
    assert stored[1] is not None
    envelope = stored[1].payload["envelope"]
    assert envelope["helper_metadata"]["email"] == {"subject": "Greetings", "html": "<p>hi</p>"}


async def test_channels_are_the_tenants_own(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        acme = (await p.get("/v1/channels")).json()["channels"]
        globex = (await p.get("/v1/channels", "globex")).json()["channels"]
    assert [(c["name"], c["type"], c["senders"]) for c in acme] == [
        ("sms", "sms", ["1234", "ACME"]),
        ("email", "email", ["noreply@acme.example"]),
        ("web", "web", ["*"]),
    ]
    assert [c["name"] for c in globex] == ["sms", "web"]


async def test_webhooks_are_listed_paged_and_deleted(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        made = []
        for i in range(3):
            response = await p.post(
                "/v1/webhooks",
                {
                    "url": f"http://127.0.0.1:9/{i}",
                    "eventTypes": ["DELIVERED"],
                    "secret": "s" * 20,
                },
            )
            assert response.status_code == 201, response.text
            made.append(response.json()["id"])
        first = (await p.get("/v1/webhooks", limit=2)).json()
        second = (await p.get("/v1/webhooks", limit=2, cursor=first["nextCursor"])).json()
        one = (await p.get(f"/v1/webhooks/{made[0]}")).json()
        deleted = await p.http.delete(f"/v1/webhooks/{made[0]}", headers=await p.auth())
        after = await p.get(f"/v1/webhooks/{made[0]}")
    listed = [w["id"] for w in first["webhooks"] + second["webhooks"]]
    assert listed == made
    assert second["nextCursor"] is None
    assert "secret" not in one or one["secret"] is None
    assert one["eventTypes"] == ["DELIVERED"]
    assert deleted.status_code == 204
    assert after.status_code == 404
    assert after.json()["code"] == "WEBHOOK_NOT_FOUND"


async def test_party_contact_settings_are_kept_per_tenant(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        put = await p.http.put(
            "/v1/parties/p-1",
            json={"channel": "sms", "address": "+27820000009"},
            headers=await p.auth(),
        )
        unknown_channel = await p.http.put(
            "/v1/parties/p-2", json={"channel": "fax", "address": "1"}, headers=await p.auth()
        )
        got = (await p.get("/v1/parties/p-1")).json()
        listed = (await p.get("/v1/parties")).json()
        removed = await p.http.delete("/v1/parties/p-1", headers=await p.auth())
        gone = await p.get("/v1/parties/p-1")
    assert put.status_code == 200, put.text
    assert (got["channel"], got["address"]) == ("sms", "+27820000009")
    assert [party["partyId"] for party in listed["parties"]] == ["p-1"]
    assert unknown_channel.status_code == 404
    assert unknown_channel.json()["code"] == "CHANNEL_NOT_FOUND"
    assert removed.status_code == 204
    assert gone.json()["code"] == "PARTY_NOT_FOUND"


async def test_a_tenant_has_a_bounded_number_of_webhooks(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique, api={"max_webhooks": 2}) as p:
        answers = [
            await p.post("/v1/webhooks", {"url": f"http://127.0.0.1:9/{i}"}) for i in range(3)
        ]
        theirs = await p.post("/v1/webhooks", {"url": "http://127.0.0.1:9/g"}, "globex")
    assert [a.status_code for a in answers] == [201, 201, 409]
    assert answers[2].json()["code"] == "WEBHOOK_LIMIT_REACHED"
    assert theirs.status_code == 201
