"""The schema: built by the migrations, equal to ``schema.py``, upgraded idempotently."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import sqlalchemy as sa
import trio
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tests.stores.conftest import StoreTarget
from vumi_like.stores import current_revision, head_revision, upgrade
from vumi_like.stores.database import Database
from vumi_like.stores.schema import metadata


def differences(target: StoreTarget) -> list[Any]:
    """What autogenerate would change to make the database match ``schema.py``."""

    def compare(conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _: (
                    not (kind == "table" and name == "alembic_version")
                ),
            },
        )
        return list(compare_metadata(context, metadata))

    database = Database(target.url, statement_timeout=30, pool_size=1, **target.options)
    try:
        return database.transaction(compare, read_only=True)
    finally:
        database.dispose()


def test_a_fresh_database_is_migrated_to_exactly_the_schema(store_target: StoreTarget) -> None:
    assert current_revision(store_target.url, **store_target.options) is None
    upgrade(store_target.url, **store_target.options)
    assert current_revision(store_target.url, **store_target.options) == head_revision()
    assert differences(store_target) == []


def test_upgrading_a_database_at_head_changes_nothing(store_target: StoreTarget) -> None:
    upgrade(store_target.url, **store_target.options)
    upgrade(store_target.url, **store_target.options)
    assert current_revision(store_target.url, **store_target.options) == head_revision()
    assert differences(store_target) == []


async def test_replicas_opening_at_once_migrate_once(store_target: StoreTarget) -> None:
    async def open_one() -> None:
        async with store_target.open():
            pass

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(open_one)
    assert current_revision(store_target.url, **store_target.options) == head_revision()


def test_the_migrations_ship_inside_the_package() -> None:
    migrations = files("vumi_like.stores") / "migrations"
    assert (migrations / "env.py").is_file()
    assert (migrations / "script.py.mako").is_file()
    assert any(p.name.endswith("_initial.py") for p in (migrations / "versions").iterdir())
