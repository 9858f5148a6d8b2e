"""``config/notifications.yaml`` as a user runs it: a user added with the CLI gets a
token from the Messaging API's /oauth/token, posts to a form through the Notifications
API, and a subscriber to Mosquitto sees the notification on the form's topic."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from tests.test_cli import running, vumi_like
from tests.test_cli_store import pipeline_copy
from tests.transports.mqtt.conftest import quick_settings
from vumi_like.transports.mqtt import open_mqtt_client

PIPELINE = Path(__file__).resolve().parents[2] / "config" / "notifications.yaml"


async def test_the_notifications_pipeline_publishes_a_form_message(
    tmp_path: Path, mosquitto: tuple[str, int], unique: str
):
    path, ports = pipeline_copy(
        PIPELINE, tmp_path, {"mqtt": {"port": mosquitto[1], "topic_base": unique}}
    )
    store = ("--tenant", "demo", "--store-url", f"sqlite:///{tmp_path / 'vumi_like.db'}")
    added = await vumi_like("notifications", "add-user", "bob", "--real-name", "Bob", *store)
    secret = added.stdout.decode().split("client_secret: ")[1].split()[0]
    for command in (
        ("set-target", "xform", "1337", "--name", "Form Name", "--form-id", "Form_ID"),
        ("set-member", "xform", "1337", "bob", "view"),
    ):
        assert (await vumi_like("notifications", *command, *store)).returncode == 0
    topic = f"/{unique}/xform/1337/messages/publish"
    with trio.fail_after(60):
        async with (
            open_mqtt_client(quick_settings(mosquitto[1])) as subscriber,
            running("run", str(path)) as cli,
            httpx.AsyncClient(timeout=10) as http,
        ):
            await cli.wait_for_log(event="provider up: resuming outbound", worker="mqtt")
            await subscriber.wait_connected()
            await subscriber.subscribe(topic, qos=1)
            token = await http.post(
                f"http://127.0.0.1:{ports['api']}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("bob", secret),
            )
            assert token.status_code == 200, token.text
            created = await http.post(
                f"http://127.0.0.1:{ports['notifications']}/api/v1/messaging",
                json={"target_type": "xform", "target_id": "1337", "message": "Hello, World!"},
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            )
            assert created.status_code == 201, created.text
            received = await subscriber.messages.receive()
            assert await cli.terminate() == 0, cli.stderr.decode()
    payload = json.loads(received.payload)
    assert received.topic == topic
    assert payload["id"] == created.json()["id"]
    assert payload["payload"]["message"] == "Hello, World!"
    assert payload["payload"]["author"] == {"username": "bob", "real_name": "Bob"}
    assert payload["payload"]["context"]["metadata"]["form_id"] == "Form_ID"
