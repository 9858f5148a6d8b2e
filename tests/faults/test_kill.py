"""``kill -9`` of a router, a transport (the simulator, SMPP, MQTT, SMTP, HTTP SMS and
WhatsApp), an API replica and a dispatcher while messages flow; each is restarted, and
nothing is missing at the end of the path.

Router and transport: 5,000 outbound envelopes (``FAULTS_MESSAGES``) are published
straight onto the application's outbound queue, through a ``ToAddressRouter`` to a
``SimulatorTransport`` (ack and DELIVERED report at once). The end of the path is the
application's event queue: every message must get its ack and its ``delivered``
report there. The router's message cache is Redis (the shared one, under a key prefix
of the test's), as for any router with replicas or restarts: with the in-process
cache, events of outbounds routed before the kill would be dead-lettered as unknown.

SMPP transport: 5,000 envelopes on the transport's own outbound queue, sent to a fake
SMSC speaking SMPP on a socket (``tests/transports/smpp/smsc.py``), which answers each
submit_sm and sends a DELIVRD receipt for every message id it gave, as an SMSC does: a
receipt the ESME has not answered is sent again, on whichever session is bound next.
The transport keeps its provider ids in Redis. The end of the path is the transport's
event queue: every message acked and reported delivered. A message whose submit_sm the
SMSC answered after the kill is sent again under a new id; the receipt for the id the
dead transport never read matches no message, and is dead-lettered with that reason
(``unmatched_report_retries`` later): such letters are allowed, and only for those ids.

MQTT transport: 5,000 envelopes on the transport's outbound queue, published to the
shared Mosquitto at QoS 1 on one topic of the test's. The end of the path is a
subscriber on that topic (QoS 1, each message acknowledged as it arrives), counting by
the payload's id, and the ack of each on the transport's event queue.

SMTP transport: 5,000 envelopes on the transport's outbound queue, mailed through a
real SMTP server (aiosmtpd, on a thread of the test's). The end of the path is the
server's mailbox, counted by each mail's ``Message-ID`` (the envelope's message id),
and the ack of each on the transport's event queue.

HTTP SMS transport (``preset: kannel``, the default in-process message cache): 5,000
envelopes to a fake Kannel, which fetches each message's ``dlr-url`` (delivered) until
it is answered. The end of the path is the provider's requests, and the ack and the
``delivered`` report of each on the transport's event queue: the reports of messages
sent before the kill come to the restarted transport, whose cache is empty.

WhatsApp transport: 5,000 envelopes to a fake Graph API (``tests/transports/
test_whatsapp.py``), whose "Meta" POSTs a signed ``delivered`` status webhook for every
message it accepted, again until it is answered 200, as Meta retries its webhooks. The
transport keeps its wamids in Redis. The end of the path is the Graph API's requests,
and the ack and the ``delivered`` report of each on the transport's event queue.

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
import email
import functools
import itertools
import json
import math
import os
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests.faults.harness import (
    AMQP_URL,
    POSTGRES_URL,
    REDIS_URL,
    SENDERS,
    Fleet,
    Tally,
    WebhookReceiver,
    api_pipeline,
    api_queues,
    consume_events,
    drop_schema,
    envelope_path,
    envelope_queues,
    event_tallies,
    final_statuses,
    fleet_in_tmp,
    free_port,
    letter_error,
    outbound,
    own_broker,
    post_all,
    publish_all,
    subscribe,
    take_dead_letters,
)
from tests.transports.http_sms.fakes import FakeProvider, Recorded, fake_kannel
from tests.transports.mqtt.conftest import quick_settings
from tests.transports.smpp.smsc import FakeSmsc, receipt
from tests.transports.smtp.servers import Recorder, SmtpServer
from tests.transports.test_whatsapp import (
    APP_SECRET,
    DISPLAY_NUMBER,
    MESSAGES_PATH,
    NUMBER_ID,
    TOKEN,
    VERIFY_TOKEN,
    VERSION,
    FakeGraph,
    fake_http_server,
    notification,
    statuses,
)
from tests.transports.test_whatsapp import Answer as GraphAnswer
from tests.transports.test_whatsapp import Recorded as GraphRequest
from vumi_like.messages import Event, EventType, Message
from vumi_like.transports.mqtt import TrioMqttClient, open_mqtt_client
from vumi_like.transports.whatsapp import SIGNATURE_HEADER, signature

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

MESSAGES = int(os.environ.get("FAULTS_MESSAGES", "5000"))
API_MESSAGES = int(os.environ.get("FAULTS_API_MESSAGES", "400"))
KILL_AFTER = 0.3  # the share of messages through before the kill
DRAIN_TIMEOUT = 90
SMPP = "vumi_like.transports.smpp.SmppTransport"
MQTT = "vumi_like.transports.mqtt.MqttTransport"
SMTP = "vumi_like.transports.smtp.SmtpTransport"
HTTP_SMS = "vumi_like.transports.http_sms.HttpSmsTransport"
WHATSAPP = "vumi_like.transports.whatsapp.WhatsAppCloudTransport"
RECEIPT_SENDERS = 20  # receipts the SMSC has sent and not had answered, at most
RECEIPT_TIMEOUT = 5  # seconds the SMSC waits for a receipt's answer before sending it again
UNMATCHED_SETTLE = 5  # seconds for an unmatched receipt's one retry (1 s +- 20 %) to end


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
            async with trio.open_nursery() as nursery:
                await nursery.start(consume_events, broker, f"{app}.event", on_event)
                nursery.start_soon(
                    publish_all, broker, f"{app}.outbound", [m.to_json() for m in messages]
                )
                with trio.fail_after(60):
                    await acks.wait_count(int(MESSAGES * KILL_AFTER))
                fleet.kill(victim)
                await trio.sleep(0.5)
                fleet.restart(victim)
                await fleet.wait_healthy(victim)
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await delivered.wait_all()
                    await acks.wait_all()
                nursery.cancel_scope.cancel()
        letters = await take_dead_letters(broker, unique)
    print(acks.report("acks"), "|", delivered.report("delivered reports"))
    assert not letters, [letter.summary() for letter in letters]
    assert not acks.missing, acks.report("acks")
    assert not delivered.missing, delivered.report("delivered reports")


async def test_kill_9_of_smpp_transport_loses_nothing(services: None, unique: str) -> None:
    transport = f"{unique}-smpp"
    queues = [f"{transport}.{kind}" for kind in ("outbound", "inbound", "event")]
    queues.append(f"{transport}.unmatched_reports")
    messages = [outbound(unique, i, transport) for i in range(MESSAGES)]
    acks, delivered, on_event = event_tallies({m.message_id for m in messages})
    acked_as: set[str] = set()  # the provider ids the acks name

    def on_smpp_event(event: Event) -> None:
        if event.event_type == EventType.ACK and event.sent_message_id:
            acked_as.add(event.sent_message_id)
        on_event(event)

    smsc = FakeSmsc()
    receipts = Tally()  # receipts the ESME answered, by the SMSC's message id
    async with own_broker(queues) as broker, trio.open_nursery() as smsc_nursery:
        await smsc_nursery.start(smsc.serve)
        smsc_nursery.start_soon(send_receipts, smsc, receipts)
        with fleet_in_tmp(AMQP_URL) as fleet:
            fleet.add("smpp", SMPP, smpp_config(unique, transport, smsc))
            await fleet.wait_healthy()
            async with trio.open_nursery() as nursery:
                await nursery.start(consume_events, broker, f"{transport}.event", on_smpp_event)
                nursery.start_soon(
                    publish_all, broker, f"{transport}.outbound", [m.to_json() for m in messages]
                )
                with trio.fail_after(60):
                    await acks.wait_count(int(MESSAGES * KILL_AFTER))
                fleet.kill("smpp")
                await trio.sleep(0.5)
                fleet.restart("smpp")
                await fleet.wait_healthy("smpp")
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await delivered.wait_all()
                    await acks.wait_all()
                    await receipts.wait_all()
                # An unmatched receipt is tried again about a second later, then is a
                # dead letter if its id is still unknown.
                await trio.sleep(UNMATCHED_SETTLE)
                nursery.cancel_scope.cancel()
            letters = await take_dead_letters(broker, unique)
        smsc_nursery.cancel_scope.cancel()
    orphans = set(smsc.message_ids) - acked_as  # given in answers nobody read
    print(
        acks.report("acks"),
        "|",
        delivered.report("delivered reports"),
        "|",
        receipts.report("receipts answered"),
        f"| submit_sm sent again: {len(smsc.submitted) - MESSAGES}",
        f"| receipts for ids never read, dead-lettered: {len(letters)}",
    )
    assert not acks.missing, acks.report("acks")
    assert not delivered.missing, delivered.report("delivered reports")
    assert not receipts.missing, receipts.report("receipts answered")
    submitted = {submit.short_message for submit in smsc.submitted}
    assert submitted == {(m.content or "").encode() for m in messages}
    for letter in letters:
        assert letter.source_queue == f"{transport}.unmatched_reports", letter.summary()
        assert "no message sent as provider id" in letter_error(letter), letter.summary()
        assert set(json.loads(letter.delivery.body)["provider_ids"]) & orphans, letter.summary()


def smpp_config(unique: str, transport: str, smsc: FakeSmsc) -> dict[str, Any]:
    """An SMPP transport bound to ``smsc``, its provider ids in the shared Redis under
    the test's prefix (for five minutes), an unmatched receipt dead-lettered after one
    retry."""
    return {
        "transport_name": transport,
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": smsc.system_id,
        "password": smsc.password,
        "worker_concurrency": 50,
        "message_cache_class": "redis",
        "message_cache_config": {
            "redis_url": REDIS_URL,
            "key_prefix": f"{unique}:",
            "connect_timeout": 1,
            "command_timeout": 1,
        },
        "provider_id_ttl": 300,
        "final_report_ttl": 60,
        "unmatched_report_retries": 1,
    }


async def send_receipts(smsc: FakeSmsc, receipts: Tally) -> None:
    """As an SMSC does: a DELIVRD receipt for every message id given, each sent until
    the ESME answers it (again after ``RECEIPT_TIMEOUT``, or once a session is bound);
    each id in ``receipts.sent`` when given, and arriving there once answered."""
    ids, pending = trio.open_memory_channel[str](math.inf)
    async with trio.open_nursery() as nursery:
        for _ in range(RECEIPT_SENDERS):
            nursery.start_soon(send_receipts_from, smsc, pending.clone(), receipts)
        given = 0
        while True:
            await smsc.wait_until(functools.partial(more_given, smsc, given))
            for message_id in smsc.message_ids[given:]:
                receipts.sent.add(message_id)
                ids.send_nowait(message_id)
            given = len(smsc.message_ids)


def more_given(smsc: FakeSmsc, given: int) -> bool:
    return len(smsc.message_ids) > given


async def send_receipts_from(
    smsc: FakeSmsc, pending: trio.MemoryReceiveChannel[str], receipts: Tally
) -> None:
    async for message_id in pending:
        while True:
            await smsc.wait_until(lambda: any(c.receives for c in smsc.bound))
            with (
                trio.move_on_after(RECEIPT_TIMEOUT),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                answer = await smsc.deliver(receipt(message_id))
                if answer.command_status == 0:
                    receipts.arrive(message_id)
                    break
            await trio.sleep(0.1)


async def test_kill_9_of_mqtt_transport_loses_nothing(
    services: None, mosquitto: tuple[str, int], unique: str
) -> None:
    transport = f"{unique}-mqtt"
    queues = [f"{transport}.{kind}" for kind in ("outbound", "inbound", "event")]
    queues.append(f"{transport}.unmatched_reports")
    target = {"target_type": "user", "target_id": "kill"}
    messages = [
        outbound(unique, i, transport, helper_metadata={"mqtt": target}) for i in range(MESSAGES)
    ]
    acks, _, on_event = event_tallies({m.message_id for m in messages})
    published = Tally(sent={m.message_id for m in messages})  # by the payload's id
    config = {
        "transport_name": transport,
        "host": mosquitto[0],
        "port": mosquitto[1],
        "topic_base": unique,
        "qos": 1,
        "worker_concurrency": 50,
    }
    async with (
        own_broker(queues) as broker,
        open_mqtt_client(quick_settings(mosquitto[1], host=mosquitto[0])) as device,
    ):
        await device.wait_connected()
        await device.subscribe(f"/{unique}/user/kill/messages/publish", qos=1)
        with fleet_in_tmp(AMQP_URL) as fleet:
            fleet.add("mqtt", MQTT, config)
            await fleet.wait_healthy()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(count_published, device, published)
                await nursery.start(consume_events, broker, f"{transport}.event", on_event)
                nursery.start_soon(
                    publish_all, broker, f"{transport}.outbound", [m.to_json() for m in messages]
                )
                with trio.fail_after(60):
                    await acks.wait_count(int(MESSAGES * KILL_AFTER))
                fleet.kill("mqtt")
                await trio.sleep(0.5)
                fleet.restart("mqtt")
                await fleet.wait_healthy("mqtt")
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await published.wait_all()
                    await acks.wait_all()
                nursery.cancel_scope.cancel()
        letters = await take_dead_letters(broker, unique)
    print(acks.report("acks"), "|", published.report("received from Mosquitto"))
    assert not letters, [letter.summary() for letter in letters]
    assert not published.missing, published.report("received from Mosquitto")
    assert not acks.missing, acks.report("acks")


async def count_published(device: TrioMqttClient, published: Tally) -> None:
    """Each message ``device`` receives, by its payload's id, acknowledged at once."""
    async for message in device.messages:
        published.arrive(json.loads(message.payload)["id"])
        device.ack(message)


