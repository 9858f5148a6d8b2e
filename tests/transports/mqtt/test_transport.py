"""``MqttTransport`` end to end against the real Mosquitto, on both brokers."""

from __future__ import annotations

import json
from typing import Any

import trio

from tests.broker.test_contract import nothing_arrives, receive
from tests.dispatch.conftest import poll
from tests.test_worker import running_worker
from tests.transports.helpers import events
from tests.transports.mqtt.conftest import quick_settings
from tests.transports.mqtt.test_reconnect import proxy_to
from vumi_like.broker import BrokerInspector
from vumi_like.messages import EventType, Message
from vumi_like.transports.mqtt import MqttTransport, MqttTransportConfig, open_mqtt_client

NOTIFICATION = {
    "payload": {
        "message": "I love oov",
        "context": {"type": "user", "metadata": {"id": 1337, "name": "John Doe"}},
        "author": {"username": "Bob", "real_name": "Bob Smith"},
    },
    "id": 3,
    "time": "2018-03-27T08:14:51.136675+00:00",
}


def config(unique: str, port: int, topic: str, **fields: Any) -> MqttTransportConfig:
    settings = quick_settings(port).model_dump()
    return MqttTransportConfig(
        transport_name=unique,
        topic_base=topic.replace("/", "-"),
        retry_delay_base=0.05,
        retry_jitter=0,
        **{**settings, **fields},
    )


def outbound(unique: str, **mqtt: Any) -> Message:
    return Message(
        to_addr="1337",
        from_addr="notifications",
        transport_name=unique,
        transport_type="mqtt",
        content="I love oov",
        helper_metadata={"mqtt": mqtt} if mqtt else {},
    )


async def test_a_notification_is_published_on_its_topic_and_acked_after_the_puback(
    broker: BrokerInspector, unique: str, mosquitto: tuple[str, int], topic: str
):
    message = outbound(unique, target_type="user", target_id="1337", payload=NOTIFICATION)
    expected_topic = f"/{topic.replace('/', '-')}/user/1337/messages/publish"
    with trio.fail_after(10):
        async with (
            open_mqtt_client(quick_settings(mosquitto[1])) as subscriber,
            running_worker(MqttTransport, config(unique, mosquitto[1], topic), broker),
        ):
            await subscriber.wait_connected()
            await subscriber.subscribe(expected_topic, qos=1)
            await broker.publish(f"{unique}.outbound", message.to_json())
            received = await subscriber.messages.receive()
            (ack,) = await events(broker, unique, 1)
    assert received.topic == expected_topic
    assert received.qos == 1
    assert json.loads(received.payload) == NOTIFICATION
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id == message.message_id


async def test_without_a_payload_the_content_goes_in_the_same_shape(
    broker: BrokerInspector, unique: str, mosquitto: tuple[str, int], topic: str
):
    message = outbound(unique)
    cfg = config(unique, mosquitto[1], topic, topic_template="/{topic_base}/to/{to_addr}", qos=2)
    with trio.fail_after(10):
        async with (
            open_mqtt_client(quick_settings(mosquitto[1])) as subscriber,
            running_worker(MqttTransport, cfg, broker),
        ):
            await subscriber.wait_connected()
            await subscriber.subscribe(f"/{topic.replace('/', '-')}/to/1337", qos=2)
            await broker.publish(f"{unique}.outbound", message.to_json())
            received = await subscriber.messages.receive()
            (ack,) = await events(broker, unique, 1)
    body = json.loads(received.payload)
    assert body["payload"] == {"message": "I love oov"}
    assert body["id"] == message.message_id
    assert body["time"].endswith("+00:00")
    assert ack.event_type == EventType.ACK


async def test_a_message_without_its_topics_fields_is_nacked(
    broker: BrokerInspector, unique: str, mosquitto: tuple[str, int], topic: str
):
    bad = [
        outbound(unique, target_type="user"),
        outbound(unique, target_type="a/b", target_id="1"),
    ]
    with trio.fail_after(10):
        async with running_worker(MqttTransport, config(unique, mosquitto[1], topic), broker):
            for message in bad:
                await broker.publish(f"{unique}.outbound", message.to_json())
            nacks = await events(broker, unique, 2)
    assert all(n.event_type == EventType.NACK for n in nacks)
    reasons = {n.user_message_id: n.nack_reason or "" for n in nacks}
    assert "needs a value for 'target_id'" in reasons[bad[0].message_id]
    assert "'target_type' ('a/b') may not contain '/'" in reasons[bad[1].message_id]


async def test_subscribed_messages_become_inbound(
    broker: BrokerInspector, unique: str, mosquitto: tuple[str, int], topic: str
):
    cfg = config(unique, mosquitto[1], topic, subscriptions=[f"{topic}/in/+"])
    with trio.fail_after(10):
        async with (
            running_worker(MqttTransport, cfg, broker) as transport,
            open_mqtt_client(quick_settings(mosquitto[1])) as publisher,
        ):
            await transport.client.wait_connected()
            await publisher.wait_connected()
            await publisher.publish(f"{topic}/in/device-7", "temperature 21°C".encode(), qos=1)
            await publisher.publish(f"{topic}/in/device-8", b"\xff\x00", qos=1)
            deliveries = await receive(broker, f"{unique}.inbound", 2)
    first, second = (Message.from_json(d.body) for d in deliveries)
    assert (first.from_addr, first.to_addr) == (f"{topic}/in/device-7", f"{topic}/in/+")
    assert first.content == "temperature 21°C"
    assert first.transport_type == "mqtt"
    assert first.transport_metadata["mqtt"]["qos"] == 1
    assert second.content is None
    assert second.transport_metadata["mqtt"]["payload_base64"] == "/wA="


async def test_a_lost_broker_pauses_outbound_until_it_is_back(
    broker: BrokerInspector, unique: str, mosquitto: tuple[str, int], topic: str
):
    with trio.fail_after(15):
        async with proxy_to(mosquitto[1]) as proxy:
            cfg = config(unique, proxy.port, topic, topic_template="/{topic_base}/{to_addr}")
            async with running_worker(MqttTransport, cfg, broker) as transport:
                await transport.client.wait_connected()
                assert transport.health()[1] == 200
                proxy.refusing = True
                proxy.cut()

                async def disconnected() -> bool:
                    return not transport.client.connected

                await poll(disconnected)
                body, status = transport.health()
                assert status == 500 and body["components"]["provider"]["state"] == "down"
                await broker.publish(f"{unique}.outbound", outbound(unique).to_json())
                assert await nothing_arrives(broker, f"{unique}.event", within=0.3)

                proxy.refusing = False
                (ack,) = await events(broker, unique, 1)
                assert transport.health()[1] == 200
    assert ack.event_type == EventType.ACK
