"""Every bad input the app can be given: RFC 7807 problems over HTTP, dead letters with
the reason for envelopes. On the memory broker and on RabbitMQ (``broker``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import trio

from tests.applications.conversations.conftest import (
    ACCESS_TOKEN,
    ADDRESS,
    ADMIN_TOKEN,
    BUSINESS,
    CLIENT,
    WEBHOOK_SECRET,
    Names,
    Pipeline,
    inbound,
    pipeline,
)
from tests.broker.test_contract import nothing_arrives, receive
from vumi_like.broker import BrokerInspector
from vumi_like.broker.base import HEADER_DL_ERROR, HEADER_DL_QUEUE
from vumi_like.errors import PROBLEM_CONTENT_TYPE, SERVICE_RETRY_AFTER
from vumi_like.messages import DeliveryStatus, Event, Message


@pytest.fixture
async def p(broker: BrokerInspector, names: Names, tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with pipeline(broker, names, tmp_path, simulator=False, max_body_bytes=2048) as p:
        yield p


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = dict(response.json())
    assert body["status"] == status and body["code"] == code
    assert {"type", "title", "detail"} <= set(body)
    return body


INTERFACE_CALLS = [
    ("PUT", "/channels/ch-1", {"status": "active"}),
    ("PUT", "/sessions/s-1", {"status": "active"}),
    (
        "POST",
        "/messages",
        {"external_uid": CLIENT, "message": "x", "message_uid": "m", "channel_uid": "c"},
    ),
    ("PUT", "/messages/m-1", {"status": "read", "channel_uid": "ch-1"}),
    ("POST", "/s-1/typing", {"typing": True}),
]


@pytest.mark.parametrize(("method", "path", "body"), INTERFACE_CALLS)
async def test_the_interface_wants_the_shared_secret(
    p: Pipeline, method: str, path: str, body: Any
):
    without = await p.vcs.call_app(method, path, body, signed=False)
    wrong = await p.vcs.call_app(method, path, body, secret="not-the-secret")
    for response in (without, wrong):
        problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert WEBHOOK_SECRET not in without.text + wrong.text


@pytest.mark.parametrize(
    ("path", "raw", "complaint"),
    [
        ("/channels/ch-1", b"{not json", "json"),
        ("/channels/ch-1", b"[]", "object"),
        ("/channels/ch-1", b'{"status": "paused"}', "status"),
        ("/channels/ch-1", b"{}", "status"),
        ("/sessions/s-1", b'{"status": "deleted"}', "status"),
        ("/messages/m-1", b'{"status": "delivered", "channel_uid": "c"}', "status"),
        ("/messages/m-1", b'{"status": "read"}', "channel_uid"),
    ],
)
async def test_bad_update_bodies_are_400_problems(
    p: Pipeline, path: str, raw: bytes, complaint: str
):
    async with httpx.AsyncClient(base_url=p.vcs.app_url) as client:
        response = await client.put(
            path, content=raw, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}
        )
    assert complaint in problem(response, 400, "invalid_body")["detail"].lower()


@pytest.mark.parametrize(
    "body",
    [
        {"message": "x", "message_uid": "m", "channel_uid": "c"},  # no external_uid
        {"external_uid": CLIENT, "message": "", "message_uid": "m", "channel_uid": "c"},
        {"external_uid": CLIENT, "message": 5, "message_uid": "m", "channel_uid": "c"},
        {"external_uid": CLIENT, "message": "x", "message_uid": "", "channel_uid": "c"},
        {
            "external_uid": CLIENT,
            "message": "x",
            "message_uid": "m",
            "channel_uid": "c",
            "status": "sent",
        },
    ],
)
async def test_bad_staff_messages_are_400_problems(p: Pipeline, body: dict[str, Any]):
    problem(await p.vcs.call_app("POST", "/messages", body), 400, "invalid_body")


@pytest.mark.parametrize("body", [{}, {"typing": "yes"}, {"typing": 1}, {"typing": None}])
async def test_bad_typing_bodies_are_400_problems(p: Pipeline, body: dict[str, Any]):
    problem(await p.vcs.call_app("POST", "/s-1/typing", body), 400, "invalid_body")


async def test_a_body_over_the_limit_is_413(p: Pipeline):
    body = {"external_uid": CLIENT, "message": "x" * 4000, "message_uid": "m", "channel_uid": "c"}
    problem(await p.vcs.call_app("POST", "/messages", body), 413, "body_too_large")


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("PUT", "/channels/ch-unknown", {"status": "active"}, "channel_not_found"),
        ("PUT", "/sessions/s-unknown", {"status": "active"}, "session_not_found"),
        (
            "PUT",
            "/messages/m-1",
            {"status": "read", "channel_uid": "ch-unknown"},
            "channel_not_found",
        ),
        ("POST", "/s-unknown/typing", {"typing": True}, "session_not_found"),
        (
            "POST",
            "/messages",
            {"external_uid": CLIENT, "message": "x", "message_uid": "m", "channel_uid": "nope"},
            "channel_not_found",
        ),
    ],
)
async def test_unknown_channels_sessions_and_messages_are_404(
    p: Pipeline, method: str, path: str, body: Any, code: str
):
    problem(await p.vcs.call_app(method, path, body), 404, code)


async def test_an_unknown_message_on_a_known_channel_is_404(p: Pipeline):
    channel_uid = await p.active_channel()
    response = await p.vcs.call_app(
        "PUT", "/messages/m-unknown", {"status": "read", "channel_uid": channel_uid}
    )
    problem(response, 404, "message_not_found")


async def test_a_staff_message_on_a_pending_channel_is_409(p: Pipeline):
    p.vcs.confirm = False  # VCS never confirms it
    channel = await p.add_channel()
    [_] = await p.vcs.wait_for("POST", "/business/communication/channels", 1)
    pending = await p.channel_with(channel["channel_id"], "pending")
    while pending["channel_uid"] is None:
        await trio.sleep(0.02)
        pending = await p.channel(channel["channel_id"])
    body = {
        "external_uid": CLIENT,
        "message": "x",
        "message_uid": "m",
        "channel_uid": pending["channel_uid"],
    }
    problem(await p.vcs.call_app("POST", "/messages", body), 409, "channel_not_active")


async def test_a_staff_message_reusing_a_clients_message_uid_is_409(
    p: Pipeline, broker: BrokerInspector, names: Names
):
    channel_uid = await p.active_channel()
    message = inbound(names)
    await broker.publish(f"{names.transport}.inbound", message.to_json())
    [posted] = await p.vcs.wait_for("POST", "/business/communication/messages", 1)
    body = {
        "external_uid": CLIENT,
        "message": "x",
        "message_uid": posted.body["message_uid"],
        "channel_uid": channel_uid,
    }
    problem(await p.vcs.call_app("POST", "/messages", body), 409, "message_uid_taken")


async def test_a_staff_message_reusing_another_staff_messages_uid_is_409(p: Pipeline):
    channel_uid = await p.active_channel()
    body = {
        "external_uid": CLIENT,
        "message": "one",
        "message_uid": "m-1",
        "channel_uid": channel_uid,
    }
    first = await p.vcs.call_app("POST", "/messages", body)
    other = await p.vcs.call_app("POST", "/messages", {**body, "message": "two"})
    assert first.status_code == 204
    problem(other, 409, "message_uid_taken")


# -- the admin API


async def test_a_staff_message_the_broker_refuses_is_a_503_with_retry_after(
    p: Pipeline, broker: BrokerInspector, names: Names
):
    channel_uid = await p.active_channel()
    body = {
        "external_uid": CLIENT,
        "message": "Your order is ready",
        "message_uid": "staff-msg-1",
        "channel_uid": channel_uid,
    }
    await broker.delete_queue(f"{names.app}.outbound")  # nothing takes it: refused
    refused = await p.vcs_calls_app("POST", "/messages", body)
    await broker.declare_queue(f"{names.app}.outbound")
    again = await p.vcs_calls_app("POST", "/messages", body)  # VCS retries
    problem(refused, 503, "broker_unavailable")
    assert refused.headers["retry-after"] == str(SERVICE_RETRY_AFTER)
    assert again.status_code == 204, again.text
    [delivery] = await receive(broker, f"{names.app}.outbound", 1)
    assert Message.from_json(delivery.body).content == "Your order is ready"


async def test_a_channel_whose_creation_the_broker_refuses_is_a_503_with_retry_after(
    p: Pipeline, broker: BrokerInspector, names: Names
):
    token = await p.admin.put(
        f"/admin/businesses/{BUSINESS}/token", json={"access_token": ACCESS_TOKEN}
    )
    assert token.status_code == 204, token.text
    await broker.delete_queue(f"{names.app}.vcs")  # nothing takes the job: refused
    body = {"business_uid": BUSINESS, "transport_name": names.transport, "address": "4321"}
    refused = await p.admin.post("/admin/channels", json=body)
    assert "could not be queued" in problem(refused, 503, "broker_unavailable")["detail"]
    assert refused.headers["retry-after"] == str(SERVICE_RETRY_AFTER)


async def test_the_admin_api_wants_its_token(p: Pipeline):
    async with httpx.AsyncClient(base_url=str(p.admin.base_url)) as anonymous:
        calls = [
            anonymous.get("/admin/channels"),
            anonymous.get("/admin/businesses"),
            anonymous.put(f"/admin/businesses/{BUSINESS}/token", json={"access_token": "t"}),
            anonymous.post("/admin/channels", json={}),
            anonymous.get(
                "/admin/channels", headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}
            ),
        ]
        for call in calls:
            problem(await call, 401, "unauthorized")


@pytest.mark.parametrize(
    "body",
    [
        {"transport_name": "sms", "address": ADDRESS},  # no business_uid
        {"business_uid": BUSINESS, "transport_name": "sms", "address": ADDRESS, "type": "spam"},
        {"business_uid": BUSINESS, "transport_name": "sms", "address": ADDRESS, "extra": 1},
        {"business_uid": BUSINESS, "transport_name": "", "address": ADDRESS},
    ],
)
async def test_bad_channel_requests_are_400(p: Pipeline, body: dict[str, Any]):
    problem(await p.admin.post("/admin/channels", json=body), 400, "invalid_body")


@pytest.mark.parametrize("body", [{}, {"access_token": ""}, {"access_token": 7}, {"token": "t"}])
async def test_bad_token_requests_are_400(p: Pipeline, body: dict[str, Any]):
    problem(
        await p.admin.put(f"/admin/businesses/{BUSINESS}/token", json=body), 400, "invalid_body"
    )


async def test_a_channel_needs_the_business_token_first_and_a_free_address(p: Pipeline):
    body = {"business_uid": "biz-without-token", "transport_name": "sms", "address": ADDRESS}
    problem(await p.admin.post("/admin/channels", json=body), 409, "no_access_token")
    await p.add_channel()
    again = await p.admin.post(
        "/admin/channels",
        json={"business_uid": BUSINESS, "transport_name": p.names.transport, "address": ADDRESS},
    )
    problem(again, 409, "channel_exists")
    problem(await p.admin.get("/admin/channels/no-such-channel"), 404, "channel_not_found")


# Long and distinctive: a short token could occur by chance in a random test prefix.
SECOND_TOKEN = "second-business-token-7f3a"


async def test_access_tokens_are_never_answered_or_logged(p: Pipeline):
    with structlog.testing.capture_logs() as logs:
        await p.active_channel()
        token = {"access_token": SECOND_TOKEN}
        await p.admin.put(f"/admin/businesses/{BUSINESS}/token", json=token)
        listed = await p.admin.get("/admin/businesses")
        channels = await p.admin.get("/admin/channels")
    assert [b["business_uid"] for b in listed.json()] == [BUSINESS]
    for text in (listed.text, channels.text, json.dumps(logs, default=str)):
        for secret in (ACCESS_TOKEN, SECOND_TOKEN, ADMIN_TOKEN):
            assert secret not in text
    assert any(log["event"] == "access token set" for log in logs)


# -- envelopes that cannot be handled


async def test_an_inbound_to_an_address_without_a_channel_is_dead_lettered(
    p: Pipeline, broker: BrokerInspector, names: Names
):
    message = Message(
        to_addr="5555",
        from_addr=CLIENT,
        transport_name=names.transport,
        transport_type="sms",
        content="hello",
    )
    await broker.publish(f"{names.transport}.inbound", message.to_json())
    [letter] = await receive(broker, names.dead_letter, 1)
    assert letter.headers[HEADER_DL_QUEUE] == f"{names.app}.inbound"
    assert f"no channel for {names.transport} address '5555'" in letter.headers[HEADER_DL_ERROR]


async def test_an_event_for_a_message_that_is_not_a_staff_message_is_ignored(
    p: Pipeline, broker: BrokerInspector, names: Names
):
    stranger = inbound(names)
    event = Event.delivery_report(stranger, DeliveryStatus.DELIVERED)
    await broker.publish(f"{names.app}.event", event.to_json())
    assert await nothing_arrives(broker, names.dead_letter, within=0.3)
    assert p.vcs.calls == []


async def test_a_stale_client_typing_indication_is_dropped(
    p: Pipeline, broker: BrokerInspector, names: Names
):
    await p.active_channel()
    await broker.publish(f"{names.transport}.inbound", inbound(names).to_json())
    await p.vcs.wait_for("POST", "/business/communication/messages", 1)
    a_minute_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    old = inbound(names, content=None, helper_metadata={"typing": True}, timestamp=a_minute_ago)
    await broker.publish(f"{names.transport}.inbound", old.to_json())
    assert await nothing_arrives(broker, names.dead_letter, within=0.3)
    assert p.vcs.received("POST", "/business/communication/v1/sessions/typing") == []


async def test_an_inbound_without_content_is_not_posted(
    p: Pipeline, broker: BrokerInspector, names: Names
):
    await p.active_channel()
    await broker.publish(f"{names.transport}.inbound", inbound(names, content=None).to_json())
    assert await nothing_arrives(broker, names.dead_letter, within=0.3)
    assert p.vcs.received("POST", "/business/communication/sessions") == []
    assert p.vcs.received("POST", "/business/communication/messages") == []