async def test_kill_9_of_smtp_transport_loses_nothing(services: None, unique: str) -> None:
    transport = f"{unique}-email"
    queues = [f"{transport}.{kind}" for kind in ("outbound", "inbound", "event")]
    queues.append(f"{transport}.unmatched_reports")
    messages = [
        Message(
            to_addr=f"user{i}@example.org",
            from_addr="noreply@example.org",
            transport_name=transport,
            transport_type="email",
            content=f"{unique} message {i}",
            helper_metadata={"email": {"subject": f"message {i}"}},
        )
        for i in range(MESSAGES)
    ]
    acks, _, on_event = event_tallies({m.message_id for m in messages})
    mailed = Tally(sent={m.message_id for m in messages})  # by the Message-ID's left part
    server = SmtpServer(Recorder())
    server.start()
    config = {
        "transport_name": transport,
        "host": "127.0.0.1",
        "port": server.port,
        "security": "none",
        "worker_concurrency": 50,
    }
    try:
        async with own_broker(queues) as broker:
            with fleet_in_tmp(AMQP_URL) as fleet:
                fleet.add("email", SMTP, config)
                await fleet.wait_healthy()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(count_mailed, server.recorder, mailed)
                    await nursery.start(consume_events, broker, f"{transport}.event", on_event)
                    nursery.start_soon(
                        publish_all,
                        broker,
                        f"{transport}.outbound",
                        [m.to_json() for m in messages],
                    )
                    with trio.fail_after(60):
                        await acks.wait_count(int(MESSAGES * KILL_AFTER))
                    fleet.kill("email")
                    await trio.sleep(0.5)
                    fleet.restart("email")
                    await fleet.wait_healthy("email")
                    with trio.move_on_after(DRAIN_TIMEOUT):
                        await mailed.wait_all()
                        await acks.wait_all()
                    nursery.cancel_scope.cancel()
            letters = await take_dead_letters(broker, unique)
    finally:
        server.stop()
    print(acks.report("acks"), "|", mailed.report("mails the SMTP server took"))
    assert not letters, [letter.summary() for letter in letters]
    assert not mailed.missing, mailed.report("mails the SMTP server took")
    assert not acks.missing, acks.report("acks")


