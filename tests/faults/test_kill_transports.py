"""``kill -9`` of a provider transport while 5,000 messages (``FAULTS_MESSAGES``) flow to
its provider; it is restarted, and nothing is missing at either end of the path.

Each test publishes envelopes straight onto the transport's outbound queue and plays
the provider, as the provider behaves: a real server (Mosquitto, aiosmtpd), or a fake
speaking the provider's protocol on a socket where the provider is a cloud. What must
arrive: every message at the provider (duplicates counted: a message whose answer the
dead transport never read is sent again), its ack on the transport's event queue and,
where the provider reports delivery, its ``delivered`` report there. A provider's
reports are sent until answered, as providers do, so those the dead transport never
answered come again to the restarted one.

* **SMPP**: the fake SMSC (``tests/transports/smpp/smsc.py``) answers each submit_sm
  and sends a DELIVRD receipt for every message id it gives, again on whichever
  session is bound next until the ESME answers it. Provider ids are kept in Redis. A
  submit_sm answered after the kill is sent again under a new id; the receipt for
  the id nobody read matches no message and is dead-lettered with that reason (after
  ``unmatched_report_retries``): such letters are allowed, and only for those ids.
* **MQTT**: published at QoS 1 to a Mosquitto of the test's own, which queues without
  limit for a subscriber that falls behind (``PrivateMosquitto``); a subscriber (QoS 1,
  acknowledging each) counts them by the payload's id.
* **SMTP**: mailed through aiosmtpd (on a thread of the test's), counted by each
  mail's ``Message-ID`` (the envelope's message id).
* **HTTP SMS** (``preset: kannel``, the default in-process message cache): a fake
  Kannel, which fetches each message's ``dlr-url`` (delivered). The reports of
  messages sent before the kill come to the restarted transport, whose cache is
  empty: Kannel's reports name our message id, and need none.
* **WhatsApp**: the fake Graph API (``tests/transports/test_whatsapp.py``), whose
  "Meta" POSTs a signed ``delivered`` status webhook for every message it accepted,
  again until it is answered 200. Wamids are kept in Redis.
"""

from __future__ import annotations

import contextlib
import email
import functools
import itertools
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests.faults.harness import (
    AMQP_URL,
    MESSAGES,
    RECEIPT_SENDERS,
    RECEIPT_TIMEOUT,
    SMPP,
    Fleet,
    PrivateMosquitto,
    Tally,
    event_tallies,
    fleet_in_tmp,
    free_port,
    kill_mid_stream,
    letter_error,
    nothing_missing,
    outbound,
    own_broker,
    redis_cache,
    send_receipts,
    smpp_config,
    take_dead_letters,
    transport_queues,
)
from tests.transports.http_sms.fakes import FakeProvider, Recorded, fake_kannel
from tests.transports.mqtt.conftest import quick_settings
from tests.transports.smpp.smsc import FakeSmsc
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
from vumi_like.broker import BrokerInspector
from vumi_like.messages import Event, EventType, Message
from vumi_like.transports.mqtt import TrioMqttClient, open_mqtt_client
from vumi_like.transports.whatsapp import SIGNATURE_HEADER, signature

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

MQTT = "vumi_like.transports.mqtt.MqttTransport"
SMTP = "vumi_like.transports.smtp.SmtpTransport"
HTTP_SMS = "vumi_like.transports.http_sms.HttpSmsTransport"
WHATSAPP = "vumi_like.transports.whatsapp.WhatsAppCloudTransport"
UNMATCHED_SETTLE = 5  # seconds for an unmatched receipt's one retry (1 s +- 20 %) to end


async def kill_transport(
    broker: BrokerInspector,
    fleet: Fleet,
    name: str,
    class_path: str,
    config: dict[str, Any],
    messages: list[Message],
    on_event: Callable[[Event], None],
    acks: Tally,
    *ends: Tally,
    beside: Sequence[Callable[[], Awaitable[object]]] = (),
) -> None:
    """Start transport ``name`` with ``config``, then ``kill_mid_stream`` it."""
    fleet.add(name, class_path, config)
    await fleet.wait_healthy()
    connector = config["transport_name"]
    await kill_mid_stream(
        broker, fleet, name, connector, messages, on_event, acks, *ends, beside=beside
    )


# -- SMPP


