"""A fake vcita Communication Service: a real HTTP server on localhost.

It answers the calls ``vumi_like.applications.conversations.vcs`` makes as the seed
describes VCS (created entities ``pending``, wrapped in ``{"data": {<entity>: ...}}``
as vcita's APIs wrap them), records every call, refuses unknown tokens (401) and a
repeated ``message_uid`` (409), and, like VCS, confirms channels and sessions by
calling the app back (``PUT <app>/channels/{uid}`` / ``/sessions/{uid}`` with
``{"status": "active"}``), retrying a callback the app does not answer 204 to. It can
be told to be down (503) for a while.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from quart import request
from quart_trio import QuartTrio

from vumi_like.applications.conversations.vcs import CHANNELS, MESSAGES, SESSIONS, TYPING
from vumi_like.worker import serve_http


@dataclass
class Call:
    method: str
    path: str
    token: str | None
    body: Any


class FakeVcs:
    def __init__(self, webhook_secret: str) -> None:
        self.url = ""
        self.app_url = ""  # where the app's interface is, set by the test
        self.webhook_secret = webhook_secret
        self.tokens: set[str] = set()
        self.calls: list[Call] = []
        self.down = False  # answer 503 to everything while set
        self.confirm = True  # confirm channels and sessions by calling the app back
        self.retry_after: str | None = None  # Retry-After on the 503s
        self.hold: trio.Event | None = None  # if given, calls are recorded, then answered once set
        self.message_uids: set[str] = set()
        self.callbacks: list[tuple[str, int]] = []  # (path, final status) of callbacks
        self._ids = itertools.count(1)
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.app = QuartTrio("fake-vcs")
        for path, methods in [
            (CHANNELS, ["POST"]),
            (SESSIONS, ["POST"]),
            (f"{SESSIONS}/<uid>", ["PUT"]),
            (MESSAGES, ["POST"]),
            (f"{MESSAGES}/<uid>", ["PUT"]),
            (TYPING, ["POST"]),
        ]:
            self.app.add_url_rule(path, path, self._handle, methods=methods)

    # -- what the tests read

    def received(self, method: str, path: str) -> list[Call]:
        """Calls that were answered (not those refused while down)."""
        return [c for c in self.calls if (c.method, c.path) == (method, path)]

    async def wait_for(self, method: str, path: str, count: int, within: float = 10) -> list[Call]:
        with trio.fail_after(within):
            while len(self.received(method, path)) < count:
                await self._wait_change()
        return self.received(method, path)

    async def wait_for_callback(self, path: str, within: float = 10) -> int:
        """The status the app finally answered a callback to ``path`` with."""
        with trio.fail_after(within):
            while True:
                for sent, status in self.callbacks:
                    if sent == path:
                        return status
                await self._wait_change()

    async def _wait_change(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- calling the app, as VCS does

    async def call_app(
        self, method: str, path: str, body: Any, *, secret: str | None = None, signed: bool = True
    ) -> httpx.Response:
        """Call the app's interface as VCS does (``signed=False``: without the secret)."""
        headers = {"Authorization": f"Bearer {secret or self.webhook_secret}"} if signed else {}
        async with httpx.AsyncClient(base_url=self.app_url) as client:
            return await client.request(method, path, json=body, headers=headers)

    async def _callback(self, path: str, body: Any) -> None:
        status = 0
        for _ in range(100):
            try:
                status = (await self.call_app("PUT", path, body)).status_code
            except httpx.HTTPError:
                status = 0
            if status == 204:
                break
            await trio.sleep(0.05)
        self.callbacks.append((path, status))
        self._notify()

    def _confirm(self, path: str) -> None:
        if self.confirm and self._nursery is not None:
            self._nursery.start_soon(self._callback, path, {"status": "active"})

    # -- VCS's side

    async def _handle(self, uid: str | None = None) -> tuple[str, int, dict[str, str]]:
        raw = await request.get_data()
        if self.down:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            self.calls.append(Call(request.method, "down", None, None))
            self._notify()
            return json.dumps({"error": "unavailable"}), 503, headers
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        body = json.loads(raw) if raw else None
        path = request.path
        if scheme != "Bearer" or token not in self.tokens:
            self.calls.append(Call(request.method, "unauthorized", token, body))
            self._notify()
            return json.dumps({"error": "unauthorized"}), 401, {}
        self.calls.append(Call(request.method, path, token, body))
        self._notify()
        if self.hold is not None:
            await self.hold.wait()
        answer: Any = None
        status = 204
        if request.method == "POST" and path == CHANNELS:
            new = f"ch-{next(self._ids)}"
            answer, status = (
                {"status": "OK", "data": {"channel": {"uid": new, "status": "pending"}}},
                201,
            )
            self._confirm(f"/channels/{new}")
        elif request.method == "POST" and path == SESSIONS:
            new = f"s-{next(self._ids)}"
            answer, status = (
                {"status": "OK", "data": {"session": {"uid": new, "status": "pending"}}},
                201,
            )
            self._confirm(f"/sessions/{new}")
        elif request.method == "PUT" and uid is not None and path.startswith(SESSIONS):
            answer, status = (
                {"status": "OK", "data": {"session": {"uid": uid, "status": "pending"}}},
                200,
            )
            self._confirm(f"/sessions/{uid}")
        elif request.method == "POST" and path == MESSAGES:
            message_uid = body["message_uid"]
            if message_uid in self.message_uids:
                return json.dumps({"error": "message_uid exists"}), 409, {}
            self.message_uids.add(message_uid)
            answer, status = (
                {"status": "OK", "data": {"message": {"uid": message_uid, "status": "pending"}}},
                201,
            )
        return (
            ("" if answer is None else json.dumps(answer)),
            status,
            {"Content-Type": "application/json"},
        )


@asynccontextmanager
async def fake_vcs(webhook_secret: str) -> AsyncIterator[FakeVcs]:
    vcs = FakeVcs(webhook_secret)
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        vcs._nursery = nursery
        [vcs.url] = await nursery.start(serve_http, vcs.app, "127.0.0.1:0", stopped)
        try:
            yield vcs
        finally:
            stopped.set()
            nursery.cancel_scope.cancel()
