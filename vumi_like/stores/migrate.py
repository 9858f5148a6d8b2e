"""Bringing a database's schema up to date: ``upgrade(url)``, ``current_revision(url)``.

Alembic runs from code, with no alembic.ini: its ``Config`` is built here, pointed at
the migrations inside this package (installed with it), and handed an open connection.
The store calls ``upgrade`` as it opens, and ``vumi-like db upgrade`` does the same for
operators who migrate before starting workers.

Several replicas may start at once against one PostgreSQL database, and each would try
to create the same tables. The whole upgrade therefore runs in one transaction that
first takes a transaction-scoped advisory lock: the first replica migrates, the others
wait, then find the schema at head and do nothing. (PostgreSQL's DDL is transactional,
so a failed migration leaves nothing half-built.) On SQLite the write transaction's
``BEGIN IMMEDIATE`` serialises upgrades the same way.

Migrations may take longer than a query should, so they get their own timeout,
``statement_timeout`` here, longer than the store's.
"""

from __future__ import annotations

from importlib.resources import files

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from vumi_like.stores.database import Database

__all__ = ["MIGRATION_TIMEOUT", "current_revision", "head_revision", "revision_of", "upgrade"]

MIGRATION_TIMEOUT = 60.0

# Any constant will do, as long as it's this project's own: "vumistor" in ASCII.
_ADVISORY_LOCK_ID = 0x76756D6973746F72


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("vumi_like.stores") / "migrations"))
    return config


def head_revision() -> str:
    """The newest schema version this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the store has migrations"
    return head


def _upgrade(conn: sa.Connection, schema: str | None) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        if schema is not None:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    config = _config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


def revision_of(conn: sa.Connection) -> str | None:
    """The schema version of the database ``conn`` is connected to (None: never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(
    url: str, *, schema: str | None = None, statement_timeout: float = MIGRATION_TIMEOUT
) -> None:
    """Apply every migration ``url``'s database lacks; nothing if it is at head. Blocks.

    ``schema`` (PostgreSQL) is the schema to hold the tables, created if missing.
    Raises ``StoreUnavailable`` if the database cannot be reached.
    """
    database = Database(url, statement_timeout=statement_timeout, pool_size=1, schema=schema)
    try:
        database.transaction(_upgrade, schema)
    finally:
        database.dispose()


def current_revision(
    url: str, *, schema: str | None = None, statement_timeout: float = MIGRATION_TIMEOUT
) -> str | None:
    """The schema version ``url``'s database is at; None if it was never migrated. Blocks."""
    database = Database(url, statement_timeout=statement_timeout, pool_size=1, schema=schema)
    try:
        return database.transaction(revision_of, read_only=True)
    finally:
        database.dispose()
