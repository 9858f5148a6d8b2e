"""``SmtpTransport`` end to end: outbound on the broker, mail at a real SMTP server."""

from __future__ import annotations

import base64
import email
import email.policy
from typing import Any

import trio

from tests.broker.test_contract import nothing_arrives
from tests.test_worker import free_port, running_worker
from tests.transports.helpers import events
from tests.transports.smtp.conftest import StartServer
from tests.transports.smtp.servers import Recorder
from vumi_like.broker import BrokerInspector
from vumi_like.messages import DeliveryStatus, EventType, Message
from vumi_like.transports.smtp import SmtpTransport, SmtpTransportConfig


def config(unique: str, port: int, **fields: Any) -> SmtpTransportConfig:
    return SmtpTransportConfig(
        transport_name=unique,
        host="127.0.0.1",
        port=port,
        security="none",
        timeout=2,
        retry_delay_base=0.05,
        retry_jitter=0,
        reconnect_interval=0.05,
        **fields,
    )


def outbound(unique: str, to_addr: str = "bob@example.com", **fields: Any) -> Message:
    return Message(
        to_addr=to_addr,
        from_addr="noreply@acme.example",
        transport_name=unique,
        transport_type="email",
        content="Your order shipped.",
        **fields,
    )


async def wait_for_mails(recorder: Recorder, count: int) -> None:
    await trio.to_thread.run_sync(lambda: recorder.wait_for(lambda r: len(r.received) >= count))


async def test_an_email_is_sent_part_by_part_and_acked(
    broker: BrokerInspector, unique: str, start_server: StartServer
):
    server = start_server()
    message = outbound(
        unique,
        helper_metadata={
            "email": {
                "subject": "Order 42 — shipped",
                "html": "<p>Your order <b>shipped</b>.</p>",
                "sender_name": "ACME Shop",
                "reply_to": "help@acme.example",
                "attachments": [
                    {
                        "name": "invoice.txt",
                        "content": base64.b64encode(b"total: 10").decode(),
                        "content_type": "text/plain",
                    }
                ],
            }
        },
    )
    with trio.fail_after(10):
        async with running_worker(SmtpTransport, config(unique, server.port), broker):
            await broker.publish(f"{unique}.outbound", message.to_json())
            (ack,) = await events(broker, unique, 1)
            await wait_for_mails(server.recorder, 1)
    assert ack.event_type == EventType.ACK
    assert ack.user_message_id == message.message_id
    assert ack.sent_message_id == f"<{message.message_id}@acme.example>"
    (received,) = server.recorder.received
    assert received.rcpt_tos == ["bob@example.com"]
    mail = email.message_from_bytes(received.content, policy=email.policy.default)
    assert mail["Subject"] == "Order 42 — shipped"
    assert mail["From"] == "ACME Shop <noreply@acme.example>"
    assert mail["Reply-To"] == "help@acme.example"
    text, html, invoice = [part for part in mail.walk() if not part.is_multipart()]
    assert text.get_content().strip() == "Your order shipped."
    assert "<b>shipped</b>" in html.get_content()
    assert invoice.get_filename() == "invoice.txt"
    assert invoice.get_content() == "total: 10"


async def test_a_refused_recipient_is_a_nack_with_the_servers_reply(
    broker: BrokerInspector, unique: str, start_server: StartServer
):
    recorder = Recorder(rcpt_replies={"nobody@example.com": "550 5.1.1 No such user"})
    server = start_server(recorder)
    message = outbound(unique, to_addr="nobody@example.com")
    with trio.fail_after(10):
        async with running_worker(SmtpTransport, config(unique, server.port), broker):
            await broker.publish(f"{unique}.outbound", message.to_json())
            (nack,) = await events(broker, unique, 1)
    assert nack.event_type == EventType.NACK
    assert nack.nack_reason is not None and "550" in nack.nack_reason
    assert "No such user" in nack.nack_reason


async def test_a_4xx_is_retried_until_the_server_takes_it(
    broker: BrokerInspector, unique: str, start_server: StartServer
):
    recorder = Recorder(data_reply="451 4.3.0 Try again later")
    server = start_server(recorder)
    with trio.fail_after(10):
        async with running_worker(SmtpTransport, config(unique, server.port), broker):
            await broker.publish(f"{unique}.outbound", outbound(unique).to_json())
            (pending,) = await events(broker, unique, 1)
            recorder.data_reply = "250 2.0.0 Ok: queued as 4F2B81"
            (ack,) = await events(broker, unique, 1)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert "451" in pending.transport_metadata["retry"]["reason"]
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id == "4F2B81"


async def test_an_unreachable_server_pauses_sending_until_it_is_back(
    broker: BrokerInspector, unique: str, start_server: StartServer
):
    port = free_port()
    messages = [outbound(unique, to_addr=f"user{n}@example.com") for n in range(3)]
    with trio.fail_after(15):
        async with running_worker(SmtpTransport, config(unique, port), broker) as transport:
            await broker.publish(f"{unique}.outbound", messages[0].to_json())
            (pending,) = await events(broker, unique, 1)
            assert "cannot connect" in pending.transport_metadata["retry"]["reason"]
            body, status = transport.health()
            assert status == 500 and body["components"]["provider"]["state"] == "down"
            for message in messages[1:]:
                await broker.publish(f"{unique}.outbound", message.to_json())
            # Paused: the others are not taken, so they are not failed one by one.
            assert await nothing_arrives(broker, f"{unique}.event", within=0.3)

            server = start_server(port=port)
            acks = await events(broker, unique, 3)
            await wait_for_mails(server.recorder, 3)
            assert transport.health()[1] == 200
    assert {a.user_message_id for a in acks} == {m.message_id for m in messages}
    assert all(a.event_type == EventType.ACK for a in acks)
    assert sorted(r.rcpt_tos[0] for r in server.recorder.received) == [
        "user0@example.com",
        "user1@example.com",
        "user2@example.com",
    ]


async def test_a_mail_that_cannot_be_built_is_a_nack(
    broker: BrokerInspector, unique: str, start_server: StartServer
):
    server = start_server()
    message = outbound(unique, helper_metadata={"email": {"subject": "a\r\nBcc: x@evil.example"}})
    with trio.fail_after(10):
        async with running_worker(SmtpTransport, config(unique, server.port), broker):
            await broker.publish(f"{unique}.outbound", message.to_json())
            (nack,) = await events(broker, unique, 1)
    assert nack.event_type == EventType.NACK
    assert nack.nack_reason is not None and "subject" in nack.nack_reason
    assert server.recorder.received == []
