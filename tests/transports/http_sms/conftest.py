"""``memory_broker``: for the tests that need not run on RabbitMQ as well."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import tracked_broker
from vumi_like.broker import BrokerInspector


@pytest.fixture
async def memory_broker(unique: str) -> AsyncIterator[BrokerInspector]:
    async with tracked_broker("memory://", unique) as broker:
        yield broker
