"""``kill -9`` of a conversations app replica (``VcitaChannelApp``) while messages flow
both ways between clients and vcita; it is restarted, and nothing is missing at either
end of either path.

The pipeline runs as processes: two replicas of the app on one PostgreSQL schema of
the test's (every flow's state is in the store and on the broker, so replicas share
the work), a ``ToAddressRouter`` and a ``SimulatorTransport`` (ack and DELIVERED report
at once). VCS is the fake one (``tests/applications/conversations/fake_vcs.py``), a
real HTTP server in the test process, which confirms channels and sessions by calling
the app back. Before the traffic, the business's token and a channel are set on the
admin API as an operator would, VCS confirms the channel, and each client's first
message opens their session.

* **Clients -> VCS**: 1,000 inbound envelopes (``FAULTS_MESSAGES`` // 5) from ten
  clients, published onto the app's inbound queue as the router delivers them from the
  transport. The end of the path is VCS's message endpoint: each envelope's
  ``message_uid`` (its id as a uuid) posted there. A repeat (a post the killed replica
  made but never recorded; VCS answers it 409) is a duplicate.
* **Staff -> clients**: 400 replies (``FAULTS_API_MESSAGES``), POSTed by the test as VCS
  to the replicas in turn, each with its own ``message_uid``; a POST that fails
  (connection refused or reset, 5xx) is sent again, with the same uid, to the other
  replica. The end of the path is VCS again, where the docs end the flow: the app's
  ``PUT .../messages/{message_uid}`` saying ``received``, sent once the transport's
  delivery report has come back through the router.

A staff reply's ``received`` is reported by the handler of its delivery report; it
is reported again (a duplicate, counted) when the killed replica had told VCS and not
yet recorded it. The traffic opens no session: each client's stays the one their
first message opened.

Why these counts: a staff reply is an HTTP request, so it takes the Messaging API's
400. Client messages are envelopes, but each costs the app a call to VCS and five store
transactions, where a router's cost none: here the app posts about 125 a second
while it takes the replies, so a fifth of ``FAULTS_MESSAGES`` lasts about as long as
the replies do (8 s each on this 2-core machine, unloaded), the kill lands in the
middle of both, and the whole test takes under a minute.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests.applications.conversations.fake_vcs import FakeVcs, fake_vcs
from tests.faults.harness import (
    DRAIN_TIMEOUT,
    KILL_AFTER,
    MESSAGES,
    POSTGRES_URL,
    Fleet,
    Tally,
    drop_schema,
    envelope_path,
    envelope_queues,
    fleet_in_tmp,
    nothing_missing,
    own_broker,
    publish_all,
    refusal,
    send_all,
    take_dead_letters,
)
from vumi_like.applications.conversations.vcs import MESSAGES as VCS_MESSAGES
from vumi_like.applications.conversations.vcs import SESSIONS as VCS_SESSIONS
from vumi_like.applications.conversations.wire import message_uid_for
from vumi_like.broker import BrokerInspector
from vumi_like.messages import Message

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

API_MESSAGES = int(os.environ.get("FAULTS_API_MESSAGES", "400"))
CLIENT_MESSAGES = MESSAGES // 5
CLIENTS = 10

APP = "vumi_like.applications.conversations.VcitaChannelApp"
REPLICAS = ("vcita0", "vcita1")
VICTIM, SURVIVOR = REPLICAS
APP_PATH = "/vcita"  # the app's registered URI at vcita
WEBHOOK_SECRET = "faults-vcs-secret"
ADMIN_TOKEN = "faults-admin-token"
ACCESS_TOKEN = "faults-business-token"
BUSINESS = "faults-business"
ADDRESS = "1234"  # our address on the simulator, the channel's


async def test_kill_9_of_conversations_app_replica_loses_nothing(
    services: None, unique: str
) -> None:
    app, transport, queues = envelope_queues(unique)
    schema = unique.replace("-", "_")
    traffic = Traffic.of(unique, transport)
    posted, received = traffic.posted, traffic.received
    other_statuses: Counter[str] = Counter()  # staff replies' statuses other than received
    try:
        async with (
            own_broker([*queues, f"{app}.vcs"]) as broker,
            fake_vcs(WEBHOOK_SECRET) as vcs,
            trio.open_nursery() as counting,
        ):
            vcs.tokens.add(ACCESS_TOKEN)
            counting.start_soon(count_at_vcs, vcs, posted, received, other_statuses)
            with fleet_in_tmp() as fleet:
                store = {"store_url": POSTGRES_URL, "store_schema": schema}
                replies = await start_conversations(
                    fleet, broker, vcs, unique, store, traffic, callbacks_to=SURVIVOR
                )
                at_kill = await flow_through_kill(
                    broker, fleet, app, traffic.messages, replies, posted, received
                )
            letters = await take_dead_letters(broker, unique)
            sessions = vcs.received("POST", VCS_SESSIONS)
            counting.cancel_scope.cancel()
    finally:
        drop_schema(POSTGRES_URL, schema)
    print(
        f"at the kill: {at_kill}",
        f"| failed reply POSTs sent again: {len(replies.failures)} ({describe(replies.failures)})",
        f"| other statuses of replies at VCS: {dict(other_statuses) or 'none'}",
        f"| sessions opened: {len(sessions)}",
    )
    nothing_missing(
        letters, {"client messages posted to VCS": posted, "staff replies received": received}
    )
    assert len(sessions) == CLIENTS, [session.body for session in sessions]


@attrs.define
class Traffic:
    """Both directions' traffic: the clients, their first messages (which open their
    sessions), the messages they send after, and the staff replies' uids; with the
    tallies of what reaches VCS (client messages, by ``message_uid``) and of the
    replies reported ``received``."""

    clients: list[str]
    firsts: list[Message]
    messages: list[Message]
    posted: Tally
    reply_uids: list[str]
    received: Tally

    @classmethod
    def of(cls, unique: str, transport: str) -> Traffic:
        clients = [f"+2783{n:07d}" for n in range(CLIENTS)]
        messages = [
            client_message(transport, clients[i % CLIENTS], f"{unique} message {i}")
            for i in range(CLIENT_MESSAGES)
        ]
        reply_uids = [f"{unique}-reply-{i}" for i in range(API_MESSAGES)]
        return cls(
            clients=clients,
            firsts=[client_message(transport, client, f"{unique} hello") for client in clients],
            messages=messages,
            posted=Tally(sent={message_uid_for(m) for m in messages}),
            reply_uids=reply_uids,
            received=Tally(sent=set(reply_uids)),
        )


async def start_conversations(
    fleet: Fleet,
    broker: BrokerInspector,
    vcs: FakeVcs,
    unique: str,
    store: dict[str, Any],
    traffic: Traffic,
    *,
    callbacks_to: str,
) -> Replies:
    """The app's replicas on ``store``, the router and the simulator; then, as the
    operator and the clients would, the channel (confirmed by VCS) and each client's
    session (opened by their first message). VCS calls the app back (channel and
    sessions, all before the traffic) on replica ``callbacks_to``. The replies to send."""
    app, transport, _ = envelope_queues(unique)
    for name in REPLICAS:
        fleet.add(name, APP, app_config(app, vcs, store))
    envelope_path(fleet, unique, app, transport, redis_url=None)
    await fleet.wait_healthy()
    vcs.app_url = fleet.url(callbacks_to) + APP_PATH
    channel_uid = await open_channel(fleet.url(callbacks_to), transport)
    await publish_all(broker, f"{app}.inbound", [m.to_json() for m in traffic.firsts])
    try:
        await vcs.wait_for("POST", VCS_MESSAGES, CLIENTS, within=30)
    except trio.TooSlowError:
        posted = len(vcs.received("POST", VCS_MESSAGES))
        raise AssertionError(
            f"{posted} of the {CLIENTS} clients' first messages reached VCS within 30 s; "
            f"VCS's callbacks (path, the app's last answer): {vcs.callbacks}"
        ) from None
    return Replies(channel_uid, traffic.clients, traffic.reply_uids)


def client_message(transport: str, client: str, content: str) -> Message:
    """A client's message to the channel's address, as the transport publishes it."""
    return Message(
        to_addr=ADDRESS,
        from_addr=client,
        transport_name=transport,
        transport_type="sms",
        content=content,
    )


def app_config(connector: str, vcs: FakeVcs, store: dict[str, Any]) -> dict[str, Any]:
    return {
        "connector_name": connector,
        "tenant": "faults",
        "vcs_url": vcs.url,
        "interface_prefix": APP_PATH,
        "webhook_secret": WEBHOOK_SECRET,
        "admin_token": ADMIN_TOKEN,
        # A client's first message waits (retried later) for VCS to confirm its session:
        # a fraction of a second here, so short retries.
        "retry_delay_base": 0.2,
        "retry_delay_exponent": 1.5,
        "max_retries": 8,
        **store,
    }


async def open_channel(admin_url: str, transport: str) -> str:
    """As an operator: the business's token, a channel asked for on the simulator at
    ``ADDRESS``, and then read until VCS has confirmed it; its channel_uid."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=admin_url, headers=headers, timeout=10) as admin:
        token = await admin.put(
            f"/admin/businesses/{BUSINESS}/token", json={"access_token": ACCESS_TOKEN}
        )
        assert token.status_code == 204, token.text
        body = {"business_uid": BUSINESS, "transport_name": transport, "address": ADDRESS}
        asked = await admin.post("/admin/channels", json=body)
        assert asked.status_code == 202, asked.text
        with trio.fail_after(30):
            while True:
                channel = (await admin.get(f"/admin/channels/{asked.json()['channel_id']}")).json()
                if channel["status"] == "active":
                    return str(channel["channel_uid"])
                await trio.sleep(0.1)


