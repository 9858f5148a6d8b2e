"""Idempotency-Key: the same request again gets the first answer and sends nothing new."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import httpx
import trio

from tests.applications.messaging_api.harness import Pipeline, running_pipeline
from tests.stores.conftest import FakeClock, StoreTarget
from vumi_like.broker import BrokerInspector
from vumi_like.messages import Message
from vumi_like.stores import ClaimOutcome, MessageStatus, NewBatch, NewMessage, RequestIds

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


async def dead_run(target: StoreTarget, path: str, body: bytes, key: str) -> RequestIds:
    """What a replica killed while handling ``POST path`` with ``key`` left in the store:
    the key claimed an hour ago, never answered nor released. The ids its run gave."""
    fingerprint = hashlib.sha256(f"POST {path}\n".encode() + body).hexdigest()
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    async with target.open(clock=clock) as store:
        claim = await store.claim_idempotency_key("acme", key, fingerprint, abandoned_after=60)
    assert claim.outcome is ClaimOutcome.NEW
    return claim.request_ids()


def stored_sms(
    unique: str, message_id: str, batch_id: str | None = None, receiver: str = SMS["receiver"]
) -> NewMessage:
    """An SMS of ``SMS``'s as the Messaging API stores it, with its envelope."""
    envelope = Message(
        message_id=message_id,
        to_addr=receiver,
        from_addr="1234",
        transport_name=f"{unique}-sms",
        transport_type="sms",
        content=SMS["content"],
    )
    return NewMessage(
        message_id=message_id,
        tenant="acme",
        channel="sms",
        message_type="SMS",
        sender="1234",
        receiver=receiver,
        content=SMS["content"],
        payload={"envelope": envelope.model_dump(mode="json")},
        batch_id=batch_id,
    )


async def post_raw(p: Pipeline, path: str, body: bytes, key: str) -> httpx.Response:
    """POST exactly ``body``: the request a dead run's claim was made for."""
    headers = await p.auth(**{"Idempotency-Key": key, "Content-Type": "application/json"})
    response: httpx.Response = await p.http.post(path, content=body, headers=headers)
    return response


async def test_a_retry_taking_over_a_dead_replicas_request_sends_what_it_stored(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    body = json.dumps(SMS).encode()
    with trio.fail_after(30):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            ids = await dead_run(target, "/v1/messages", body, "k-dead")
            # It stored the message, QUEUED, and died before publishing it.
            orphan = ids.new()
            await p.store.create_messages([stored_sms(unique, orphan)])
            retried = await post_raw(p, "/v1/messages", body, "k-dead")
            assert retried.status_code == 202, retried.text
            await p.wait_for_status(orphan, "DELIVERED")
            replayed = await post_raw(p, "/v1/messages", body, "k-dead")
            listed = (await p.get("/v1/messages")).json()["messages"]
    assert retried.json() == {"messageId": orphan, "status": "QUEUED"}
    assert "idempotent-replayed" not in retried.headers
    assert replayed.json() == retried.json()
    assert replayed.headers["idempotent-replayed"] == "true"
    assert [m["messageId"] for m in listed] == [orphan]


async def test_a_retry_taking_over_a_dead_replicas_request_does_not_resend_what_went(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    body = json.dumps(SMS).encode()
    with trio.fail_after(30):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            ids = await dead_run(target, "/v1/messages", body, "k-sent")
            # It stored and published the message, which was delivered; it died before
            # saving its answer.
            sent = ids.new()
            await p.store.create_messages([stored_sms(unique, sent)])
            for event_type, status in [("ack", "SENT"), ("delivery_report", "DELIVERED")]:
                await p.store.apply_event(
                    sent,
                    event_id=f"{event_type}-1",
                    event_type=event_type,
                    proposed_status=MessageStatus(status),
                    occurred_at=datetime.now(UTC).replace(tzinfo=None),
                    raw={},
                )
            retried = await post_raw(p, "/v1/messages", body, "k-sent")
            await trio.sleep(0.5)  # time enough for a new send's ack (delivery_delay 0.05)
            message = (await p.get(f"/v1/messages/{sent}")).json()
            listed = (await p.get("/v1/messages")).json()["messages"]
    assert retried.status_code == 202, retried.text
    assert retried.json()["messageId"] == sent
    assert [t["eventType"] for t in message["transitions"]] == [
        "created",
        "ack",
        "delivery_report",
    ]
    assert [m["messageId"] for m in listed] == [sent]


async def test_a_retry_taking_over_a_dead_replicas_batch_sends_the_batch_it_stored(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    body = json.dumps({"messages": [SMS, {**SMS, "receiver": "+27820000002"}]}).encode()
    with trio.fail_after(30):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            ids = await dead_run(target, "/v1/messages/batch", body, "k-batch")
            batch_id, first, second = ids.new(), ids.new(), ids.new()
            await p.store.create_messages(
                [
                    stored_sms(unique, first, batch_id),
                    stored_sms(unique, second, batch_id, receiver="+27820000002"),
                ],
                batch=NewBatch(tenant="acme", batch_id=batch_id),
            )
            retried = await post_raw(p, "/v1/messages/batch", body, "k-batch")
            assert retried.status_code == 202, retried.text
            await p.wait_for_status(first, "DELIVERED")
            await p.wait_for_status(second, "DELIVERED")
            listed = (await p.get("/v1/messages")).json()["messages"]
    assert retried.json()["batchId"] == batch_id
    assert [m["messageId"] for m in retried.json()["messages"]] == [first, second]
    assert sorted(m["messageId"] for m in listed) == sorted([first, second])


async def test_a_retry_taking_over_a_dead_replicas_failed_request_fails_and_frees_the_key(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    body = json.dumps(SMS).encode()
    with trio.fail_after(30):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            ids = await dead_run(target, "/v1/messages", body, "k-refused")
            # Its publish was refused and it marked the message failed, then died
            # before answering 503 and freeing the key.
            refused = ids.new()
            await p.store.create_messages([stored_sms(unique, refused)])
            await p.store.apply_event(
                refused,
                event_id=None,
                event_type="publish_failed",
                proposed_status=MessageStatus.DELIVERY_FAILED,
                occurred_at=datetime.now(UTC).replace(tzinfo=None),
                raw={"error": "the broker refused the message"},
            )
            taken_over = await post_raw(p, "/v1/messages", body, "k-refused")
            retried = await post_raw(p, "/v1/messages", body, "k-refused")
            assert retried.status_code == 202, retried.text
            await p.wait_for_status(retried.json()["messageId"], "DELIVERED")
    assert taken_over.status_code == 503, taken_over.text
    assert taken_over.json()["code"] == "BROKER_UNAVAILABLE"
    assert retried.json()["messageId"] != refused
