"""``Poster``: webhook POSTs on kept-alive connections, against real servers on localhost.

The server here is h11 on a trio socket, so a test can count connections, close one
while it is idle, answer slowly or at length, or speak TLS.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import h11
import pytest
import trio
import trustme

from tests.test_worker import refusing_port
from vumi_like.dispatch.posting import KEEP_BODY, Answer, Poster, PostFailed


@attrs.define
class Server:
    url: str = ""
    connections: int = 0
    requests: list[tuple[bytes, bytes, dict[bytes, bytes]]] = attrs.Factory(list)
    # Given (request number), what to do: (status, headers, body), plus a delay first.
    answer: Callable[[int], tuple[int, list[tuple[str, str]], bytes, float]] = lambda n: (
        204,
        [],
        b"",
        0.0,
    )
    close_after_each: bool = False
    open_streams: list[trio.abc.Stream] = attrs.Factory(list)

    async def serve(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        self.open_streams.append(stream)
        http = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = http.next_event()
                    if event is h11.NEED_DATA:
                        http.receive_data(await stream.receive_some(65536))
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                self.requests.append((request.target, body, dict(request.headers)))
                status, headers, content, delay = self.answer(len(self.requests))
                await trio.sleep(delay)
                headers = [*headers, ("Content-Length", str(len(content)))]
                await stream.send_all(http.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(
                    http.send(h11.Data(data=content)) + http.send(h11.EndOfMessage())
                )
                if self.close_after_each:
                    return
                http.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def close_idle(self) -> None:
        for stream in self.open_streams:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def server(tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    s = Server()

    async def handler(stream: trio.SocketStream) -> None:
        if tls is None:
            await s.serve(stream)
            return
        wrapped = trio.SSLStream(stream, tls, server_side=True)
        try:
            await wrapped.do_handshake()
        except trio.BrokenResourceError:
            return
        await s.serve(wrapped)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        s.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}"
        try:
            yield s
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
async def poster() -> AsyncIterator[Poster]:
    p = Poster()
    try:
        yield p
    finally:
        await p.aclose()


async def test_posts_to_one_receiver_share_a_kept_alive_connection(poster: Poster):
    async with server() as s:
        for i in range(5):
            answer = await poster.post(f"{s.url}/hook?n={i}", b'{"i":%d}' % i, {"X-Id": str(i)})
            assert answer.status == 204
    assert s.connections == 1
    assert [target for target, _, _ in s.requests] == [b"/hook?n=%d" % i for i in range(5)]
    assert [body for _, body, _ in s.requests] == [b'{"i":%d}' % i for i in range(5)]
    _, _, headers = s.requests[0]
    assert headers[b"host"] == s.url.removeprefix("http://").encode()
    assert headers[b"content-length"] == b"7" and headers[b"x-id"] == b"0"


async def test_concurrent_posts_open_connections_then_reuse_them(poster: Poster):
    async with server() as s:
        s.answer = lambda n: (200, [], b"ok", 0.05)
        for _ in range(2):
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(poster.post, f"{s.url}/hook", b"{}", {})
    assert len(s.requests) == 8
    assert s.connections == 4


async def test_a_connection_the_receiver_closed_while_idle_is_replaced_without_failing(
    poster: Poster,
):
    async with server() as s:
        assert (await poster.post(f"{s.url}/a", b"1", {})).status == 204
        await s.close_idle()
        await trio.sleep(0.05)
        assert (await poster.post(f"{s.url}/b", b"2", {})).status == 204
    assert s.connections == 2
    assert [target for target, _, _ in s.requests] == [b"/a", b"/b"]


async def test_a_receiver_that_closes_after_each_answer_gets_a_new_connection_each_time(
    poster: Poster,
):
    async with server() as s:
        s.close_after_each = True
        for _ in range(3):
            assert (await poster.post(f"{s.url}/hook", b"x", {})).status == 204
    assert s.connections == 3


async def test_the_status_headers_and_start_of_the_body_come_back(poster: Poster):
    async with server() as s:
        s.answer = lambda n: (429, [("Retry-After", "7")], b"slow down " * 500, 0.0)
        answer = await poster.post(f"{s.url}/hook", b"{}", {})
    assert isinstance(answer, Answer)
    assert answer.status == 429
    assert answer.headers["retry-after"] == "7"
    assert answer.body == (b"slow down " * 500)[:KEEP_BODY]


async def test_a_post_cancelled_while_waiting_drops_its_connection(poster: Poster):
    async with server() as s:
        s.answer = lambda n: (204, [], b"", 0.5 if n == 1 else 0.0)
        with trio.move_on_after(0.1):
            await poster.post(f"{s.url}/slow", b"1", {})
        # The late answer to the first must not be read as the answer to the second.
        s.answer = lambda n: (201, [], b"second", 0.0)
        answer = await poster.post(f"{s.url}/next", b"2", {})
    assert (answer.status, answer.body) == (201, b"second")
    assert s.connections == 2


async def test_an_unreachable_receiver_is_a_post_failure(poster: Poster):
    with refusing_port() as port, pytest.raises(PostFailed, match=r"OSError|ConnectionRefused"):
        await poster.post(f"http://127.0.0.1:{port}/hook", b"{}", {})


async def test_a_receiver_speaking_something_else_is_a_post_failure(poster: Poster):
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"SSH-2.0-OpenSSH\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            functools.partial(trio.serve_tcp, garbage, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        with pytest.raises(PostFailed):
            await poster.post(f"http://127.0.0.1:{port}/hook", b"{}", {})
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_server(
    answers: list[bytes], *, close_after_each: bool = False
) -> AsyncIterator[tuple[str, list[int]]]:
    """A receiver writing ``answers[n]`` as it is, bytes and all, to the n-th request
    (read up to its end by Content-Length); yields its URL and the connection each
    request came on."""
    came_on: list[int] = []
    connections = 0

    async def serve(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        number, data = connections, b""
        with contextlib.suppress(trio.BrokenResourceError):
            while len(came_on) < len(answers):
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(data) < length:
                    data += await stream.receive_some(65536)
                data = data[length:]
                came_on.append(number)
                await stream.send_all(answers[len(came_on) - 1])
                if close_after_each:
                    break
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        )
        try:
            yield f"http://127.0.0.1:{listener.socket.getsockname()[1]}/hook", came_on
        finally:
            nursery.cancel_scope.cancel()


async def test_informational_answers_are_passed_over_for_the_final_one(poster: Poster):
    answers = [
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslow",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    async with raw_server(answers) as (url, came_on):
        first = await poster.post(url, b"{}", {})
        second = await poster.post(url, b"{}", {})
    assert (first.status, first.headers, first.body) == (
        429,
        {"retry-after": "7", "content-length": "4"},
        b"slow",
    )
    assert second.status == 204
    assert came_on == [1, 1]  # kept alive through both


async def test_a_chunked_answer_is_read_whole_and_its_connection_kept(poster: Poster):
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    async with raw_server(answers) as (url, came_on):
        assert (await poster.post(url, b"{}", {})).body == b"abcde"
        assert (await poster.post(url, b"{}", {})).status == 204
    assert came_on == [1, 1]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", id="close"
        ),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", id="http-1.0"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", id="more"
        ),
    ],
)
async def test_a_connection_the_answer_does_not_leave_reusable_is_not_kept(
    poster: Poster, answer: bytes
):
    async with raw_server([answer, b"HTTP/1.1 204 No Content\r\n\r\n"]) as (url, came_on):
        first = await poster.post(url, b"{}", {})
        second = await poster.post(url, b"{}", {})
    assert (first.status, first.body, second.status) == (200, b"ok", 204)
    assert came_on == [1, 2]


async def test_an_answer_ending_at_close_is_read_to_the_close(poster: Poster):
    answers = [b"HTTP/1.1 200 OK\r\n\r\nall of it"]
    async with raw_server(answers, close_after_each=True) as (url, _):
        answer = await poster.post(url, b"{}", {})
    assert (answer.status, answer.body) == (200, b"all of it")


async def test_an_answer_cut_short_is_a_post_failure(poster: Poster):
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok"]
    async with raw_server(answers, close_after_each=True) as (url, _):
        with pytest.raises(PostFailed, match="closed mid-answer"):
            await poster.post(url, b"{}", {})


@pytest.mark.parametrize(
    "headers",
    [{"X-Id": "1\r\nX-Injected: yes"}, {"X Id": "1"}, {"X-Id": "nul\x00"}],
)
async def test_a_header_http_cannot_carry_is_refused_before_anything_is_sent(
    poster: Poster, headers: dict[str, str]
):
    async with raw_server([b"HTTP/1.1 204 No Content\r\n\r\n"]) as (url, came_on):
        with pytest.raises(ValueError, match="not a header HTTP can carry"):
            await poster.post(url, b"{}", headers)
    assert came_on == []


async def test_a_url_whose_path_would_break_the_request_line_is_a_post_failure(poster: Poster):
    with pytest.raises(PostFailed, match="not a URL a request can name"):
        await poster.post("http://127.0.0.1:9/ho ok HTTP/1.1\r\nX: y", b"{}", {})


async def test_not_an_http_url_is_a_post_failure(poster: Poster):
    with pytest.raises(PostFailed, match="not an http"):
        await poster.post("ftp://example.org/hook", b"{}", {})


async def test_https_receivers_are_verified_against_the_trusted_cas(
    poster: Poster, monkeypatch: pytest.MonkeyPatch, tmp_path
):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    async with server(tls=server_context) as s:
        # Not trusted yet: the handshake fails, and that is a post failure.
        with pytest.raises(PostFailed, match=r"SSL|certificate"):
            await poster.post(f"{s.url}/hook", b"{}", {})
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        trusting = Poster()
        try:
            for _ in range(2):
                assert (await trusting.post(f"{s.url}/hook", b"{}", {})).status == 204
        finally:
            await trusting.aclose()
    assert len(s.requests) == 2


async def test_a_url_the_environment_proxies_goes_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
):
    async with server() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        proxied = Poster()
        answer = await proxied.post("http://hooks.example:8000/acme", b"{}", {"X-Id": "1"})
        await proxied.aclose()
        monkeypatch.setenv("NO_PROXY", "hooks.example")
        bypassing = Poster()
        with pytest.raises(PostFailed):  # bypassed: straight to a host that doesn't exist
            await bypassing.post("http://hooks.example:8000/acme", b"{}", {})
        await bypassing.aclose()
    assert answer.status == 204
    # A proxy gets the absolute URL.
    assert [target for target, _, _ in proxy.requests] == [b"http://hooks.example:8000/acme"]


async def test_a_refused_header_value_is_not_repeated_in_the_error(poster: Poster):
    headers = {"Authorization": "Bearer s3cret-token\n"}
    with pytest.raises(ValueError, match="'Authorization'") as refused:
        await poster.post("http://127.0.0.1:9/", b"{}", headers)
    assert "s3cret" not in str(refused.value)