async def count_at_vcs(
    vcs: FakeVcs, posted: Tally, received: Tally, other_statuses: Counter[str]
) -> None:
    """Each client message VCS was posted (by ``message_uid``, repeats included) and
    each staff reply the app reported ``received``, as the calls reach the fake."""
    seen = 0
    while True:
        calls = vcs.calls[seen:]
        seen += len(calls)
        for call in calls:
            if (call.method, call.path) == ("POST", VCS_MESSAGES):
                posted.arrive(call.body["message_uid"])
            elif call.method == "PUT" and call.path.startswith(f"{VCS_MESSAGES}/"):
                message_uid = call.path.removeprefix(f"{VCS_MESSAGES}/")
                if call.body["status"] == "received":
                    received.arrive(message_uid)
                else:
                    other_statuses[call.body["status"]] += 1
        await trio.sleep(0.05)


@attrs.define
class Replies:
    """The staff replies to send on the channel, one to each client in turn."""

    channel_uid: str
    clients: list[str]
    message_uids: list[str]
    failures: list[str] = attrs.field(factory=list)  # a failed POST's error, or its status
    problems: Counter[str] = attrs.field(factory=Counter)  # refusals, as ``refusal`` says

    def body(self, i: int) -> dict[str, Any]:
        return {
            "external_uid": self.clients[i % len(self.clients)],
            "message": f"staff reply {i}",
            "message_uid": self.message_uids[i],
            "channel_uid": self.channel_uid,
            "status": "pending",
        }


