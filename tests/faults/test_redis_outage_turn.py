"""Redis stopped under two Turn Channels API replicas while messages flow both ways: they
degrade with clear answers and retries, recover when it returns, and nothing is missing
at Turn's end in either direction.

The pipeline of ``test_kill_turn.py`` (two ``TurnChannelsApi`` replicas on one
connector, a ``ToAddressRouter``, a ``SimulatorTransport``, the fake Turn), its
outbound POSTed and its inbound published in the same way, and counted at the same
end: every accepted id's ``sent`` and ``delivered`` at Turn's ``/statuses``, every
inbound at its ``/messages``. Here the replicas' message
cache is in a redis-server of the test's own (``PrivateRedis``), stopped (SIGSTOP:
every command times out) for 8 s, as in ``test_redis_outage.py``, once a fifth of
each direction has arrived at Turn (earlier than the kill, since the outbound requests
may all be answered before 30 % of the inbound are at Turn), then continued; the
outbound requests past ``HELD_AFTER`` of them wait for it. The
simulator reports DELIVERED ``DELIVERY_DELAY`` s after its ack, so that events still
come to the replicas during the outage: the outbound requests they refuse meanwhile
bring none, and those accepted before it could all have had theirs at once.

While it is stopped:

* an outbound request cannot have its id recorded, which its events will need: the
  replica publishes nothing and answers 503 ``cache_unavailable`` with
  ``Retry-After``, and the request is sent again (to the other replica, as Turn would)
  until one answers 200. Each failure is recorded: there must be some, and none of
  another kind (a 500, a 503 without ``Retry-After``, a connection refused). A request
  that comes when the replica's connections to Redis are all waiting waits too, and is
  accepted once Redis answers.
* an inbound cannot be cached, nor an event's outbound looked up: the delivery is put
  off on the broker without using up an attempt, with the warning
  ``service unavailable: retrying later`` naming ``CacheUnavailable``, and handled
  once Redis answers. Dead-lettering it would lose it from Turn's view: the test takes
  every dead letter from its queues and fails on any.

The router keeps its routes in its memory: a router's Redis stopped is
``test_redis_outage.py``'s, and with this one it would hold the events back, where
here they keep coming to the replicas all through the outage.

No replica dies, so no request is published and left unanswered: nothing may reach
``/statuses`` under an id no replica answered with.
"""

from __future__ import annotations

import pytest

from tests.applications.test_turn_channels_api import fake_turn
from tests.faults.harness import (
    PrivateRedis,
    Tally,
    envelope_path,
    envelope_queues,
    fleet_in_tmp,
    own_broker,
    put_off_counts,
    take_dead_letters,
)
from tests.faults.test_kill_turn import (
    API_MESSAGES,
    INBOUND_MESSAGES,
    REPLICAS,
    TURN,
    AtTurn,
    flow_through_fault,
    inbound_message,
    replica_config,
)
from tests.faults.test_redis_outage import OUTAGE_AFTER, Outage

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

DELIVERY_DELAY = 1.0  # seconds from a message's ack to its delivery report


async def test_redis_stopped_under_turn_channels_api_replicas_loses_nothing(
    services: None, unique: str
) -> None:
    app, transport, queues = envelope_queues(unique)
    inbound = [inbound_message(unique, i, transport) for i in range(INBOUND_MESSAGES)]
    at_turn = AtTurn(inbound=Tally(sent={m.message_id for m in inbound}))
    accepted = Tally()  # the ids the replicas answered the outbound requests with
    failures: list[str] = []  # each outbound request that was not accepted, and why
    with PrivateRedis() as redis:
        outage = Outage(redis, at_turn.delivered)
        async with fake_turn() as turn, own_broker(queues) as broker:
            with fleet_in_tmp() as fleet:
                envelope_path(fleet, unique, app, transport, None, DELIVERY_DELAY)
                for name in REPLICAS:
                    config = replica_config(unique, app, transport, turn, redis.url)
                    fleet.add(name, TURN, config)
                await fleet.wait_healthy()
                at_outage = await flow_through_fault(
                    fleet,
                    broker,
                    turn,
                    app,
                    inbound,
                    at_turn,
                    accepted,
                    failures,
                    outage.stop_and_continue,
                    after=OUTAGE_AFTER,
                )
                put_off = put_off_counts(fleet, REPLICAS, f"{app}.", error="CacheUnavailable")
                fleet.check_alive()
            letters = await take_dead_letters(broker, unique)
    accepted_at_outage, sent_at_outage, inbound_at_outage = at_outage
    print(
        " | ".join(tally.report(what) for what, tally in at_turn.tallies().items()),
        f"| outbound requests refused and sent again: {len(failures)}",
        f"({', '.join(sorted(set(failures)))})",
        f"| deliveries put off by the replicas: {dict(put_off)}",
        f"| at the outage: accepted {accepted_at_outage}/{API_MESSAGES},",
        f"sent {sent_at_outage}/{API_MESSAGES},",
        f"inbound {inbound_at_outage}/{INBOUND_MESSAGES};",
        f"delivered by its end {outage.acked_by_the_end}",
    )
    # An outage after a direction had ended would prove nothing for it.
    assert accepted_at_outage < API_MESSAGES, f"all accepted before the outage: {at_outage}"
    assert inbound_at_outage < INBOUND_MESSAGES, f"all inbound before the outage: {at_outage}"
    assert len(accepted.arrived) == API_MESSAGES
    assert not letters, [letter.summary() for letter in letters]
    for what, tally in at_turn.tallies().items():
        assert not tally.missing, tally.report(what)
        assert not tally.unexpected, (what, tally.unexpected)
    # The replicas met the outage and said so, on both queues they take, and refused
    # requests meanwhile, telling when to come back.
    assert put_off.keys() == {"inbound", "event"}, put_off
    assert failures, "no outbound request met the outage"
    refused_wrongly = [f for f in failures if not f.startswith("503 Retry-After: ")]
    refused_wrongly += [f for f in failures if f.endswith(": none")]
    assert not refused_wrongly, refused_wrongly
