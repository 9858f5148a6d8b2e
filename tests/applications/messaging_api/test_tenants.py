"""One tenant never reads, lists or gets webhooks for another's messages, batches,
parties or subscriptions: another tenant's id is simply not found."""

from __future__ import annotations

import trio

from tests.applications.messaging_api.harness import running_pipeline, webhook_receiver
from tests.stores.conftest import StoreTarget
from vumi_like.broker import BrokerInspector

SMS = {"channel": "sms", "receiver": "+27820000001", "content": "acme's secret"}


async def test_another_tenants_resources_are_not_found_and_not_listed(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(30):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            hook = (await p.post("/v1/webhooks", {"url": receiver.hook})).json()
            message_id = (await p.post("/v1/messages", SMS)).json()["messageId"]
            batch = (await p.post("/v1/messages/batch", {"messages": [SMS]})).json()
            await p.http.put(
                "/v1/parties/shared-id",
                json={"channel": "sms", "address": "+27820000002"},
                headers=await p.auth(),
            )
            legacy = (
                await p.post(
                    "/sms",
                    {
                        "party": {"partyId": "shared-id"},
                        "mobileNumber": "+27820000003",
                        "message": "x",
                    },
                )
            ).json()
            await p.wait_for_status(message_id, "DELIVERED")

            # globex, with a valid token of its own, asks for each of them.
            found = {
                "message": await p.get(f"/v1/messages/{message_id}", "globex"),
                "legacy status": await p.get(f"/status/{message_id}", "globex"),
                "batch": await p.get(f"/batchStatus/{batch['batchId']}", "globex"),
                "webhook": await p.get(f"/v1/webhooks/{hook['id']}", "globex"),
                "party": await p.get("/v1/parties/shared-id", "globex"),
            }
            deleted = await p.http.delete(
                f"/v1/webhooks/{hook['id']}", headers=await p.auth("globex")
            )
            listings = {
                "messages": (await p.get("/v1/messages", "globex")).json()["messages"],
                "webhooks": (await p.get("/v1/webhooks", "globex")).json()["webhooks"],
                "parties": (await p.get("/v1/parties", "globex")).json()["parties"],
                "history": (await p.get("/conversationHistory/shared-id", "globex")).json(),
            }
            # globex's own traffic never reaches acme's subscription.
            theirs = (await p.post("/v1/messages", {**SMS, "sender": "5678"}, "globex")).json()
            await p.wait_for_status(theirs["messageId"], "DELIVERED", "globex")
            still_there = await p.get(f"/v1/webhooks/{hook['id']}")
            acme_history = (await p.get("/conversationHistory/shared-id")).json()

    for what, response in found.items():
        assert response.status_code == 404, (what, response.text)
    assert deleted.status_code == 404
    assert still_there.status_code == 200
    assert listings == {"messages": [], "webhooks": [], "parties": [], "history": []}
    assert {post.body["messageId"] for post in receiver.posts} <= {
        message_id,
        legacy["messageId"],
        *[m["messageId"] for m in batch["messages"]],
    }
    assert theirs["messageId"] not in {post.body["messageId"] for post in receiver.posts}
    assert [item["messageId"] for item in acme_history] == [legacy["messageId"]]
