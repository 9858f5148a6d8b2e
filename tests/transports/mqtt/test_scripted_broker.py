"""What a broker may send that Mosquitto won't: garbage, silence, refusals, odd topics.

Each case must end in one log line and the right outcome (state, exception), never a
crash; the client reconnects where the connection is spoiled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
import trio

from tests.transports.mqtt.conftest import StateWatcher, quick_settings
from tests.transports.mqtt.fake_broker import (
    DISCONNECT,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    FakeBroker,
    FakePeer,
    Script,
    packet,
)
from vumi_like.transports.mqtt import (
    MqttSettings,
    SubscriptionError,
    TrioMqttClient,
    open_mqtt_client,
)
from vumi_like.transports.outcomes import (
    PermanentFailure,
    ProviderUnavailable,
    TemporaryFailure,
)


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[FakeBroker]:
    async with trio.open_nursery() as nursery:
        broker = FakeBroker(script)
        await nursery.start(broker.serve)
        yield broker
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def client_of(
    broker: FakeBroker, watcher: StateWatcher, **fields: object
) -> AsyncIterator[TrioMqttClient]:
    settings: MqttSettings = quick_settings(broker.port, **fields)
    async with open_mqtt_client(settings, on_state_change=watcher) as client:
        yield client


def warnings(logs: Sequence[Mapping[str, Any]]) -> list[tuple[object, object]]:
    return [(e["event"], e.get("reason")) for e in logs if e["log_level"] != "info"]


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        # A remaining length of more than four bytes.
        (b"\xff\xff\xff\xff\xff\xff", "A network protocol error occurred when communicating"),
        # Packet type 0 is reserved: an unknown command.
        (b"\x00\x00", "A network protocol error occurred when communicating"),
        # A PUBACK too short to hold a packet identifier.
        (b"\x40\x01\x00", "A network protocol error occurred when communicating"),
    ],
)
async def test_garbage_from_the_broker_drops_the_connection_and_reconnects(
    protocol: str, garbage: bytes, reason: str
) -> None:
    async def script(peer: FakePeer) -> None:
        await peer.accept_connect()
        if peer.index == 1:
            await peer.receive_type(PUBLISH)
            await peer.send(garbage)
            await peer.wait_closed()
        else:
            await peer.serve()

    watcher = StateWatcher()
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with (
            scripted(script) as broker,
            client_of(broker, watcher, protocol=protocol) as client,
        ):
            await watcher.until(connected=True)
            with pytest.raises(ProviderUnavailable):
                await client.publish("t/x", b"x", qos=1)
            lost = await watcher.until(connected=False)
            await watcher.until(connected=True)
            await client.publish("t/x", b"x", qos=1)
    assert lost.reason.startswith(f"connection lost: {reason}")
    assert warnings(logs) == [
        ("mqtt connection lost", lost.reason.removeprefix("connection lost: "))
    ]


async def test_a_connection_closed_mid_packet_fails_the_publish_waiting_on_it(
    protocol: str,
) -> None:
    async def script(peer: FakePeer) -> None:
        await peer.accept_connect()
        await peer.receive_type(PUBLISH)
        await peer.send(b"\x40\x02\x00")  # the first three bytes of a PUBACK, then close

    watcher = StateWatcher()
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with (
            scripted(script) as broker,
            client_of(broker, watcher, protocol=protocol) as client,
        ):
            await client.wait_connected()
            with pytest.raises(ProviderUnavailable) as caught:
                await client.publish("t/x", b"x", qos=1)
    assert caught.value.reason == (
        f"connection to the MQTT broker at 127.0.0.1:{broker.port} lost: "
        "the broker closed the connection"
    )
    assert warnings(logs)[0] == ("mqtt connection lost", "the broker closed the connection")


async def test_a_broker_that_never_sends_connack_times_out_and_is_tried_again() -> None:
    async def script(peer: FakePeer) -> None:
        await peer.receive()  # CONNECT, never answered
        await peer.wait_closed()

    watcher = StateWatcher()
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with scripted(script) as broker, client_of(broker, watcher, connect_timeout=0.2):
            first = await watcher.until(connected=False)
            await watcher.until(connected=False)
    assert first.reason == "connect failed: no CONNACK within 0.2 s"
    assert broker.connections >= 2
    assert warnings(logs)[:2] == [("mqtt connect failed", "no CONNACK within 0.2 s")] * 2


@pytest.mark.parametrize(
    ("protocol", "code", "reason"),
    [
        ("mqtt5", 0x87, "Not authorized"),
        ("mqtt5", 0x86, "Bad user name or password"),
        ("mqtt311", 5, "Not authorized"),
        ("mqtt311", 4, "Bad user name or password"),
    ],
)
async def test_a_refused_connection_is_reported_with_the_brokers_reason(
    protocol: str, code: int, reason: str
) -> None:
    async def script(peer: FakePeer) -> None:
        await peer.receive()
        peer.mqtt5 = protocol == "mqtt5"
        await peer.send(peer.connack(code))
        await peer.wait_closed()

    watcher = StateWatcher()
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with scripted(script) as broker, client_of(broker, watcher, protocol=protocol):
            refused = await watcher.until(connected=False)
    assert refused.reason == f"connect failed: broker refused the connection: {reason}"
    assert warnings(logs)[0] == ("mqtt connect failed", f"broker refused the connection: {reason}")


async def test_a_broker_disconnect_says_why() -> None:
    async def script(peer: FakePeer) -> None:
        await peer.accept_connect()
        if peer.index == 1:
            await peer.receive_type(PUBLISH)
            await peer.send(packet(DISCONNECT, 0, bytes([0x8B, 0])))  # Server shutting down
            await peer.wait_closed()
        else:
            await peer.serve()

    watcher = StateWatcher()
    with trio.fail_after(5):
        async with scripted(script) as broker, client_of(broker, watcher) as client:
            await watcher.until(connected=True)
            with pytest.raises(ProviderUnavailable, match="Server shutting down"):
                await client.publish("t/x", b"x", qos=1)
            lost = await watcher.until(connected=False)
            await watcher.until(connected=True)
    assert lost.reason == "connection lost: broker disconnected: Server shutting down"


@pytest.mark.parametrize(
    ("qos", "code", "outcome", "reason"),
    [
        (1, 0x10, None, ""),
        (1, 0x97, TemporaryFailure, "Quota exceeded (0x97)"),
        (1, 0x80, TemporaryFailure, "Unspecified error (0x80)"),
        (1, 0x83, TemporaryFailure, "Implementation specific error (0x83)"),
        (1, 0x91, TemporaryFailure, "Packet identifier in use (0x91)"),
        (1, 0x87, PermanentFailure, "Not authorized (0x87)"),
        (1, 0x90, PermanentFailure, "Topic name invalid (0x90)"),
        (1, 0x99, PermanentFailure, "Payload format invalid (0x99)"),
        # PUBCOMP can only say Success or Packet identifier not found.
        (2, 0x00, None, ""),
        (2, 0x92, TemporaryFailure, "Packet identifier not found (0x92)"),
    ],
)
async def test_mqtt5_reason_codes_decide_the_outcome(
    qos: int, code: int, outcome: type[Exception] | None, reason: str
) -> None:
    async def script(peer: FakePeer) -> None:
        await peer.accept_connect()
        mid = (await peer.receive_type(PUBLISH)).publish_topic_and_mid()[1] or 0
        await peer.send(peer.ack(PUBACK, mid + 100))  # for no publish of ours: ignored
        if qos == 1:
            await peer.send(peer.ack(PUBACK, mid, code))
        else:
            await peer.send(peer.ack(PUBREC, mid))
            assert (await peer.receive_type(PUBREL)).mid() == mid
            await peer.send(peer.ack(PUBCOMP, mid, code))
        await peer.serve()

    watcher = StateWatcher()
    with trio.fail_after(5):
        async with scripted(script) as broker, client_of(broker, watcher) as client:
            await client.wait_connected()
            if outcome is None:
                await client.publish("t/x", b"x", qos=qos)
            else:
                with pytest.raises(outcome) as caught:
                    await client.publish("t/x", b"x", qos=qos)
                assert not isinstance(caught.value, ProviderUnavailable)
                assert caught.value.args[0] == f"broker refused the publish on 't/x': {reason}"
            assert client.connected


async def test_an_inbound_topic_that_is_not_utf8_is_dropped_logged_and_acked(
    protocol: str,
) -> None:
    acked = trio.Event()

    async def script(peer: FakePeer) -> None:
        await peer.accept_connect()
        await peer.send(peer.publish(b"t/\xff\xfe", b"bad", qos=1, mid=7))
        await peer.send(peer.publish(b"t/ok", b"good", qos=1, mid=8))
        assert (await peer.receive_type(PUBACK)).mid() == 7
        acked.set()
        await peer.serve()

    watcher = StateWatcher()
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with (
            scripted(script) as broker,
            client_of(broker, watcher, protocol=protocol) as client,
        ):
            message = await client.messages.receive()
            await acked.wait()
            assert client.connected
    assert (message.topic, message.payload) == ("t/ok", b"good")
    assert warnings(logs) == [("mqtt inbound dropped", "topic is not UTF-8")]


async def script_suback(peer: FakePeer, codes: list[int]) -> None:
    await peer.accept_connect()
    while True:
        subscribe = await peer.receive_type(SUBSCRIBE)
        body = subscribe.mid().to_bytes(2) + (b"\x00" if peer.mqtt5 else b"")
        await peer.send(packet(SUBACK, 0, body + bytes([codes.pop(0)])))


@pytest.mark.parametrize(("protocol", "code"), [("mqtt5", 0x87), ("mqtt311", 0x80)])
async def test_a_subscription_the_broker_refuses_raises_and_is_forgotten(
    protocol: str, code: int
) -> None:
    async def script(peer: FakePeer) -> None:
        await script_suback(peer, [code, 1])

    watcher = StateWatcher()
    with trio.fail_after(5):
        async with (
            scripted(script) as broker,
            client_of(broker, watcher, protocol=protocol) as client,
        ):
            await client.wait_connected()
            with pytest.raises(SubscriptionError, match="broker refused the subscription 'a/#'"):
                await client.subscribe("a/#", qos=1)
            await client.subscribe("b/#", qos=1)


async def test_a_refusal_when_subscribing_again_is_logged_and_the_rest_kept() -> None:
    async def script(peer: FakePeer) -> None:
        await peer.accept_connect()
        subscribe = await peer.receive_type(SUBSCRIBE)
        await peer.send(packet(SUBACK, 0, subscribe.mid().to_bytes(2) + b"\x00" + b"\x87\x01"))
        await peer.send(peer.publish(b"b/x", b"kept", qos=1, mid=1))
        await peer.serve()

    watcher = StateWatcher()
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with scripted(script) as broker:
            client = TrioMqttClient(quick_settings(broker.port), on_state_change=watcher)
            await client.subscribe("a/#", qos=1)
            await client.subscribe("b/#", qos=1)
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                await client.wait_connected()
                message = await client.messages.receive()
                nursery.cancel_scope.cancel()
    assert message.payload == b"kept"
    assert warnings(logs) == [("mqtt subscription refused", "Not authorized")]
    assert [e["topic_filter"] for e in logs if e["event"] == "mqtt subscription refused"] == [
        "a/#"
    ]


async def test_a_broker_that_never_answers_subscribe_gets_reconnected() -> None:
    async def script(peer: FakePeer) -> None:
        await peer.accept_connect()
        await peer.receive_type(SUBSCRIBE)  # never answered
        await peer.wait_closed()

    watcher = StateWatcher()
    with trio.fail_after(5):
        async with scripted(script) as broker:
            client = TrioMqttClient(
                quick_settings(broker.port, ack_timeout=0.2), on_state_change=watcher
            )
            await client.subscribe("a/#")
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                failed = await watcher.until(connected=False)
                nursery.cancel_scope.cancel()
    assert failed.reason == "connect failed: no SUBACK within 0.2 s"