async def count_mailed(recorder: Recorder, mailed: Tally) -> None:
    """Each mail the server (on its own thread) took, by its Message-ID's left part."""
    seen = 0
    while True:
        received = recorder.received[seen:]
        seen += len(received)
        for mail in received:
            message_id = email.message_from_bytes(mail.content)["Message-ID"]
            mailed.arrive(message_id.strip("<>").partition("@")[0])
        await trio.sleep(0.05)


async def test_kill_9_of_http_sms_transport_loses_nothing(services: None, unique: str) -> None:
    transport = f"{unique}-sms"
    queues = [f"{transport}.{kind}" for kind in ("outbound", "inbound", "event")]
    queues.append(f"{transport}.unmatched_reports")
    messages = [outbound(unique, i, transport) for i in range(MESSAGES)]
    acks, delivered, on_event = event_tallies({m.message_id for m in messages})
    by_text = {m.content: m.message_id for m in messages}
    taken = Tally(sent={m.message_id for m in messages})  # requests the provider answered
    async with fake_kannel() as kannel, own_broker(queues) as broker:
        with fleet_in_tmp(AMQP_URL) as fleet:
            port = free_port()
            config = {
                "transport_name": transport,
                "preset": "kannel",
                "url": f"{kannel.url}/cgi-bin/sendsms",
                "username": "user",
                "password": "password",
                "callback_secret": "callback-secret",
                "http_bind": f"127.0.0.1:{port}",
                "callback_base_url": f"http://127.0.0.1:{port}",
                "worker_concurrency": 50,
            }
            fleet.add("sms", HTTP_SMS, config)
            await fleet.wait_healthy()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(report_each, kannel, by_text, taken)
                await nursery.start(consume_events, broker, f"{transport}.event", on_event)
                nursery.start_soon(
                    publish_all, broker, f"{transport}.outbound", [m.to_json() for m in messages]
                )
                with trio.fail_after(60):
                    await acks.wait_count(int(MESSAGES * KILL_AFTER))
                fleet.kill("sms")
                await trio.sleep(0.5)
                fleet.restart("sms")
                await fleet.wait_healthy("sms")
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await delivered.wait_all()
                    await acks.wait_all()
                nursery.cancel_scope.cancel()
        letters = await take_dead_letters(broker, unique)
    print(
        acks.report("acks"),
        "|",
        delivered.report("delivered reports"),
        "|",
        taken.report("requests to the provider"),
    )
    assert not letters, [letter.summary() for letter in letters]
    assert not taken.missing, taken.report("requests to the provider")
    assert not acks.missing, acks.report("acks")
    assert not delivered.missing, delivered.report("delivered reports")


