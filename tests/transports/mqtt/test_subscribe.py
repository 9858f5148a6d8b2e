"""Subscriptions on a real Mosquitto: inbound delivery, refusals, and when acks happen."""

from __future__ import annotations

import pytest
import structlog
import trio

from tests.tcp_proxy import TcpProxy
from tests.transports.mqtt.conftest import StateWatcher, quick_settings
from vumi_like.transports.mqtt import TrioMqttClient, open_mqtt_client


async def test_a_subscription_made_before_connecting_delivers(
    mosquitto: tuple[str, int], protocol: str, topic: str
) -> None:
    settings = quick_settings(mosquitto[1], protocol=protocol)
    client = TrioMqttClient(settings)
    await client.subscribe(f"{topic}/+/in", qos=1)  # not running yet: made on connecting
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await client.wait_connected()
            async with open_mqtt_client(settings) as publisher:
                await publisher.wait_connected()
                await publisher.publish(f"{topic}/a/in", b"one", qos=1)
                await publisher.publish(f"{topic}/a/other", b"not subscribed", qos=1)
                await publisher.publish(f"{topic}/b/in", b"two", qos=0)
            first = await client.messages.receive()
            second = await client.messages.receive()
            assert client.ack(first) and client.ack(second)
            nursery.cancel_scope.cancel()
        # Stopping the client ends ``messages``.
        assert [m async for m in client.messages] == []
    assert (first.topic, first.payload, first.qos) == (f"{topic}/a/in", b"one", 1)
    assert (second.topic, second.payload, second.qos) == (f"{topic}/b/in", b"two", 0)
    assert not client.ack(first)  # stopped: its connection is gone


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a+/b", "a\x00"])
async def test_an_invalid_filter_is_refused_at_once(bad: str) -> None:
    client = TrioMqttClient(quick_settings(1883))
    with pytest.raises(ValueError, match="topic filter"):
        await client.subscribe(bad)


async def test_an_unacked_message_comes_again_after_a_reconnect_in_a_kept_session(
    mosquitto: tuple[str, int], protocol: str, topic: str
) -> None:
    """manual ack: a QoS 1 message not acked is the broker's to send again; an acked one is not."""
    async with trio.open_nursery() as nursery:
        proxy = TcpProxy(mosquitto[1])
        await nursery.start(proxy.serve)
        client_id = topic.replace("/", "-")
        kept = quick_settings(
            proxy.port, protocol=protocol, clean_start=False, client_id=client_id
        )
        watcher = StateWatcher()
        with trio.fail_after(5):
            async with (
                open_mqtt_client(kept, on_state_change=watcher) as client,
                open_mqtt_client(quick_settings(mosquitto[1], protocol=protocol)) as publisher,
            ):
                await client.subscribe(f"{topic}/in", qos=1)
                await client.wait_connected()
                await publisher.wait_connected()
                await publisher.publish(f"{topic}/in", b"first", qos=1)
                unacked = await client.messages.receive()

                proxy.cut()
                await watcher.until(connected=False)
                again = await client.messages.receive()  # after the reconnect
                await watcher.until(connected=True)
                assert not client.ack(unacked)  # its connection is gone
                assert client.ack(again)
                # A publish acknowledged after the ack was written: the broker has read both.
                await client.publish(f"{topic}/sync", b"", qos=1)

                proxy.cut()
                await watcher.until(connected=False)
                await watcher.until(connected=True)
                await publisher.publish(f"{topic}/in", b"second", qos=1)
                after = await client.messages.receive()
        # Leave no session behind: connect once more with a clean start.
        clean = quick_settings(mosquitto[1], protocol=protocol, client_id=client_id)
        async with open_mqtt_client(clean) as cleaner:
            with trio.fail_after(5):
                await cleaner.wait_connected()
        nursery.cancel_scope.cancel()
    assert (unacked.payload, unacked.duplicate) == (b"first", False)
    assert (again.payload, again.duplicate) == (b"first", True)
    assert (after.payload, after.duplicate) == (b"second", False)


async def test_qos0_messages_beyond_the_backlog_are_dropped_and_logged_once(
    mosquitto: tuple[str, int], topic: str
) -> None:
    settings = quick_settings(mosquitto[1])
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with (
            open_mqtt_client(settings.model_copy(update={"inbound_qos0_backlog": 2})) as client,
            open_mqtt_client(settings) as publisher,
        ):
            await client.subscribe(f"{topic}/#", qos=1)
            await client.wait_connected()
            await publisher.wait_connected()
            for n in range(5):
                await publisher.publish(f"{topic}/q0", b"%d" % n, qos=0)
            await publisher.publish(f"{topic}/q1", b"never dropped", qos=1)
            # Nothing signals "the reader has seen them all" but the backlog itself:
            # taking a message earlier would make room for the ones to be dropped.
            while client.messages.statistics().current_buffer_used < 3:  # noqa: ASYNC110
                await trio.sleep(0.005)
            received = [await client.messages.receive() for _ in range(3)]
    assert [m.payload for m in received] == [b"0", b"1", b"never dropped"]
    dropped = [e for e in logs if e["event"] == "mqtt inbound dropped"]
    assert dropped == [
        {
            "event": "mqtt inbound dropped",
            "log_level": "warning",
            "reason": "backlog full",
            "backlog": 2,
        }
    ]
