"""``config/conversations.yaml`` as a user runs it, against the fake VCS: a token added
with the CLI, a channel asked for on the admin API and confirmed by VCS, a client's
message through the simulator posted to VCS, and a staff reply delivered back."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.applications.conversations.fake_vcs import fake_vcs
from tests.test_cli import running, vumi_like
from tests.test_cli_store import pipeline_copy
from vumi_like.applications.conversations.vcs import CHANNELS, MESSAGES, SESSIONS

PIPELINE = Path(__file__).resolve().parents[3] / "config" / "conversations.yaml"
SECRET = "pipeline-webhook-secret"
ADMIN = "pipeline-admin-token"


async def test_the_conversations_pipeline_carries_a_conversation(tmp_path: Path):
    with trio.fail_after(60):
        async with fake_vcs(SECRET) as vcs:
            path, ports = pipeline_copy(
                PIPELINE,
                tmp_path,
                {
                    "vcita": {
                        "vcs_url": vcs.url,
                        "webhook_secret": SECRET,
                        "admin_token": ADMIN,
                        "retry_delay_base": 0.05,
                    },
                    "sim": {"delivery_delay": 0.05},
                },
            )
            store = (
                "--tenant",
                "whatsapp-app",
                "--store-url",
                f"sqlite:///{tmp_path / 'vumi_like.db'}",
            )
            vcs.tokens.add("biz-token")
            added = await vumi_like("vcita", "add-token", "biz-1", "--token", "biz-token", *store)
            assert added.returncode == 0, added.stderr.decode()
            app = f"http://127.0.0.1:{ports['vcita']}"
            vcs.app_url = f"{app}/vcita"
            async with running("run", str(path)) as cli, httpx.AsyncClient(timeout=10) as http:
                await cli.wait_for_log(event="worker started", worker="vcita")
                requested = await http.post(
                    f"{app}/admin/channels",
                    json={"business_uid": "biz-1", "transport_name": "sim", "address": "1234"},
                    headers={"Authorization": f"Bearer {ADMIN}"},
                )
                assert requested.status_code == 202, requested.text
                [channel] = await vcs.wait_for("POST", CHANNELS, 1)
                assert await vcs.wait_for_callback("/channels/ch-1") == 204
                sent = await http.post(
                    f"http://127.0.0.1:{ports['sim']}/inbound",
                    json={"from_addr": "+27820000001", "to_addr": "1234", "content": "hi"},
                )
                assert sent.status_code == 200, sent.text
                [posted] = await vcs.wait_for("POST", MESSAGES, 1)
                reply = await vcs.call_app(
                    "POST",
                    "/messages",
                    {
                        "external_uid": "+27820000001",
                        "message": "hello!",
                        "message_uid": "staff-1",
                        "channel_uid": "ch-1",
                    },
                )
                assert reply.status_code == 204, reply.text
                [status] = await vcs.wait_for("PUT", f"{MESSAGES}/staff-1", 1)
                assert await cli.terminate() == 0, cli.stderr.decode()
    assert channel.body == {"business_uid": "biz-1", "type": "transactional"}
    assert len(vcs.received("POST", SESSIONS)) == 1
    assert posted.body["message"] == "hi"
    assert status.body == {"status": "received", "channel_uid": "ch-1"}
