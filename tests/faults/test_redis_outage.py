"""Redis stopped mid-stream: a worker that uses it degrades with clear errors and
retries, and recovers when it returns; no message is lost.

Which workers use Redis: the message cache (``message_cache_class: redis``) of the
``ToAddressRouter``, of the provider transports and of the Turn Channels API, and the
transports' shared rate limiter (``rate_limit_redis_url``, which falls back to a limit
in each process while Redis is away; ``tests/transports/test_rate_limit.py``). Two are
here, each with its cache in a redis-server of the test's own (``PrivateRedis``),
stopped (SIGSTOP: every command times out) for a few seconds while 5,000 messages
flow, then continued: the router, on every message's path, and the SMPP transport,
whose receipts are matched through the cache.

Meanwhile the router can neither record where an outbound came from nor look up where
an event goes: each such envelope is put off on the broker (``ServiceUnavailable``, a
warning in the log), and goes through once Redis answers again. Every message gets its
ack and its delivered report at the application; nothing is dead-lettered.

A Redis that restarts without persistence is another matter: the routes it held are
gone, and the events of outbounds routed before it went down are dead-lettered as
"event for unknown outbound" (with the reason; the messages themselves were sent). A
router's Redis wants persistence (RDB or AOF), as ``docs/faults.md`` says.
"""

from __future__ import annotations

import os

import pytest
import trio

from tests.faults.harness import (
    PrivateRedis,
    Tally,
    consume_events,
    envelope_path,
    envelope_queues,
    event_tallies,
    fleet_in_tmp,
    outbound,
    own_broker,
    publish_all,
    redis_cache,
    send_receipts,
    take_dead_letters,
    transport_queues,
)
from tests.transports.smpp.smsc import FakeSmsc

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

MESSAGES = int(os.environ.get("FAULTS_MESSAGES", "5000"))
OUTAGE = 8.0  # seconds Redis stays down (a command gives up after 3 x 1 s)
DRAIN_TIMEOUT = 90


async def test_redis_stopped_mid_stream_router_retries_and_recovers(
    services: None, unique: str
) -> None:
    app, transport, queues = envelope_queues(unique)
    messages = [outbound(unique, i, transport) for i in range(MESSAGES)]
    acks, delivered, on_event = event_tallies({m.message_id for m in messages})
    with PrivateRedis() as redis:
        async with own_broker(queues) as broker:
            with fleet_in_tmp() as fleet:
                envelope_path(fleet, unique, app, transport, redis.url)
                await fleet.wait_healthy()
                async with trio.open_nursery() as nursery:
                    await nursery.start(consume_events, broker, f"{app}.event", on_event)
                    nursery.start_soon(
                        publish_all, broker, f"{app}.outbound", [m.to_json() for m in messages]
                    )
                    with trio.fail_after(60):
                        await acks.wait_count(MESSAGES // 5)
                    redis.pause()
                    await trio.sleep(OUTAGE)
                    during = len(acks.arrived)
                    redis.resume()
                    with trio.move_on_after(DRAIN_TIMEOUT):
                        await delivered.wait_all()
                        await acks.wait_all()
                    nursery.cancel_scope.cancel()
                router_log = fleet.log_text("router")
                fleet.check_alive()
            letters = await take_dead_letters(broker, unique)
    print(
        acks.report("acks"),
        "|",
        delivered.report("delivered reports"),
        f"| acks by the end of the outage: {during}",
    )
    assert not letters, [letter.summary() for letter in letters]
    # Degraded loudly, and retried rather than dead-lettering.
    assert "service unavailable: retrying later" in router_log
    assert "CacheUnavailable" in router_log
    assert not delivered.missing, delivered.report("delivered reports")
    assert not acks.missing, acks.report("acks")


async def test_redis_stopped_mid_stream_smpp_transport_keeps_every_provider_id(
    services: None, unique: str
) -> None:
    """The SMPP transport's provider ids are in Redis: while it is stopped, a message the
    SMSC took cannot have its id recorded, and its receipt cannot be looked up. Each
    waits for Redis (the send's delivery held, with a warning; the receipt answered
    ESME_RX_T_APPN, so the SMSC sends it again); every message acked and reported
    delivered."""
    transport = f"{unique}-smpp"
    messages = [outbound(unique, i, transport) for i in range(MESSAGES)]
    acks, delivered, on_event = event_tallies({m.message_id for m in messages})
    smsc = FakeSmsc()
    receipts = Tally()  # receipts the ESME answered, by the SMSC's message id
    with PrivateRedis() as redis:
        async with (
            own_broker(transport_queues(transport)) as broker,
            trio.open_nursery() as smsc_nursery,
        ):
            await smsc_nursery.start(smsc.serve)
            with fleet_in_tmp() as fleet:
                fleet.add(
                    "smpp",
                    "vumi_like.transports.smpp.SmppTransport",
                    {
                        "transport_name": transport,
                        "host": "127.0.0.1",
                        "port": smsc.port,
                        "system_id": smsc.system_id,
                        "password": smsc.password,
                        "worker_concurrency": 50,
                        **redis_cache(unique, redis.url),
                    },
                )
                await fleet.wait_healthy()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_receipts, smsc, receipts)
                    await nursery.start(consume_events, broker, f"{transport}.event", on_event)
                    bodies = [m.to_json() for m in messages]
                    nursery.start_soon(publish_all, broker, f"{transport}.outbound", bodies)
                    with trio.fail_after(60):
                        await acks.wait_count(MESSAGES // 5)
                    redis.pause()
                    await trio.sleep(OUTAGE)
                    during = len(acks.arrived)
                    redis.resume()
                    with trio.move_on_after(DRAIN_TIMEOUT):
                        await acks.wait_all()
                        await delivered.wait_all()
                        await receipts.wait_all()
                    nursery.cancel_scope.cancel()
                transport_log = fleet.log_text("smpp")
                fleet.check_alive()
            letters = await take_dead_letters(broker, unique)
            smsc_nursery.cancel_scope.cancel()
    print(
        acks.report("acks"),
        "|",
        delivered.report("delivered reports"),
        f"| acks by the end of the outage: {during}",
    )
    assert not letters, [letter.summary() for letter in letters]
    assert "provider id not stored yet: waiting for the cache" in transport_log
    assert not acks.missing, acks.report("acks")
    assert not delivered.missing, delivered.report("delivered reports")
