"""Errors reach Sentry: a fake Sentry server on localhost receives the real SDK's envelopes."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk
import trio

from vumi_like.broker import Broker
from vumi_like.connectors import ReceiveOutboundConnector
from vumi_like.logs import configure_logging
from vumi_like.messages import Message
from vumi_like.retry import RetriesExhausted
from vumi_like.sentry import configure_error_reporting

from .broker.test_contract import receive


class FakeSentry(BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.received.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_sentry() -> Iterator[tuple[str, list[bytes]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSentry)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://publickey@127.0.0.1:{server.server_port}/42", server.received  # type: ignore[attr-defined]
    finally:
        sentry_sdk.init(dsn=None)
        server.shutdown()


def test_no_dsn_means_no_reporting():
    assert configure_error_reporting(None) is False
    assert configure_error_reporting("") is False


async def test_a_failing_handler_is_reported_to_sentry_without_secrets(
    broker: Broker, unique: str, fake_sentry: tuple[str, list[bytes]]
):
    dsn, received = fake_sentry
    configure_logging("INFO", json=True)
    assert configure_error_reporting(dsn)

    async def explode(message: Message) -> None:
        raise RuntimeError("provider exploded; url amqp://user:hunter2@rabbit/")

    message = Message(to_addr="+1", from_addr="2", transport_name=unique, transport_type="sms")
    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique)
        await transport.setup(nursery, outbound_handler=explode)
        await broker.publish(f"{unique}.outbound", message.to_json())
        with trio.fail_after(10):
            # The fake server runs in another thread: poll what it has received.
            while b"provider exploded" not in b"".join(received):
                await trio.to_thread.run_sync(sentry_sdk.flush, 1.0)
        await transport.close()

    sent = b"".join(received)
    assert b"provider exploded" in sent
    assert b'"type":"RuntimeError"' in sent  # an exception event, with its traceback
    assert b"explode" in sent  # the failing function's frame
    assert b"hunter2" not in sent


async def test_an_unprocessable_envelope_is_not_reported_to_sentry(
    broker: Broker, unique: str, fake_sentry: tuple[str, list[bytes]]
):
    """Its reason is known (the dead letter and the log carry it): not a bug to report."""
    dsn, received = fake_sentry
    configure_logging("INFO", json=True)
    assert configure_error_reporting(dsn)

    async def refuse(message: Message) -> None:
        if message.content == "poison":
            raise RetriesExhausted("the provider refused it 5 times")
        raise RuntimeError("a bug in the handler")

    poison, buggy = (
        Message(
            to_addr="+1", from_addr="2", transport_name=unique, transport_type="sms", content=c
        )
        for c in ("poison", "bug")
    )
    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique)
        await transport.setup(nursery, outbound_handler=refuse)
        await broker.publish(f"{unique}.outbound", poison.to_json())
        await broker.publish(f"{unique}.outbound", buggy.to_json())
        # Both are dead-lettered; the bug's report is awaited.
        letters = await receive(broker, broker.dead_letter_queue, 2)
        with trio.fail_after(10):
            while b"a bug in the handler" not in b"".join(received):
                await trio.to_thread.run_sync(sentry_sdk.flush, 1.0)
        await transport.close()

    assert {letter.body for letter in letters} == {poison.to_json(), buggy.to_json()}
    sent = b"".join(received)
    assert b'"type":"RuntimeError"' in sent
    # (Its warning may ride along as a breadcrumb of the bug's report, not as an event.)
    assert b'"type":"RetriesExhausted"' not in sent
