"""Fixtures: each end-to-end test runs on memory broker + SQLite and on RabbitMQ +
PostgreSQL, the two deployments users run (a laptop, and production)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import AMQP_URL, require_service, tracked_broker
from tests.stores.conftest import StoreTarget, _postgres_target
from vumi_like.broker import BrokerInspector


@pytest.fixture(params=["memory+sqlite", "rabbitmq+postgres"])
def deployment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(deployment: str, tmp_path: Path) -> Iterator[StoreTarget]:
    if deployment.endswith("sqlite"):
        path = tmp_path / "store.db"
        yield StoreTarget("sqlite", f"sqlite:///{path}", {}, path)
    else:
        yield from _postgres_target()


@pytest.fixture
async def pipeline_broker(deployment: str, unique: str) -> AsyncIterator[BrokerInspector]:
    url = "memory://"
    if deployment.startswith("rabbitmq"):
        require_service(AMQP_URL, 5672, "RabbitMQ")
        url = AMQP_URL
    async with tracked_broker(url, unique) as broker:
        yield broker
