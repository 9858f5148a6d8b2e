"""Redis stopped mid-stream: a worker that uses it degrades with clear errors and
retries, and recovers when it returns; no message is lost.

Which workers use Redis: the message cache (``message_cache_class: redis``) of the
``ToAddressRouter``, of the provider transports and of the Turn Channels API, and the
transports' shared rate limiter (``rate_limit_redis_url``, which falls back to a limit
in each process while Redis is away; ``tests/transports/test_rate_limit.py``). The
router is the one on every message's path, so it is the one here: its cache is a
redis-server of the test's own (``PrivateRedis``), stopped (SIGSTOP: every command
times out) for a few seconds while 5,000 outbound envelopes flow to a simulator, then
continued.

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
    consume_events,
    envelope_path,
    envelope_queues,
    event_tallies,
    fleet_in_tmp,
    outbound,
    own_broker,
    publish_all,
    take_dead_letters,
)

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
