"""PostgreSQL restarted mid-stream: the API answers 503 with ``Retry-After`` meanwhile
and accepts nothing it cannot keep, the dispatcher retries, nothing is missing.

The store is a PostgreSQL cluster of the test's own (``PrivatePostgres``), stopped
for a few seconds while a client POSTs messages (each with an Idempotency-Key, sent
again on any 5xx) and while delivery reports of messages accepted before the stop
reach the dispatcher (the simulator reports 0.5 s after its ack). The end of the
path is the webhook receiver: every accepted message gets its DELIVERED webhook, and
its stored status says DELIVERED.
"""

from __future__ import annotations

import functools
import os

import httpx
import pytest
import trio

from tests.faults.harness import (
    PrivatePostgres,
    WebhookReceiver,
    api_pipeline,
    api_queues,
    final_statuses,
    fleet_in_tmp,
    own_broker,
    post_all,
    subscribe,
    take_dead_letters,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

MESSAGES = int(os.environ.get("FAULTS_API_MESSAGES", "400"))
OUTAGE = 5.0  # seconds PostgreSQL stays down
DRAIN_TIMEOUT = 90


async def test_postgres_restart_mid_stream_loses_nothing(services: None, unique: str) -> None:
    receiver = WebhookReceiver()
    accepted: set[str] = set()
    failures: list[str] = []
    delivered = receiver.tally("DELIVERED")
    with PrivatePostgres() as postgres:
        store = {"store_url": postgres.url, "store_statement_timeout": 2}
        async with own_broker(api_queues(f"{unique}-")) as broker:
            with fleet_in_tmp() as fleet:
                api_pipeline(
                    fleet,
                    f"{unique}-",
                    store,
                    api={"request_timeout": 5},
                    delivery_delay=0.5,
                )
                async with trio.open_nursery() as nursery:
                    await nursery.start(receiver.serve)
                    await fleet.wait_healthy()
                    headers = await subscribe(fleet.url("api0"), receiver)
                    reached = trio.Event()

                    async def restart_postgres() -> None:
                        await reached.wait()
                        await trio.to_thread.run_sync(postgres.stop)
                        await trio.sleep(OUTAGE)
                        await trio.to_thread.run_sync(postgres.start)

                    async with (
                        httpx.AsyncClient(
                            base_url=fleet.url("api0"), headers=headers, timeout=30
                        ) as client,
                        trio.open_nursery() as senders,
                    ):
                        senders.start_soon(restart_postgres)
                        senders.start_soon(
                            functools.partial(
                                post_all,
                                [client],
                                MESSAGES,
                                accepted,
                                concurrency=8,
                                on_failure=failures,
                                milestone=(MESSAGES // 3, reached),
                            )
                        )
                    delivered.sent = set(accepted)
                    with trio.move_on_after(DRAIN_TIMEOUT):
                        await delivered.wait_all()
                    async with httpx.AsyncClient(
                        base_url=fleet.url("api0"), headers=headers, timeout=30
                    ) as client:
                        statuses = await final_statuses(client, accepted)
                    nursery.cancel_scope.cancel()
                dispatcher_log = fleet.log_text("dispatcher")
            letters = await take_dead_letters(broker, unique)
    print(delivered.report("DELIVERED webhooks"), "| refused meanwhile:", sorted(set(failures)))
    assert len(accepted) == MESSAGES
    # Refused while the store was down, each with a Retry-After: 503, or 409 for a
    # retry whose key the store could not release (it is taken over after
    # request_timeout + 10 s). Nothing else failed.
    assert "503 Retry-After: 5" in failures, "no request was refused while PostgreSQL was down"
    assert {failure.split(" Retry-After")[0] for failure in failures} <= {"503", "409"}
    assert not [failure for failure in failures if failure.endswith("none")]
    # The dispatcher met the outage and retried, rather than dead-lettering.
    assert "service unavailable: retrying later" in dispatcher_log
    assert not letters, [letter.summary() for letter in letters]
    assert not delivered.missing, delivered.report("DELIVERED webhooks")
    assert statuses == {"DELIVERED": MESSAGES}
