"""``kill -9`` of a router, a transport, an API replica and a dispatcher while messages
flow; each is restarted, and nothing is missing at the end of the path. (The provider
transports' kills are in ``test_kill_transports.py``.)

Router and transport: 5,000 outbound envelopes (``FAULTS_MESSAGES``) are published
straight onto the application's outbound queue, through a ``ToAddressRouter`` to a
``SimulatorTransport`` (ack and DELIVERED report at once). The end of the path is the
application's event queue: every message must get its ack and its ``delivered``
report there. The router's message cache is Redis (the shared one, under a key prefix
of the test's), as for any router with replicas or restarts: with the in-process
cache, events of outbounds routed before the kill would be dead-lettered as unknown.

API replica and dispatcher: the Messaging API pipeline (two API replicas, dispatcher,
router, simulator) on PostgreSQL, a client POSTing with an ``Idempotency-Key`` each,
and a webhook receiver. The HTTP API accepts about 120 messages/s on this 2-core
machine, so these send 400 messages (``FAULTS_API_MESSAGES``; 5,000 locally if you
have the minutes). The end of the path is the receiver: every accepted message must
get its DELIVERED webhook, and ``GET /v1/messages/{id}`` must say DELIVERED.
Webhooks may come twice: a repeat is counted, and must carry the first one's
``webhook-id`` (the dispatcher keeps it stable across retries and re-queues), by
which a receiver drops it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import trio

from tests.faults.harness import (
    AMQP_URL,
    DRAIN_TIMEOUT,
    KILL_AFTER,
    MESSAGES,
    POSTGRES_URL,
    REDIS_URL,
    Fleet,
    WebhookReceiver,
    api_pipeline,
    api_queues,
    drop_schema,
    envelope_path,
    envelope_queues,
    event_tallies,
    final_statuses,
    fleet_in_tmp,
    kill_mid_stream,
    nothing_missing,
    outbound,
    own_broker,
    post_all,
    stored_statuses,
    subscribe,
    take_dead_letters,
)
from tests.stores.conftest import libpq_url
from tests.tcp_proxy import TcpProxy
from vumi_like.outbound.outbox import ABANDONED_REASON
from vumi_like.outbound.unsent import STORE_BACK_GRACE, UNSENT_MARGIN

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

API_MESSAGES = int(os.environ.get("FAULTS_API_MESSAGES", "400"))


@pytest.mark.parametrize("victim", ["router", "sms"])
async def test_kill_9_of_router_or_transport_loses_nothing(
    services: None, unique: str, victim: str
) -> None:
    app, transport, queues = envelope_queues(unique)
    messages = [outbound(unique, i, transport) for i in range(MESSAGES)]
    acks, delivered, on_event = event_tallies({m.message_id for m in messages})
    async with own_broker(queues) as broker:
        with fleet_in_tmp() as fleet:
            envelope_path(fleet, unique, app, transport, REDIS_URL)
            await fleet.wait_healthy()
            await kill_mid_stream(broker, fleet, victim, app, messages, on_event, acks, delivered)
        letters = await take_dead_letters(broker, unique)
    nothing_missing(letters, {"acks": acks, "delivered reports": delivered})


@pytest.mark.parametrize("victim", ["api0", "dispatcher"])
async def test_kill_9_of_api_replica_or_dispatcher_loses_nothing(
    services: None, unique: str, victim: str
) -> None:
    schema = unique.replace("-", "_")
    store = {"store_url": POSTGRES_URL, "store_schema": schema}
    receiver = WebhookReceiver()
    accepted: set[str] = set()
    failures: list[str] = []
    delivered = receiver.tally("DELIVERED")
    try:
        async with own_broker(api_queues(f"{unique}-")) as broker:
            with fleet_in_tmp() as fleet:
                # A request killed with its replica leaves its Idempotency-Key claimed;
                # the claim is taken over request_timeout + 10 s later, so keep it short.
                api = {"request_timeout": 2}
                api_pipeline(fleet, f"{unique}-", store, api_replicas=2, api=api)
                async with trio.open_nursery() as nursery:
                    await nursery.start(receiver.serve)
                    await fleet.wait_healthy()
                    statuses = await send_through_kill(fleet, victim, receiver, accepted, failures)
                    nursery.cancel_scope.cancel()
            letters = await take_dead_letters(broker, unique)
        stored = stored_statuses(POSTGRES_URL, schema)
    finally:
        drop_schema(POSTGRES_URL, schema)
    repeats = sum(n - 1 for n in receiver.ids.values())
    print(
        delivered.report("DELIVERED webhooks"),
        f"| failed POSTs retried: {len(failures)} | webhook repeats (same id): {repeats}",
        f"| stored, by status: {stored}",
    )
    assert len(accepted) == API_MESSAGES
    assert not letters, [letter.summary() for letter in letters]
    assert not delivered.missing, delivered.report("DELIVERED webhooks")
    assert statuses == {"DELIVERED": API_MESSAGES}
    ids_per_message: dict[str, set[str]] = {}
    for attempt in receiver.attempts:
        if attempt.status_code == "DELIVERED":
            ids_per_message.setdefault(attempt.message_id, set()).add(attempt.webhook_id)
    assert all(len(ids) == 1 for ids in ids_per_message.values())
    # A request killed with its replica is taken over by its retry on the other
    # replica, which finishes what the dead run stored under the same ids: no message
    # outside those accepted was delivered, and none was left QUEUED in the store.
    assert not delivered.unexpected
    assert stored == {"DELIVERED": API_MESSAGES}


async def test_kill_9_of_api_replica_leaves_no_message_queued_for_good(
    services: None, unique: str
) -> None:
    """Clients without an Idempotency-Key. The replica to be killed reaches RabbitMQ
    through a proxy, which at the kill has been dropping what it sends for half a
    second: its requests in flight have stored their messages and published them into
    the void, waiting for confirms. They die unsent, and their POSTs are sent again,
    as new requests. The replicas' sweep marks what the killed runs stored and never
    published DELIVERY_FAILED, and their subscriber gets its DELIVERY_FAILED webhook;
    nothing stays QUEUED."""
    schema = unique.replace("-", "_")
    store = {"store_url": POSTGRES_URL, "store_schema": schema}
    receiver = WebhookReceiver()
    accepted: set[str] = set()
    failures: list[str] = []
    delivered = receiver.tally("DELIVERED")
    told_failed = receiver.tally("DELIVERY_FAILED")
    # Unsent rows are swept request_timeout + UNSENT_MARGIN after they were stored,
    # by a replica that has reached the store for STORE_BACK_GRACE.
    api = {"request_timeout": 2, "unsent_sweep_interval": 0.5}
    swept_within = 2 + UNSENT_MARGIN + STORE_BACK_GRACE + 10
    broker_url = urlsplit(AMQP_URL)
    proxy = TcpProxy(broker_url.port or 5672)
    try:
        async with own_broker(api_queues(f"{unique}-")) as broker:
            with fleet_in_tmp() as fleet:
                async with trio.open_nursery() as nursery:
                    await nursery.start(proxy.serve)
                    proxied = broker_url._replace(netloc=f"guest:guest@127.0.0.1:{proxy.port}")
                    api_each = [{"amqp_url": urlunsplit(proxied)}]
                    api_pipeline(
                        fleet, f"{unique}-", store, api_replicas=2, api=api, api_each=api_each
                    )
                    await nursery.start(receiver.serve)
                    await fleet.wait_healthy()
                    statuses = await send_through_kill(
                        fleet, "api0", receiver, accepted, failures, keyed=False, proxy=proxy
                    )
                    with trio.move_on_after(swept_within):
                        while "QUEUED" in (stored := stored_statuses(POSTGRES_URL, schema)):  # noqa: ASYNC110
                            await trio.sleep(0.5)
                    told_failed.sent = abandoned_ids(POSTGRES_URL, schema)
                    with trio.move_on_after(10):
                        await told_failed.wait_all()
                    nursery.cancel_scope.cancel()
            letters = await take_dead_letters(broker, unique)
        reasons = failure_reasons(POSTGRES_URL, schema)
    finally:
        drop_schema(POSTGRES_URL, schema)
    print(
        delivered.report("DELIVERED webhooks"),
        "|",
        told_failed.report("DELIVERY_FAILED webhooks of the swept"),
        f"| failed POSTs sent again: {len(failures)} | stored, by status: {stored}",
        f"| marked failed, by reason: {reasons}",
    )
    assert len(accepted) == API_MESSAGES
    assert not letters, [letter.summary() for letter in letters]
    assert not delivered.missing, delivered.report("DELIVERED webhooks")
    assert statuses == {"DELIVERED": API_MESSAGES}
    # Nothing stays QUEUED; what is not DELIVERED is what a killed run never sent.
    assert set(stored) == {"DELIVERED", "DELIVERY_FAILED"}, stored
    assert stored["DELIVERED"] >= API_MESSAGES
    assert stored["DELIVERED"] + stored["DELIVERY_FAILED"] <= API_MESSAGES + len(failures)
    assert reasons.get(ABANDONED_REASON, 0) >= 1, reasons  # the killed runs' messages
    assert not told_failed.missing, told_failed.report("DELIVERY_FAILED webhooks")


def abandoned_ids(url: str, schema: str) -> set[str]:
    """The ids of the messages the sweep marked failed."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT message_id FROM "{schema}".message_events '
            "WHERE event_type = 'publish_failed' AND raw->>'error' = %s",
            (ABANDONED_REASON,),
        )
        return {message_id for (message_id,) in rows}


