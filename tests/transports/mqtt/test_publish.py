"""Publishing to a real Mosquitto: each QoS arrives exactly, and each failure has its outcome."""

from __future__ import annotations

import functools

import pytest
import trio

from tests.test_worker import refusing_port
from tests.transports.mqtt.conftest import StateWatcher, quick_settings
from tests.transports.mqtt.private_broker import ALLOWED_PREFIX, MAX_PACKET_SIZE, PrivateBroker
from vumi_like.transports.mqtt import InboundMessage, TrioMqttClient, open_mqtt_client
from vumi_like.transports.outcomes import PermanentFailure, ProviderUnavailable

PAYLOAD = bytes(range(256)) + "naïve ✓".encode()  # every byte value, and some UTF-8


async def next_message(client: TrioMqttClient) -> InboundMessage:
    message = await client.messages.receive()
    client.ack(message)
    return message


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_each_qos_reaches_a_subscriber_exactly(
    mosquitto: tuple[str, int], protocol: str, topic: str, qos: int
) -> None:
    settings = quick_settings(mosquitto[1], protocol=protocol)
    with trio.fail_after(5):
        async with (
            open_mqtt_client(settings) as subscriber,
            open_mqtt_client(settings) as publisher,
        ):
            await subscriber.wait_connected()
            await subscriber.subscribe(f"{topic}/#", qos=2)
            await publisher.wait_connected()
            await publisher.publish(f"{topic}/q{qos}", PAYLOAD, qos=qos)
            message = await next_message(subscriber)
    assert (message.topic, message.payload, message.qos) == (f"{topic}/q{qos}", PAYLOAD, qos)
    assert not message.retain and not message.duplicate


async def test_a_retained_message_reaches_a_late_subscriber(
    mosquitto: tuple[str, int], protocol: str, topic: str
) -> None:
    settings = quick_settings(mosquitto[1], protocol=protocol)
    with trio.fail_after(5):
        async with open_mqtt_client(settings) as publisher:
            await publisher.wait_connected()
            try:
                await publisher.publish(f"{topic}/status", b"online", qos=1, retain=True)
                async with open_mqtt_client(settings) as late:
                    await late.subscribe(f"{topic}/status", qos=1)
                    await late.wait_connected()
                    message = await next_message(late)
            finally:
                # An empty retained message clears the topic's retained message.
                await publisher.publish(f"{topic}/status", b"", qos=1, retain=True)
    assert (message.payload, message.retain) == (b"online", True)


async def test_publish_while_not_connected_is_provider_unavailable(topic: str) -> None:
    watcher = StateWatcher()
    with refusing_port() as port, trio.fail_after(5):
        settings = quick_settings(port)
        async with open_mqtt_client(settings, on_state_change=watcher) as client:
            state = await watcher.until(connected=False)
            with pytest.raises(ProviderUnavailable) as caught:
                await client.publish(f"{topic}/x", b"x", qos=1)
    assert state.reason.startswith("connect failed: ")
    assert "refused" in state.reason.lower()
    assert state.reason in caught.value.reason


@pytest.mark.parametrize("bad", ["a/+/b", "a/#", "", "a\x00b", "\udc80"])
async def test_a_topic_mqtt_forbids_for_publishing_is_a_permanent_failure(
    mosquitto: tuple[str, int], protocol: str, bad: str
) -> None:
    with trio.fail_after(5):
        async with open_mqtt_client(quick_settings(mosquitto[1], protocol=protocol)) as client:
            await client.wait_connected()
            with pytest.raises(PermanentFailure, match="cannot publish"):
                await client.publish(bad, b"x", qos=1)
            await client.publish("vumi-like-test/still-fine", b"x", qos=1)


async def test_mqtt5_refusal_by_the_brokers_acl_is_a_permanent_failure(
    private_mosquitto: PrivateBroker,
) -> None:
    settings = quick_settings(private_mosquitto.plain_port, protocol="mqtt5")
    with trio.fail_after(5):
        async with open_mqtt_client(settings) as client:
            await client.wait_connected()
            with pytest.raises(PermanentFailure) as caught:
                await client.publish("denied/x", b"x", qos=1)
            await client.publish(f"{ALLOWED_PREFIX}/x", b"x", qos=1)
    assert caught.value.reason == (
        "broker refused the publish on 'denied/x': Not authorized (0x87)"
    )


