"""``kill -9`` of a Notifications API replica while notifications flow; it is restarted,
and nothing is missing at the end of either of its backends' paths.

The pipeline, each worker a process on RabbitMQ and PostgreSQL: two ``NotificationsApi``
replicas with both backends, an ``MqttTransport`` to the shared Mosquitto, and the
Messaging API pipeline the ``channels`` backend sends through (API, dispatcher, router,
simulator). A form has an author and two members, each reached over SMS by their
contact settings. The test, as the author, POSTs 400 notifications to the form
(``FAULTS_API_MESSAGES``: the HTTP API is the slow part of this path, as in
``test_kill.py``) over the two replicas in turn; a POST that fails is sent again to
the other one. Once ``KILL_AFTER`` of them are accepted, replica 0 is killed and
started again. The replicas also run the fan-out jobs and take the MQTT transport's
events, so the kill lands on all three kinds of work.

Where each accepted notification (answered 201) must arrive:

* **mqtt**: on the form's topic, at a QoS 1 subscriber (by the payload's ``id``), and
  its ``deliveries.mqtt`` says ``published`` (the transport's ack, taken by a replica);
* **channels**: a message to each member, DELIVERED (the dispatcher's webhook at the
  test's receiver), and ``deliveries.channels`` says ``done``, with each member's
  message id and status DELIVERED.

Each POST has an ``Idempotency-Key`` of its own, sent again with its retry. A POST
whose answer the kill cut off may have stored and published its notification; its
retry is refused (409) until the dead replica's claim on the key is taken over, and
then finishes that notification rather than making a second one: every notification
published must be one a client was answered with. A fan-out job that died between
sending a member's message and recording it is handed out again as the same attempt,
which finds that message under its id: a member's message under an id no outcome
records fails the test; one sent twice under its id is counted and printed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

from tests.faults.harness import (
    DRAIN_TIMEOUT,
    JWT_SECRET,
    KILL_AFTER,
    POSTGRES_URL,
    TENANT,
    Fleet,
    Tally,
    WebhookReceiver,
    api_channels,
    api_pipeline,
    api_queues,
    drop_schema,
    fleet_in_tmp,
    own_broker,
    post_all,
    subscribe,
    take_dead_letters,
    transport_queues,
)
from tests.transports.mqtt.conftest import quick_settings
from vumi_like.auth import AuthSettings, TokenService
from vumi_like.dlq import DeadLetter
from vumi_like.stores import StoreSettings
from vumi_like.transports.mqtt import TrioMqttClient, open_mqtt_client

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

NOTIFICATIONS = int(os.environ.get("FAULTS_API_MESSAGES", "400"))
NOTIFICATIONS_API = "vumi_like.applications.notifications.NotificationsApi"
MQTT = "vumi_like.transports.mqtt.MqttTransport"
PREFIX = "/api/v1/messaging"
AUTHOR, MEMBERS = "author", ("member1", "member2")
FORM = "1337"


async def test_kill_9_of_notifications_replica_loses_nothing(
    services: None, mosquitto: tuple[str, int], unique: str
) -> None:
    schema = unique.replace("-", "_")
    store = {"store_url": POSTGRES_URL, "store_schema": schema}
    receiver = WebhookReceiver()
    delivered = receiver.tally("DELIVERED")
    accepted: set[str] = set()
    failures: list[str] = []
    try:
        async with (
            own_broker(notifications_queues(f"{unique}-")) as broker,
            open_mqtt_client(quick_settings(mosquitto[1], host=mosquitto[0])) as device,
        ):
            await device.wait_connected()
            await device.subscribe(form_topic(unique), qos=1)
            published = Tally()
            with fleet_in_tmp() as fleet:
                notifications_pipeline(fleet, unique, store, mosquitto, request_timeout=2)
                async with trio.open_nursery() as nursery:
                    await nursery.start(receiver.serve)
                    nursery.start_soon(count_published, device, published)
                    await fleet.wait_healthy()
                    await registry(store)
                    await subscribe(fleet.url("api0"), receiver, "DELIVERED")
                    await send_through(
                        fleet, accepted, failures, functools.partial(kill_and_restart, fleet)
                    )
                    published.sent = set(accepted)
                    outcomes = await drained(fleet, accepted, published, delivered)
                    nursery.cancel_scope.cancel()
            letters = await take_dead_letters(broker, unique)
    finally:
        drop_schema(POSTGRES_URL, schema)

    # A fan-out job handed out again after the kill is the same attempt: it finds the
    # messages the killed replica sent and did not record, under the same ids.
    check_both_ends(accepted, published, delivered, outcomes, letters, failures, resent=False)


def notifications_queues(prefix: str) -> list[str]:
    """Every queue of the pipeline ``notifications_pipeline`` starts with ``prefix``."""
    connector, mqtt = f"{prefix}messaging", f"{prefix}mqtt"
    return [*api_queues(prefix), f"{connector}.notifications", *transport_queues(mqtt)]


def form_topic(unique: str) -> str:
    """The MQTT topic of the form's notifications, under the transport's ``unique`` base."""
    return f"/{unique}/xform/{FORM}/messages/publish"


def notifications_pipeline(
    fleet: Fleet,
    unique: str,
    store: dict[str, Any],
    mosquitto: tuple[str, int],
    *,
    request_timeout: float,
) -> None:
    """Start the Messaging API pipeline (``api_pipeline``), two Notifications API
    replicas with both backends (``notifications0`` and ``1``) and an MQTT transport
    to ``mosquitto`` (``mqtt``, topics under ``unique``), all on ``store``, with
    ``<unique>-`` on every queue (``notifications_queues``).

    A POST that dies with its replica, or meets a store that cannot release its
    ``Idempotency-Key``, leaves the key claimed, and its retry is a 409 until the claim
    is taken over, ``request_timeout`` + 10 s later: the tests keep it short."""
    prefix = f"{unique}-"
    connector, mqtt = f"{prefix}messaging", f"{prefix}mqtt"
    api_pipeline(fleet, prefix, store)
    for n in range(2):
        fleet.add(
            f"notifications{n}",
            NOTIFICATIONS_API,
            {
                "auth": {"jwt_secret": JWT_SECRET},
                "backends": ["mqtt", "channels"],
                "mqtt_connector": mqtt,
                "connector_name": connector,
                "channels": api_channels(prefix),
                "request_timeout": request_timeout,
                **store,
            },
        )
    fleet.add(
        "mqtt",
        MQTT,
        {
            "transport_name": mqtt,
            "host": mosquitto[0],
            "port": mosquitto[1],
            "topic_base": unique,
            "qos": 1,
        },
    )


def check_both_ends(
    accepted: set[str],
    published: Tally,
    delivered: Tally,
    outcomes: dict[str, dict[str, Any]],
    letters: list[DeadLetter],
    failures: list[str],
    *,
    resent: bool = True,
) -> None:
    """Print what arrived at each end; fail on a dead letter, on an accepted
    notification missing at either end, or on one whose deliveries are not settled;
    unless ``resent``, on a member's message sent again under an id of its own."""
    recorded = {
        recipient["message_id"]
        for outcome in outcomes.values()
        for recipient in outcome["channels"].get("recipients", {}).values()
    }
    channel_messages = Tally(sent=recorded, arrived=delivered.arrived)
    print(
        published.report("notifications at the MQTT subscriber"),
        f"| notifications published but not accepted (answer cut off): "
        f"{len(published.unexpected)}",
        f"| {channel_messages.report('members messages DELIVERED')}",
        f"| sent again by a fan-out job cut off: {len(channel_messages.unexpected)}",
        f"| failed POSTs retried: {len(failures)}",
    )
    assert len(accepted) == NOTIFICATIONS
    assert not letters, [letter.summary() for letter in letters]
    assert not published.missing, published.report("notifications at the MQTT subscriber")
    assert not published.unexpected, published.report("notifications at the MQTT subscriber")
    assert len(recorded) == len(MEMBERS) * NOTIFICATIONS
    assert not channel_messages.missing, channel_messages.report("members messages DELIVERED")
    if not resent:
        assert not channel_messages.unexpected, channel_messages.report("members messages")
    wrong = {pk: outcome for pk, outcome in outcomes.items() if not settled(outcome)}
    assert not wrong, f"{len(wrong)} not settled, such as {next(iter(wrong.items()))}"


