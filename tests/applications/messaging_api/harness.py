"""The Messaging API pipeline under test, and a webhook receiver that records posts.

``running_pipeline`` runs what ``config/quickstart.yaml`` runs, on the test's broker and
store: the API, the event dispatcher, a router and a simulator per channel, with names
of the test's own so tests never see each other's queues. Two tenants, ``acme`` (with
client ``acme-client``) and ``globex`` (``globex-client``), have senders on the
channels; ``globex`` has no e-mail channel.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from quart import request
from quart_trio import QuartTrio

from tests.stores.conftest import StoreTarget
from tests.test_worker import free_port, running_worker
from vumi_like.applications.messaging_api import MessagingApi, MessagingApiConfig
from vumi_like.broker import Broker
from vumi_like.config import config_from_data
from vumi_like.dispatch import EventDispatcher, EventDispatcherConfig
from vumi_like.routers import ToAddressRouter, ToAddressRouterConfig
from vumi_like.stores import MessageStore
from vumi_like.transports.simulator import SimulatorTransport, SimulatorTransportConfig
from vumi_like.worker import serve_http

JWT_SECRET = "test-signing-key-0123456789-abcdefghij"
CLIENTS = {"acme": ("acme-client", "acme-secret"), "globex": ("globex-client", "globex-secret")}


@dataclass
class Posted:
    headers: dict[str, str]
    raw: bytes
    at: float

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class WebhookReceiver:
    """Records every POST to ``/hook``; answers 204, or what it is told to, in order."""

    def __init__(self) -> None:
        self.url = ""
        self.posts: list[Posted] = []
        self._answers: deque[tuple[int, dict[str, str], float]] = deque()
        self._arrived = trio.Event()
        self.app = QuartTrio("webhook-receiver")
        self.app.add_url_rule("/hook", "hook", self._record, methods=["POST"])

    @property
    def hook(self) -> str:
        return f"{self.url}/hook"

    def answer_next(
        self, count: int, status: int, headers: dict[str, str] | None = None, *, delay: float = 0
    ) -> None:
        self._answers.extend([(status, headers or {}, delay)] * count)

    async def _record(self) -> tuple[str, int, dict[str, str]]:
        raw = await request.get_data(as_text=False)
        status, headers, delay = self._answers.popleft() if self._answers else (204, {}, 0.0)
        if delay:
            await trio.sleep(delay)
        self.posts.append(
            Posted({k.lower(): v for k, v in request.headers.items()}, raw, trio.current_time())
        )
        self._arrived.set()
        self._arrived = trio.Event()
        return "", status, headers

    def of(self, status_code: str, message_id: str | None = None) -> list[Posted]:
        return [
            p
            for p in self.posts
            if p.body.get("statusCode") == status_code
            and (message_id is None or p.body.get("messageId") == message_id)
        ]

    async def wait_for(
        self, predicate: Callable[[list[Posted]], bool], within: float = 10
    ) -> list[Posted]:
        with trio.fail_after(within):
            while not predicate(self.posts):
                await self._arrived.wait()
        return self.posts


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    stopped = trio.Event()
    async with trio.open_nursery() as nursery:
        [receiver.url] = await nursery.start(serve_http, receiver.app, "127.0.0.1:0", stopped)
        try:
            yield receiver
        finally:
            stopped.set()


def channels(unique: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "sms",
            "type": "sms",
            "transport_name": f"{unique}-sms",
            "senders": {"acme": ["1234", "ACME"], "globex": ["5678"]},
        },
        {
            "name": "email",
            "type": "email",
            "transport_name": f"{unique}-email",
            "senders": {"acme": ["noreply@acme.example"]},
        },
        {
            "name": "web",
            "type": "web",
            "transport_name": f"{unique}-web",
            "senders": {"acme": ["*"], "globex": ["*"]},
        },
    ]


def store_settings(target: StoreTarget) -> dict[str, Any]:
    settings: dict[str, Any] = {"store_url": target.url}
    if "schema" in target.options:
        settings["store_schema"] = target.options["schema"]
    return settings


def api_config(unique: str, target: StoreTarget, **fields: Any) -> MessagingApiConfig:
    data = {
        "connector_name": f"{unique}-api",
        "http_bind": f"127.0.0.1:{free_port()}",
        "auth": {
            "jwt_secret": JWT_SECRET,
            "clients": [
                {"client_id": client_id, "client_secret": secret, "tenant": tenant}
                for tenant, (client_id, secret) in CLIENTS.items()
            ],
        },
        "channels": channels(unique),
        # Tests subscribe and send in quick succession: read subscriptions every time.
        "subscriptions_max_age": 0,
        **store_settings(target),
        **fields,
    }
    return config_from_data(MessagingApiConfig, data, source="test")


def dispatcher_config(unique: str, target: StoreTarget, **fields: Any) -> EventDispatcherConfig:
    data = {
        "connector_name": f"{unique}-api",
        "channels": channels(unique),
        "retry_delay_base": 0.05,
        "retry_jitter": 0,
        "max_retries": 3,
        # Short, or a test of three failures takes seconds, and a Retry-After test would
        # pass without Retry-After, the rest alone spacing the attempts that far apart.
        "receiver_rest": 0.05,
        "subscriptions_max_age": 0,
        "receiver_max_rest": 0.2,
        **store_settings(target),
        **fields,
    }
    return config_from_data(EventDispatcherConfig, data, source="test")


@dataclass
class Pipeline:
    broker: Broker
    store: MessageStore
    unique: str
    apis: list[MessagingApi]
    dispatchers: list[EventDispatcher]
    http: httpx.AsyncClient
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def connector(self) -> str:
        return f"{self.unique}-api"

    async def token(self, tenant: str = "acme") -> str:
        if tenant not in self.tokens:
            client_id, secret = CLIENTS[tenant]
            response = await self.http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, secret),
            )
            assert response.status_code == 200, response.text
            self.tokens[tenant] = response.json()["access_token"]
        return self.tokens[tenant]

    async def auth(self, tenant: str = "acme", **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(tenant)}", **headers}

    async def post(self, path: str, body: Any, tenant: str = "acme", **headers: str) -> Any:
        return await self.http.post(path, json=body, headers=await self.auth(tenant, **headers))

    async def get(self, path: str, tenant: str = "acme", **params: Any) -> Any:
        return await self.http.get(path, params=params, headers=await self.auth(tenant))

    async def status_of(self, message_id: str, tenant: str = "acme") -> str:
        response = await self.get(f"/v1/messages/{message_id}", tenant)
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    async def wait_for_status(
        self, message_id: str, status: str, tenant: str = "acme", within: float = 10
    ) -> None:
        with trio.fail_after(within):
            # Polling, as a client of the API does.
            while await self.status_of(message_id, tenant) != status:  # noqa: ASYNC110
                await trio.sleep(0.02)


@asynccontextmanager
async def running_pipeline(
    broker: Broker,
    target: StoreTarget,
    unique: str,
    *,
    api: dict[str, Any] | None = None,
    dispatcher: dict[str, Any] | None = None,
    api_replicas: int = 1,
    dispatchers: int = 1,
    delivery_delay: float = 0.05,
) -> AsyncIterator[Pipeline]:
    """The whole pipeline, running, until the block is left."""
    names = [f"{unique}-{kind}" for kind in ("sms", "email", "web")]
    async with AsyncExitStack() as stack:
        apis = []
        for replica in range(api_replicas):
            config = api_config(unique, target, **(api or {}))
            apis.append(
                await stack.enter_async_context(
                    running_worker(MessagingApi, config, broker, name=f"api-{replica}")
                )
            )
        running_dispatchers = []
        for replica in range(dispatchers):
            running_dispatchers.append(
                await stack.enter_async_context(
                    running_worker(
                        EventDispatcher,
                        dispatcher_config(unique, target, **(dispatcher or {})),
                        broker,
                        name=f"dispatcher-{replica}",
                    )
                )
            )
        router = config_from_data(
            ToAddressRouterConfig,
            {
                "transport_names": names,
                "to_address_mappings": [{"name": f"{unique}-api", "pattern": ".*"}],
            },
            source="test",
        )
        await stack.enter_async_context(running_worker(ToAddressRouter, router, broker))
        for name in names:
            simulator = config_from_data(
                SimulatorTransportConfig,
                {"transport_name": name, "delivery_delay": delivery_delay},
                source="test",
            )
            await stack.enter_async_context(running_worker(SimulatorTransport, simulator, broker))
        store = await stack.enter_async_context(target.open())
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://{apis[0].config.http_bind}", timeout=10)
        )
        yield Pipeline(
            broker=broker,
            store=store,
            unique=unique,
            apis=apis,
            dispatchers=running_dispatchers,
            http=http,
        )