async def report_each(kannel: FakeProvider, by_text: dict[str | None, str], taken: Tally) -> None:
    """As Kannel does for a message its SMSC delivered: fetch its ``dlr-url`` (type 1),
    for every message the provider took; each again after a failure or an answer that
    is not 2xx, as a provider that retries its callbacks does."""
    limit = trio.Semaphore(RECEIPT_SENDERS)
    async with (
        httpx.AsyncClient(timeout=RECEIPT_TIMEOUT) as client,
        trio.open_nursery() as nursery,
    ):
        for seen in itertools.count():
            await kannel.wait_for(seen + 1, within=math.inf)
            sent = kannel.requests[seen]
            taken.arrive(by_text[sent.query.get("text")])
            await limit.acquire()
            nursery.start_soon(report_until_answered, client, sent, limit)


async def report_until_answered(
    client: httpx.AsyncClient, sent: Recorded, limit: trio.Semaphore
) -> None:
    url = sent.query["dlr-url"].replace("%d", "1")
    try:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).is_success:
                    return
            await trio.sleep(0.2)
    finally:
        limit.release()


async def test_kill_9_of_whatsapp_transport_loses_nothing(services: None, unique: str) -> None:
    transport = f"{unique}-whatsapp"
    queues = [f"{transport}.{kind}" for kind in ("outbound", "inbound", "event")]
    queues.append(f"{transport}.unmatched_reports")
    messages = [
        Message(
            to_addr="16505551234",
            from_addr=DISPLAY_NUMBER,
            transport_name=transport,
            transport_type="whatsapp",
            content=f"{unique} message {i}",
        )
        for i in range(MESSAGES)
    ]
    acks, delivered, on_event = event_tallies({m.message_id for m in messages})
    by_text = {m.content: m.message_id for m in messages}
    taken = Tally(sent={m.message_id for m in messages})  # messages the Graph API accepted
    graph = RecordingGraph()
    async with fake_http_server(graph.respond) as server, own_broker(queues) as broker:
        with fleet_in_tmp(AMQP_URL) as fleet:
            fleet.add("whatsapp", WHATSAPP, whatsapp_config(unique, transport, server.url))
            await fleet.wait_healthy()
            async with trio.open_nursery() as nursery:
                webhook_url = f"{fleet.url('whatsapp')}/whatsapp/webhook"
                nursery.start_soon(post_statuses, graph, webhook_url, by_text, taken)
                await nursery.start(consume_events, broker, f"{transport}.event", on_event)
                nursery.start_soon(
                    publish_all, broker, f"{transport}.outbound", [m.to_json() for m in messages]
                )
                with trio.fail_after(60):
                    await acks.wait_count(int(MESSAGES * KILL_AFTER))
                fleet.kill("whatsapp")
                await trio.sleep(0.5)
                fleet.restart("whatsapp")
                await fleet.wait_healthy("whatsapp")
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await delivered.wait_all()
                    await acks.wait_all()
                nursery.cancel_scope.cancel()
        letters = await take_dead_letters(broker, unique)
    print(
        acks.report("acks"),
        "|",
        delivered.report("delivered statuses"),
        "|",
        taken.report("messages the Graph API took"),
    )
    assert not letters, [letter.summary() for letter in letters]
    assert not taken.missing, taken.report("messages the Graph API took")
    assert not acks.missing, acks.report("acks")
    assert not delivered.missing, delivered.report("delivered statuses")


