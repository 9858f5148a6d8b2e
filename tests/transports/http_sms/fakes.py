"""Fake Kannel and Twilio: real HTTP servers on 127.0.0.1 that play the provider.

Each records every request it gets and answers per script (``answer_next``), else as
the real provider answers an accepted message: Kannel ``202 0: Accepted for
delivery``, Twilio ``201`` with a Message resource. They also make the provider's
callbacks the way the provider does: Kannel fetches the ``dlr-url`` it was given with
``%d`` replaced by the report type; Twilio POSTs signed forms.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import httpx
import trio
from quart import request
from quart_trio import QuartTrio

from vumi_like.transports.http_sms.callbacks import twilio_signature
from vumi_like.worker import serve_http

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "twilio-auth-token"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float


@dataclass
class Answer:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the fake stops)


class FakeProvider:
    def __init__(self, name: str, default: Callable[[Recorded], Answer]) -> None:
        self.url = ""
        self.requests: list[Recorded] = []
        self._default = default
        self._script: deque[Answer] = deque()
        self._arrived = trio.Event()  # set, and replaced, on every request
        self.app = QuartTrio(name)
        self.app.add_url_rule("/<path:path>", "any", self._answer, methods=["GET", "POST"])

    def answer_next(self, *answers: Answer) -> None:
        self._script.extend(answers)

    async def wait_for(self, count: int, within: float = 5) -> list[Recorded]:
        with trio.fail_after(within):
            while len(self.requests) < count:
                await self._arrived.wait()
        return self.requests

    async def _answer(self, path: str) -> tuple[str, int, dict[str, str]]:
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        is_form = request.mimetype == "application/x-www-form-urlencoded"
        recorded = Recorded(
            method=request.method,
            path=request.scope["raw_path"].decode(),  # as sent, not unquoted
            query=dict(request.args.items()),
            form=dict(parse_qsl(body.decode())) if is_form else {},
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            at=trio.current_time(),
        )
        self.requests.append(recorded)
        self._arrived.set()
        self._arrived = trio.Event()
        answer = self._script.popleft() if self._script else self._default(recorded)
        if answer.hang:
            await trio.sleep_forever()  # until the fake stops
        return answer.body, answer.status, answer.headers


@asynccontextmanager
async def fake_provider(
    name: str, default: Callable[[Recorded], Answer], port: int = 0
) -> AsyncIterator[FakeProvider]:
    provider = FakeProvider(name, default)
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        bind = f"127.0.0.1:{port}"
        [provider.url] = await nursery.start(serve_http, provider.app, bind, stopped)
        try:
            yield provider
        finally:
            # Stopped hard, as a provider going away would be: a graceful stop would
            # wait for the transport's keep-alive connections to close.
            nursery.cancel_scope.cancel()


# -- Kannel


def kannel_accepts(_: Recorded) -> Answer:
    return Answer(202, "0: Accepted for delivery", {"Content-Type": "text/plain"})


def fake_kannel(port: int = 0) -> AbstractAsyncContextManager[FakeProvider]:
    return fake_provider("fake-kannel", kannel_accepts, port)


async def kannel_reports(sent: Recorded, dlr_type: int) -> httpx.Response:
    """What Kannel does when the SMSC reports: fetch the ``dlr-url`` with ``%d`` filled."""
    url = sent.query["dlr-url"].replace("%d", str(dlr_type))
    async with httpx.AsyncClient() as client:
        return await client.get(url)


# -- Twilio


def twilio_accepts(sent: Recorded) -> Answer:
    resource = {
        "sid": f"SM{uuid.uuid4().hex}",
        "account_sid": ACCOUNT_SID,
        "to": sent.form.get("To"),
        "from": sent.form.get("From"),
        "body": sent.form.get("Body"),
        "status": "queued",
        "api_version": "2010-04-01",
    }
    return Answer(201, json.dumps(resource), {"Content-Type": "application/json"})


def fake_twilio(port: int = 0) -> AbstractAsyncContextManager[FakeProvider]:
    return fake_provider("fake-twilio", twilio_accepts, port)


def twilio_error(status: int, code: int, message: str) -> Answer:
    body = {"code": code, "message": message, "status": status}
    return Answer(status, json.dumps(body), {"Content-Type": "application/json"})


async def twilio_posts(
    url: str, form: dict[str, str], *, auth_token: str = AUTH_TOKEN
) -> httpx.Response:
    """What Twilio does for a callback: POST the form, signed with the auth token."""
    signature = twilio_signature(auth_token, url, form.items())
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=form, headers={"X-Twilio-Signature": signature})
