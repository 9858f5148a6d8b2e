"""Webhook POSTs over kept-alive HTTP/1.1 connections, one small pool per receiver.

The dispatcher makes one POST per webhook, thousands a second to a busy receiver, and
reads back only the status, ``Retry-After`` and the start of the body. A general
client (httpx over httpcore) checks every pooled connection with a ``poll`` system
call on each request, which with a few dozen connections open to one receiver cost
more than everything else the dispatcher does per webhook. This one keeps, for each
receiver (scheme, host and port), a stack of idle connections, hands the most recent
to the next POST, and checks nothing up front: a kept connection the receiver closed
meanwhile fails before any answer arrives, and that POST is then made once more on a
new connection (a webhook carries its id, so even a receiver that did see it the
first time drops the repeat).

What it leaves to httpx: a URL to be reached through a proxy (``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY`` from the environment when the poster is
made, as httpx reads them) is posted with httpx. TLS uses httpx's default context
(its CA bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``).

A POST cancelled half-way (its deadline passed) closes its connection: the next one
never reads the tail of an answer meant for another.

The request is written here (its header names and values checked as HTTP requires)
and the answer read by httptools (llhttp), which does in microseconds what a parser in
Python takes tens of microseconds for, three times a message.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import attrs
import httptools
import httpx
import trio

__all__ = ["Answer", "PostFailed", "Poster"]

# How much of an answer's body is kept (for the error message); the rest is read and
# dropped, up to READ_AT_MOST, beyond which the connection is closed instead.
KEEP_BODY = 1024
READ_AT_MOST = 1024 * 1024
RECEIVE_BYTES = 64 * 1024


class PostFailed(Exception):
    """No answer: the connection could not be made, broke, or the answer was not HTTP."""


@attrs.frozen
class Answer:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes  # at most KEEP_BODY bytes of it


@attrs.define
class _Connection:
    stream: trio.abc.Stream
    idle_since: float = 0.0

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


@attrs.frozen
class _Target:
    origin: tuple[str, str, int]  # scheme, host, port
    host_header: str
    path: str


def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PostFailed(f"not an http(s) URL: {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default else f"{bracketed}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if _NOT_IN_TARGET.search(path) or not path.isascii():
        raise PostFailed(f"not a URL a request can name: {url!r}")
    return _Target((parts.scheme, host, port), host_header, path)


# What RFC 9110 allows in a header's name (a token) and not in its value, and what a
# request target may not hold (whitespace and controls: it would end the line early).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")


def _request_head(target: _Target, length: int, headers: Mapping[str, str]) -> bytes:
    """The request line and headers of a POST of ``length`` bytes to ``target``."""
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host_header}",
        f"Content-Length: {length}",
    ]
    for name, value in headers.items():
        # The value is not repeated in the error: it may be a credential.
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"not a header HTTP can carry: the name {name!r} is not a token")
        if _NOT_IN_VALUE.search(value):
            raise ValueError(
                f"not a header HTTP can carry: the value of {name!r} holds a line break "
                "or a control character"
            )
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class _Answering:
    """httptools' callbacks for one answer: the final one, after any 1xx."""

    __slots__ = ("complete", "headers", "keep_alive", "kept", "later", "parser", "read", "status")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0  # set once the final answer's headers are all in
        self.headers: dict[str, str] = {}
        self.kept = bytearray()
        self.read = 0
        self.complete = False
        self.later = False  # bytes after the answer: the connection is not kept
        self.keep_alive = False

    def on_message_begin(self) -> None:
        if self.complete:
            self.later = True  # more after the answer: nothing of it is taken
        else:
            self.headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if not 100 <= status < 200:
            self.status = status
            # Asked here, as llhttp answers it for the message it is reading.
            self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.read += len(body)
        if len(self.kept) < KEEP_BODY:
            self.kept += body[: KEEP_BODY - len(self.kept)]

    def on_message_complete(self) -> None:
        if self.status:  # not an informational (1xx) answer: that one is passed over
            self.complete = True

    def ends_at_close(self) -> bool:
        """Whether the answer's body runs to the end of the connection."""
        coding = self.headers.get("transfer-encoding", "").lower()
        return "content-length" not in self.headers and "chunked" not in coding


def _proxied(url: str, proxies: Mapping[str, str]) -> bool:
    """Whether ``proxies`` (read from the environment) take ``url``."""
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not proxy_bypass_environment(parts.hostname or "", proxies)


