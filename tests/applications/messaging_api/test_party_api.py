"""The per-type API (seed 003): /sms, /email, /webmessage, /messages, batches, statuses,
conversation history, with x-origin and x-issuer kept; and the OpenAPI document."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import trio
import yaml

from tests.applications.messaging_api.harness import running_pipeline
from tests.stores.conftest import StoreTarget
from vumi_like.broker import BrokerInspector
from vumi_like.messages import Message

TRACE = {"x-origin": "case-system", "x-issuer": "jdoe"}
ATTACHMENT = {"name": "d.txt", "content": "aGk=", "contentType": "text/plain"}
ACME_MAIL = {"name": "ACME", "address": "noreply@acme.example"}


async def test_sms_email_and_web_messages_are_sent_and_kept_in_the_partys_history(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    html = base64.b64encode(b"<p>Hello</p>").decode()
    with trio.fail_after(30):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            sms = await p.post(
                "/sms",
                {
                    "party": {
                        "partyId": "p-1",
                        "externalReferences": [{"key": "case", "value": "7"}],
                    },
                    "sender": {"name": "ACME"},
                    "mobileNumber": "+46701234567",
                    "message": "Your case is ready",
                    "somethingNew": "ignored, as seed 003 does not forbid it",
                },
                **TRACE,
            )
            email = await p.post(
                "/email",
                {
                    "party": {"partyId": "p-1"},
                    "emailAddress": "person@example.org",
                    "subject": "Decision",
                    "message": "See attachment",
                    "htmlMessage": html,
                    "sender": ACME_MAIL,
                    "attachments": [
                        {"name": "d.txt", "content": "aGk=", "contentType": "text/plain"}
                    ],
                },
                **TRACE,
            )
            web = await p.post("/webmessage", {"party": {"partyId": "p-1"}, "message": "Hi"})
            for response in (sms, email, web):
                assert response.status_code == 200, response.text
            ids = [r.json()["messageId"] for r in (sms, email, web)]
            for message_id in ids:
                await p.wait_for_status(message_id, "DELIVERED")
            statuses = [(await p.get(f"/status/{i}")).json() for i in ids]
            history = (await p.get("/conversationHistory/p-1")).json()
            stored_email = await p.store.get_message("acme", ids[1])
    assert [r.status_code for r in (sms, email, web)] == [200, 200, 200]
    assert statuses == [{"messageId": i, "status": "SENT"} for i in ids]
    assert [item["messageId"] for item in history] == ids
    assert [item["messageType"] for item in history] == ["SMS", "EMAIL", "WEB_MESSAGE"]
    assert history[0]["content"]["message"] == "Your case is ready"
    assert history[0]["content"]["externalReferences"] == [{"key": "case", "value": "7"}]
    assert history[1]["content"]["subject"] == "Decision"
    assert (history[0]["origin"], history[0]["issuer"]) == ("case-system", "jdoe")
    assert (history[2]["origin"], history[2]["issuer"]) == (None, None)
    assert stored_email is not None
    envelope = Message.model_validate(stored_email.payload["envelope"])
    extras = envelope.helper_metadata["messaging_api"]
    assert (envelope.to_addr, envelope.from_addr) == ("person@example.org", "noreply@acme.example")
    assert (extras["subject"], extras["html_base64"], extras["sender_name"]) == (
        "Decision",
        html,
        "ACME",
    )
    assert extras["attachments"] == [
        {"name": "d.txt", "content": "aGk=", "contentType": "text/plain"}
    ]
    # What e-mail transports read, the same whichever surface it came through.
    assert envelope.helper_metadata["email"] == {
        "subject": "Decision",
        "html": base64.b64decode(html).decode(),
        "sender_name": "ACME",
        "attachments": [{"name": "d.txt", "content": "aGk=", "content_type": "text/plain"}],
    }


async def test_messages_to_parties_go_by_their_contact_settings(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(30):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            for party, channel, address in [
                ("p-sms", "sms", "+27820000001"),
                ("p-mail", "email", "a@example.org"),
            ]:
                await p.http.put(
                    f"/v1/parties/{party}",
                    json={"channel": channel, "address": address},
                    headers=await p.auth(),
                )
            response = await p.post(
                "/messages",
                {
                    "messages": [
                        {"party": {"partyId": "p-sms"}, "message": "by sms"},
                        {
                            "party": {"partyId": "p-mail"},
                            "subject": "By mail",
                            "message": "by e-mail",
                            "sender": {
                                "email": {"name": "ACME", "address": "noreply@acme.example"}
                            },
                        },
                        {"party": {"partyId": "p-unknown"}, "message": "to nobody"},
                    ]
                },
                **TRACE,
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            sms_id, mail_id, nobody_id = answer["messageIds"]
            await p.wait_for_status(sms_id, "DELIVERED")
            await p.wait_for_status(mail_id, "DELIVERED")
            batch = (await p.get(f"/batchStatus/{answer['batchId']}")).json()
            mail = (await p.get(f"/v1/messages/{mail_id}")).json()
            nobody = (await p.get(f"/v1/messages/{nobody_id}")).json()
            missing_party = await p.post("/messages", {"messages": [{"message": "who?"}]})
    statuses = {s["messageId"]: s["status"] for s in batch["messageStatuses"]}
    assert statuses == {sms_id: "SENT", mail_id: "SENT", nobody_id: "NO_FEEDBACK_SETTINGS_FOUND"}
    assert (mail["channelName"], mail["receiver"], mail["sender"]) == (
        "email",
        "a@example.org",
        "noreply@acme.example",
    )
    assert nobody["status"] == "NO_FEEDBACK_SETTINGS_FOUND"
    assert missing_party.status_code == 400
    assert "partyId" in missing_party.json()["detail"]


async def test_sms_and_email_batches_are_asynchronous(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(30):
        async with running_pipeline(pipeline_broker, target, unique) as p:
            sms = await p.post(
                "/sms/batch",
                {
                    "message": "Road closed",
                    "recipients": [{"mobileNumber": f"+4670123456{i}"} for i in range(4)],
                },
            )
            email = await p.post(
                "/email/batch",
                {
                    "subject": "Road closed",
                    "message": "Details inside",
                    "recipients": [{"emailAddress": f"r{i}@example.org"} for i in range(3)],
                },
            )
            assert (sms.status_code, email.status_code) == (202, 202), (sms.text, email.text)
            ids = sms.json()["messageIds"] + email.json()["messageIds"]
            for message_id in ids:
                await p.wait_for_status(message_id, "DELIVERED")
            bad_number = await p.post(
                "/sms/batch", {"message": "x", "recipients": [{"mobileNumber": "12"}]}
            )
    assert len(ids) == 7
    assert bad_number.status_code == 400
    assert "recipients.0.mobileNumber" in bad_number.json()["detail"]


async def test_web_message_needs_a_party_and_sms_a_valid_number(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        no_party = await p.post("/webmessage", {"message": "hi"})
        bad_number = await p.post("/sms", {"mobileNumber": "0820000001", "message": "hi"})
        no_message = await p.post("/sms", {"mobileNumber": "+27820000001"})
        no_email_channel = await p.post(
            "/email", {"emailAddress": "a@b.c", "subject": "s"}, tenant="globex"
        )
        bad_html = await p.post(
            "/email",
            {"emailAddress": "a@b.c", "subject": "s", "message": "m", "htmlMessage": "<p>"},
        )
        not_ascii = await p.post(
            "/email",
            {"emailAddress": "a@b.c", "subject": "s", "message": "m", "htmlMessage": "é1"},
        )
        listed = (await p.get("/v1/messages")).json()["messages"]
    assert no_party.status_code == 400 and "partyId" in no_party.json()["detail"]
    assert bad_number.status_code == 400 and "mobileNumber" in bad_number.json()["detail"]
    assert no_message.status_code == 400 and "message: is required" in no_message.json()["detail"]
    assert no_email_channel.status_code == 404
    assert no_email_channel.json()["code"] == "CHANNEL_NOT_FOUND"
    for refused in (bad_html, not_ascii):
        assert refused.status_code == 400 and "not base64" in refused.json()["detail"]
    assert listed == []  # nothing stored for any refused request


async def test_history_is_filtered_by_date_and_paged(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        ids = []
        for i in range(5):
            response = await p.post(
                "/sms",
                {"party": {"partyId": "p-9"}, "mobileNumber": "+46701234567", "message": f"{i}"},
            )
            ids.append(response.json()["messageId"])
        today = datetime.now(UTC).date()
        first = await p.get("/conversationHistory/p-9", limit=2)
        second = await p.get(
            "/conversationHistory/p-9", limit=10, cursor=first.headers["x-next-cursor"]
        )
        future = await p.get(
            "/conversationHistory/p-9", fromDate=(today + timedelta(days=1)).isoformat()
        )
        today_only = await p.get(
            "/conversationHistory/p-9", fromDate=today.isoformat(), toDate=today.isoformat()
        )
        bad_date = await p.get("/conversationHistory/p-9", fromDate="yesterday")
        bad_cursor = await p.get("/conversationHistory/p-9", cursor="!!")
    assert [i["messageId"] for i in first.json()] == ids[:2]
    assert first.headers["link"] == (
        f'</conversationHistory/p-9?limit=2&cursor={first.headers["x-next-cursor"]}>; rel="next"'
    )
    assert [i["messageId"] for i in second.json()] == ids[2:]
    assert "x-next-cursor" not in second.headers
    assert future.json() == []
    assert [i["messageId"] for i in today_only.json()] == ids
    assert bad_date.status_code == 400
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["code"] == "VALIDATION_FAILED"


async def test_the_openapi_document_is_served_as_json_and_yaml(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    async with running_pipeline(pipeline_broker, target, unique) as p:
        as_json = (await p.http.get("/openapi.json")).json()
        as_yaml = await p.http.get("/api-docs")
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == json.loads(json.dumps(as_json))
    paths = as_json["paths"]
    for path in [
        "/sms",
        "/email",
        "/webmessage",
        "/messages",
        "/sms/batch",
        "/email/batch",
        "/status/{message_id}",
        "/batchStatus/{batch_id}",
        "/conversationHistory/{party_id}",
        "/v1/messages",
        "/v1/messages/batch",
        "/v1/messages/{message_id}",
        "/v1/channels",
        "/v1/webhooks",
        "/oauth/token",
    ]:
        assert path in paths, path
    assert "/metrics" not in paths
    assert paths["/oauth/token"]["post"]["security"] == []
    assert as_json["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for operations in paths.values():
        for operation in operations.values():
            assert operation["responses"], operation["operationId"]
