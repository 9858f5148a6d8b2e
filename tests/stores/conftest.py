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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import require_service

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