async def test_kill_9_of_smpp_transport_loses_nothing(services: None, unique: str) -> None:
    transport = f"{unique}-smpp"
    messages = [outbound(unique, i, transport) for i in range(MESSAGES)]
    acks, delivered, on_event = event_tallies({m.message_id for m in messages})
    acked_as: set[str] = set()  # the provider ids the acks name

    def on_smpp_event(event: Event) -> None:
        if event.event_type == EventType.ACK and event.sent_message_id:
            acked_as.add(event.sent_message_id)
        on_event(event)

    smsc = FakeSmsc()
    receipts = Tally()  # receipts the ESME answered, by the SMSC's message id
    async with (
        own_broker(transport_queues(transport)) as broker,
        trio.open_nursery() as smsc_nursery,
    ):
        await smsc_nursery.start(smsc.serve)
        with fleet_in_tmp(AMQP_URL) as fleet:
            config = smpp_config(transport, smsc, redis_cache(unique))
            config["unmatched_report_retries"] = 1
            await kill_transport(
                broker,
                fleet,
                "smpp",
                SMPP,
                config,
                messages,
                on_smpp_event,
                acks,
                delivered,
                receipts,
                beside=[functools.partial(send_receipts, smsc, receipts)],
            )
            # An unmatched receipt is tried again about a second later, then is a dead
            # letter if its id is still unknown.
            await trio.sleep(UNMATCHED_SETTLE)
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


# -- MQTT


async def test_kill_9_of_mqtt_transport_loses_nothing(services: None, unique: str) -> None:
    # A Mosquitto of its own: the subscriber counting at the far end may fall behind
    # by more than the shared one keeps for it.
    with PrivateMosquitto() as mosquitto:
        await _kill_mqtt_transport(mosquitto.host, mosquitto.port, unique)


async def _kill_mqtt_transport(host: str, port: int, unique: str) -> None:
    transport = f"{unique}-mqtt"
    target = {"target_type": "user", "target_id": "kill"}
    messages = [
        outbound(unique, i, transport, helper_metadata={"mqtt": target}) for i in range(MESSAGES)
    ]
    acks, _, on_event = event_tallies({m.message_id for m in messages})
    published = Tally(sent={m.message_id for m in messages})  # by the payload's id
    config = {
        "transport_name": transport,
        "host": host,
        "port": port,
        "topic_base": unique,
        "qos": 1,
        "worker_concurrency": 50,
    }
    async with (
        own_broker(transport_queues(transport)) as broker,
        open_mqtt_client(quick_settings(port, host=host)) as device,
    ):
        await device.wait_connected()
        await device.subscribe(f"/{unique}/user/kill/messages/publish", qos=1)
        with fleet_in_tmp(AMQP_URL) as fleet:
            await kill_transport(
                broker,
                fleet,
                "mqtt",
                MQTT,
                config,
                messages,
                on_event,
                acks,
                published,
                beside=[functools.partial(count_published, device, published)],
            )
        letters = await take_dead_letters(broker, unique)
    nothing_missing(letters, {"acks": acks, "received from Mosquitto": published})


async def count_published(device: TrioMqttClient, published: Tally) -> None:
    """Each message ``device`` receives, by its payload's id, acknowledged at once."""
    async for message in device.messages:
        published.arrive(json.loads(message.payload)["id"])
        device.ack(message)


# -- SMTP


async def test_kill_9_of_smtp_transport_loses_nothing(services: None, unique: str) -> None:
    transport = f"{unique}-email"
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
    try:
        config = {
            "transport_name": transport,
            "host": "127.0.0.1",
            "port": server.port,
            "security": "none",
            "worker_concurrency": 50,
        }
        async with own_broker(transport_queues(transport)) as broker:
            with fleet_in_tmp(AMQP_URL) as fleet:
                await kill_transport(
                    broker,
                    fleet,
                    "email",
                    SMTP,
                    config,
                    messages,
                    on_event,
                    acks,
                    mailed,
                    beside=[functools.partial(count_mailed, server.recorder, mailed)],
                )
            letters = await take_dead_letters(broker, unique)
    finally:
        server.stop()
    nothing_missing(letters, {"acks": acks, "mails the SMTP server took": mailed})


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


# -- HTTP SMS (Kannel)