async def test_mqtt311_cannot_see_a_refusal(private_mosquitto: PrivateBroker) -> None:
    """MQTT 3.1.1 has no reason codes: mosquitto acks the refused publish (reasons.py)."""
    settings = quick_settings(private_mosquitto.plain_port, protocol="mqtt311")
    with trio.fail_after(5):
        async with open_mqtt_client(settings) as client:
            await client.wait_connected()
            await client.publish("denied/x", b"x", qos=1)


async def test_a_publish_over_the_brokers_maximum_packet_size_is_a_permanent_failure(
    private_mosquitto: PrivateBroker,
) -> None:
    settings = quick_settings(private_mosquitto.plain_port, protocol="mqtt5")
    topic = f"{ALLOWED_PREFIX}/big"
    # 2 + len(topic) + 2 (packet id) + 1 (properties) + payload, plus 1 + 2 header bytes
    fits = MAX_PACKET_SIZE - (3 + 2 + len(topic) + 2 + 1)
    with trio.fail_after(5):
        async with open_mqtt_client(settings) as client:
            await client.wait_connected()
            with pytest.raises(
                PermanentFailure, match=f"the broker takes at most {MAX_PACKET_SIZE}"
            ):
                await client.publish(topic, b"x" * (fits + 1), qos=1)
            await client.publish(topic, b"x" * fits, qos=1)
            assert client.connected


async def test_interop_with_the_mosquitto_command_line_clients(
    mosquitto: tuple[str, int], mosquitto_clients: None, protocol: str, topic: str
) -> None:
    """Our bytes reach mosquitto_sub exactly, and mosquitto_pub's reach us."""
    port = str(mosquitto[1])
    version = "5" if protocol == "mqtt5" else "311"
    settings = quick_settings(mosquitto[1], protocol=protocol)
    with trio.fail_after(10):
        async with open_mqtt_client(settings) as client:
            await client.subscribe(f"{topic}/from-cli", qos=1)
            await client.wait_connected()
            await trio.run_process(
                [
                    "mosquitto_pub",
                    "-p",
                    port,
                    "-V",
                    version,
                    "-q",
                    "1",
                    "-t",
                    f"{topic}/from-cli",
                    "-s",
                ],
                stdin=PAYLOAD,
            )
            received = await next_message(client)

            # Retained, so that mosquitto_sub gets it whenever it has subscribed: no race
            # with its start-up. -C 1: exit after one message; -N: no newline after it.
            try:
                await client.publish(f"{topic}/to-cli", PAYLOAD, qos=1, retain=True)
                result = await trio.run_process(
                    [
                        "mosquitto_sub",
                        "-p",
                        port,
                        "-V",
                        version,
                        "-t",
                        f"{topic}/to-cli",
                        "-C",
                        "1",
                        "-N",
                    ],
                    capture_stdout=True,
                )
            finally:
                await client.publish(f"{topic}/to-cli", b"", qos=1, retain=True)
    assert received.payload == PAYLOAD
    assert result.stdout == PAYLOAD


async def test_many_concurrent_publishes_all_arrive(
    mosquitto: tuple[str, int], protocol: str, topic: str
) -> None:
    """More than paho's 20 in flight: the rest wait their turn, every one is acknowledged."""
    settings = quick_settings(mosquitto[1], protocol=protocol)
    count = 300
    with trio.fail_after(10):
        async with (
            open_mqtt_client(settings) as subscriber,
            open_mqtt_client(settings) as publisher,
        ):
            await subscriber.subscribe(f"{topic}/#", qos=1)
            await subscriber.wait_connected()
            await publisher.wait_connected()
            async with trio.open_nursery() as nursery:
                for n in range(count):
                    nursery.start_soon(
                        functools.partial(
                            publisher.publish, f"{topic}/{n % 3}", b"%d" % n, qos=[0, 1, 2][n % 3]
                        )
                    )
            payloads = {(await next_message(subscriber)).payload for _ in range(count)}
    assert payloads == {b"%d" % n for n in range(count)}
