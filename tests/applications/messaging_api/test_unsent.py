"""A request whose replica died after storing its messages and before publishing them,
with no Idempotency-Key to resume it by: its messages end DELIVERY_FAILED, not QUEUED
for good, their subscribers are told so by webhook, and nothing the API did publish is
touched."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import attrs
import structlog
import trio
from standardwebhooks import Webhook

from tests.applications.messaging_api.harness import running_pipeline, webhook_receiver
from tests.applications.messaging_api.test_idempotency import SMS, stored_sms
from tests.stores.conftest import FakeClock, StoreTarget
from vumi_like.broker import BrokerInspector
from vumi_like.outbound.outbox import ABANDONED_REASON
from vumi_like.outbound.unsent import STORE_BACK_GRACE

# Short, so that a message stored a minute ago is long abandoned.
API = {"request_timeout": 1, "unsent_sweep_interval": 0.2}
UNSENT = "SELECT message_id FROM unsent_messages"
DATE_UNSENT = "UPDATE unsent_messages SET created_at = %s WHERE message_id = %s"
CANNOT_QUEUE = "cannot queue the webhooks of messages a stopped replica never sent"


def a_minute_ago() -> FakeClock:
    """A store clock a minute behind: what it stores is long abandoned."""
    return FakeClock(datetime.now(UTC) - timedelta(minutes=1))


def unsent_ids(target: StoreTarget) -> set[str]:
    """The ids among the unsent, read straight from the test's database."""
    if target.path is not None:
        with sqlite3.connect(target.path) as lite:
            return {row[0] for row in lite.execute(UNSENT)}
    with target.psycopg_connect() as conn:
        return {row[0] for row in conn.execute(UNSENT)}


def date_unsent(target: StoreTarget, message_id: str, at: datetime) -> None:
    """Date ``message_id``'s unsent row ``at`` (naive UTC in the database)."""
    values = (at.astimezone(UTC).replace(tzinfo=None), message_id)
    if target.path is not None:
        with sqlite3.connect(target.path) as lite:
            lite.execute(DATE_UNSENT.replace("%s", "?"), values)
        return
    with target.psycopg_connect() as conn:
        conn.execute(DATE_UNSENT, values)


async def wait_struck_off(target: StoreTarget, message_id: str) -> None:
    # Polling: another process's database is all there is to watch.
    while message_id in unsent_ids(target):  # noqa: ASYNC110
        await trio.sleep(0.1)


async def test_what_a_dead_replica_stored_and_never_sent_is_marked_failed(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(STORE_BACK_GRACE + 20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique, api=API) as p,
        ):
            hook = await p.post("/v1/webhooks", {"url": receiver.hook})
            secret = hook.json()["secret"]
            # Stored a minute ago by a replica that died before publishing it.
            orphan = uuid.uuid4().hex
            async with target.open(clock=a_minute_ago()) as s:
                await s.create_messages(
                    [attrs.evolve(stored_sms(unique, orphan), context={"order": 7})]
                )
            # Sent through the API meanwhile, and held by its transport: QUEUED as long.
            sent = (await p.post("/v1/messages", SMS)).json()["messageId"]
            await wait_struck_off(target, sent)  # its replica had the broker's confirm
            await p.wait_for_status(orphan, "DELIVERY_FAILED", within=STORE_BACK_GRACE + 10)
            await p.wait_for_status(sent, "DELIVERED")
            await receiver.wait_for(lambda _: bool(receiver.of("DELIVERY_FAILED", orphan)))
            failed = (await p.get(f"/v1/messages/{orphan}")).json()
            delivered = (await p.get(f"/v1/messages/{sent}")).json()
            stored = await p.store.get_message("acme", orphan)
            assert unsent_ids(target) == set()
    assert [t["eventType"] for t in failed["transitions"]] == ["created", "publish_failed"]
    [told] = receiver.of("DELIVERY_FAILED", orphan)
    assert Webhook(secret).verify(told.raw, told.headers) == told.body
    assert told.body["reason"] == ABANDONED_REASON
    assert (told.body["channelName"], told.body["context"]) == ("sms", {"order": 7})
    assert told.body["timestamp"] == failed["transitions"][-1]["at"]
    assert not receiver.of("DELIVERY_FAILED", sent)
    assert stored is not None and stored.transitions[-1].raw == {"error": ABANDONED_REASON}
    assert [t["eventType"] for t in delivered["transitions"]] == [
        "created",
        "ack",
        "delivery_report",
    ]


async def test_webhooks_a_sweep_could_not_queue_are_queued_by_a_later_one(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    # No dispatcher: the job stays on the webhook queue for the test to read.
    with trio.fail_after(STORE_BACK_GRACE + 20):
        async with running_pipeline(pipeline_broker, target, unique, api=API, dispatchers=0) as p:
            await p.post("/v1/webhooks", {"url": "http://127.0.0.1:9/hook"})
            jobs = f"{p.connector}.webhooks"
            await pipeline_broker.delete_queue(jobs)
            orphan = uuid.uuid4().hex
            with structlog.testing.capture_logs() as logs:
                async with target.open(clock=a_minute_ago()) as s:
                    await s.create_messages([stored_sms(unique, orphan)])
                # Polling: structlog's capture has nothing to wait on.
                while not [e for e in logs if e["event"].startswith(CANNOT_QUEUE)]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            await pipeline_broker.declare_queue(jobs)
            assert await p.status_of(orphan) == "DELIVERY_FAILED"
            assert unsent_ids(target) == {orphan}  # kept for a later sweep
            # As if a sweep's time had passed since.
            date_unsent(target, orphan, datetime.now(UTC) - timedelta(minutes=1))
            await wait_struck_off(target, orphan)
            job = await pipeline_broker.get(jobs)
            stored = await p.store.get_message("acme", orphan)
    assert job is not None
    body = json.loads(job.body)["body"]
    assert (body["statusCode"], body["messageId"]) == ("DELIVERY_FAILED", orphan)
    assert body["reason"] == ABANDONED_REASON
    assert stored is not None
    assert [t.event_type for t in stored.transitions] == ["created", "publish_failed"]
