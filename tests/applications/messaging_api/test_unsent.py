"""A request whose replica died after storing its messages and before publishing them,
with no Idempotency-Key to resume it by: its messages end DELIVERY_FAILED, not QUEUED
for good, and nothing the API did publish is touched."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import trio

from tests.applications.messaging_api.harness import running_pipeline
from tests.applications.messaging_api.test_idempotency import SMS, stored_sms
from tests.stores.conftest import FakeClock, StoreTarget
from vumi_like.broker import BrokerInspector
from vumi_like.outbound.outbox import ABANDONED_REASON
from vumi_like.outbound.unsent import STORE_BACK_GRACE

# Short, so that a message stored a minute ago is long abandoned.
API = {"request_timeout": 1, "unsent_sweep_interval": 0.2}
UNSENT = "SELECT message_id FROM unsent_messages"


def unsent_ids(target: StoreTarget) -> set[str]:
    """The ids among the unsent, read straight from the test's database."""
    if target.path is not None:
        with sqlite3.connect(target.path) as lite:
            return {row[0] for row in lite.execute(UNSENT)}
    with target.psycopg_connect() as conn:
        return {row[0] for row in conn.execute(UNSENT)}


async def wait_struck_off(target: StoreTarget, message_id: str) -> None:
    # Polling: another process's database is all there is to watch.
    while message_id in unsent_ids(target):  # noqa: ASYNC110
        await trio.sleep(0.1)


async def test_what_a_dead_replica_stored_and_never_sent_is_marked_failed(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(STORE_BACK_GRACE + 20):
        async with running_pipeline(pipeline_broker, target, unique, api=API) as p:
            # Stored a minute ago by a replica that died before publishing it.
            orphan = uuid.uuid4().hex
            async with target.open(clock=FakeClock(datetime.now(UTC) - timedelta(minutes=1))) as s:
                await s.create_messages([stored_sms(unique, orphan)])
            # Sent through the API meanwhile, and held by its transport: QUEUED as long.
            sent = (await p.post("/v1/messages", SMS)).json()["messageId"]
            await wait_struck_off(target, sent)  # its replica had the broker's confirm
            await p.wait_for_status(orphan, "DELIVERY_FAILED", within=STORE_BACK_GRACE + 10)
            await p.wait_for_status(sent, "DELIVERED")
            failed = (await p.get(f"/v1/messages/{orphan}")).json()
            delivered = (await p.get(f"/v1/messages/{sent}")).json()
            stored = await p.store.get_message("acme", orphan)
            assert unsent_ids(target) == set()
    assert [t["eventType"] for t in failed["transitions"]] == ["created", "publish_failed"]
    assert stored is not None and stored.transitions[-1].raw == {"error": ABANDONED_REASON}
    assert [t["eventType"] for t in delivered["transitions"]] == [
        "created",
        "ack",
        "delivery_report",
    ]
