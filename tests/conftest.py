"""Shared fixtures: the ``broker`` fixture runs a test on the memory broker and on RabbitMQ.

RabbitMQ is found at ``VUMI_LIKE_TEST_AMQP_URL`` (default the local guest account).
When it is unreachable the RabbitMQ variants skip with the reason, unless ``CI=true``,
where they fail: CI must never pass by skipping the real broker.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest

from vumi_like.broker import BrokerInspector, open_inspector

AMQP_URL = os.environ.get("VUMI_LIKE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_reachable(url: str, default_port: int) -> str | None:
    """None if something listens at ``url``'s host and port, else the reason it doesn't."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc})"


def require_service(url: str, default_port: int, name: str) -> None:
    reason = service_reachable(url, default_port)
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} not available: {reason}")


@pytest.fixture
def amqp_url() -> str:
    require_service(AMQP_URL, 5672, "RabbitMQ")
    return AMQP_URL


@pytest.fixture
def unique() -> str:
    """A short unique prefix for queue names, so tests never see each other's messages."""
    return f"test-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def tracked_broker(url: str, unique: str) -> AsyncIterator[BrokerInspector]:
    """A broker with a dead-letter queue of its own (``<unique>.dead_letter``); the
    queues declared through it, and that dead-letter queue, are deleted afterwards."""
    async with open_inspector(url, dead_letter_queue=f"{unique}.dead_letter") as b:
        declared: list[str] = []
        original = b.declare_queue

        async def tracking_declare(queue: str) -> None:
            declared.append(queue)
            await original(queue)

        b.declare_queue = tracking_declare  # type: ignore[method-assign]
        try:
            yield b
        finally:
            for queue in {*declared, b.dead_letter_queue}:
                await b.delete_queue(queue)


@pytest.fixture(params=["memory", "rabbitmq"])
async def broker(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[BrokerInspector]:
    """The broker under test, on the memory broker and on RabbitMQ (``tracked_broker``)."""
    if request.param == "memory":
        url = "memory://"
    else:
        require_service(AMQP_URL, 5672, "RabbitMQ")
        url = AMQP_URL
    async with tracked_broker(url, unique) as b:
        yield b


MQTT_URL = os.environ.get("VUMI_LIKE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@pytest.fixture
def mosquitto() -> tuple[str, int]:
    """Host and port of the shared Mosquitto (``VUMI_LIKE_TEST_MQTT_URL``)."""
    require_service(MQTT_URL, 1883, "Mosquitto")
    parts = urlsplit(MQTT_URL)
    return parts.hostname or "127.0.0.1", parts.port or 1883
