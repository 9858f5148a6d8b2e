"""The pipeline under test: a fake VCS, the app, a router and a simulator transport.

The app runs as it would in production, behind a ``ToAddressRouter``; tests that need
to see the outbound envelope itself (or send one the simulator cannot) play the
transport, by consuming from and publishing to the router's transport-side queues.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.applications.conversations.fake_vcs import FakeVcs, fake_vcs
from tests.test_worker import free_port, running_worker, simulator_and_router
from vumi_like.applications.conversations import VcitaChannelApp, VcitaChannelAppConfig
from vumi_like.broker import Broker
from vumi_like.config import config_from_data
from vumi_like.messages import Message

WEBHOOK_SECRET = "vcs-shared-secret"
ADMIN_TOKEN = "admin-token-for-tests"
ACCESS_TOKEN = "business-1-oauth-token"
BUSINESS = "biz-1"
ADDRESS = "1234"  # our address on the simulator
CLIENT = "+27820000001"
APP_PATH = "/vcita"
DELIVERY_DELAY = 0.05


class Names:
    def __init__(self, unique: str) -> None:
        self.app = f"{unique}-vcita"
        self.transport = f"{unique}-sms"
        self.dead_letter = f"{unique}.dead_letter"
        self.worker = f"{unique}-vcita-worker"


@pytest.fixture
def names(unique: str) -> Names:
    return Names(unique)


@dataclass
class Pipeline:
    names: Names
    app: VcitaChannelApp
    vcs: FakeVcs
    admin: httpx.AsyncClient  # the admin API, authorised
    simulator: httpx.AsyncClient | None

    async def add_channel(self, **fields: Any) -> dict[str, Any]:
        """Set the business's token, ask for a channel; the channel's JSON (pending)."""
        self.vcs.tokens.add(ACCESS_TOKEN)
        token = await self.admin.put(
            f"/admin/businesses/{BUSINESS}/token", json={"access_token": ACCESS_TOKEN}
        )
        assert token.status_code == 204, token.text
        body = {"business_uid": BUSINESS, "transport_name": self.names.transport}
        response = await self.admin.post(
            "/admin/channels", json={**body, "address": ADDRESS, **fields}
        )
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def channel(self, channel_id: str) -> dict[str, Any]:
        response = await self.admin.get(f"/admin/channels/{channel_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def channel_with(
        self, channel_id: str, status: str, within: float = 10
    ) -> dict[str, Any]:
        """The channel, once it has ``status`` (read as an operator would)."""
        with trio.fail_after(within):
            while (channel := await self.channel(channel_id))["status"] != status:  # noqa: ASYNC110
                await trio.sleep(0.02)
        return channel

    async def active_channel(self) -> str:
        """A channel, created at VCS and confirmed active; its channel_uid."""
        channel = await self.add_channel()
        active = await self.channel_with(channel["channel_id"], "active")
        return str(active["channel_uid"])

    async def client_writes(self, content: str = "hello", client: str = CLIENT) -> str:
        """A client's message, through the simulator; its message_id."""
        assert self.simulator is not None
        response = await self.simulator.post(
            "/inbound", json={"from_addr": client, "to_addr": ADDRESS, "content": content}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["message_id"])

    async def session_uid(self, client: str) -> str:
        """VCS's uid of the client's session (read from the app's store)."""
        channel = await self.app.store.vcita_channel_for_address(
            self.app.tenant, self.names.transport, ADDRESS
        )
        assert channel is not None
        session = await self.app.store.vcita_session(self.app.tenant, channel.channel_id, client)
        assert session is not None and session.session_uid is not None
        return session.session_uid

    async def vcs_calls_app(
        self, method: str, path: str, body: Any, **options: Any
    ) -> httpx.Response:
        return await self.vcs.call_app(method, path, body, **options)


def inbound(names: Names, content: str | None = "hello", **fields: Any) -> Message:
    """A client's inbound as the transport publishes it."""
    return Message(
        to_addr=ADDRESS,
        from_addr=CLIENT,
        transport_name=names.transport,
        transport_type="sms",
        content=content,
        **fields,
    )


def app_config(names: Names, vcs: FakeVcs, tmp_path: Path, **fields: Any) -> VcitaChannelAppConfig:
    data: dict[str, Any] = {
        "connector_name": names.app,
        "http_bind": f"127.0.0.1:{free_port()}",
        "store_url": f"sqlite:///{tmp_path / 'vcita.db'}",
        "tenant": "whatsapp-app",
        "vcs_url": vcs.url,
        "interface_prefix": APP_PATH,
        "webhook_secret": WEBHOOK_SECRET,
        "admin_token": ADMIN_TOKEN,
        "retry_delay_base": 0.05,
        "retry_delay_exponent": 1.5,
        "retry_jitter": 0,
        "max_retries": 8,
        **fields,
    }
    return config_from_data(VcitaChannelAppConfig, data, source="test")


@asynccontextmanager
async def pipeline(
    broker: Broker,
    names: Names,
    tmp_path: Path,
    *,
    simulator: bool = True,
    **fields: Any,
) -> AsyncIterator[Pipeline]:
    """Fake VCS, simulator (unless the test plays the transport), router and the app."""
    async with AsyncExitStack() as stack:
        vcs = await stack.enter_async_context(fake_vcs(WEBHOOK_SECRET))
        config = app_config(names, vcs, tmp_path, **fields)
        sim_client = await simulator_and_router(
            stack,
            broker,
            transport=names.transport,
            app=names.app,
            simulator=simulator,
            delivery_delay=DELIVERY_DELAY,
        )
        app = await stack.enter_async_context(
            running_worker(VcitaChannelApp, config, broker, name=names.worker)
        )
        vcs.app_url = f"http://{config.http_bind}{APP_PATH}"
        admin = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://{config.http_bind}",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        )
        yield Pipeline(names, app, vcs, admin, sim_client)