async def test_kill_9_of_http_sms_transport_loses_nothing(services: None, unique: str) -> None:
    transport = f"{unique}-sms"
    messages = [outbound(unique, i, transport) for i in range(MESSAGES)]
    acks, delivered, on_event = event_tallies({m.message_id for m in messages})
    by_text = {m.content: m.message_id for m in messages}
    taken = Tally(sent={m.message_id for m in messages})  # requests the provider answered
    async with fake_kannel() as kannel, own_broker(transport_queues(transport)) as broker:
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
            await kill_transport(
                broker,
                fleet,
                "sms",
                HTTP_SMS,
                config,
                messages,
                on_event,
                acks,
                delivered,
                beside=[functools.partial(report_each, kannel, by_text, taken)],
            )
        letters = await take_dead_letters(broker, unique)
    tallies = {"requests to the provider": taken, "acks": acks, "delivered reports": delivered}
    nothing_missing(letters, tallies)


async def report_each(kannel: FakeProvider, by_text: dict[str | None, str], taken: Tally) -> None:
    """As Kannel does for a message its SMSC delivered: fetch its ``dlr-url`` (type 1),
    for every message the provider took; each again until it is answered 2xx, as a
    provider that retries its callbacks does."""
    async with reporters() as (client, nursery, limit):
        for seen in itertools.count():
            await kannel.wait_for(seen + 1, within=math.inf)
            sent: Recorded = kannel.requests[seen]
            taken.arrive(by_text[sent.query.get("text")])
            url = sent.query["dlr-url"].replace("%d", "1")
            await limit.acquire()
            request = client.build_request("GET", url)
            nursery.start_soon(call_until_answered, client, request, limit)


@contextlib.asynccontextmanager
async def reporters() -> AsyncIterator[tuple[httpx.AsyncClient, trio.Nursery, trio.Semaphore]]:
    """An HTTP client, a nursery and ``RECEIPT_SENDERS`` slots for a provider's callbacks."""
    async with (
        httpx.AsyncClient(timeout=RECEIPT_TIMEOUT) as client,
        trio.open_nursery() as nursery,
    ):
        yield client, nursery, trio.Semaphore(RECEIPT_SENDERS)


async def call_until_answered(
    client: httpx.AsyncClient, request: httpx.Request, limit: trio.Semaphore
) -> None:
    """Send ``request`` until it is answered 2xx; then free a slot of ``limit``."""
    try:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.send(request)).is_success:
                    return
            await trio.sleep(0.2)
    finally:
        limit.release()


# -- WhatsApp


async def test_kill_9_of_whatsapp_transport_loses_nothing(services: None, unique: str) -> None:
    transport = f"{unique}-whatsapp"
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
    async with (
        fake_http_server(graph.respond) as server,
        own_broker(transport_queues(transport)) as broker,
    ):
        with fleet_in_tmp(AMQP_URL) as fleet:
            port = free_port()
            config = {
                "transport_name": transport,
                "http_bind": f"127.0.0.1:{port}",
                "api_base_url": server.url,
                "api_version": VERSION,
                "phone_number_id": NUMBER_ID,
                "access_token": TOKEN,
                "app_secret": APP_SECRET,
                "verify_token": VERIFY_TOKEN,
                "worker_concurrency": 50,
                **redis_cache(unique),
                "provider_id_ttl": 300,
                "final_report_ttl": 60,
            }
            webhook = f"http://127.0.0.1:{port}/whatsapp/webhook"
            await kill_transport(
                broker,
                fleet,
                "whatsapp",
                WHATSAPP,
                config,
                messages,
                on_event,
                acks,
                delivered,
                beside=[functools.partial(post_statuses, graph, webhook, by_text, taken)],
            )
        letters = await take_dead_letters(broker, unique)
    tallies = {"messages the Graph API took": taken, "acks": acks, "delivered statuses": delivered}
    nothing_missing(letters, tallies)


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


async def post_statuses(
    graph: RecordingGraph, url: str, by_text: dict[str | None, str], taken: Tally
) -> None:
    """As Meta does: a signed ``delivered`` status webhook for every message accepted,
    each POSTed again until it is answered 2xx."""
    async with reporters() as (client, nursery, limit):
        for seen in itertools.count():
            while len(graph.accepted) <= seen:
                await graph.changed.wait()
            text, wamid = graph.accepted[seen]
            taken.arrive(by_text[text])
            body = json.dumps(notification(statuses((wamid, "delivered")))).encode()
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(APP_SECRET, body),
            }
            request = client.build_request("POST", url, content=body, headers=headers)
            await limit.acquire()
            nursery.start_soon(call_until_answered, client, request, limit)
