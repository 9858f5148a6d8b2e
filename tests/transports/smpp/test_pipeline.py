"""``config/smpp.yaml`` as a user runs it, against the fake SMSC: an SMS sent through
the Messaging API is submitted, and the SMSC's receipt takes it to DELIVERED."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.applications.messaging_api.harness import webhook_receiver
from tests.test_cli import running
from tests.test_cli_store import demo_headers, pipeline_copy, subscribe_and_send
from tests.transports.smpp.smsc import FakeSmsc, receipt

SMPP_PIPELINE = Path(__file__).resolve().parents[3] / "config" / "smpp.yaml"


async def test_the_smpp_pipeline_takes_an_api_sms_to_delivered(tmp_path: Path, smsc: FakeSmsc):
    overrides: dict[str, dict[str, object]] = {
        "smpp": {"port": smsc.port, "system_id": smsc.system_id, "password": smsc.password}
    }
    path, ports = pipeline_copy(SMPP_PIPELINE, tmp_path, overrides)
    with trio.fail_after(60):
        async with (
            webhook_receiver() as receiver,
            running("run", str(path)) as cli,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}", timeout=10) as http,
        ):
            await cli.wait_for_log(event="provider up: resuming outbound", worker="smpp")
            headers = await demo_headers(http)
            sms = {"channel": "sms", "receiver": "+27820000001", "content": "Hi there"}
            message_id = await subscribe_and_send(http, headers, receiver.hook, sms)
            await receiver.wait_for(lambda _: bool(receiver.of("SENT", message_id)))
            await smsc.deliver(receipt(smsc.message_ids[0]))
            await receiver.wait_for(lambda _: bool(receiver.of("DELIVERED", message_id)))
            message = (await http.get(f"/v1/messages/{message_id}", headers=headers)).json()
            assert await cli.terminate() == 0, cli.stderr.decode()
    (submitted,) = smsc.submitted
    assert (submitted.source_addr, submitted.destination_addr) == ("1234", "+27820000001")
    assert submitted.short_message == b"Hi there"
    assert [t["status"] for t in message["transitions"]] == ["QUEUED", "SENT", "DELIVERED"]