@attrs.define
class RecordingGraph(FakeGraph):
    """The fake Graph API, noting the text and the wamid of every message it accepts."""

    accepted: list[tuple[str, str]] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    def respond(self, req: GraphRequest) -> GraphAnswer:
        answer = super().respond(req)
        if req.path == MESSAGES_PATH and answer.status == 200:
            assert isinstance(answer.body, dict)
            wamid = answer.body["messages"][0]["id"]
            self.accepted.append((req.json()["text"]["body"], wamid))
            self.changed.set()
            self.changed = trio.Event()
        return answer


def whatsapp_config(unique: str, transport: str, api_url: str) -> dict[str, Any]:
    """A WhatsApp transport on the fake Graph API at ``api_url``, its wamids in the
    shared Redis under the test's prefix (for five minutes)."""
    return {
        "transport_name": transport,
        "api_base_url": api_url,
        "api_version": VERSION,
        "phone_number_id": NUMBER_ID,
        "access_token": TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "worker_concurrency": 50,
        "message_cache_class": "redis",
        "message_cache_config": {
            "redis_url": REDIS_URL,
            "key_prefix": f"{unique}:",
            "connect_timeout": 1,
            "command_timeout": 1,
        },
        "provider_id_ttl": 300,
        "final_report_ttl": 60,
    }


