"""SMTP servers for the sender's tests, on 127.0.0.1 and a free port.

* ``SmtpServer``: aiosmtpd, a real SMTP server (on its own thread and asyncio loop),
  with a ``Recorder`` handler that keeps what it received and can be told to refuse a
  recipient, answer the data with a given reply, hang, or drop the connection. It
  counts the TCP connections that said EHLO, the QUITs and the connections lost, and
  lets a test wait for those counts, so no test sleeps to synchronise.
* ``ScriptedPeer``: one connection to a trio TCP server that speaks only what a test
  scripts, for what no real server does on purpose: garbage, a reply cut off, silence.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
from collections.abc import Callable
from typing import Any

import attrs
import trio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

USERNAME = "mailer"
PASSWORD = "s3cret-passw0rd"


@attrs.frozen
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool


@attrs.define
class Recorder:
    """aiosmtpd handler: records mails; misbehaves on request (see the attributes)."""

    received: list[Received] = attrs.field(factory=list)
    # TCP connections (client address and port) that said EHLO.
    peers: set[object] = attrs.field(factory=set)
    quits: int = 0
    # Connections lost, of those in peers.
    lost: int = 0
    # RCPT TO address -> the reply line to give it instead of accepting it.
    rcpt_replies: dict[str, str] = attrs.field(factory=dict)
    # The reply to the data; the mail is recorded only when it starts with 250.
    data_reply: str = "250 OK"
    # "hang": never answer the data; "drop": close the connection instead of answering.
    on_data: str | None = None
    changed: threading.Condition = attrs.field(factory=threading.Condition)

    def _note(self, update: Callable[[], None]) -> None:
        with self.changed:
            update()
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[Recorder], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate(self)`` holds (call it in a thread from trio)."""
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self), timeout):
                raise TimeoutError("the SMTP server never got there")

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        self._note(lambda: self.peers.add(session.peer))
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.on_data == "hang":
            await asyncio.Event().wait()  # until the server stops
        if self.on_data == "drop":
            _abort(server)
            await asyncio.Event().wait()  # cancelled as the connection is lost
        if self.data_reply.startswith("250"):
            assert envelope.mail_from is not None and isinstance(envelope.content, bytes)
            assert server.transport is not None
            tls = server.transport.get_extra_info("ssl_object") is not None
            mail = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls)
            self._note(lambda: self.received.append(mail))
        return self.data_reply

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        def count() -> None:
            self.quits += 1

        self._note(count)
        return "221 Bye"

    def connection_lost(self, peer: object) -> None:
        def count() -> None:
            if peer in self.peers:  # not the controller's own check that it is up
                self.lost += 1

        self._note(count)


def _abort(connection: SMTP) -> None:
    if isinstance(connection.transport, asyncio.Transport):
        connection.transport.abort()


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    # handled=False: aiosmtpd answers the failure itself (535).
    return AuthResult(success=ok, handled=False)


class _RecordingSMTP(SMTP):
    """aiosmtpd's server, telling the recorder when a connection is lost."""

    def __init__(self, handler: Recorder, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.recorder = handler

    def connection_lost(self, error: Exception | None) -> None:
        assert self.session is not None
        peer = self.session.peer
        super().connection_lost(error)
        self.recorder.connection_lost(peer)


class SmtpServer(Controller):
    """aiosmtpd on 127.0.0.1 and a port of the system's choosing (``port`` once started).

    ``drop_connections`` aborts every open connection, as a server restart would.
    """

    def __init__(self, handler: Recorder, port: int = 0, **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=port, **kwargs)
        self.recorder = handler
        self.connections: set[_RecordingSMTP] = set()

    def factory(self) -> SMTP:
        server = _RecordingSMTP(self.recorder, **self.SMTP_kwargs)
        self.connections.add(server)
        return server

    def _trigger_server(self) -> None:
        # Port 0 asked the system for a free port: learn it before the controller
        # connects to itself to check that it is up.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()

    def drop_connections(self) -> None:
        def abort_all() -> None:
            for connection in self.connections:
                _abort(connection)

        self.loop.call_soon_threadsafe(abort_all)


def server_tls_context(certificate: Any) -> ssl.SSLContext:
    """A server-side TLS context presenting ``certificate`` (a ``trustme.LeafCert``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    return context


# -- a scripted peer ----------------------------------------------------------------------


class ScriptedPeer:
    """The server side of one connection, line by line."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read_line(self) -> bytes:
        """The next line, without its CRLF; b"" once the client has closed."""
        while b"\r\n" not in self._buffer:
            chunk = await self.stream.receive_some()
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\r\n")
        self._buffer = bytearray(rest)
        return line

    async def command(self, verb: str) -> bytes:
        """Read a command, checking it is ``verb``."""
        line = await self.read_line()
        assert line.upper().startswith(verb.encode()), f"expected {verb}, got {line!r}"
        return line

    async def read_data(self) -> None:
        """Read the message data, up to its final ``.`` line."""
        while await self.read_line() != b".":
            pass

    async def greet_and_accept(self) -> None:
        """Greeting, EHLO, MAIL, RCPT and DATA accepted; the data read."""
        await self.send(b"220 scripted ESMTP\r\n")
        await self.command("EHLO")
        await self.send(b"250 scripted\r\n")
        await self.command("MAIL")
        await self.send(b"250 ok\r\n")
        await self.command("RCPT")
        await self.send(b"250 ok\r\n")
        await self.command("DATA")
        await self.send(b"354 go ahead\r\n")
        await self.read_data()


Script = Callable[[ScriptedPeer], Any]


async def serve_script(nursery: trio.Nursery, script: Script) -> int:
    """Serve ``script`` to every connection on 127.0.0.1; the port."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await script(ScriptedPeer(stream))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away: what some tests are about

    serve = functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
    listeners = await nursery.start(serve)
    return int(listeners[0].socket.getsockname()[1])
