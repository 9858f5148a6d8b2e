"""A vumi2 deployment runs here unchanged: its configs, its class paths, its environment.

Each config below is written the way vumi2's documentation writes it (``docs/*.rst``:
config.rst, routers.rst, the Turn Channels API page, message_caches.rst), and each
worker is started by vumi2's class path, under ``vumi-like worker`` (config file named
by ``VUMI_CONFIG_FILE``, as vumi2 reads it) and under ``vumi-like run``. Where vumi2's
documentation has a typo (routers.rst writes ``pattern "^..."`` without its colon), the
config is written as vumi2 itself parses it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from tests.test_cli import free_port, running, write_yaml
from vumi_like.applications.turn_channels_api import TurnChannelsApi, TurnChannelsApiConfig
from vumi_like.broker import Broker, open_broker
from vumi_like.caches import MemoryMessageCache
from vumi_like.cli import load_pipeline, load_worker_class
from vumi_like.config import BaseConfig, load_config
from vumi_like.messages import Message
from vumi_like.middlewares import load_middlewares
from vumi_like.middlewares.logging import LoggingMiddleware
from vumi_like.routers import ToAddressRouter, ToAddressRouterConfig

ROUTER = "vumi2.routers.ToAddressRouter"
TURN_PATHS = [
    "vumi2.applications.TurnChannelsApi",
    "vumi2.applications.turn_channels_api.TurnChannelsApi",
    "vumi2.applications.turn_channels_api.turn_channels_api.TurnChannelsApi",
]


def amqp_yaml(amqp_url: str) -> str:
    """config.rst's ``amqp`` block, pointed at the test's RabbitMQ."""
    parts = urlsplit(amqp_url)
    return (
        "amqp:\n"
        f"  hostname: {parts.hostname}\n"
        f"  port: {parts.port or 5672}\n"
        f"  username: {parts.username}\n"
        f"  password: {parts.password}\n"
        "  vhost: /\n"
    )


def router_yaml(amqp_url: str, unique: str) -> str:
    # routers.rst, with this test's connector names.
    return amqp_yaml(amqp_url) + (
        "worker_concurrency: 10\n"
        "transport_names:\n"
        f"    - {unique}-ussd\n"
        "to_address_mappings:\n"
        f"    - name: {unique}-home\n"
        '      pattern: "^\\\\*1234#$"\n'
        f"    - name: {unique}-app2\n"
        '      pattern: "^\\\\*1234\\\\*1#$"\n'
        f"default_app: {unique}-home\n"
        "message_cache_class: vumi2.message_caches.MemoryMessageCache\n"
        "message_cache_config:\n"
        "    timeout: 3600\n"
    )


def turn_yaml(amqp_url: str, unique: str, port: int) -> str:
    # The Turn Channels API page: every documented key, vumi2's defaults spelled out.
    return amqp_yaml(amqp_url) + (
        f"http_bind: 127.0.0.1:{port}\n"
        f"connector_name: {unique}-turn\n"
        'vumi_api_path: ""\n'
        "turn_api_url: http://127.0.0.1:9/v1\n"
        "auth_token: turn-token\n"
        "transport_type: sms\n"
        'default_from_addr: "+27820001001"\n'
        "request_timeout: 240\n"
        "mo_message_url_timeout: 10\n"
        "event_url_timeout: 10\n"
        "turn_hmac_secret: supersecret\n"
        "message_cache_class: vumi2.message_caches.MemoryMessageCache\n"
        "message_cache_config: {}\n"
        "max_retries: 3\n"
        "retry_delay_exponent: 2\n"
        "retry_delay_base: 2\n"
    )


# -- the configs load as vumi2 documents them


def test_base_config_as_documented(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "amqp:\n"
        "  hostname: localhost\n"
        "  port: 5672\n"
        "  username: guest\n"
        "  password: guest\n"
        "  vhost: /\n"
        "worker_concurrency: 10\n"
        "sentry_dsn: https://key@sentry.io/12345\n"
        "http_bind: 0.0.0.0:8000\n"
        "log_level: debug\n",
        encoding="utf-8",
    )
    config = load_config(BaseConfig, environ={"VUMI_CONFIG_FILE": str(path)})
    assert config.broker_url() == "amqp://guest:guest@localhost:5672/%2F"
    assert config.worker_concurrency == 10
    assert config.sentry_dsn == "https://key@sentry.io/12345"
    assert config.http_bind == "0.0.0.0:8000"
    assert config.log_level == "DEBUG"


def test_environment_and_prefix_as_vumi2_reads_them():
    environ = {
        "VUMI_CONFIG_PREFIX": "vumi",
        "VUMI_AMQP_HOSTNAME": "rabbit.internal",
        "VUMI_AMQP_PORT": "5673",
        "VUMI_WORKER_CONCURRENCY": "7",
        "VUMI_AMQP_URL": "",
        "VUMI_TRANSPORT_NAMES": '["sms"]',
    }
    config = load_config(ToAddressRouterConfig, environ=environ)
    assert config.amqp.hostname == "rabbit.internal"
    assert config.amqp.port == 5673
    assert config.worker_concurrency == 7
    assert config.transport_names == ["sms"]


def test_router_config_as_documented(tmp_path: Path):
    path = tmp_path / "router.yaml"
    path.write_text(router_yaml("amqp://guest:guest@127.0.0.1:5672/", "u"), encoding="utf-8")
    config = load_config(ToAddressRouterConfig, config_file=str(path), environ={})
    assert [(m.name, m.pattern) for m in config.to_address_mappings] == [
        ("u-home", r"^\*1234#$"),
        ("u-app2", r"^\*1234\*1#$"),
    ]
    assert config.default_app == "u-home"
    assert config.app_names() == ["u-home", "u-app2"]
    cache = config.make_message_cache()
    assert isinstance(cache, MemoryMessageCache)
    assert cache.config.inbound_ttl == cache.config.outbound_ttl == 3600


def test_turn_config_as_documented(tmp_path: Path):
    path = tmp_path / "turn.yaml"
    path.write_text(turn_yaml("amqp://guest:guest@127.0.0.1:5672/", "u", 8000), encoding="utf-8")
    config = load_config(TurnChannelsApiConfig, config_file=str(path), environ={})
    assert config.connector_name == "u-turn"
    assert config.turn_api_url == "http://127.0.0.1:9/v1"
    assert config.auth_token.get_secret_value() == "turn-token"
    assert config.turn_hmac_secret.get_secret_value() == "supersecret"
    assert (config.max_retries, config.retry_delay_base, config.retry_delay_exponent) == (3, 2, 2)
    assert (config.request_timeout, config.mo_message_url_timeout) == (240, 10)


def test_middleware_config_as_documented():
    config = BaseConfig.model_validate(
        {
            "middlewares": [
                {
                    "class_path": "vumi2.middlewares.logging.LoggingMiddleware",
                    "enable_for_connectors": ["mc_qa_expressway"],
                    "inbound_enabled": True,
                    "outbound_enabled": True,
                    "event_enabled": False,
                    "log_level": "info",
                }
            ]
        }
    )
    [middleware] = load_middlewares(config.middlewares)
    assert isinstance(middleware, LoggingMiddleware)
    assert middleware.config.log_level == "INFO"


@pytest.mark.parametrize("path", [ROUTER, *TURN_PATHS])
def test_vumi2_class_paths_name_our_workers(path: str):
    expected = ToAddressRouter if path == ROUTER else TurnChannelsApi
    assert load_worker_class(path) is expected


def test_a_pipeline_takes_vumi2_class_paths_and_config_files(tmp_path: Path):
    (tmp_path / "router.yaml").write_text(
        router_yaml("amqp://guest:guest@127.0.0.1:5672/", "u"), encoding="utf-8"
    )
    pipeline = write_yaml(
        tmp_path / "pipeline.yaml",
        {
            "workers": [
                {"name": "router", "class": ROUTER, "config_file": "router.yaml"},
                {
                    "name": "inline",
                    "class": ROUTER,
                    "config": {
                        "transport_names": ["sms"],
                        "to_address_mappings": [{"name": "app", "pattern": ".*"}],
                    },
                },
            ]
        },
    )
    _, workers = load_pipeline(str(pipeline))
    [(_, router_cls, router), (_, inline_cls, inline)] = workers
    assert router_cls is inline_cls is ToAddressRouter
    assert router.app_names() == ["u-home", "u-app2"]
    assert inline.app_names() == ["app"]


# -- and they run


@asynccontextmanager
async def scratch_broker(amqp_url: str, unique: str) -> AsyncIterator[Broker]:
    async with open_broker(amqp_url, dead_letter_queue=f"{unique}.dead_letter") as broker:
        try:
            yield broker
        finally:
            with trio.CancelScope(shield=True):
                for prefix in (
                    f"{unique}-ussd",
                    f"{unique}-home",
                    f"{unique}-app2",
                    f"{unique}-turn",
                ):
                    for kind in ("inbound", "outbound", "event"):
                        await broker.delete_queue(f"{prefix}.{kind}")
                await broker.delete_queue(f"{unique}.dead_letter")


async def take_one(broker: Broker, queue: str) -> Message:
    await broker.declare_queue(queue)
    async with broker.consume(queue, prefetch=1) as deliveries:
        async for delivery in deliveries:
            broker.ack(delivery)
            return Message.from_json(delivery.body)
    raise AssertionError(f"nothing arrived on {queue}")


def ussd_dial(unique: str, code: str) -> Message:
    return Message(
        to_addr=code,
        from_addr="+27820000001",
        transport_name=f"{unique}-ussd",
        transport_type="ussd",
        session_event="new",
    )


async def check_router_routes(amqp_url: str, unique: str) -> None:
    async with scratch_broker(amqp_url, unique) as broker:
        # Both patterns are tried in order: *1234*1# is app2's, *1234# home's.
        second, home = ussd_dial(unique, "*1234*1#"), ussd_dial(unique, "*1234#")
        for message in (second, home):
            await broker.publish(f"{unique}-ussd.inbound", message.to_json())
        assert (await take_one(broker, f"{unique}-app2.inbound")).message_id == second.message_id
        assert (await take_one(broker, f"{unique}-home.inbound")).message_id == home.message_id


async def test_router_runs_unchanged_under_vumi_like_worker(
    amqp_url: str, unique: str, tmp_path: Path
):
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(amqp_url, unique), encoding="utf-8")
    with trio.fail_after(60):
        async with running("worker", ROUTER, env={"VUMI_CONFIG_FILE": str(config)}) as cli:
            await cli.wait_for_log(event="worker started")
            await check_router_routes(amqp_url, unique)
            assert await cli.terminate() == 0, cli.stderr.decode()


async def test_router_runs_unchanged_under_vumi_like_run(
    amqp_url: str, unique: str, tmp_path: Path
):
    (tmp_path / "router.yaml").write_text(router_yaml(amqp_url, unique), encoding="utf-8")
    pipeline = write_yaml(
        tmp_path / "pipeline.yaml",
        {
            "amqp_url": amqp_url,
            "workers": [{"name": "router", "class": ROUTER, "config_file": "router.yaml"}],
        },
    )
    with trio.fail_after(60):
        async with running("run", str(pipeline)) as cli:
            await cli.wait_for_log(event="worker started")
            await check_router_routes(amqp_url, unique)
            assert await cli.terminate() == 0, cli.stderr.decode()


def signed(body: bytes, secret: str = "supersecret") -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "X-Turn-Hook-Signature": base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }


async def check_turn_accepts_outbound(amqp_url: str, unique: str, port: int) -> None:
    body = json.dumps(
        {"to": "+27820000001", "from": None, "turn": {"type": "text", "text": {"body": "hi"}}}
    ).encode()
    async with scratch_broker(amqp_url, unique) as broker:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            health = await http.get("/health")
            assert health.status_code == 200, health.text
            response = await http.post("/messages", content=body, headers=signed(body))
            assert response.status_code == 200, response.text
        [answer] = response.json()["messages"]
        sent = await take_one(broker, f"{unique}-turn.outbound")
    assert sent.message_id == answer["id"]
    assert (sent.content, sent.from_addr, sent.transport_name) == (
        "hi",
        "+27820001001",
        f"{unique}-turn",
    )


@pytest.mark.parametrize("path", [TURN_PATHS[0], TURN_PATHS[2]])
async def test_turn_app_runs_unchanged_under_vumi_like_worker(
    amqp_url: str, unique: str, tmp_path: Path, path: str
):
    port = free_port()
    config = tmp_path / "turn.yaml"
    config.write_text(turn_yaml(amqp_url, unique, port), encoding="utf-8")
    with trio.fail_after(60):
        async with running("worker", path, env={"VUMI_CONFIG_FILE": str(config)}) as cli:
            await cli.wait_for_log(event="worker started")
            await check_turn_accepts_outbound(amqp_url, unique, port)
            assert await cli.terminate() == 0, cli.stderr.decode()


async def test_turn_app_runs_unchanged_under_vumi_like_run(
    amqp_url: str, unique: str, tmp_path: Path
):
    port = free_port()
    (tmp_path / "turn.yaml").write_text(turn_yaml(amqp_url, unique, port), encoding="utf-8")
    pipeline: dict[str, Any] = {
        "amqp_url": amqp_url,
        "workers": [{"name": "turn", "class": TURN_PATHS[1], "config_file": "turn.yaml"}],
    }
    with trio.fail_after(60):
        async with running("run", str(write_yaml(tmp_path / "pipeline.yaml", pipeline))) as cli:
            await cli.wait_for_log(event="worker started")
            await check_turn_accepts_outbound(amqp_url, unique, port)
            assert await cli.terminate() == 0, cli.stderr.decode()
