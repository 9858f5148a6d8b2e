"""``kill -9`` of a Turn Channels API replica while messages flow both ways; it is
restarted, and nothing is missing at Turn's end in either direction.

Two ``TurnChannelsApi`` replicas share one connector and a Redis message cache (the
shared Redis, under a key prefix of the test's, the app's apart from the router's: the
router keeps its own info under the same outbound ids), behind a ``ToAddressRouter``
and a ``SimulatorTransport`` (ack and DELIVERED report at once), on RabbitMQ. Turn is
the fake of ``tests/applications/test_turn_channels_api.py``: a real HTTP server in the
test process, answering 200 to everything and recording every request.

* **Outbound**: 400 requests (``FAULTS_API_MESSAGES``), signed as Turn signs them, POSTed
  to ``<vumi_api_path>/messages`` of the two replicas in turn, ``SENDERS`` in flight; a
  POST that fails (connection refused or reset, 5xx) goes again to the other replica
  until one answers 200 with the message's id. The end of the path is Turn's
  ``/statuses``: every accepted id must get its ``sent`` (the ack) and its
  ``delivered`` status there. A request the killed replica had published but not
  answered, sent again and accepted under a new id, goes out twice: the statuses of
  the unanswered copy are counted apart.
* **Inbound**: 1,000 envelopes (``FAULTS_MESSAGES`` // 5) published straight onto the
  app's inbound queue, as the router delivers a transport's, a tenth at a time as the
  outbound requests are accepted, so that the two directions flow together. The end
  of the path is Turn's ``/messages``: every one must arrive there, by its
  ``message.id``. Each inbound is one HTTP request of the test process's (the fake
  Turn answering it), as each outbound is three (the test's POST and Turn's two
  statuses): a fifth of the envelope paths' 5,000 keeps the inbound stream about as
  long as the outbound one.

The replica is killed once ``KILL_AFTER`` of each direction has arrived at Turn, and
must find both still flowing (checked: a kill after either had ended would prove
nothing for it).

Repeats are allowed at both ends (a POST to Turn whose envelope the killed replica had
not acked yet is made again by the other one), counted and printed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests.applications.test_turn_channels_api import (
    DEFAULT_FROM,
    SECRET,
    TOKEN,
    FakeTurn,
    fake_turn,
)
from tests.caches.test_message_caches import delete_redis_keys
from tests.faults.harness import (
    DRAIN_TIMEOUT,
    KILL_AFTER,
    MESSAGES,
    REDIS_URL,
    SENDERS,
    Fleet,
    Tally,
    envelope_path,
    envelope_queues,
    fleet_in_tmp,
    own_broker,
    publish_all,
    redis_cache,
    send_all,
    take_dead_letters,
)
from vumi_like.applications.turn_channels_api import SIGNATURE_HEADER, signature
from vumi_like.broker import BrokerInspector
from vumi_like.messages import Message

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

TURN = "vumi_like.applications.turn_channels_api.TurnChannelsApi"
API_MESSAGES = int(os.environ.get("FAULTS_API_MESSAGES", "400"))
INBOUND_MESSAGES = MESSAGES // 5
REPLICAS = ("turn0", "turn1")
VICTIM = "turn0"
HELD_AFTER = 0.6  # the share of outbound requests made before the fault must have begun


@attrs.define
class AtTurn:
    """What arrived at Turn: inbound by ``message.id``, statuses by ``user_message_id``."""

    inbound: Tally
    sent: Tally = attrs.field(factory=Tally)
    delivered: Tally = attrs.field(factory=Tally)

    def tallies(self) -> dict[str, Tally]:
        return {
            "inbound at /messages": self.inbound,
            "sent at /statuses": self.sent,
            "delivered at /statuses": self.delivered,
        }


async def test_kill_9_of_turn_channels_api_replica_loses_nothing(
    services: None, unique: str
) -> None:
    app, transport, queues = envelope_queues(unique)
    inbound = [inbound_message(unique, i, transport) for i in range(INBOUND_MESSAGES)]
    at_turn = AtTurn(inbound=Tally(sent={m.message_id for m in inbound}))
    accepted = Tally()  # the ids the replicas answered the outbound requests with
    failures: list[str] = []
    try:
        async with fake_turn() as turn, own_broker(queues) as broker:
            with fleet_in_tmp() as fleet:
                envelope_path(fleet, unique, app, transport, REDIS_URL)
                for name in REPLICAS:
                    fleet.add(name, TURN, replica_config(unique, app, transport, turn))
                await fleet.wait_healthy()
                at_kill = await flow_through_fault(
                    fleet,
                    broker,
                    turn,
                    app,
                    inbound,
                    at_turn,
                    accepted,
                    failures,
                    functools.partial(kill_and_restart, fleet),
                )
            letters = await take_dead_letters(broker, unique)
    finally:
        delete_redis_keys(f"{unique}:")
    sent_twice = at_turn.delivered.unexpected
    accepted_at_kill, sent_at_kill, inbound_at_kill = at_kill
    print(
        " | ".join(tally.report(what) for what, tally in at_turn.tallies().items()),
        f"| failed POSTs sent again: {len(failures)} ({', '.join(sorted(set(failures)))})",
        f"| published by the killed replica, unanswered: {len(sent_twice)}",
        f"| at the kill: accepted {accepted_at_kill}/{API_MESSAGES},",
        f"sent {sent_at_kill}/{API_MESSAGES},",
        f"inbound {inbound_at_kill}/{INBOUND_MESSAGES}",
    )
    # A kill after a direction had ended would prove nothing for it.
    assert accepted_at_kill < API_MESSAGES, f"every POST was answered before the kill: {at_kill}"
    assert inbound_at_kill < INBOUND_MESSAGES, f"every inbound arrived before the kill: {at_kill}"
    assert len(accepted.arrived) == API_MESSAGES
    assert not letters, [letter.summary() for letter in letters]
    for what, tally in at_turn.tallies().items():
        assert not tally.missing, tally.report(what)
    assert not at_turn.inbound.unexpected, at_turn.inbound.unexpected
    # A request published by the killed replica and not answered: at most one per
    # request in flight at the kill.
    assert len(sent_twice) <= SENDERS, sent_twice


async def kill_and_restart(fleet: Fleet) -> None:
    """``kill -9`` of the victim, and its start again."""
    fleet.kill(VICTIM)
    await trio.sleep(0.5)
    fleet.restart(VICTIM)
    await fleet.wait_healthy(VICTIM)


async def flow_through_fault(
    fleet: Fleet,
    broker: BrokerInspector,
    turn: FakeTurn,
    app: str,
    inbound: list[Message],
    at_turn: AtTurn,
    accepted: Tally,
    failures: list[str],
    fault: Callable[[], Awaitable[object]],
    after: float = KILL_AFTER,
) -> tuple[int, int, int]:
    """POST the outbound and publish the inbound; run ``fault`` once ``after`` of each
    direction has arrived at Turn, and wait for the rest (``DRAIN_TIMEOUT`` at most: the
    caller checks ``missing``). How many outbound requests had been accepted, and
    delivered statuses and inbound had arrived at Turn, when the fault began.

    The outbound requests past ``HELD_AFTER`` of them wait for the fault, so that some
    always meet it however fast the replicas answer the ones before: if any waited,
    they go once the fault is due, and it begins when ``SENDERS`` more are accepted,
    with requests in flight as in a steady stream."""
    at_fault = (0, 0, 0)
    held = Held(math.ceil(API_MESSAGES * HELD_AFTER))
    faulted = trio.Event()

    async def run_fault() -> None:
        nonlocal at_fault
        await arrived_at_least(at_turn.sent, math.ceil(API_MESSAGES * after))
        await arrived_at_least(at_turn.inbound, math.ceil(INBOUND_MESSAGES * after))
        released = len(accepted.arrived)
        if held.release():
            await arrived_at_least(accepted, released + SENDERS)
        at_fault = (
            len(accepted.arrived),
            len(at_turn.sent.arrived),
            len(at_turn.inbound.arrived),
        )
        await fault()
        faulted.set()

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=fleet.url(name), timeout=30)
            )
            for name in REPLICAS
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count_at_turn, turn, at_turn)
            nursery.start_soon(run_fault)
            bodies = [message.to_json() for message in inbound]
            nursery.start_soon(publish_along, broker, f"{app}.inbound", bodies, accepted)
            await post_signed(clients, API_MESSAGES, accepted, failures, held)
            with trio.fail_after(60):
                await faulted.wait()
            at_turn.sent.sent = set(accepted.arrived)
            at_turn.delivered.sent = set(accepted.arrived)
            with trio.move_on_after(DRAIN_TIMEOUT):
                for tally in at_turn.tallies().values():
                    await tally.wait_all()
            nursery.cancel_scope.cancel()
    return at_fault


async def publish_along(
    broker: BrokerInspector, queue: str, bodies: list[bytes], accepted: Tally
) -> None:
    """Publish ``bodies`` to ``queue`` in tenths, each once as large a share of the
    outbound requests is accepted: the first at once, the last at 90 %."""
    tenth = math.ceil(len(bodies) / 10)
    for share in range(10):
        await arrived_at_least(accepted, math.ceil(API_MESSAGES * share / 10))
        await publish_all(broker, queue, bodies[share * tenth : (share + 1) * tenth])


async def arrived_at_least(tally: Tally, count: int) -> None:
    """Until ``count`` distinct ids have arrived at ``tally`` (sent or not yet known)."""
    while len(tally.arrived) < count:
        await tally.changed.wait()


async def count_at_turn(turn: FakeTurn, at_turn: AtTurn) -> None:
    """Each request Turn recorded, counted by the id it carries, as it comes."""
    seen = 0
    statuses = {"sent": at_turn.sent, "delivered": at_turn.delivered}
    while True:
        recorded = turn.requests[seen:]
        seen += len(recorded)
        for request in recorded:
            if request.path == "/messages":
                at_turn.inbound.arrive(request.body["message"]["id"])
            else:
                statuses[request.body["status"]].arrive(request.body["user_message_id"])
        await trio.sleep(0.05)


@attrs.define
class Held:
    """The requests from number ``first`` on wait for ``release``."""

    first: int
    released: trio.Event = attrs.field(factory=trio.Event)
    waited: bool = False

    async def wait(self, i: int) -> None:
        if i >= self.first and not self.released.is_set():
            self.waited = True
            await self.released.wait()

    def release(self) -> bool:
        """Let them go; whether any was waiting."""
        self.released.set()
        return self.waited


async def post_signed(
    clients: list[httpx.AsyncClient],
    count: int,
    accepted: Tally,
    failures: list[str],
    held: Held | None = None,
) -> None:
    """POST ``count`` signed outbound requests as Turn does, over ``clients`` in turn
    (``send_all``: one that fails is sent again to the next client), until one answers
    200; its id goes into ``accepted``. Those ``held`` wait for it first."""

    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        if held is not None:
            await held.wait(i)
        raw = json.dumps(turn_request(i)).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(SECRET, raw)}
        return await client.post("/messages", content=raw, headers=headers)

    def accept(i: int, answer: httpx.Response) -> bool:
        if answer.status_code != 200:
            return False
        [entry] = answer.json()["messages"]
        accepted.arrive(entry["id"])
        return True

    await send_all(clients, count, send, accept, on_failure=failures)


def turn_request(i: int) -> dict[str, Any]:
    """Turn's ``i``-th outbound request: to an address no inbound comes from, so it is
    a fresh message and not a reply."""
    return {
        "to": f"+2782{i:07d}",
        "from": None,
        "turn": {"type": "text", "text": {"body": f"outbound {i}"}},
    }


def inbound_message(prefix: str, i: int, transport: str) -> Message:
    """The ``i``-th inbound, as ``transport`` would have it from a user."""
    return Message(
        to_addr=DEFAULT_FROM,
        from_addr=f"+2783{i:07d}",
        transport_name=transport,
        transport_type="sms",
        content=f"{prefix} inbound {i}",
    )


def replica_config(
    unique: str, app: str, transport: str, turn: FakeTurn, redis_url: str = REDIS_URL
) -> dict[str, Any]:
    """A replica on connector ``app``, sending to ``transport`` through the router, its
    message cache in the Redis at ``redis_url`` under a prefix of its own (inside the
    test's)."""
    cache = redis_cache(unique, redis_url)
    cache["message_cache_config"]["key_prefix"] = f"{unique}:turn:"
    return {
        "connector_name": app,
        "transport_name": transport,
        "turn_api_url": turn.url,
        "default_from_addr": DEFAULT_FROM,
        "auth_token": TOKEN,
        "turn_hmac_secret": SECRET,
        "worker_concurrency": 50,
        **cache,
    }
