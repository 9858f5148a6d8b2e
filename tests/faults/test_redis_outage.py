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

import functools

import attrs
import pytest
import trio

from tests.faults.harness import (
    MESSAGES,
    SMPP,
    PrivateRedis,
    Tally,
    envelope_path,
    envelope_queues,
    event_tallies,
    fault_mid_stream,
    fleet_in_tmp,
    nothing_missing,
    outbound,
    own_broker,
    redis_cache,
    send_receipts,
    smpp_config,
    take_dead_letters,
    transport_queues,
)
from tests.transports.smpp.smsc import FakeSmsc

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

OUTAGE = 8.0  # seconds Redis stays down (a command gives up after 3 x 1 s)
OUTAGE_AFTER = 0.2  # the share of messages acked before Redis is stopped


async def test_redis_stopped_mid_stream_router_retries_and_recovers(
    services: None, unique: str
) -> None:
    app, transport, queues = envelope_queues(unique)
    messages = [outbound(unique, i, transport) for i in range(MESSAGES)]
    acks, delivered, on_event = event_tallies({m.message_id for m in messages})
    with PrivateRedis() as redis:
        outage = Outage(redis, acks)
        async with own_broker(queues) as broker:
            with fleet_in_tmp() as fleet:
                envelope_path(fleet, unique, app, transport, redis.url)
                await fleet.wait_healthy()
                await fault_mid_stream(
                    broker,
                    app,
                    messages,
                    on_event,
                    acks,
                    delivered,
                    fault=outage.stop_and_continue,
                    after=OUTAGE_AFTER,
                )
                router_log = fleet.log_text("router")
                fleet.check_alive()
            letters = await take_dead_letters(broker, unique)
    print(f"acks by the end of the outage: {outage.acked_by_the_end}")
    nothing_missing(letters, {"acks": acks, "delivered reports": delivered})
    # Degraded loudly, and retried rather than dead-lettering.
    assert "service unavailable: retrying later" in router_log
    assert "CacheUnavailable" in router_log


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
        outage = Outage(redis, acks)
        async with (
            own_broker(transport_queues(transport)) as broker,
            trio.open_nursery() as smsc_nursery,
        ):
            await smsc_nursery.start(smsc.serve)
            with fleet_in_tmp() as fleet:
                config = smpp_config(transport, smsc, redis_cache(unique, redis.url))
                fleet.add("smpp", SMPP, config)
                await fleet.wait_healthy()
                await fault_mid_stream(
                    broker,
                    transport,
                    messages,
                    on_event,
                    acks,
                    delivered,
                    receipts,
                    fault=outage.stop_and_continue,
                    after=OUTAGE_AFTER,
                    beside=[functools.partial(send_receipts, smsc, receipts)],
                )
                transport_log = fleet.log_text("smpp")
                fleet.check_alive()
            letters = await take_dead_letters(broker, unique)
            smsc_nursery.cancel_scope.cancel()
    print(f"acks by the end of the outage: {outage.acked_by_the_end}")
    tallies = {"acks": acks, "delivered reports": delivered, "receipts answered": receipts}
    nothing_missing(letters, tallies)
    assert "provider id not stored yet: waiting for the cache" in transport_log


@attrs.define
class Outage:
    """A fault for ``fault_mid_stream``: ``redis`` stopped for ``OUTAGE`` seconds, and
    how many messages were acked by the time it answered again."""

    redis: PrivateRedis
    acks: Tally
    acked_by_the_end: int = 0

    async def stop_and_continue(self) -> None:
        self.redis.pause()
        await trio.sleep(OUTAGE)
        self.acked_by_the_end = len(self.acks.arrived)
        self.redis.resume()
