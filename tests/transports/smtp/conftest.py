"""Fixtures: aiosmtpd servers started per test, certificates, senders with their ``run``."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trustme

from tests.transports.smtp.servers import Recorder, SmtpServer, server_tls_context
from vumi_like.messages import Message
from vumi_like.transports.smtp.sender import SmtpSender, SmtpSettings

StartServer = Callable[..., SmtpServer]
OpenSender = Callable[..., Awaitable[SmtpSender]]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """``start_server(recorder=None, **aiosmtpd_options)``: a running server, stopped
    after the test."""
    started: list[SmtpServer] = []

    def start(recorder: Recorder | None = None, **options: Any) -> SmtpServer:
        server = SmtpServer(recorder or Recorder(), **options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server(start_server: StartServer) -> SmtpServer:
    return start_server()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    return server_tls_context(ca.issue_cert("127.0.0.1", "localhost"))


def settings_for(port: int, **overrides: Any) -> SmtpSettings:
    """Settings for a server on 127.0.0.1:``port``: plain text, 2 s timeout, unless
    ``overrides`` say otherwise."""
    options: dict[str, Any] = {"security": "none", "timeout": 2.0, **overrides}
    return SmtpSettings(host="127.0.0.1", port=port, **options)


@pytest.fixture
async def open_sender(nursery: trio.Nursery) -> OpenSender:
    """``await open_sender(settings)``: a sender with its ``run`` going in the test's
    nursery (cancelled, so closing every session, when the test ends)."""

    async def open_(settings: SmtpSettings) -> SmtpSender:
        sender = SmtpSender(settings)
        await nursery.start(sender.run)
        return sender

    return open_


def outbound(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "to_addr": "bob@example.com",
        "from_addr": "alice@example.org",
        "transport_name": "email",
        "transport_type": "email",
        "content": "Hello Bob",
        **overrides,
    }
    return Message(**fields)
