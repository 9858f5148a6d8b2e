"""``config/mqtt.yaml`` as a user runs it, against the real Mosquitto: a message sent
through the Messaging API is published, and a message published to the inbound topics
comes back as a MESSAGE_RECEIVED webhook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.applications.messaging_api.harness import webhook_receiver
from tests.dispatch.conftest import poll
from tests.test_cli import running
from tests.test_cli_store import pipeline_copy
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
            token = await http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("demo", "demo-secret"),
            )
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            hook = await http.post("/v1/webhooks", json={"url": receiver.hook}, headers=headers)
            assert hook.status_code == 201, hook.text
            sent = await http.post(
                "/v1/messages",
                json={"channel": "mqtt", "receiver": "device-7", "content": "reboot"},
                headers=headers,
            )
            assert sent.status_code == 202, sent.text
            message_id = sent.json()["messageId"]
            published = await device.messages.receive()

            async def sent_status() -> bool:
                answer = await http.get(f"/v1/messages/{message_id}", headers=headers)
                statuses.append(answer.json())
                return statuses[-1]["status"] == "SENT"

            statuses: list[dict[str, Any]] = []
            await poll(sent_status)

            await device.publish(f"/{base}/in/device-7", b"rebooted", qos=1)
            await receiver.wait_for(lambda _: bool(receiver.of("MESSAGE_RECEIVED")))
            assert await cli.terminate() == 0, cli.stderr.decode()
    assert published.topic == f"/{base}/messages/device-7"
    assert json.loads(published.payload)["payload"] == {"message": "reboot"}
    assert json.loads(published.payload)["id"] == message_id
    (inbound,) = receiver.of("MESSAGE_RECEIVED")
    assert inbound.body["content"] == "rebooted"
    assert inbound.body["sender"] == f"/{base}/in/device-7"
