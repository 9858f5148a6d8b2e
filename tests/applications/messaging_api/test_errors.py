"""Every error path of the Messaging API answers an RFC 7807 problem with a code."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio

from tests.applications.messaging_api.harness import JWT_SECRET, running_pipeline
from tests.conftest import tracked_broker
from tests.stores.conftest import StoreTarget
from vumi_like.broker import BrokerInspector
from vumi_like.errors import PROBLEM_CONTENT_TYPE

SMS = {"channel": "sms", "receiver": "+27820000001", "content": "hello"}


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["type"] == f"urn:vumi-like:problem:{code}"
    assert body["title"] and body["detail"]
    return body


BAD_BODIES = {
    "not-json": (b"{nope", "not valid JSON"),
    "not-utf8": (b'{"channel": "\xff"}', "not UTF-8"),
    "not-an-object": (b"[1, 2]", "should be a JSON object"),
    "wrong-type": (b'{"channel": "sms", "receiver": 5, "content": "x"}', "receiver"),
    "missing-field": (b'{"channel": "sms", "content": "x"}', "receiver: is required"),
    "unknown-field": (
        b'{"channel": "sms", "receiver": "1", "content": "x", "colour": "red"}',
        "colour: extra inputs are not permitted",
    ),
    "empty-receiver": (b'{"channel": "sms", "receiver": "", "content": "x"}', "receiver"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_a_bad_body_is_a_400_naming_the_problem_and_nothing_is_stored(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str, case: str
):
    raw, named = BAD_BODIES[case]
    async with running_pipeline(pipeline_broker, target, unique) as p:
        response = await p.http.post(
            "/v1/messages",
            content=raw,
            headers=await p.auth(**{"content-type": "application/json"}),
        )
        listed = (await p.get("/v1/messages")).json()["messages"]
    body = problem(response, 400, "VALIDATION_FAILED")
    assert named in body["detail"]
    assert listed == []


async def test_unknown_channel_and_foreign_sender_are_refused(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        fax = await p.post("/v1/messages", {**SMS, "channel": "fax"})
        foreign = await p.post("/v1/messages", {**SMS, "sender": "5678"})  # globex's number
        no_email = await p.post(
            "/v1/messages", {**SMS, "channel": "email", "receiver": "a@b.c"}, tenant="globex"
        )
        listed = (await p.get("/v1/messages")).json()["messages"]
    assert "'fax'" in problem(fax, 404, "CHANNEL_NOT_FOUND")["detail"]
    assert "'5678'" in problem(foreign, 403, "SENDER_NOT_ALLOWED")["detail"]
    problem(no_email, 404, "CHANNEL_NOT_FOUND")
    assert listed == []


async def test_unknown_ids_are_404_with_their_codes(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        answers = {
            "MESSAGE_NOT_FOUND": await p.get("/v1/messages/nope"),
            "WEBHOOK_NOT_FOUND": await p.get("/v1/webhooks/nope"),
            "PARTY_NOT_FOUND": await p.get("/v1/parties/nope"),
            "BATCH_NOT_FOUND": await p.get("/batchStatus/nope"),
            "NOT_FOUND": await p.get("/no/such/path"),
        }
        legacy = await p.get("/status/nope")
    for code, response in answers.items():
        problem(response, 404, code)
    problem(legacy, 404, "MESSAGE_NOT_FOUND")


def forged_token(**claims: Any) -> str:
    return jwt.encode(
        {"iss": "vumi-like", "sub": "acme-client", "aud": "vumi-like", "tenant": "acme", **claims},
        JWT_SECRET,
        algorithm="HS256",
    )


async def test_calls_without_a_good_token_are_401(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    issued = int(time.time())
    async with running_pipeline(pipeline_broker, target, unique) as p:
        answers = [
            await p.http.get("/v1/channels"),
            await p.http.get("/v1/channels", headers={"Authorization": "Bearer garbage"}),
            await p.http.get(
                "/v1/channels",
                headers={
                    "Authorization": "Bearer " + forged_token(iat=issued - 7200, exp=issued - 3600)
                },
            ),
            await p.http.get(
                "/v1/channels",
                headers={"Authorization": "Bearer " + forged_token(iat=issued)},  # no exp
            ),
            await p.http.post("/sms", json={"mobileNumber": "+27820000001", "message": "x"}),
        ]
    for response in answers:
        body = problem(response, 401, "UNAUTHORIZED")
        assert body["error"] == "invalid_token"
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_token_endpoint_takes_basic_or_form_credentials_and_refuses_others(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    grant = {"grant_type": "client_credentials"}
    async with running_pipeline(pipeline_broker, target, unique) as p:
        basic = await p.http.post("/oauth/token", data=grant, auth=("acme-client", "acme-secret"))
        form = await p.http.post(
            "/oauth/token",
            data={**grant, "client_id": "globex-client", "client_secret": "globex-secret"},
        )
        wrong = await p.http.post("/oauth/token", data=grant, auth=("acme-client", "nope"))
        unknown = await p.http.post(
            "/oauth/token", data={**grant, "client_id": "who", "client_secret": "x"}
        )
        other_grant = await p.http.post(
            "/oauth/token", data={"grant_type": "password"}, auth=("acme-client", "acme-secret")
        )
        with_token = await p.http.get(
            "/v1/channels", headers={"Authorization": f"Bearer {form.json()['access_token']}"}
        )
    for answer in (basic, form):
        assert answer.status_code == 200, answer.text
        assert answer.json()["token_type"] == "Bearer"
        assert answer.json()["expires_in"] == 3600
        assert answer.headers["cache-control"] == "no-store"
    assert [c["name"] for c in with_token.json()["channels"]] == ["sms", "web"]  # globex's
    assert problem(wrong, 401, "UNAUTHORIZED")["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert problem(unknown, 401, "UNAUTHORIZED")["error"] == "invalid_client"
    assert problem(other_grant, 400, "VALIDATION_FAILED")["error"] == "unsupported_grant_type"


async def test_an_oversize_body_is_a_413(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(
        pipeline_broker, target, unique, api={"max_body_bytes": 2048}
    ) as p:
        response = await p.post("/v1/messages", {**SMS, "content": "x" * 4096})
    assert "2048" in problem(response, 413, "PAYLOAD_TOO_LARGE")["detail"]


async def test_a_batch_over_the_limit_is_refused(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique, api={"max_batch_size": 2}) as p:
        response = await p.post("/v1/messages/batch", {"messages": [SMS] * 3})
    assert "at most 2" in problem(response, 400, "VALIDATION_FAILED")["detail"]


async def test_a_refused_publish_is_a_503_and_the_message_says_why(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        await pipeline_broker.delete_queue(f"{p.connector}.outbound")
        refused = await p.post("/v1/messages", SMS)
        await pipeline_broker.declare_queue(f"{p.connector}.outbound")
        listed = (await p.get("/v1/messages")).json()["messages"]
        again = await p.post("/v1/messages", SMS)
    body = problem(refused, 503, "BROKER_UNAVAILABLE")
    assert refused.headers["retry-after"]
    assert "try again" in body["detail"]
    assert [m["status"] for m in listed] == ["DELIVERY_FAILED"]
    assert again.status_code == 202, again.text


async def test_a_refused_publish_fails_every_message_of_the_request_left_unsent(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    # /messages sends its batch in the request: the first publish is refused, and the
    # messages after it, stored but never published, must not stay QUEUED either.
    async with running_pipeline(pipeline_broker, target, unique) as p:
        for party, address in [("p-1", "+27820000001"), ("p-2", "+27820000002")]:
            await p.http.put(
                f"/v1/parties/{party}",
                json={"channel": "sms", "address": address},
                headers=await p.auth(),
            )
        await pipeline_broker.delete_queue(f"{p.connector}.outbound")
        refused = await p.post(
            "/messages",
            {"messages": [{"party": {"partyId": f"p-{n}"}, "message": "hi"} for n in (1, 2)]},
        )
        await pipeline_broker.declare_queue(f"{p.connector}.outbound")
        listed = (await p.get("/v1/messages")).json()["messages"]
        stored = [await p.store.get_message("acme", m["messageId"]) for m in listed]
    problem(refused, 503, "BROKER_UNAVAILABLE")
    assert [m["status"] for m in listed] == ["DELIVERY_FAILED", "DELIVERY_FAILED"]
    for message in stored:
        assert message is not None
        assert message.transitions[-1].event_type == "publish_failed"
        assert message.transitions[-1].raw is not None
        assert "the broker refused the message" in message.transitions[-1].raw["error"]


async def test_a_store_that_does_not_answer_is_a_503(tmp_path: Path, unique: str):
    path = tmp_path / "store.db"
    target = StoreTarget("sqlite", f"sqlite:///{path}", {}, path)
    async with (
        tracked_broker("memory://", unique) as broker,
        running_pipeline(broker, target, unique, api={"store_statement_timeout": 0.3}) as p,
    ):
        await p.token()
        locker = sqlite3.connect(path, timeout=0.1)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            with trio.fail_after(10):
                response = await p.post("/v1/messages", SMS)
        finally:
            locker.rollback()
            locker.close()
        after = await p.post("/v1/messages", SMS)
    problem(response, 503, "STORE_UNAVAILABLE")
    assert response.headers["retry-after"]
    assert after.status_code == 202, after.text
