"""``config/smtp.yaml`` as a user runs it: an e-mail sent through the Messaging API
reaches a real SMTP server, and its status follows."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.dispatch.conftest import poll
from tests.test_cli import running
from tests.test_cli_store import pipeline_copy
from tests.transports.smtp.conftest import StartServer

SMTP_PIPELINE = Path(__file__).resolve().parents[3] / "config" / "smtp.yaml"


async def test_the_smtp_pipeline_sends_an_api_email_through_the_server(
    tmp_path: Path, start_server: StartServer
):
    server = start_server()
    path, ports = pipeline_copy(SMTP_PIPELINE, tmp_path, {"email": {"port": server.port}})
    with trio.fail_after(60):
        async with (
            running("run", str(path)) as cli,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}", timeout=10) as http,
        ):
            for name in ("api", "dispatcher", "router", "sms", "email"):
                await cli.wait_for_log(event="worker started", worker=name)
            token = await http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("demo", "demo-secret"),
            )
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            sent = await http.post(
                "/v1/messages",
                json={
                    "channel": "email",
                    "receiver": "bob@example.com",
                    "content": {"text": "Hello Bob", "subject": "Hi", "html": "<p>Hello</p>"},
                },
                headers=headers,
            )
            assert sent.status_code == 202, sent.text
            message_id = sent.json()["messageId"]

            async def sent_status() -> bool:
                answer = await http.get(f"/v1/messages/{message_id}", headers=headers)
                statuses.append(answer.json())
                return statuses[-1]["status"] == "SENT"

            statuses: list[dict[str, Any]] = []
            await poll(sent_status)
            assert await cli.terminate() == 0, cli.stderr.decode()
    (received,) = server.recorder.received
    mail = email.message_from_bytes(received.content, policy=email.policy.default)
    assert received.mail_from == "noreply@example.org"
    assert received.rcpt_tos == ["bob@example.com"]
    assert mail["Subject"] == "Hi"
    assert mail["Message-ID"] == f"<{message_id}@example.org>"
    assert [t["status"] for t in statuses[-1]["transitions"]] == ["QUEUED", "SENT"]