async def post_statuses(
    graph: RecordingGraph, url: str, by_text: dict[str | None, str], taken: Tally
) -> None:
    """As Meta does: a signed ``delivered`` status webhook for every message accepted,
    each POSTed again until it is answered 200."""
    limit = trio.Semaphore(RECEIPT_SENDERS)
    async with (
        httpx.AsyncClient(timeout=RECEIPT_TIMEOUT) as client,
        trio.open_nursery() as nursery,
    ):
        for seen in itertools.count():
            while len(graph.accepted) <= seen:
                await graph.changed.wait()
            text, wamid = graph.accepted[seen]
            taken.arrive(by_text[text])
            body = json.dumps(notification(statuses((wamid, "delivered")))).encode()
            await limit.acquire()
            nursery.start_soon(post_until_answered, client, url, body, limit)


async def post_until_answered(
    client: httpx.AsyncClient, url: str, body: bytes, limit: trio.Semaphore
) -> None:
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(APP_SECRET, body)}
    try:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.post(url, content=body, headers=headers)).status_code == 200:
                    return
            await trio.sleep(0.2)
    finally:
        limit.release()


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
    finally:
        drop_schema(POSTGRES_URL, schema)
    repeats = sum(n - 1 for n in receiver.ids.values())
    print(
        delivered.report("DELIVERED webhooks"),
        f"| failed POSTs retried: {len(failures)} | webhook repeats (same id): {repeats}",
        f"| sent twice by the killed replica: {len(delivered.unexpected)}",
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
    # A request killed with its replica after it published, and taken over by its retry
    # on the other replica, was sent twice under two ids: at most one per request in
    # flight at the kill, and only when the API replica is the one killed.
    assert len(delivered.unexpected) <= (SENDERS if victim == "api0" else 0)


async def send_through_kill(
    fleet: Fleet, victim: str, receiver: WebhookReceiver, accepted: set[str], failures: list[str]
) -> dict[str, int]:
    """Subscribe the receiver, POST the messages, kill and restart ``victim`` after
    ``KILL_AFTER`` of them, wait for every DELIVERED webhook; the final statuses."""
    replicas = [fleet.url("api0"), fleet.url("api1")]
    headers = await subscribe(replicas[1], receiver)

    reached = trio.Event()

    async def kill_and_restart() -> None:
        await reached.wait()
        fleet.kill(victim)
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
                )
            )
        delivered = receiver.tally("DELIVERED")
        delivered.sent = set(accepted)
        with trio.move_on_after(DRAIN_TIMEOUT):
            await delivered.wait_all()
        return await final_statuses(clients[1], accepted)
