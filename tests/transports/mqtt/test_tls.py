"""TLS to a mosquitto of the tests' own: certificates from a trustme CA, a client certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

import trio
import trustme

from tests.transports.mqtt.conftest import StateWatcher, quick_settings
from tests.transports.mqtt.fake_broker import FakeBroker, FakePeer
from tests.transports.mqtt.private_broker import ALLOWED_PREFIX, PrivateBroker
from vumi_like.transports.mqtt import MqttSettings, open_mqtt_client


def tls_settings(broker: PrivateBroker, protocol: str = "mqtt5", **fields: object) -> MqttSettings:
    tls: dict[str, object] = {
        "secure": True,
        "ca_cert_file": str(broker.ca_file),
        "cert_file": str(broker.client_cert_file),
    }
    return quick_settings(broker.tls_port, protocol=protocol, **(tls | fields))


async def test_publish_and_receive_over_tls_with_a_client_certificate(
    private_mosquitto: PrivateBroker, protocol: str
) -> None:
    settings = tls_settings(private_mosquitto, protocol)
    payload = b"\x00secret\xff" * 2000  # several TLS records
    with trio.fail_after(5):
        async with open_mqtt_client(settings) as client:
            await client.subscribe(f"{ALLOWED_PREFIX}/tls/#", qos=1)
            await client.wait_connected()
            for qos in (0, 1, 2):
                await client.publish(f"{ALLOWED_PREFIX}/tls/{qos}", payload[:4000], qos=qos)
            received = [await client.messages.receive() for _ in range(3)]
    assert [(m.topic, m.payload) for m in received] == [
        (f"{ALLOWED_PREFIX}/tls/{qos}", payload[:4000]) for qos in (0, 1, 2)
    ]


async def test_a_broker_certificate_from_another_ca_is_refused(
    private_mosquitto: PrivateBroker,
) -> None:
    watcher = StateWatcher()
    settings = tls_settings(private_mosquitto, ca_cert_file=str(private_mosquitto.other_ca_file))
    with trio.fail_after(5):
        async with open_mqtt_client(settings, on_state_change=watcher):
            failed = await watcher.until(connected=False)
    assert failed.reason.startswith("connect failed: [SSL: CERTIFICATE_VERIFY_FAILED]")


async def test_without_a_client_certificate_the_broker_refuses(
    private_mosquitto: PrivateBroker,
) -> None:
    watcher = StateWatcher()
    settings = tls_settings(private_mosquitto, cert_file=None)
    with trio.fail_after(5):
        async with open_mqtt_client(settings, on_state_change=watcher) as client:
            failed = await watcher.until(connected=False)
            assert not client.connected
    # "certificate required" (a TLS 1.3 alert) or an EOF, as the race goes.
    assert failed.reason.startswith("connect failed: The connection was lost (failed to receive")


async def test_packets_sharing_a_tls_record_are_all_read(tmp_path: Path) -> None:
    """Bytes decrypted but not yet taken by paho wait in the SSL object, where socket
    readiness cannot show them: the reader must take them before waiting again."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def script(peer: FakePeer) -> None:
        await peer.accept_connect()
        # One write, so one TLS record, holding three packets.
        await peer.send(b"".join(peer.publish(b"t/%d" % n, b"x", qos=0, mid=0) for n in range(3)))
        await peer.serve()

    async with trio.open_nursery() as nursery:
        broker = FakeBroker(script, server_context)
        await nursery.start(broker.serve)
        settings = quick_settings(broker.port, secure=True, ca_cert_file=str(tmp_path / "ca.pem"))
        with trio.fail_after(5):
            async with open_mqtt_client(settings) as client:
                topics = [(await client.messages.receive()).topic for _ in range(3)]
        nursery.cancel_scope.cancel()
    assert topics == ["t/0", "t/1", "t/2"]
