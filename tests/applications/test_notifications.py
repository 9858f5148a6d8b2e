"""``NotificationsApi``: notifications to users, forms and projects, published over MQTT.

End to end against the real Mosquitto (through ``MqttTransport``) on both brokers;
the permission rules and bad input on the memory broker. Tokens are issued as the
Messaging API's ``/oauth/token`` issues them (the same key and audience).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests.dispatch.conftest import poll
from tests.stores.conftest import FakeClock
from tests.test_worker import free_port, running_worker
from tests.transports.mqtt.conftest import quick_settings
from vumi_like.applications.notifications import NotificationsApi, NotificationsApiConfig
from vumi_like.applications.notifications.payload import seed_payload
from vumi_like.applications.notifications.worker import ABANDONED_REASON
from vumi_like.auth import AuthSettings, TokenService
from vumi_like.broker import BrokerInspector
from vumi_like.errors import SERVICE_RETRY_AFTER
from vumi_like.outbound.unsent import STORE_BACK_GRACE
from vumi_like.stores import MessageStore, Notification, open_store
from vumi_like.transports.mqtt import MqttTransport, MqttTransportConfig, open_mqtt_client

JWT_SECRET = "notifications-test-signing-key-0123456789"
PREFIX = "/api/v1/messaging"


@attrs.define
class Api:
    http: httpx.AsyncClient
    store: MessageStore
    tokens: TokenService
    store_url: str

    def as_user(self, client_id: str, tenant: str = "acme") -> dict[str, str]:
        token = self.tokens.issue(client_id, tenant)["access_token"]
        return {"Authorization": f"Bearer {token}"}

    async def post(self, client_id: str, body: Any, **headers: str) -> httpx.Response:
        return await self.http.post(
            PREFIX, json=body, headers={**self.as_user(client_id), **headers}
        )

    async def get(self, client_id: str, path: str = "", **params: str) -> httpx.Response:
        return await self.http.get(PREFIX + path, params=params, headers=self.as_user(client_id))


async def registry(store: MessageStore) -> None:
    """ann and bob on the survey (ann admin, bob view); carl in nothing; dora a user."""
    for username, real_name in [
        ("ann", "Ann Admin"),
        ("bob", "Bob Smith"),
        ("carl", "Carl Outsider"),
        ("dora", "Dora Doe"),
    ]:
        await store.add_notification_user("acme", username, real_name, f"{username}-client")
    await store.set_notification_target("acme", "xform", "1337", "Form Name", form_id="Form_ID")
    await store.set_notification_member("acme", "xform", "1337", "ann", "admin")
    await store.set_notification_member("acme", "xform", "1337", "bob", "view")
    await store.set_notification_target("acme", "project", "7", "Project Name")
    await store.set_notification_member("acme", "project", "7", "bob", "edit")


@asynccontextmanager
async def running_api(
    broker: BrokerInspector,
    tmp_path: Path,
    unique: str,
    mqtt_port: int | None = None,
    **settings: Any,
) -> AsyncIterator[Api]:
    store_url = f"sqlite:///{tmp_path / 'notifications.db'}"
    auth = AuthSettings(jwt_secret=JWT_SECRET)
    port = free_port()
    config = NotificationsApiConfig(
        http_bind=f"127.0.0.1:{port}",
        store_url=store_url,
        auth=auth,
        mqtt_connector=unique,
        **settings,
    )
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(store_url))
        await registry(store)
        if mqtt_port is not None:
            transport = MqttTransportConfig(
                transport_name=unique,
                topic_base=unique,
                retry_delay_base=0.05,
                **quick_settings(mqtt_port).model_dump(),
            )
            mqtt = await stack.enter_async_context(
                running_worker(MqttTransport, transport, broker)
            )
            await mqtt.client.wait_connected()
        await stack.enter_async_context(running_worker(NotificationsApi, config, broker))
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        )
        yield Api(http, store, TokenService(auth), store_url)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def test_a_form_message_is_published_with_the_seeds_payload_on_its_topic(
    broker: BrokerInspector, tmp_path: Path, unique: str, mosquitto: tuple[str, int]
):
    topic = f"/{unique}/xform/1337/messages/publish"
    with trio.fail_after(15):
        async with (
            open_mqtt_client(quick_settings(mosquitto[1])) as subscriber,
            running_api(broker, tmp_path, unique, mqtt_port=mosquitto[1]) as api,
        ):
            await subscriber.wait_connected()
            await subscriber.subscribe(topic, qos=1)
            created = await api.post(
                "bob-client", {"target_type": "xform", "target_id": "1337", "message": "Hi"}
            )
            assert created.status_code == 201, created.text
            received = await subscriber.messages.receive()
            message_id = created.json()["id"]

            async def published() -> bool:
                stored = (await api.get("bob-client", f"/{message_id}")).json()
                return bool(stored["deliveries"]["mqtt"]["state"] == "published")

            await poll(published)
    assert received.topic == topic
    assert received.qos == 1
    payload = json.loads(received.payload)
    assert payload == {
        "payload": {
            "message": "Hi",
            "context": {
                "type": "xform",
                "metadata": {"id": 1337, "name": "Form Name", "form_id": "Form_ID"},
            },
            "author": {"username": "bob", "real_name": "Bob Smith"},
        },
        "id": message_id,
        "time": payload["time"],
    }
    assert payload["time"].endswith("+00:00")
    assert created.json()["payload"] == payload


async def test_a_form_given_by_number_is_the_form_of_those_digits(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    async with running_api(broker, tmp_path, unique) as api:
        created = await api.post(
            "bob-client", {"target_type": "xform", "target_id": 1337, "message": "Hi"}
        )
        listed = await api.get("bob-client", target_type="xform", target_id="1337")
    assert created.status_code == 201, created.text
    assert created.json()["target_id"] == "1337"
    assert [n["id"] for n in listed.json()] == [created.json()["id"]]


async def test_a_user_message_carries_the_users_name(
    broker: BrokerInspector, tmp_path: Path, unique: str, mosquitto: tuple[str, int]
):
    with trio.fail_after(15):
        async with (
            open_mqtt_client(quick_settings(mosquitto[1])) as subscriber,
            running_api(broker, tmp_path, unique, mqtt_port=mosquitto[1]) as api,
        ):
            await subscriber.wait_connected()
            await subscriber.subscribe(f"/{unique}/user/dora/messages/publish", qos=1)
            created = await api.post(
                "carl-client", {"target_type": "user", "target_id": "dora", "message": "Yo"}
            )
            received = await subscriber.messages.receive()
    assert created.status_code == 201, created.text
    context = json.loads(received.payload)["payload"]["context"]
    assert context == {"type": "user", "metadata": {"id": "dora", "name": "Dora Doe"}}


async def test_a_forms_messages_are_for_its_members_only(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    form = {"target_type": "xform", "target_id": "1337"}
    async with running_api(broker, tmp_path, unique) as api:
        by_member = await api.post("bob-client", {**form, "message": "from bob"})
        by_outsider = await api.post("carl-client", {**form, "message": "from carl"})
        member_list = await api.get("ann-client", **form)
        outsider_list = await api.get("carl-client", **form)
        outsider_get = await api.get("carl-client", f"/{by_member.json()['id']}")
        no_view = await api.post(
            "ann-client", {"target_type": "project", "target_id": "7", "message": "x"}
        )
    assert by_member.status_code == 201
    assert "needs view permission" in problem(by_outsider, 403, "FORBIDDEN")["detail"]
    assert [m["message"] for m in member_list.json()] == ["from bob"]
    problem(outsider_list, 403, "FORBIDDEN")
    problem(outsider_get, 404, "MESSAGE_NOT_FOUND")
    problem(no_view, 403, "FORBIDDEN")  # ann is on the form, not the project


async def test_a_users_messages_are_read_by_that_user_and_their_authors(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    to_dora = {"target_type": "user", "target_id": "dora"}
    async with running_api(broker, tmp_path, unique) as api:
        from_bob = (await api.post("bob-client", {**to_dora, "message": "from bob"})).json()
        from_carl = (await api.post("carl-client", {**to_dora, "message": "from carl"})).json()
        doras = await api.get("dora-client", **to_dora)
        bobs = await api.get("bob-client", **to_dora)
        ann_get = await api.get("ann-client", f"/{from_bob['id']}")
        bob_get = await api.get("bob-client", f"/{from_bob['id']}")
        bob_gets_carls = await api.get("bob-client", f"/{from_carl['id']}")
    assert [m["message"] for m in doras.json()] == ["from carl", "from bob"]  # newest first
    assert [m["message"] for m in bobs.json()] == ["from bob"]
    problem(ann_get, 404, "MESSAGE_NOT_FOUND")
    assert bob_get.status_code == 200 and bob_get.json()["author"] == "bob"
    problem(bob_gets_carls, 404, "MESSAGE_NOT_FOUND")


async def test_a_message_is_deleted_by_its_author_or_an_admin_of_its_target(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    form = {"target_type": "xform", "target_id": "1337"}
    async with running_api(broker, tmp_path, unique) as api:
        first = (await api.post("bob-client", {**form, "message": "one"})).json()["id"]
        second = (await api.post("ann-client", {**form, "message": "two"})).json()["id"]
        to_dora = (
            await api.post(
                "carl-client", {"target_type": "user", "target_id": "dora", "message": "x"}
            )
        ).json()["id"]
        by_viewer = await api.http.delete(f"{PREFIX}/{second}", headers=api.as_user("bob-client"))
        by_author = await api.http.delete(f"{PREFIX}/{first}", headers=api.as_user("bob-client"))
        by_admin = await api.http.delete(f"{PREFIX}/{second}", headers=api.as_user("ann-client"))
        by_recipient = await api.http.delete(
            f"{PREFIX}/{to_dora}", headers=api.as_user("dora-client")
        )
        again = await api.http.delete(f"{PREFIX}/{first}", headers=api.as_user("bob-client"))
        left = await api.get("ann-client", **form)
    problem(by_viewer, 403, "FORBIDDEN")
    assert (by_author.status_code, by_admin.status_code) == (204, 204)
    problem(by_recipient, 403, "FORBIDDEN")
    problem(again, 404, "MESSAGE_NOT_FOUND")
    assert left.json() == []


@pytest.mark.parametrize(
    ("body", "status", "code", "detail"),
    [
        (
            {"target_type": "group", "target_id": "1", "message": "x"},
            400,
            "VALIDATION_FAILED",
            "target_type",
        ),
        (
            {"target_type": "xform", "target_id": "999", "message": "x"},
            404,
            "TARGET_NOT_FOUND",
            "999",
        ),
        (
            {"target_type": "user", "target_id": "nobody", "message": "x"},
            404,
            "TARGET_NOT_FOUND",
            "nobody",
        ),
        ({"target_type": "user", "target_id": "dora"}, 400, "VALIDATION_FAILED", "message"),
        (
            {"target_type": "xform", "target_id": True, "message": "x"},
            400,
            "VALIDATION_FAILED",
            "target_id: should be a valid string",
        ),
        (
            {"target_type": "xform", "target_id": 13.37, "message": "x"},
            400,
            "VALIDATION_FAILED",
            "target_id: should be a valid string",
        ),
        (
            {"target_type": "user", "target_id": "a/b", "message": "x"},
            400,
            "VALIDATION_FAILED",
            "'/'",
        ),
        (
            {"target_type": "user", "target_id": "dora", "message": "x", "to": 1},
            400,
            "VALIDATION_FAILED",
            "to",
        ),
    ],
)
async def test_bad_requests_are_problems_and_store_nothing(
    broker: BrokerInspector,
    tmp_path: Path,
    unique: str,
    body: dict[str, Any],
    status: int,
    code: str,
    detail: str,
):
    async with running_api(broker, tmp_path, unique) as api:
        response = await api.post("ann-client", body)
        for target_type, target_id in [("user", "dora"), ("xform", "999"), ("xform", "1337")]:
            page = await api.store.list_notifications("acme", target_type, target_id)
            assert page.items == ()
        queued = await broker.get(f"{unique}.outbound")
    assert detail in problem(response, status, code)["detail"]
    assert queued is None  # nothing published either


async def test_a_message_the_broker_refuses_is_a_503_with_retry_after_and_not_kept(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    body = {"target_type": "xform", "target_id": "1337", "message": "Hi"}
    async with running_api(broker, tmp_path, unique) as api:
        await broker.delete_queue(f"{unique}.outbound")  # nothing takes it: refused
        refused = await api.post("bob-client", body)
        kept = await api.store.list_notifications("acme", "xform", "1337")
        await broker.declare_queue(f"{unique}.outbound")
        created = await api.post("bob-client", body)
    problem(refused, 503, "BROKER_UNAVAILABLE")
    assert refused.headers["retry-after"] == str(SERVICE_RETRY_AFTER)
    assert kept.items == ()
    assert created.status_code == 201, created.text


async def test_a_repeated_request_with_its_idempotency_key_is_answered_again_and_sent_once(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    body = {"target_type": "xform", "target_id": "1337", "message": "Hi"}
    key = {"Idempotency-Key": "note-1"}
    async with running_api(broker, tmp_path, unique) as api:
        first = await api.post("bob-client", body, **key)
        again = await api.post("bob-client", body, **key)
        changed = await api.post("bob-client", {**body, "message": "Hello"}, **key)
        # Keys are each user's own: ann's is another request, and bob's answer is not hers.
        by_ann = await api.post("ann-client", body, **key)
        stored = await api.store.list_notifications("acme", "xform", "1337")
        published = [await broker.get(f"{unique}.outbound") for _ in range(3)]
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    problem(changed, 422, "IDEMPOTENCY_KEY_REUSED")
    assert by_ann.status_code == 201, by_ann.text
    assert by_ann.json()["author"] == "ann"
    assert sorted(n.id for n in stored.items) == sorted([first.json()["id"], by_ann.json()["id"]])
    assert [letter is not None for letter in published] == [True, True, False]


async def test_a_refused_request_frees_its_idempotency_key_for_the_retry(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    body = {"target_type": "xform", "target_id": "1337", "message": "Hi"}
    async with running_api(broker, tmp_path, unique) as api:
        await broker.delete_queue(f"{unique}.outbound")
        refused = await api.post("bob-client", body, **{"Idempotency-Key": "k-1"})
        await broker.declare_queue(f"{unique}.outbound")
        retried = await api.post("bob-client", body, **{"Idempotency-Key": "k-1"})
        replayed = await api.post("bob-client", body, **{"Idempotency-Key": "k-1"})
        too_long = await api.post("bob-client", body, **{"Idempotency-Key": "k" * 300})
        empty = await api.post("bob-client", body, **{"Idempotency-Key": ""})
        stored = await api.store.list_notifications("acme", "xform", "1337")
    problem(refused, 503, "BROKER_UNAVAILABLE")
    assert retried.status_code == 201, retried.text
    assert replayed.json() == retried.json()
    problem(too_long, 400, "VALIDATION_FAILED")
    problem(empty, 400, "VALIDATION_FAILED")
    assert [n.id for n in stored.items] == [retried.json()["id"]]


DEAD_RUN_BODY = {"target_type": "xform", "target_id": "1337", "message": "Hi"}
UNSENT_NOTIFICATIONS = "SELECT notification_id FROM unsent_notifications"


async def dead_run_stored(
    store_url: str,
    author: str = "bob",
    body: dict[str, str] = DEAD_RUN_BODY,
    backends: tuple[str, ...] = ("mqtt",),
) -> Notification:
    """What a replica killed after storing ``author``'s notification ``body`` left: the
    notification, and its claim on the key ``k-dead``, made an hour ago and never
    answered nor released."""
    owner = json.dumps(["notifications", "acme", author])
    fingerprint = hashlib.sha256(f"POST {PREFIX}\n".encode() + json.dumps(body).encode())
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    async with open_store(store_url, clock=clock) as dead:
        claim = await dead.claim_idempotency_key(owner, "k-dead", fingerprint.hexdigest())
        target_type, target_id = body["target_type"], body["target_id"]
        user = await dead.notification_user("acme", author)
        assert user is not None
        payload = seed_payload(
            message=body["message"],
            target_type=target_type,
            target_id=target_id,
            target_user=None,
            target=await dead.notification_target("acme", target_type, target_id),
            author=user,
            at=clock.now,
        )
        return await dead.create_notification(
            "acme",
            target_type,
            target_id,
            author,
            body["message"],
            payload,
            {backend: {"state": "queued"} for backend in backends},
            request_id=claim.request_ids().new(),
        )


async def post_dead_runs_request(
    http: httpx.AsyncClient,
    user: dict[str, str],
    body: dict[str, str] = DEAD_RUN_BODY,
) -> httpx.Response:
    """The request ``dead_run_stored`` left unanswered, sent again by ``user`` (its
    authorization header) with its key."""
    headers = {"Idempotency-Key": "k-dead", "Content-Type": "application/json"}
    return await http.post(PREFIX, content=json.dumps(body), headers={**user, **headers})


async def test_a_retry_taking_over_a_dead_replicas_request_publishes_what_it_stored(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    async with running_api(broker, tmp_path, unique) as api:
        orphan = await dead_run_stored(api.store_url)
        retried = await post_dead_runs_request(api.http, api.as_user("bob-client"))
        stored = await api.store.list_notifications("acme", "xform", "1337")
        published = [await broker.get(f"{unique}.outbound") for _ in range(2)]
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == orphan.id
    assert [n.id for n in stored.items] == [orphan.id]
    assert published[1] is None
    assert published[0] is not None
    assert json.loads(published[0].body)["message_id"] == f"notification-{orphan.id}-mqtt"


async def test_a_retry_refused_by_the_broker_keeps_what_the_dead_run_stored_as_failed(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    # The dead run may have published the notification: deleting it would take back
    # one its readers may have had. It stays, marked failed, and the key is freed.
    async with running_api(broker, tmp_path, unique) as api:
        orphan = await dead_run_stored(api.store_url)
        await broker.delete_queue(f"{unique}.outbound")  # nothing takes it: refused
        refused = await post_dead_runs_request(api.http, api.as_user("bob-client"))
        kept = await api.store.get_notification("acme", orphan.id)
        await broker.declare_queue(f"{unique}.outbound")
        again = await post_dead_runs_request(api.http, api.as_user("bob-client"))
    problem(refused, 503, "BROKER_UNAVAILABLE")
    assert kept is not None
    mqtt = kept.deliveries["mqtt"]
    assert mqtt["state"] == "failed"
    assert mqtt["reason"].startswith("the broker refused it: ")
    assert again.status_code == 201, again.text
    assert again.json()["id"] != orphan.id


async def test_callers_must_be_registry_users_with_a_valid_token(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    async with running_api(broker, tmp_path, unique) as api:
        no_token = await api.http.get(PREFIX)
        stranger = await api.get("crm-client")
        wrong_tenant = await api.http.get(PREFIX, headers=api.as_user("bob-client", "globex"))
        listing = await api.get("bob-client")
        unknown = await api.get("bob-client", "/424242")
        too_large = await api.get("bob-client", f"/{2**63}")
        half = await api.get("bob-client", target_type="xform")
        form = {"target_type": "xform", "target_id": "1337"}
        bad_pages = [
            await api.get("bob-client", **form, limit="0"),
            await api.get("bob-client", **form, limit="many"),
            await api.get("bob-client", **form, cursor="garbage"),
        ]
    assert problem(no_token, 401, "UNAUTHORIZED")["error"] == "invalid_token"
    assert "not a notifications user" in problem(stranger, 403, "FORBIDDEN")["detail"]
    problem(wrong_tenant, 403, "FORBIDDEN")
    assert listing.status_code == 200 and listing.json() == []  # as the seed says
    problem(unknown, 404, "MESSAGE_NOT_FOUND")
    problem(too_large, 404, "MESSAGE_NOT_FOUND")
    problem(half, 400, "VALIDATION_FAILED")
    for bad_page in bad_pages:
        problem(bad_page, 400, "VALIDATION_FAILED")


async def test_lists_come_in_pages_linked_by_the_next_url(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    form = {"target_type": "xform", "target_id": "1337"}
    async with running_api(broker, tmp_path, unique) as api:
        for n in range(3):
            await api.post("bob-client", {**form, "message": f"message {n}"})
        first = await api.get("bob-client", **form, limit="2")
        link = first.headers["link"]
        assert link.endswith('>; rel="next"')
        rest = await api.http.get(link[1 : link.index(">")], headers=api.as_user("bob-client"))
    assert [m["message"] for m in first.json()] == ["message 2", "message 1"]
    assert [m["message"] for m in rest.json()] == ["message 0"]
    assert "link" not in rest.headers


async def test_forms_and_projects_are_managed_by_their_admins(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    base = f"{PREFIX}/targets"
    async with running_api(broker, tmp_path, unique) as api:
        http, as_user = api.http, api.as_user
        created = await http.put(
            f"{base}/project/42", json={"name": "Census"}, headers=as_user("carl-client")
        )
        added = await http.put(
            f"{base}/project/42/members/dora",
            json={"permission": "view"},
            headers=as_user("carl-client"),
        )
        by_viewer = await http.put(
            f"{base}/project/42/members/bob",
            json={"permission": "admin"},
            headers=as_user("dora-client"),
        )
        rename_by_viewer = await http.put(
            f"{base}/project/42", json={"name": "Mine"}, headers=as_user("dora-client")
        )
        unknown_user = await http.put(
            f"{base}/project/42/members/nobody",
            json={"permission": "view"},
            headers=as_user("carl-client"),
        )
        bad_permission = await http.put(
            f"{base}/project/42/members/dora",
            json={"permission": "owner"},
            headers=as_user("carl-client"),
        )
        seen_by_dora = await http.get(f"{base}/project/42", headers=as_user("dora-client"))
        seen_by_bob = await http.get(f"{base}/project/42", headers=as_user("bob-client"))
        renamed = await http.put(
            f"{base}/project/42", json={"name": "Census 2026"}, headers=as_user("carl-client")
        )
        removed = await http.delete(
            f"{base}/project/42/members/dora", headers=as_user("carl-client")
        )
        dora_posts = await api.post(
            "dora-client", {"target_type": "project", "target_id": "42", "message": "x"}
        )
        form_id_on_project = await http.put(
            f"{base}/project/43",
            json={"name": "P", "form_id": "f"},
            headers=as_user("carl-client"),
        )
        bad_type = await http.get(f"{base}/group/1", headers=as_user("carl-client"))
    assert created.status_code == 201, created.text
    assert created.json()["members"] == {"carl": "admin"}  # its creator
    assert added.status_code == 204
    problem(by_viewer, 403, "FORBIDDEN")
    problem(rename_by_viewer, 403, "FORBIDDEN")
    problem(unknown_user, 404, "USER_NOT_FOUND")
    assert "permission" in problem(bad_permission, 400, "VALIDATION_FAILED")["detail"]
    assert seen_by_dora.json()["members"] == {"carl": "admin", "dora": "view"}
    problem(seen_by_bob, 403, "FORBIDDEN")
    assert renamed.status_code == 200 and renamed.json()["name"] == "Census 2026"
    assert removed.status_code == 204
    problem(dora_posts, 403, "FORBIDDEN")
    problem(form_id_on_project, 400, "VALIDATION_FAILED")
    problem(bad_type, 404, "TARGET_NOT_FOUND")


async def test_what_a_dead_replica_stored_and_never_published_is_marked_failed(
    broker: BrokerInspector, tmp_path: Path, unique: str
):
    quick = {"request_timeout": 1, "unsent_sweep_interval": 0.2}
    async with running_api(broker, tmp_path, unique, **quick) as api:
        # Stored an hour ago by a replica that died before publishing it; no retry.
        orphan = await dead_run_stored(api.store_url)
        created = await api.post("bob-client", DEAD_RUN_BODY)
        assert created.status_code == 201, created.text
        fresh = created.json()["id"]

        def unsent() -> set[int]:
            with sqlite3.connect(tmp_path / "notifications.db") as lite:
                return {row[0] for row in lite.execute(UNSENT_NOTIFICATIONS)}

        async def struck_off() -> bool:
            return fresh not in unsent()  # published: its replica strikes it off

        async def swept() -> bool:
            found = await api.store.get_notification("acme", orphan.id)
            return found is not None and found.deliveries["mqtt"]["state"] != "queued"

        await poll(struck_off, within=5)
        await poll(swept, within=STORE_BACK_GRACE + 10)
        kept = await api.store.get_notification("acme", orphan.id)
        published = await api.store.get_notification("acme", fresh)
    assert kept is not None and published is not None
    assert kept.deliveries["mqtt"]["state"] == "failed"
    assert kept.deliveries["mqtt"]["reason"] == ABANDONED_REASON
    assert published.deliveries["mqtt"] == {"state": "queued"}  # no transport acks it here
    assert unsent() == set()
