"""``EchoApplication`` on the memory broker and on RabbitMQ."""

from __future__ import annotations

from typing import Any

import trio

from tests.broker.test_contract import nothing_arrives, receive
from tests.test_worker import running_worker
from vumi_like.applications.echo import EchoApplication, EchoApplicationConfig
from vumi_like.broker import Broker
from vumi_like.messages import Message, SessionEvent


def inbound(unique: str, content: str, **fields: Any) -> Message:
    return Message(
        to_addr="*120*1234#",
        from_addr="+27820000001",
        transport_name=unique,
        transport_type="ussd",
        content=content,
        **fields,
    )


async def test_echo_replies_with_prefix_and_content_in_reply_to_the_inbound(
    broker: Broker, unique: str
):
    config = EchoApplicationConfig(connector_name=unique, prefix="you said: ")
    message = inbound(unique, "ping", session_event=SessionEvent.NEW)
    with trio.fail_after(5):
        async with running_worker(EchoApplication, config, broker):
            await broker.publish(f"{unique}.inbound", message.to_json())
            [delivery] = await receive(broker, f"{unique}.outbound", 1)
    reply = Message.from_json(delivery.body)
    assert reply.content == "you said: ping"
    assert reply.in_reply_to == message.message_id
    assert reply.to_addr == message.from_addr
    assert reply.from_addr == message.to_addr
    assert reply.transport_name == unique
    assert reply.session_event == SessionEvent.RESUME


async def test_echo_does_not_reply_to_a_session_close(broker: Broker, unique: str):
    config = EchoApplicationConfig(connector_name=unique)
    closing = inbound(unique, "bye", session_event=SessionEvent.CLOSE)
    later = inbound(unique, "again")
    with trio.fail_after(5):
        async with running_worker(EchoApplication, config, broker):
            await broker.publish(f"{unique}.inbound", closing.to_json())
            await broker.publish(f"{unique}.inbound", later.to_json())
            # The later message's reply shows the application was listening; the
            # close must have had none.
            [delivery] = await receive(broker, f"{unique}.outbound", 1)
            assert await nothing_arrives(broker, f"{unique}.outbound", within=0.2)
    reply = Message.from_json(delivery.body)
    assert reply.in_reply_to == later.message_id
    assert reply.content == "echo: again"
