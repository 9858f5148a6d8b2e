"""The fault-injection suite needs RabbitMQ, Redis and PostgreSQL (``require_service``:
a failure in CI when one is missing, a skip elsewhere)."""

from __future__ import annotations

import pytest

from tests.conftest import AMQP_URL, require_service
from tests.faults.harness import POSTGRES_URL, REDIS_URL


@pytest.fixture
def services() -> None:
    require_service(AMQP_URL, 5672, "RabbitMQ")
    require_service(REDIS_URL, 6379, "Redis")
    require_service(POSTGRES_URL, 5432, "PostgreSQL")
