"""Idempotency-Key: the same request again gets the first answer and sends nothing new."""

from __future__ import annotations

import httpx
import trio

from tests.applications.messaging_api.harness import running_pipeline
from tests.stores.conftest import StoreTarget
from vumi_like.broker import BrokerInspector

SMS = {"channel": "sms", "receiver": "+27820000001", "content": "only once"}
KEY = {"Idempotency-Key": "order-7"}


async def test_a_repeated_request_is_answered_again_without_sending_again(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(30):
        async with running_pipeline(pipeline_broker, target, unique, api_replicas=2) as p:
            first = await p.post("/v1/messages", SMS, **KEY)
            # The second replica, sharing the store, gives the same answer.
            async with httpx.AsyncClient(
                base_url=f"http://{p.apis[1].config.http_bind}", timeout=10
            ) as other:
                again = await other.post(
                    "/v1/messages",
                    json=SMS,
                    headers=await p.auth(**KEY),
                )
            changed = await p.post("/v1/messages", {**SMS, "content": "changed"}, **KEY)
            other_tenant = await p.post(
                "/v1/messages",
                {**SMS, "sender": "5678"},
                "globex",
                **KEY,
            )
            legacy = await p.post(
                "/sms",
                {"mobileNumber": "+27820000001", "message": "x"},
                **KEY,
            )
            await p.wait_for_status(first.json()["messageId"], "DELIVERED")
            listed = (await p.get("/v1/messages")).json()["messages"]

    assert first.status_code == 202
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert changed.status_code == 422
    assert changed.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert legacy.status_code == 422  # the same key on another endpoint is another request
    assert other_tenant.status_code == 202  # keys are per tenant
    assert [m["messageId"] for m in listed] == [first.json()["messageId"]]


async def test_a_failed_request_frees_its_key_for_the_retry(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        await pipeline_broker.delete_queue(f"{p.connector}.outbound")
        refused = await p.post("/v1/messages", SMS, **{"Idempotency-Key": "k-1"})
        await pipeline_broker.declare_queue(f"{p.connector}.outbound")
        retried = await p.post("/v1/messages", SMS, **{"Idempotency-Key": "k-1"})
        replayed = await p.post("/v1/messages", SMS, **{"Idempotency-Key": "k-1"})
        too_long = await p.post("/v1/messages", SMS, **{"Idempotency-Key": "k" * 300})
    assert refused.status_code == 503
    assert retried.status_code == 202, retried.text
    assert replayed.json() == retried.json()
    assert too_long.status_code == 400