def failure_reasons(url: str, schema: str) -> dict[str, int]:
    """How many messages were marked failed for want of sending, by the reason given."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT raw->>'error', count(*) FROM \"{schema}\".message_events "
            "WHERE event_type = 'publish_failed' GROUP BY 1"
        )
        return {reason: count for reason, count in rows}


async def send_through_kill(
    fleet: Fleet,
    victim: str,
    receiver: WebhookReceiver,
    accepted: set[str],
    failures: list[str],
    *,
    keyed: bool = True,
    proxy: TcpProxy | None = None,
) -> dict[str, int]:
    """Subscribe the receiver, POST the messages, kill and restart ``victim`` after
    ``KILL_AFTER`` of them, wait for every DELIVERED webhook; the final statuses."""
    replicas = [fleet.url("api0"), fleet.url("api1")]
    headers = await subscribe(replicas[1], receiver)

    reached = trio.Event()

    async def kill_and_restart() -> None:
        await reached.wait()
        if proxy is not None:  # its publishes lost: its requests wait for confirms
            proxy.dropping = True
            await trio.sleep(0.5)
        fleet.kill(victim)
        if proxy is not None:
            proxy.cut()
            proxy.dropping = False
        await trio.sleep(1)
        fleet.restart(victim)
        await fleet.wait_healthy(victim)

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, headers=headers, timeout=30)
            )
            for url in replicas
        ]
        async with trio.open_nursery() as senders:
            senders.start_soon(kill_and_restart)
            senders.start_soon(
                functools.partial(
                    post_all,
                    clients,
                    API_MESSAGES,
                    accepted,
                    on_failure=failures,
                    milestone=(int(API_MESSAGES * KILL_AFTER), reached),
                    keyed=keyed,
                )
            )
        delivered = receiver.tally("DELIVERED")
        delivered.sent = set(accepted)
        with trio.move_on_after(DRAIN_TIMEOUT):
            await delivered.wait_all()
        return await final_statuses(clients[1], accepted)
