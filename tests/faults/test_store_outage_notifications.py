"""PostgreSQL restarted mid-stream under the Notifications API: its replicas answer 503
with ``Retry-After`` meanwhile and accept nothing they cannot keep, the fan-out jobs,
the MQTT transport's outcomes and the dispatcher's events are retried, nothing is
missing.

The pipeline is ``test_kill_notifications.py``'s (two ``NotificationsApi`` replicas
with both backends, an ``MqttTransport`` to Mosquitto, the Messaging API pipeline the
``channels`` backend sends through, a form with two members reached over SMS), every
worker on a PostgreSQL cluster of the test's own (``PrivatePostgres``). Once
``KILL_AFTER`` of the 400 notifications (``FAULTS_API_MESSAGES``) are accepted, while
fan-out jobs and the transport's acks are still flowing, the cluster is stopped for
``OUTAGE`` seconds and started again. A POST the replicas refuse is sent again.

What must hold: every answer is a 201 or a 503 problem with ``Retry-After`` (some of
them 503s, so the outage was met), or a 409 with ``Retry-After`` for a retry whose
``Idempotency-Key`` the store could not release; every accepted notification can be read back, is
at the MQTT subscriber, and has each member's message DELIVERED, its ``deliveries``
settled (``check_both_ends``); nothing of the test's is dead-lettered. A member's
message may go twice, when a fan-out job sent it and could not record it before the
store went (counted, not a failure).
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import trio

from tests.faults.harness import (
    PUT_OFF,
    PrivatePostgres,
    Tally,
    WebhookReceiver,
    fleet_in_tmp,
    own_broker,
    put_off_counts,
    refusal,
    subscribe,
    take_dead_letters,
)
from tests.faults.test_kill_notifications import (
    check_both_ends,
    count_published,
    drained,
    form_topic,
    notifications_pipeline,
    notifications_queues,
    registry,
    send_through,
)
from tests.transports.mqtt.conftest import quick_settings
from vumi_like.transports.mqtt import open_mqtt_client

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

# Put off (a store the worker could not reach), or retried (a fan-out job whose store
# call failed: its retry policy's "retrying later").
RETRIED = (PUT_OFF, "retrying later")

OUTAGE = 5.0  # seconds PostgreSQL stays down
REPLICAS = ("notifications0", "notifications1")


async def test_postgres_restart_mid_stream_loses_no_notification(
    services: None, mosquitto: tuple[str, int], unique: str
) -> None:
    receiver = WebhookReceiver()
    delivered = receiver.tally("DELIVERED")
    accepted: set[str] = set()
    failures: list[str] = []
    refusals: Counter[str] = Counter()
    at_stop: dict[str, int] = {}
    times: dict[str, float] = {}

    async def note_refusal(answer: httpx.Response) -> None:
        if answer.status_code != 201:
            await answer.aread()
            refusals[refusal(answer)] += 1

    with PrivatePostgres() as postgres:
        store = {"store_url": postgres.url, "store_statement_timeout": 2}
        async with (
            own_broker(notifications_queues(f"{unique}-")) as broker,
            open_mqtt_client(quick_settings(mosquitto[1], host=mosquitto[0])) as device,
        ):
            await device.wait_connected()
            await device.subscribe(form_topic(unique), qos=1)
            published = Tally()

            async def restart_postgres() -> None:
                at_stop.update(
                    accepted=len(accepted),
                    published=len(published.arrived),
                    delivered=len(delivered.arrived),
                )
                times["stopping"] = trio.current_time()
                await trio.to_thread.run_sync(postgres.stop)
                await trio.sleep(OUTAGE)
                await trio.to_thread.run_sync(postgres.start)
                times["started"] = trio.current_time()

            with fleet_in_tmp() as fleet:
                notifications_pipeline(fleet, unique, store, mosquitto, request_timeout=5)
                async with trio.open_nursery() as nursery:
                    await nursery.start(receiver.serve)
                    nursery.start_soon(count_published, device, published)
                    await fleet.wait_healthy()
                    await registry(store)
                    await subscribe(fleet.url("api0"), receiver, "DELIVERED")
                    times["posting"] = trio.current_time()
                    await send_through(
                        fleet, accepted, failures, restart_postgres, on_answer=note_refusal
                    )
                    times["posted"] = trio.current_time()
                    published.sent = set(accepted)
                    outcomes = await drained(fleet, accepted, published, delivered)
                    times["drained"] = trio.current_time()
                    nursery.cancel_scope.cancel()
                put_off = put_off_counts(
                    fleet, (*REPLICAS, "dispatcher"), f"{unique}-", events=RETRIED
                )
            letters = await take_dead_letters(broker, unique)

    print(
        f"store stopped after {at_stop['accepted']} accepted, "
        f"{at_stop['published']} at the subscriber, "
        f"{at_stop['delivered']} members messages DELIVERED; "
        f"down {times['started'] - times['stopping']:.1f} s",
        f"| POSTs took {times['posted'] - times['posting']:.1f} s, the rest arrived "
        f"{times['drained'] - times['posted']:.1f} s after",
        f"| refused meanwhile: {dict(refusals)}",
        f"| put off or retried meanwhile: {dict(put_off)}",
    )
    check_both_ends(accepted, published, delivered, outcomes, letters, failures)
    # Every refusal was the store's, a 503 problem the client may retry, or a 409 for a
    # retry whose Idempotency-Key the store could not release (taken over
    # request_timeout + 10 s later); and the POSTs met the outage.
    unavailable = "503 application/problem+json STORE_UNAVAILABLE Retry-After: 5"
    in_use = "409 application/problem+json IDEMPOTENCY_KEY_IN_USE Retry-After: 1"
    assert unavailable in refusals, "no POST was refused while PostgreSQL was down"
    assert set(refusals) <= {unavailable, in_use}
    assert set(failures) <= {"503 Retry-After: 5", "409 Retry-After: 1"}
    # The work behind the 201s met it too: fan-out jobs, the MQTT transport's acks and
    # the dispatcher's events were put off or retried, none dead-lettered.
    for queue in ("messaging.notifications", "mqtt.event", "messaging.event"):
        assert put_off[queue], f"nothing on {queue} met the outage: {dict(put_off)}"