async def registry(store: dict[str, Any]) -> None:
    """The form, its author and two members, each reached over SMS."""
    message_store = StoreSettings(**store).make_store()
    await message_store.open()
    try:
        for n, username in enumerate((AUTHOR, *MEMBERS)):
            await message_store.add_notification_user(
                TENANT, username, username.title(), f"{username}-client"
            )
            await message_store.set_party(TENANT, username, "sms", f"+2783{n:07d}")
        await message_store.create_notification_target(
            TENANT, "xform", FORM, "Form Name", "Form_ID", AUTHOR
        )
        for username in MEMBERS:
            await message_store.set_notification_member(TENANT, "xform", FORM, username, "view")
    finally:
        await message_store.aclose()


def as_user(username: str) -> dict[str, str]:
    token = TokenService(AuthSettings(jwt_secret=JWT_SECRET)).issue(f"{username}-client", TENANT)
    return {"Authorization": f"Bearer {token['access_token']}"}


def notification(i: int) -> dict[str, Any]:
    return {"target_type": "xform", "target_id": FORM, "message": f"fault test {i}"}


async def kill_and_restart(fleet: Fleet) -> None:
    """``kill -9`` of replica 0, and its start again."""
    fleet.kill("notifications0")
    await trio.sleep(1)
    fleet.restart("notifications0")
    await fleet.wait_healthy("notifications0")


