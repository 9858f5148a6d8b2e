"""``config/mqtt.yaml`` as a user runs it, against the real Mosquitto: a message sent
through the Messaging API is published, and a message published to the inbound topics
comes back as a MESSAGE_RECEIVED webhook."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from tests.applications.messaging_api.harness import webhook_receiver
from tests.test_cli import running
from tests.test_cli_store import (
    demo_headers,
    pipeline_copy,
    subscribe_and_send,
    wait_for_status,
)
from tests.transports.mqtt.conftest import quick_settings
from vumi_like.transports.mqtt import open_mqtt_client

MQTT_PIPELINE = Path(__file__).resolve().parents[3] / "config" / "mqtt.yaml"


async def test_the_mqtt_pipeline_publishes_api_messages_and_receives_inbound(
    tmp_path: Path, mosquitto: tuple[str, int], topic: str
):
    base = topic.replace("/", "-")
    overrides: dict[str, dict[str, object]] = {
        "mqtt": {"port": mosquitto[1], "topic_base": base, "subscriptions": [f"/{base}/in/+"]}
    }
    path, ports = pipeline_copy(MQTT_PIPELINE, tmp_path, overrides)
    with trio.fail_after(60):
        async with (
            webhook_receiver() as receiver,
            open_mqtt_client(quick_settings(mosquitto[1])) as device,
            running("run", str(path)) as cli,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}", timeout=10) as http,
        ):
            for name in ("api", "dispatcher", "router", "mqtt"):
                await cli.wait_for_log(event="worker started", worker=name)
            await cli.wait_for_log(event="provider up: resuming outbound", worker="mqtt")
            await device.wait_connected()
            await device.subscribe(f"/{base}/messages/#", qos=1)
            headers = await demo_headers(http)
            command = {"channel": "mqtt", "receiver": "device-7", "content": "reboot"}
            message_id = await subscribe_and_send(http, headers, receiver.hook, command)
            published = await device.messages.receive()

            await wait_for_status(http, headers, message_id, "SENT")

            await device.publish(f"/{base}/in/device-7", b"rebooted", qos=1)
            await receiver.wait_for(lambda _: bool(receiver.of("MESSAGE_RECEIVED")))
            assert await cli.terminate() == 0, cli.stderr.decode()
    assert published.topic == f"/{base}/messages/device-7"
    assert json.loads(published.payload)["payload"] == {"message": "reboot"}
    assert json.loads(published.payload)["id"] == message_id
    (inbound,) = receiver.of("MESSAGE_RECEIVED")
    assert inbound.body["content"] == "rebooted"
    assert inbound.body["sender"] == f"/{base}/in/device-7"
