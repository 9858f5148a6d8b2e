"""PostgreSQL restarted mid-stream under the conversations app (``VcitaChannelApp``):
its interface answers VCS 503 with ``Retry-After`` meanwhile and accepts no staff
reply it did not store, its workers put inbound envelopes and events off and retry
them, and nothing is missing at either end of either path.

The pipeline is ``test_kill_conversations``'s: two app replicas on one store, a
``ToAddressRouter``, a ``SimulatorTransport`` and the fake VCS in the test process,
the channel and the ten clients' sessions opened before the traffic. The store is a
PostgreSQL cluster of the test's own (``PrivatePostgres``), stopped for ``OUTAGE``
seconds and started again once ``KILL_AFTER`` of the client messages have reached VCS
and of the replies have been reported ``received``, while both keep flowing:

* **Clients -> VCS**: inbound envelopes published onto the app's inbound queue. The
  end of the path is VCS's message endpoint (each envelope's ``message_uid``).
* **Staff -> clients**: replies POSTed by the test as VCS to the replicas in turn,
  each sent again with the same ``message_uid`` on a 5xx or a connection error. The
  end of the path is the app's ``PUT .../messages/{message_uid}`` saying ``received``.

A post or report the app made and could not record before the store went is made
again (a duplicate, counted). A refused reply must be a 503 problem with
``Retry-After``; no envelope may be dead-lettered, and no session opened.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import trio

from tests.applications.conversations.fake_vcs import fake_vcs
from tests.faults.harness import (
    PrivatePostgres,
    envelope_queues,
    fleet_in_tmp,
    nothing_missing,
    own_broker,
    put_off_counts,
    take_dead_letters,
)
from tests.faults.test_kill_conversations import (
    ACCESS_TOKEN,
    CLIENTS,
    REPLICAS,
    WEBHOOK_SECRET,
    Traffic,
    count_at_vcs,
    describe,
    flow_through_fault,
    start_conversations,
)
from vumi_like.applications.conversations.vcs import SESSIONS as VCS_SESSIONS

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

OUTAGE = 5.0  # seconds PostgreSQL stays down
STORE_REFUSAL = "503 application/problem+json STORE_UNAVAILABLE Retry-After: 5"


async def test_postgres_restart_under_conversations_app_loses_nothing(
    services: None, unique: str
) -> None:
    app, transport, queues = envelope_queues(unique)
    traffic = Traffic.of(unique, transport)
    posted, received = traffic.posted, traffic.received
    other_statuses: Counter[str] = Counter()
    outage: dict[str, float] = {}
    with PrivatePostgres() as postgres:

        async def restart_postgres() -> None:
            outage["stopping"] = time.monotonic()
            await trio.to_thread.run_sync(postgres.stop)
            await trio.sleep(OUTAGE)
            await trio.to_thread.run_sync(postgres.start)
            outage["started"] = time.monotonic()

        async with (
            own_broker([*queues, f"{app}.vcs"]) as broker,
            fake_vcs(WEBHOOK_SECRET) as vcs,
            trio.open_nursery() as counting,
        ):
            vcs.tokens.add(ACCESS_TOKEN)
            counting.start_soon(count_at_vcs, vcs, posted, received, other_statuses)
            with fleet_in_tmp() as fleet:
                store = {"store_url": postgres.url, "store_statement_timeout": 2}
                replies = await start_conversations(
                    fleet, broker, vcs, unique, store, traffic, callbacks_to=REPLICAS[0]
                )
                at_fault = await flow_through_fault(
                    broker,
                    [fleet.url(name) for name in REPLICAS],
                    app,
                    traffic.messages,
                    replies,
                    posted,
                    received,
                    fault=restart_postgres,
                )
                drained = time.monotonic() - outage["started"]
                put_off = put_off_counts(fleet, REPLICAS, f"{app}.")
            letters = await take_dead_letters(broker, unique)
            sessions = vcs.received("POST", VCS_SESSIONS)
            counting.cancel_scope.cancel()
    print(
        f"at the stop: {at_fault}",
        f"| PostgreSQL down {outage['started'] - outage['stopping']:.1f} s",
        f"| drained {drained:.1f} s after it was back",
        f"| reply POSTs refused: {len(replies.failures)} ({describe(replies.failures)})",
        f"| deliveries put off: {dict(put_off) or 'none'}",
        f"| other statuses of replies at VCS: {dict(other_statuses) or 'none'}",
        f"| sessions opened: {len(sessions)}",
    )
    nothing_missing(
        letters, {"client messages posted to VCS": posted, "staff replies received": received}
    )
    assert len(sessions) == CLIENTS, [session.body for session in sessions]
    # The outage was met: replies were refused while the store was down, every refusal
    # a problem document saying so, with a Retry-After, and nothing else failed.
    assert replies.problems[STORE_REFUSAL] > 0, "no reply was refused while PostgreSQL was down"
    assert set(replies.problems) == {STORE_REFUSAL}, replies.problems
    assert set(replies.failures) == {"503 Retry-After: 5"}, describe(replies.failures)
    # The workers met it too, and put the clients' messages and the replies' events
    # off rather than drop them.
    assert put_off["inbound"] > 0 and put_off["event"] > 0, put_off
