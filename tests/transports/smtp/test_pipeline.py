"""``config/smtp.yaml`` as a user runs it: an e-mail sent through the Messaging API
reaches a real SMTP server, and its status follows."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import httpx
import trio

from tests.test_cli import running
from tests.test_cli_store import (
    demo_headers,
    pipeline_copy,
    subscribe_and_send,
    wait_for_status,
)
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
            headers = await demo_headers(http)
            content = {"text": "Hello Bob", "subject": "Hi", "html": "<p>Hello</p>"}
            mail = {"channel": "email", "receiver": "bob@example.com", "content": content}
            message_id = await subscribe_and_send(http, headers, None, mail)
            message = await wait_for_status(http, headers, message_id, "SENT")
            assert await cli.terminate() == 0, cli.stderr.decode()
    (received,) = server.recorder.received
    mail = email.message_from_bytes(received.content, policy=email.policy.default)
    assert received.mail_from == "noreply@example.org"
    assert received.rcpt_tos == ["bob@example.com"]
    assert mail["Subject"] == "Hi"
    assert mail["Message-ID"] == f"<{message_id}@example.org>"
    assert [t["status"] for t in message["transitions"]] == ["QUEUED", "SENT"]
