"""Losing the broker, through a proxy in front of the real Mosquitto: cut, down, starved."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import structlog
import trio
import trio.testing

from tests.tcp_proxy import TcpProxy
from tests.transports.mqtt.conftest import StateWatcher, quick_settings
from vumi_like.transports.mqtt import TrioMqttClient, open_mqtt_client
from vumi_like.transports.outcomes import ProviderUnavailable, TemporaryFailure


@asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[TcpProxy]:
    async with trio.open_nursery() as nursery:
        proxy = TcpProxy(port)
        await nursery.start(proxy.serve)
        yield proxy
        nursery.cancel_scope.cancel()


async def test_a_cut_connection_comes_back_with_its_subscriptions(
    mosquitto: tuple[str, int], protocol: str, topic: str
) -> None:
    watcher = StateWatcher()
    direct = quick_settings(mosquitto[1], protocol=protocol)
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with proxy_to(mosquitto[1]) as proxy:
            through_proxy = quick_settings(proxy.port, protocol=protocol)
            async with (
                open_mqtt_client(through_proxy, on_state_change=watcher) as client,
                open_mqtt_client(direct) as publisher,
            ):
                await client.subscribe(f"{topic}/in", qos=1)
                await watcher.until(connected=True)

                proxy.refusing = True  # the broker is down...
                proxy.cut()
                lost = await watcher.until(connected=False)
                assert not client.connected
                with pytest.raises(ProviderUnavailable, match="not connected"):
                    await client.publish(f"{topic}/out", b"x", qos=1)

                proxy.refusing = False  # ...and back
                await watcher.until(connected=True)
                await publisher.wait_connected()
                await publisher.publish(f"{topic}/in", b"after the cut", qos=1)
                message = await client.messages.receive()
                await client.publish(f"{topic}/out", b"x", qos=1)
    assert lost.reason == "connection lost: the broker closed the connection"
    assert message.payload == b"after the cut"
    lines = [e for e in logs if e["event"] == "mqtt connection lost"]
    assert lines == [
        {
            "event": "mqtt connection lost",
            "log_level": "warning",
            "broker": f"127.0.0.1:{proxy.port}",
            "reason": "the broker closed the connection",
        }
    ]


async def test_a_publish_in_flight_when_the_connection_drops_is_provider_unavailable(
    mosquitto: tuple[str, int], protocol: str, topic: str
) -> None:
    """And with a clean session it is not sent again after the reconnect."""
    qos = 1
    watcher = StateWatcher()
    direct = quick_settings(mosquitto[1], protocol=protocol)
    with trio.fail_after(5):
        async with proxy_to(mosquitto[1]) as proxy:
            through_proxy = quick_settings(proxy.port, protocol=protocol)
            async with (
                open_mqtt_client(through_proxy, on_state_change=watcher) as client,
                open_mqtt_client(direct) as subscriber,
            ):
                await subscriber.subscribe(f"{topic}/#", qos=2)
                await subscriber.wait_connected()
                await watcher.until(connected=True)
                proxy.swallowing = True  # the broker gets the publish; its ack is lost

                async def publish_in_flight() -> None:
                    with pytest.raises(ProviderUnavailable, match="lost"):
                        await client.publish(f"{topic}/in-flight", b"once", qos=qos)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish_in_flight)
                    first = await subscriber.messages.receive()  # the broker has it
                    proxy.cut()
                proxy.swallowing = False
                await watcher.until(connected=True)
                await client.publish(f"{topic}/marker", b"marker", qos=qos)
                second = await subscriber.messages.receive()
    assert (first.payload, second.payload) == (b"once", b"marker")


@pytest.mark.timing
async def test_a_publish_never_acknowledged_is_a_temporary_failure(
    mosquitto: tuple[str, int], protocol: str, topic: str
) -> None:
    with trio.fail_after(5):
        async with proxy_to(mosquitto[1]) as proxy:
            settings = quick_settings(proxy.port, protocol=protocol, ack_timeout=0.3)
            async with open_mqtt_client(settings) as client:
                await client.wait_connected()
                proxy.swallowing = True
                started = trio.current_time()
                with pytest.raises(TemporaryFailure) as caught:
                    await client.publish(f"{topic}/x", b"x", qos=1)
                waited = trio.current_time() - started
    assert not isinstance(caught.value, ProviderUnavailable)
    assert caught.value.reason == f"publish on '{topic}/x' not acknowledged within 0.3 s"
    assert 0.3 <= waited < 1


async def test_a_silent_broker_is_noticed_by_keepalive(mosquitto: tuple[str, int]) -> None:
    watcher = StateWatcher()
    with trio.fail_after(6):
        async with proxy_to(mosquitto[1]) as proxy:
            settings = quick_settings(proxy.port, keepalive=1)
            async with open_mqtt_client(settings, on_state_change=watcher):
                await watcher.until(connected=True)
                proxy.swallowing = True  # no PINGRESP from now on
                lost = await watcher.until(connected=False)
    assert lost.reason == "connection lost: the broker did not answer within keepalive"


@pytest.mark.timing
async def test_reconnect_waits_grow_to_the_maximum() -> None:
    """Failed attempts: the waits between them double from the first up to the cap."""
    watcher = StateWatcher()
    async with proxy_to(1) as proxy:  # refusing: each connection is closed at once
        proxy.refusing = True
        settings = quick_settings(proxy.port, reconnect_interval=0.05, max_reconnect_interval=0.2)
        client = TrioMqttClient(settings, on_state_change=watcher)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                times = []
                for _ in range(5):
                    await watcher.until(connected=False)
                    times.append(trio.current_time())
                nursery.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # 0.05, 0.1, 0.2, 0.2, each plus the time an attempt takes
    assert [gap >= least for gap, least in zip(gaps, [0.05, 0.1, 0.2, 0.2], strict=True)] == [
        True
    ] * 4
    assert gaps[0] < 0.15  # starts from reconnect_interval...
    assert gaps[3] < 0.35  # ...and stops at max_reconnect_interval (not 0.4)


async def test_a_qos2_publish_in_flight_is_not_sent_again_after_the_reconnect(
    mosquitto: tuple[str, int], protocol: str, topic: str
) -> None:
    """mosquitto passes a QoS 2 message on at PUBREL, so here the broker never has it:
    only a resend by the client on the new connection would deliver it."""
    watcher = StateWatcher()
    direct = quick_settings(mosquitto[1], protocol=protocol)
    with trio.fail_after(5):
        async with proxy_to(mosquitto[1]) as proxy:
            through_proxy = quick_settings(proxy.port, protocol=protocol)
            async with (
                open_mqtt_client(through_proxy, on_state_change=watcher) as client,
                open_mqtt_client(direct) as subscriber,
            ):
                await subscriber.subscribe(f"{topic}/#", qos=2)
                await subscriber.wait_connected()
                await watcher.until(connected=True)
                proxy.swallowing = True  # PUBREC never arrives: no PUBREL is sent

                async def cut_once_written() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    proxy.cut()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cut_once_written)
                    with pytest.raises(ProviderUnavailable, match="lost"):
                        await client.publish(f"{topic}/in-flight", b"once", qos=2)
                proxy.swallowing = False
                await watcher.until(connected=True)
                await client.publish(f"{topic}/marker", b"marker", qos=2)
                received = await subscriber.messages.receive()
    assert received.payload == b"marker"
