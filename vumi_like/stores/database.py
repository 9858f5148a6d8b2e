"""Connecting to the store's database, so that no call can wait for it without end.

The store runs SQLAlchemy's synchronous engine in worker threads (see ``store.py`` for
why). A thread cannot be cancelled: a trio task waiting on one stays until the call
returns. So every way a call could hang is bounded here, by the database itself:

* **PostgreSQL** (psycopg 3): ``statement_timeout`` and ``lock_timeout`` set for the
  session in the connect options, so a slow query or a row lock held elsewhere ends in
  an error after ``statement_timeout`` seconds; ``connect_timeout`` for the connection
  itself; TCP keepalives so that a server that vanished without closing the socket is
  noticed in seconds rather than at the kernel's two hours; and a pool timeout, although
  the store's thread limit matches the pool's size, so no thread should wait for one.
* **SQLite**: the busy timeout (the driver's ``timeout=`` and ``PRAGMA busy_timeout``),
  since the one wait SQLite has is for another connection's write lock. Queries are
  index lookups in a local file; there is no network to stall.

SQLite lets one connection write at a time, and one kept waiting for the write lock
tries again on a timer, up to 100 ms apart: under load, with writers of several
workers in one process (the embedded pipeline's API and dispatcher) taking the lock
back to back, one could lose the race for a second. So the write transactions of one
process on one file take turns on a lock of the process's own first, and a waiter
starts the moment the writer before it is done; the busy timeout is then only for
other processes (a CLI command, another ``vumi-like run``). That wait is bounded by
the busy timeout too.

Both give ``StoreUnavailable`` when a bound is hit, through ``translated_errors``.

SQLite settings, on every new connection: WAL (readers don't block the writer, nor it
them, across threads and processes), foreign keys on (SQLite's default is off), and the
driver's own transaction handling off. pysqlite starts a transaction lazily at the first
write, so a read-then-write (``SELECT`` a status, ``UPDATE`` it) would read before it
holds any lock, and two threads could both read the old status. Instead a write
transaction starts with ``BEGIN IMMEDIATE``, which takes the write lock at once and so
serialises writers from the first statement, the SQLite counterpart of PostgreSQL's
``SELECT ... FOR UPDATE``; read-only transactions use a plain ``BEGIN`` and read a
consistent snapshot without blocking anyone.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from vumi_like.redaction import redact_text
from vumi_like.stores.errors import StoreError, StoreUnavailable

__all__ = ["Database", "database_url", "dialect_insert", "translated_errors"]

T = TypeVar("T")

# Execution option marking a transaction that only reads (a plain BEGIN on SQLite).
_READ_ONLY = "vumi_like_read_only"

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Errors meaning "the database can't be reached or didn't answer in time", as opposed
# to "it refused this": a lost or refused connection, a statement or lock timeout
# (psycopg's QueryCanceled and LockNotAvailable are OperationalErrors), SQLite's
# "database is locked" after the busy timeout, and no pooled connection in time.
_UNAVAILABLE = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)


# One lock per SQLite file (by real path) for the writers of this process: see above.
_SQLITE_WRITERS: dict[str, threading.Lock] = {}
_SQLITE_WRITERS_GUARD = threading.Lock()


def _sqlite_writer(path: str) -> threading.Lock:
    with _SQLITE_WRITERS_GUARD:
        return _SQLITE_WRITERS.setdefault(os.path.realpath(path), threading.Lock())


def database_url(url: str) -> sa.URL:
    """``url`` as SQLAlchemy's URL for a driver we support; ``StoreError`` otherwise.

    PostgreSQL is reached through psycopg 3 whatever the URL says (``postgres://`` and
    ``postgresql://`` are what hosting providers hand out); SQLite must be a file,
    since an in-memory database is private to each of the pool's connections.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(f"not a database URL: {redact_text(url)!r}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise StoreError(f"PostgreSQL is used through psycopg 3, not {driver}")
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if parsed.database in (None, "", ":memory:"):
            raise StoreError("the SQLite store must be a file: sqlite:///path/to/store.db")
        return parsed
    raise StoreError(
        f"unsupported database URL {redact_text(url)!r}: use sqlite:///path/to/file.db "
        "or postgresql://user@host:port/database"
    )


def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT with ``on_conflict_do_nothing``/``_do_update`` for this connection's
    database (both dialects spell them the same way, in different constructs)."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def _one_line(exc: BaseException) -> str:
    # The driver's own message (SQLAlchemy's adds the SQL), first line only.
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return redact_text(lines[0].strip() if lines else type(original).__name__)


@contextmanager
def translated_errors(where: str) -> Iterator[None]:
    """Turn SQLAlchemy's and the drivers' errors into ``StoreUnavailable``/``StoreError``.

    ``where`` names the database for the message; it must already be redacted.
    """
    try:
        yield
    except StoreError:
        raise
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"message store at {where} unavailable: {_one_line(exc)}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"message store at {where} refused: {_one_line(exc)}") from exc


class Database:
    """One database's engine, with the timeouts above, and transactions on it.

    ``schema`` (PostgreSQL only) puts the store's tables in that schema, through the
    session's ``search_path``: several stores can share one database this way (tests
    give each test its own). It must be a plain lower-case name.
    """

    def __init__(
        self,
        url: str,
        *,
        statement_timeout: float,
        pool_size: int,
        schema: str | None = None,
    ) -> None:
        if statement_timeout <= 0:
            raise StoreError(f"statement_timeout must be positive, got {statement_timeout}")
        if pool_size < 1:
            raise StoreError(f"pool_size must be at least 1, got {pool_size}")
        self.url = database_url(url)
        self.display = redact_text(url)
        self.schema = schema
        self.dialect = self.url.get_backend_name()
        if schema is not None and (
            self.dialect != "postgresql" or not _SCHEMA_NAME.fullmatch(schema)
        ):
            raise StoreError(f"schema must be a lower-case name, on PostgreSQL only: {schema!r}")
        millis = max(1, round(statement_timeout * 1000))
        self._timeout = statement_timeout
        self._writer: threading.Lock | None = None
        common: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": statement_timeout,
            # Parameters can hold secrets (a webhook's); keep them out of error messages.
            "hide_parameters": True,
        }
        if self.dialect == "sqlite":
            self.engine = sa.create_engine(
                self.url,
                connect_args={"timeout": statement_timeout, "check_same_thread": False},
                **common,
            )
            _configure_sqlite(self.engine, millis)
            assert self.url.database is not None  # database_url refuses in-memory ones
            self._writer = _sqlite_writer(self.url.database)
        else:
            options = f"-c statement_timeout={millis} -c lock_timeout={millis}"
            if schema is not None:
                options += f" -c search_path={schema}"
            seconds = max(1, math.ceil(statement_timeout))
            self.engine = sa.create_engine(
                self.url,
                connect_args={
                    "options": options,
                    "connect_timeout": max(2, seconds),  # libpq takes 2 s at least
                    "keepalives": 1,
                    "keepalives_idle": seconds,
                    "keepalives_interval": 1,
                    "keepalives_count": 3,
                    "application_name": "vumi_like",
                },
                pool_pre_ping=True,  # a connection from before a server restart is dead
                **common,
            )

    def transaction(self, fn: Callable[..., T], *args: Any, read_only: bool = False) -> T:
        """``fn(connection, *args)`` in one transaction, committed if it returns. Blocks."""
        writer = None if read_only else self._writer
        if writer is None:
            return self._transaction(fn, args, read_only)
        if not writer.acquire(timeout=self._timeout):
            raise StoreUnavailable(
                f"message store at {self.display} unavailable: this process's writers "
                f"held the file for {self._timeout:g} s"
            )
        try:
            return self._transaction(fn, args, read_only)
        finally:
            writer.release()

    def _transaction(self, fn: Callable[..., T], args: tuple[Any, ...], read_only: bool) -> T:
        with translated_errors(self.display), self.engine.connect() as conn:
            if read_only:
                conn = conn.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                return fn(conn, *args)

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: sa.Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we BEGIN ourselves; see module doc
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            _use_wal(cursor, busy_timeout_ms / 1000)
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _use_wal(cursor: Any, timeout: float) -> None:
    """Switch the file to WAL (a setting kept in the file), waiting for other connections.

    Only a brand-new file needs the switch, and it needs the file to itself: when
    several connections open a new file at once (replicas starting together), the switch
    fails at once with "database is locked", without waiting for the busy timeout. So
    it is retried here, within that same timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
        else:
            if mode.lower() == "wal":  # also what an existing WAL file answers at once
                return
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"cannot use WAL: journal mode stays {mode}")
        time.sleep(0.01)