async def send_replies(replicas: list[str], replies: Replies) -> None:
    """As VCS: POST each reply to the replicas in turn (``send_all``: one that fails is
    sent again, with the same ``message_uid``, to the next replica), until one answers
    204."""
    headers = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url + APP_PATH, headers=headers, timeout=30)
            )
            for url in replicas
        ]

        async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.post("/messages", json=replies.body(i))

        def accept(i: int, answer: httpx.Response) -> bool:
            if answer.status_code == 204:
                return True
            replies.problems[refusal(answer)] += 1
            return False

        count = len(replies.message_uids)
        await send_all(clients, count, send, accept, on_failure=replies.failures)


async def flow_through_kill(
    broker: BrokerInspector,
    fleet: Fleet,
    app: str,
    messages: list[Message],
    replies: Replies,
    posted: Tally,
    received: Tally,
) -> str:
    """``flow_through_fault``, the fault a ``kill -9`` of ``VICTIM`` and its start again."""

    async def kill_and_restart() -> None:
        fleet.kill(VICTIM)
        await trio.sleep(0.5)
        fleet.restart(VICTIM)
        await fleet.wait_healthy(VICTIM)

    replicas = [fleet.url(name) for name in REPLICAS]
    return await flow_through_fault(
        broker, replicas, app, messages, replies, posted, received, fault=kill_and_restart
    )


async def flow_through_fault(
    broker: BrokerInspector,
    replicas: list[str],
    app: str,
    messages: list[Message],
    replies: Replies,
    posted: Tally,
    received: Tally,
    *,
    fault: Callable[[], Awaitable[object]],
) -> str:
    """Publish the clients' ``messages`` onto ``app``'s inbound queue and send the staff
    ``replies`` to the ``replicas``, both at once; once ``KILL_AFTER`` of each has
    arrived, run ``fault``; then wait until every one has arrived (``DRAIN_TIMEOUT`` at
    most: the caller checks ``missing``). What had arrived when the fault began."""
    async with trio.open_nursery() as nursery:
        bodies = [message.to_json() for message in messages]
        nursery.start_soon(publish_all, broker, f"{app}.inbound", bodies)
        nursery.start_soon(send_replies, replicas, replies)
        with trio.fail_after(60):
            await posted.wait_count(int(len(posted.sent) * KILL_AFTER))
            await received.wait_count(int(len(received.sent) * KILL_AFTER))
        at_fault = (
            f"client messages {len(posted.arrived.keys() & posted.sent)}/{len(posted.sent)}, "
            f"replies {len(received.arrived.keys() & received.sent)}/{len(received.sent)}"
        )
        await fault()
    with trio.move_on_after(DRAIN_TIMEOUT):
        await posted.wait_all()
        await received.wait_all()
    return at_fault


def describe(failures: list[str]) -> str:
    return ", ".join(f"{what} x{n}" for what, n in Counter(failures).most_common()) or "none"
