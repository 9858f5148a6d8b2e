"""Fixtures: every store test runs on a SQLite file and on PostgreSQL.

PostgreSQL is found at ``VUMI_LIKE_TEST_POSTGRES_URL`` (default the local ``postgres``
user's ``test`` database). Each test gets a schema of its own there (the store's
``schema`` option), dropped afterwards, so tests never see each other's rows. When
PostgreSQL is unreachable the PostgreSQL variants skip with the reason, unless
``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import require_service
from vumi_like.stores import MessageStore, NewMessage, open_store

POSTGRES_URL = os.environ.get(
    "VUMI_LIKE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def libpq_url(url: str) -> str:
    """``url`` as psycopg itself takes it (no ``+psycopg``), password included."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@attrs.frozen
class StoreTarget:
    """Where a test's store lives: a URL and the options that isolate it."""

    dialect: str
    url: str
    options: dict[str, Any]
    path: Path | None = None  # the SQLite file

    def open(self, **options: Any) -> AbstractAsyncContextManager[MessageStore]:
        return open_store(self.url, **{**self.options, **options})

    def psycopg_connect(self) -> psycopg.Connection[Any]:
        """A connection of our own to the test's PostgreSQL schema."""
        conn = psycopg.connect(libpq_url(self.url), autocommit=True)
        conn.execute(f"SET search_path TO {self.options['schema']}")
        return conn


def _postgres_target() -> Iterator[StoreTarget]:
    require_service(POSTGRES_URL, 5432, "PostgreSQL")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    yield StoreTarget("postgresql", POSTGRES_URL, {"schema": schema})
    with psycopg.connect(libpq_url(POSTGRES_URL), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreTarget]:
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        yield StoreTarget("sqlite", f"sqlite:///{path}", {}, path)
    else:
        yield from _postgres_target()


@pytest.fixture
def postgres_target() -> Iterator[StoreTarget]:
    """For the tests of what only PostgreSQL has."""
    yield from _postgres_target()


class FakeClock:
    """The store's clock in tests: starts at ``now`` and moves 1 ms at every reading,
    so that rows are created in a known order; ``set``/``advance`` jump it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def set(self, now: datetime) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
async def store(store_target: StoreTarget, clock: FakeClock) -> AsyncIterator[MessageStore]:
    async with store_target.open(clock=clock) as s:
        yield s


def new_message(tenant: str = "acme", **fields: Any) -> NewMessage:
    defaults: dict[str, Any] = {
        "channel": "sms",
        "message_type": "SMS",
        "sender": "+27820000001",
        "receiver": "+27820000002",
        "content": "hello",
    }
    return NewMessage(tenant=tenant, **{**defaults, **fields})