async def send_through(
    fleet: Fleet,
    accepted: set[str],
    failures: list[str],
    fault: Callable[[], Awaitable[object]],
    *,
    on_answer: Callable[[httpx.Response], Awaitable[None]] | None = None,
) -> None:
    """POST the notifications over both replicas; run ``fault`` once ``KILL_AFTER`` of
    them are accepted. ``on_answer`` sees every answer a replica gives."""
    reached = trio.Event()

    async def fault_when_reached() -> None:
        await reached.wait()
        await fault()

    hooks = {"response": [on_answer]} if on_answer is not None else {}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=fleet.url(name),
                    headers=as_user(AUTHOR),
                    timeout=30,
                    event_hooks=hooks,
                )
            )
            for name in ("notifications0", "notifications1")
        ]
        async with trio.open_nursery() as senders:
            senders.start_soon(fault_when_reached)
            senders.start_soon(
                functools.partial(
                    post_all,
                    clients,
                    NOTIFICATIONS,
                    accepted,
                    on_failure=failures,
                    milestone=(int(NOTIFICATIONS * KILL_AFTER), reached),
                    path=PREFIX,
                    body=notification,
                    created=201,
                    id_key="id",
                )
            )


async def count_published(device: TrioMqttClient, published: Tally) -> None:
    """Each notification ``device`` receives, by its payload's id, acknowledged at once."""
    async for message in device.messages:
        published.arrive(str(json.loads(message.payload)["id"]))
        device.ack(message)


def settled(outcome: dict[str, Any]) -> bool:
    """Whether a notification's deliveries say it reached everyone, by both backends."""
    channels = outcome["channels"]
    statuses = {name: r["status"] for name, r in channels.get("recipients", {}).items()}
    return (
        outcome["mqtt"]["state"] == "published"
        and channels["state"] == "done"
        and statuses == dict.fromkeys(MEMBERS, "DELIVERED")
    )


async def drained(
    fleet: Fleet, accepted: set[str], published: Tally, delivered: Tally
) -> dict[str, dict[str, Any]]:
    """Wait (``DRAIN_TIMEOUT`` at most) until every accepted notification is on the
    topic, and its deliveries settled; each one's ``deliveries`` as last read."""
    outcomes: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(
        base_url=fleet.url("notifications1"), headers=as_user(AUTHOR), timeout=30
    ) as client:
        with trio.move_on_after(DRAIN_TIMEOUT):
            await published.wait_all()
            while len(delivered.arrived) < len(MEMBERS) * len(accepted):
                await delivered.changed.wait()
            for pk in sorted(accepted, key=int):
                while True:
                    answer = await client.get(f"{PREFIX}/{pk}")
                    assert answer.status_code == 200, answer.text
                    outcomes[pk] = answer.json()["deliveries"]
                    if settled(outcomes[pk]):
                        break
                    await trio.sleep(0.2)
        for pk in accepted - outcomes.keys():
            answer = await client.get(f"{PREFIX}/{pk}")
            assert answer.status_code == 200, f"accepted, not kept: {pk} {answer.text}"
            outcomes[pk] = answer.json()["deliveries"]
    return outcomes
