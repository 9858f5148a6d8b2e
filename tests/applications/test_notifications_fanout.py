"""The ``channels`` backend: a notification to a project reaches each member on the
channel their contact settings name, through the Messaging API's pipeline (its outbox,
router, simulator transports and event dispatcher), on both brokers.

Also the API's OpenAPI document, served as the Messaging API's is.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import yaml

from tests.applications.messaging_api.harness import (
    JWT_SECRET,
    Pipeline,
    channels,
    running_pipeline,
)
from tests.applications.test_notifications import dead_run_stored, post_dead_runs_request
from tests.dispatch.conftest import poll
from tests.stores.conftest import StoreTarget
from tests.test_worker import free_port, running_worker
from vumi_like import dlq
from vumi_like.applications.notifications import NotificationsApi, NotificationsApiConfig
from vumi_like.applications.notifications.fanout import BACKEND, FanOutJob
from vumi_like.auth import AuthSettings, TokenService
from vumi_like.broker import BrokerInspector
from vumi_like.config import config_from_data

PREFIX = "/api/v1/messaging"


@attrs.define
class FanOut:
    pipeline: Pipeline
    http: httpx.AsyncClient
    tokens: TokenService
    api: NotificationsApi
    store_url: str

    def as_user(self, username: str) -> dict[str, str]:
        token = self.tokens.issue(f"{username}-client", "acme")["access_token"]
        return {"Authorization": f"Bearer {token}"}

    async def notify(self, author: str, target_type: str, target_id: str) -> dict[str, Any]:
        created = await self.http.post(
            PREFIX,
            json={"target_type": target_type, "target_id": target_id, "message": "Meeting at 3"},
            headers=self.as_user(author),
        )
        assert created.status_code == 201, created.text
        body: dict[str, Any] = created.json()
        return body

    async def channels_outcome(self, reader: str, pk: int) -> dict[str, Any]:
        response = await self.http.get(f"{PREFIX}/{pk}", headers=self.as_user(reader))
        assert response.status_code == 200, response.text
        outcome: dict[str, Any] = response.json()["deliveries"]["channels"]
        return outcome


async def registry(p: Pipeline) -> None:
    """Project 7: ann (admin), bob (edit, e-mail), carl (view, SMS), dora (view, no
    contact settings). eve is a user in no project, reached on the web channel."""
    store = p.store
    for username in ("ann", "bob", "carl", "dora", "eve"):
        await store.add_notification_user("acme", username, username.title(), f"{username}-client")
    await store.create_notification_target("acme", "project", "7", "Census", None, "ann")
    for username, permission in [("bob", "edit"), ("carl", "view"), ("dora", "view")]:
        await store.set_notification_member("acme", "project", "7", username, permission)
    # Contact settings, set as a client of the Messaging API sets them.
    for party, channel, address in [
        ("ann", "sms", "+27820000001"),
        ("bob", "email", "bob@example.org"),
        ("carl", "sms", "+27820000003"),
        ("eve", "web", "eve"),
    ]:
        response = await p.http.put(
            f"/v1/parties/{party}",
            json={"channel": channel, "address": address},
            headers=await p.auth(),
        )
        assert response.status_code == 200, response.text


@asynccontextmanager
async def running_fanout(
    broker: BrokerInspector, tmp_path: Path, unique: str, **fields: Any
) -> AsyncIterator[FanOut]:
    target = StoreTarget("sqlite", f"sqlite:///{tmp_path / 'store.db'}", {})
    async with AsyncExitStack() as stack:
        p = await stack.enter_async_context(running_pipeline(broker, target, unique))
        await registry(p)
        port = free_port()
        config = config_from_data(
            NotificationsApiConfig,
            {
                "http_bind": f"127.0.0.1:{port}",
                "store_url": target.url,
                "auth": {"jwt_secret": JWT_SECRET},
                "backends": ["channels"],
                "connector_name": p.connector,
                "channels": channels(unique),
                "channel_senders": {"sms": "ACME"},
                "subscriptions_max_age": 0,
                "retry_delay_base": 0.2,
                "retry_jitter": 0,
                **fields,
            },
            source="test",
        )
        api = await stack.enter_async_context(running_worker(NotificationsApi, config, broker))
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        )
        tokens = TokenService(AuthSettings(jwt_secret=JWT_SECRET))
        yield FanOut(p, http, tokens, api, target.url)


async def test_a_project_message_reaches_each_member_on_their_channel(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    async with running_fanout(broker, tmp_path, unique) as f:
        created = await f.notify("ann", "project", "7")

        async def delivered() -> bool:
            outcome = await f.channels_outcome("bob", created["id"])
            statuses = {u: r["status"] for u, r in outcome.get("recipients", {}).items()}
            return outcome["state"] == "done" and statuses == {
                "bob": "DELIVERED",
                "carl": "DELIVERED",
                "dora": "NO_FEEDBACK_SETTINGS_FOUND",
            }

        await poll(delivered, within=20)
        outcome = await f.channels_outcome("ann", created["id"])
        recipients = outcome["recipients"]
        sent = {
            username: await f.pipeline.store.get_message(
                "acme", recipients[username]["message_id"]
            )
            for username in ("bob", "carl", "dora")
        }
        history = await f.pipeline.get("/conversationHistory/bob")
    assert created["deliveries"] == {"channels": {"state": "queued"}}
    assert "ann" not in recipients  # the author is not sent their own message
    assert (recipients["bob"]["channel"], recipients["carl"]["channel"]) == ("email", "sms")
    bob, carl, dora = sent["bob"], sent["carl"], sent["dora"]
    assert bob is not None and carl is not None and dora is not None
    assert (bob.receiver, bob.sender, bob.content) == (
        "bob@example.org",
        "noreply@acme.example",
        "Meeting at 3",
    )
    assert bob.payload["subject"] == "Ann: a new message on Census"
    assert (carl.receiver, carl.sender) == ("+27820000003", "ACME")  # channel_senders
    assert (dora.status, dora.receiver) == ("NO_FEEDBACK_SETTINGS_FOUND", "")
    assert (bob.party_id, bob.origin, bob.issuer) == ("bob", "notifications", "ann")
    assert bob.context == {
        "notification_id": created["id"],
        "target_type": "project",
        "target_id": "7",
    }
    # In the Messaging API's history of the party, like any message sent to it.
    assert [m["messageId"] for m in history.json()] == [bob.message_id]


async def test_a_user_message_reaches_that_user(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    async with running_fanout(broker, tmp_path, unique) as f:
        created = await f.notify("bob", "user", "eve")

        async def delivered() -> bool:
            outcome = await f.channels_outcome("eve", created["id"])
            return outcome.get("recipients", {}).get("eve", {}).get("status") == "DELIVERED"

        await poll(delivered, within=20)
        outcome = await f.channels_outcome("bob", created["id"])
    assert list(outcome["recipients"]) == ["eve"]
    assert outcome["recipients"]["eve"]["channel"] == "web"


async def test_a_fan_out_run_again_after_its_worker_died_sends_nothing_twice(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    async with running_fanout(broker, tmp_path, unique) as f:
        created = await f.notify("ann", "project", "7")

        async def delivered() -> bool:
            outcome = await f.channels_outcome("ann", created["id"])
            statuses = [r["status"] for r in outcome.get("recipients", {}).values()]
            return statuses.count("DELIVERED") == 2

        await poll(delivered, within=20)
        first = (await f.channels_outcome("ann", created["id"]))["recipients"]
        # The job handed out again, as the same attempt, as if the worker that ran it
        # had died after sending and before recording anything.
        store = f.pipeline.store
        await store.record_notification_delivery(created["id"], BACKEND, {"state": "sending"})
        assert f.api.fanout is not None
        await f.api.fanout.fan_out(FanOutJob(tenant="acme", notification_id=created["id"]), 0)
        again = (await f.channels_outcome("ann", created["id"]))["recipients"]
        sent = [first[name]["message_id"] for name in ("bob", "carl")]
        histories = [await store.get_message("acme", message_id) for message_id in sent]
        listed = (await f.pipeline.get("/v1/messages")).json()["messages"]
    # The same messages, found rather than stored again, and not sent again (each
    # still has one ack and one delivery report).
    assert {n: r["message_id"] for n, r in again.items()} == {
        n: r["message_id"] for n, r in first.items()
    }
    assert len(listed) == 3
    for history in histories:
        assert history is not None
        assert [t.event_type for t in history.transitions] == [
            "created",
            "ack",
            "delivery_report",
        ]


async def test_a_resumed_request_refused_on_one_backend_fails_that_one_alone(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    # A dead replica's notification to project 7, for both backends. Its retry queues
    # the fan-out job, then the MQTT envelope is refused: the notification stays (the
    # dead run may have published it), MQTT failed, and the fan-out goes ahead.
    body = {"target_type": "project", "target_id": "7", "message": "Meeting at 3"}
    backends = {"backends": ["channels", "mqtt"], "mqtt_connector": f"{unique}-mqtt"}
    async with running_fanout(broker, tmp_path, unique, **backends) as f:
        orphan = await dead_run_stored(f.store_url, "ann", body, ("channels", "mqtt"))
        await broker.delete_queue(f"{unique}-mqtt.outbound")  # nothing takes it: refused
        refused = await post_dead_runs_request(f.http, f.as_user("ann"), body)
        at_refusal = await f.channels_outcome("ann", orphan.id)

        async def fanned_out() -> bool:
            return (await f.channels_outcome("ann", orphan.id))["state"] == "done"

        await poll(fanned_out, within=20)
        kept = await f.api.store.get_notification("acme", orphan.id)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "BROKER_UNAVAILABLE"
    assert kept is not None
    assert kept.deliveries["mqtt"]["state"] == "failed"
    assert kept.deliveries["mqtt"]["reason"].startswith("the broker refused it: ")
    assert at_refusal["state"] != "failed", at_refusal  # its job was queued


async def test_a_refused_publish_is_retried_until_the_broker_takes_it(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    async with running_fanout(broker, tmp_path, unique) as f:
        outbound = f"{f.pipeline.connector}.outbound"
        await broker.delete_queue(outbound)
        created = await f.notify("ann", "project", "7")

        async def retrying() -> bool:
            return (await f.channels_outcome("ann", created["id"]))["state"] == "retrying"

        await poll(retrying)
        refused = await f.channels_outcome("ann", created["id"])
        await broker.declare_queue(outbound)

        async def done() -> bool:
            return (await f.channels_outcome("ann", created["id"]))["state"] == "done"

        await poll(done, within=20)
        outcome = await f.channels_outcome("ann", created["id"])
        # The router's consumer went with the deleted queue: what the broker took waits
        # on the queue declared again.
        published = []
        while (delivery := await broker.get(outbound)) is not None:
            published.append(json.loads(delivery.body))
            broker.ack(delivery)
        failed_first = (await f.pipeline.get("/conversationHistory/bob")).json()
    assert outbound in refused["reason"]
    assert refused["recipients"]["bob"]["status"] == "RETRYING"
    assert "message_id" not in refused["recipients"]["bob"]
    assert "reason" not in outcome
    assert {u: r["status"] for u, r in outcome["recipients"].items()} == {
        "bob": "QUEUED",
        "carl": "QUEUED",
        "dora": "NO_FEEDBACK_SETTINGS_FOUND",
    }
    assert sorted((m["to_addr"], m["message_id"]) for m in published) == sorted(
        (address, outcome["recipients"][name]["message_id"])
        for name, address in [("bob", "bob@example.org"), ("carl", "+27820000003")]
    )
    # The refused attempt is in bob's history as failed; the retry sent a new message.
    assert [m["status"] for m in failed_first] == ["FAILED", "PENDING"]
    assert failed_first[1]["messageId"] == outcome["recipients"]["bob"]["message_id"]


async def test_a_fan_out_that_never_gets_through_is_failed_and_dead_lettered(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    async with running_fanout(broker, tmp_path, unique, max_retries=1) as f:
        outbound = f"{f.pipeline.connector}.outbound"
        await broker.delete_queue(outbound)
        created = await f.notify("ann", "project", "7")

        async def failed() -> bool:
            return (await f.channels_outcome("ann", created["id"]))["state"] == "failed"

        await poll(failed)
        outcome = await f.channels_outcome("ann", created["id"])

        async def dead_lettered() -> bool:
            return bool(await dlq.list_letters(broker, broker.dead_letter_queue))

        await poll(dead_lettered)
        [letter] = await dlq.list_letters(broker, broker.dead_letter_queue)
        await broker.declare_queue(outbound)
    assert "gave up after 2 attempts" in outcome["reason"]
    assert json.loads(letter.delivery.body) == {"tenant": "acme", "notification_id": created["id"]}


async def test_the_openapi_document_is_served_as_json_and_yaml(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    async with running_fanout(broker, tmp_path, unique) as f:
        as_json = (await f.http.get("/openapi.json")).json()
        as_yaml = await f.http.get("/api-docs")
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == as_json
    paths = as_json["paths"]
    target = f"{PREFIX}/targets/{{target_type}}/{{target_id}}"
    expected = {
        PREFIX: {
            "post": {"201", "400", "401", "403", "404", "409", "422", "503"},
            "get": {"200", "400", "401", "403", "404", "503"},
        },
        f"{PREFIX}/{{pk}}": {
            "get": {"200", "401", "403", "404", "503"},
            "delete": {"204", "401", "403", "404", "503"},
        },
        target: {
            "get": {"200", "401", "403", "404", "503"},
            "put": {"200", "201", "400", "401", "403", "404", "503"},
        },
        f"{target}/members/{{username}}": {
            "put": {"204", "400", "401", "403", "404", "503"},
            "delete": {"204", "401", "403", "404", "503"},
        },
    }
    for path, operations in expected.items():
        for method, statuses in operations.items():
            assert set(paths[path][method]["responses"]) == statuses, (path, method)
    assert "/oauth/token" not in paths  # tokens come from the Messaging API
    assert "/metrics" not in paths and "/api-docs" not in paths
    assert paths["/health"]["get"]["security"] == []
    assert as_json["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    post = paths[PREFIX]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["title"] == "NewNotification"
    assert set(schema["required"]) == {"target_type", "target_id", "message"}
    assert [(p["name"], p["in"]) for p in post["parameters"]] == [("Idempotency-Key", "header")]