class Poster:
    def __init__(self, *, keepalive: float = 5.0, max_idle: int = 64) -> None:
        self.keepalive = keepalive
        self.max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._httpx: httpx.AsyncClient | None = None
        # Read once, as httpx reads them when a client is made.
        self._proxies = urllib.request.getproxies_environment()

    async def aclose(self) -> None:
        idle = [c for stack in self._idle.values() for c in stack]
        self._idle.clear()
        for connection in idle:
            await connection.aclose()
        if self._httpx is not None:
            await self._httpx.aclose()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body``; the answer, whatever its status, or ``PostFailed``.

        No deadline of its own: the caller's cancel scope is it."""
        if self._proxies and _proxied(url, self._proxies):
            return await self._post_by_httpx(url, body, headers)
        target = _target(url)
        request = _request_head(target, len(body), headers) + body
        connection = await self._take_idle(target.origin)
        if connection is not None:
            try:
                return await self._exchange(connection, target, request)
            except _ClosedBeforeAnswer:
                pass  # the receiver had closed it: once more, on a new connection
        connection = await self._connect(target)
        try:
            return await self._exchange(connection, target, request)
        except _ClosedBeforeAnswer as exc:
            raise PostFailed(str(exc)) from None

    async def _take_idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        stack = self._idle.get(origin)
        if not stack:
            return None
        connection = stack.pop()
        if time.monotonic() - connection.idle_since < self.keepalive:
            return connection
        # Idle too long to trust, and the rest of the stack longer still.
        stale = [connection, *stack]
        stack.clear()
        for old in stale:
            await old.aclose()
        return None

    async def _keep(self, origin: tuple[str, str, int], connection: _Connection) -> None:
        stack = self._idle.setdefault(origin, [])
        if len(stack) >= self.max_idle:
            await connection.aclose()
            return
        connection.idle_since = time.monotonic()
        stack.append(connection)

    async def _connect(self, target: _Target) -> _Connection:
        scheme, host, port = target.origin
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            if scheme == "https":
                if self._ssl is None:
                    self._ssl = httpx.create_ssl_context()
                tls = trio.SSLStream(
                    stream, self._ssl, server_hostname=host, https_compatible=True
                )
                try:
                    await tls.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
                stream = tls
        except (OSError, trio.BrokenResourceError) as exc:
            raise PostFailed(_describe(exc)) from None
        return _Connection(stream)

    async def _exchange(self, connection: _Connection, target: _Target, request: bytes) -> Answer:
        answering = _Answering()
        try:
            await connection.stream.send_all(request)
            while not answering.complete:
                chunk = await connection.stream.receive_some(RECEIVE_BYTES)
                if not chunk:
                    if answering.status and answering.ends_at_close():
                        answering.complete, answering.later = True, True  # not kept
                        break
                    raise _Broken(
                        "connection closed mid-answer"
                        if answering.status
                        else "connection closed before an answer"
                    )
                answering.parser.feed_data(chunk)
                if answering.read > READ_AT_MOST:
                    answering.later = True  # not worth reading on: dropped below
                    break
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            httptools.HttpParserError,
            _Broken,
        ) as exc:
            await connection.aclose()
            what = _describe(exc)
            if not answering.status:
                raise _ClosedBeforeAnswer(what) from None
            raise PostFailed(what) from None
        except BaseException:  # cancelled mid-way: nobody can use what is left of it
            await connection.aclose()
            raise
        if answering.later or not answering.keep_alive:
            await connection.aclose()
        else:
            await self._keep(target.origin, connection)
        return Answer(answering.status, answering.headers, bytes(answering.kept))

    async def _post_by_httpx(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        if self._httpx is None:
            self._httpx = httpx.AsyncClient(follow_redirects=False)
        try:
            response = await self._httpx.post(
                url, content=body, headers=dict(headers), timeout=None
            )
        except httpx.HTTPError as exc:
            raise PostFailed(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        return Answer(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content[:KEEP_BODY],
        )


def _describe(exc: BaseException) -> str:
    """``Type: message`` of what went wrong; for a broken TLS stream, of its cause (a
    certificate that does not verify, say)."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, _Broken):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


class _Broken(Exception):
    """The receiver closed the connection before its answer was complete."""


class _ClosedBeforeAnswer(Exception):
    """The connection broke before any answer: safe to send again on a new one."""
