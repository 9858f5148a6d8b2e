"""Group commit (``vumi_like.stores.grouping``) on a real SQLite database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from vumi_like.stores.database import Database
from vumi_like.stores.errors import StoreError
from vumi_like.stores.grouping import Group

ROWS = sa.Table("rows", sa.MetaData(), sa.Column("n", sa.Integer, primary_key=True))


class CountingDatabase(Database):
    """A database that counts the transactions it runs."""

    transactions = 0

    def transaction(self, fn: Any, *args: Any, read_only: bool = False) -> Any:
        self.transactions += 1
        return super().transaction(fn, *args, read_only=read_only)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[CountingDatabase]:
    db = CountingDatabase(f"sqlite:///{tmp_path / 'g.db'}", statement_timeout=5, pool_size=4)
    with db.engine.begin() as conn:
        ROWS.create(conn)
    db.transactions = 0
    yield db
    db.dispose()


def insert(conn: sa.Connection, n: int) -> int:
    conn.execute(ROWS.insert().values(n=n))
    return n * 10


def stored(database: Database) -> list[int]:
    with database.engine.connect() as conn:
        return sorted(conn.execute(sa.select(ROWS.c.n)).scalars())


async def run_all(group: Group, numbers: list[int]) -> dict[int, Any]:
    results: dict[int, Any] = {}

    async def one(n: int) -> None:
        try:
            results[n] = await group.run(insert, n)
        except Exception as exc:
            results[n] = exc

    async with trio.open_nursery() as nursery:
        for n in numbers:
            nursery.start_soon(one, n)
    return results


async def test_a_call_alone_is_its_own_transaction(database: CountingDatabase):
    group = Group(lambda: database, trio.CapacityLimiter(4))
    assert await group.run(insert, 1) == 10
    assert database.transactions == 1
    assert stored(database) == [1]


async def test_calls_waiting_together_share_transactions(database: CountingDatabase):
    group = Group(lambda: database, trio.CapacityLimiter(4), concurrency=1)
    results = await run_all(group, list(range(50)))
    assert results == {n: n * 10 for n in range(50)}
    assert stored(database) == list(range(50))
    # All were waiting before the first batch began: one transaction for the 50.
    assert database.transactions == 1


async def test_one_calls_failure_is_not_the_others(database: CountingDatabase):
    group = Group(lambda: database, trio.CapacityLimiter(4), concurrency=1)
    await group.run(insert, 7)
    database.transactions = 0
    results = await run_all(group, [1, 2, 7, 3])  # 7 is there already
    # Together (rolled back), then each alone.
    assert database.transactions == 5
    assert {n: v for n, v in results.items() if n != 7} == {1: 10, 2: 20, 3: 30}
    assert isinstance(results[7], StoreError) and "UNIQUE" in str(results[7])
    assert stored(database) == [1, 2, 3, 7]


async def test_batches_are_bounded_in_size(database: CountingDatabase):
    group = Group(lambda: database, trio.CapacityLimiter(4), concurrency=1, max_batch=10)
    await run_all(group, list(range(31)))
    assert stored(database) == list(range(31))
    assert database.transactions == 4  # 10 + 10 + 10 + 1


async def test_a_call_cancelled_before_its_batch_never_runs(database: CountingDatabase):
    group = Group(lambda: database, trio.CapacityLimiter(4), concurrency=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.run, insert, 1)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await group.run(insert, 2)
    assert stored(database) == [1]


async def test_a_batch_runs_its_calls_in_key_order(database: CountingDatabase):
    # Calls that lock rows take the locks in one order, so batches cannot deadlock.
    ran: list[int] = []

    def note(conn: sa.Connection, key: int) -> int:
        ran.append(key)
        return insert(conn, key)

    group = Group(lambda: database, trio.CapacityLimiter(4), concurrency=1, order=lambda a: a[0])
    results: dict[int, int] = {}

    async def one(key: int) -> None:
        results[key] = await group.run(note, key)

    keys = [5, 3, 9, 1, 7]
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(one, key)
    assert database.transactions == 1
    assert ran == sorted(keys)
    assert results == {key: key * 10 for key in keys}  # each caller its own result


async def test_calls_with_one_key_run_in_the_order_they_came_across_batches(
    database: CountingDatabase,
):
    # Two batches run in two threads: a call whose key a running batch holds waits for
    # it, so the second event of a message is never applied before the first.
    ran: list[str] = []
    release = threading.Event()

    def note(conn: sa.Connection, key: int, label: str) -> str:
        if label == "first":
            release.wait(5)
        ran.append(label)
        return label

    group = Group(
        lambda: database,
        trio.CapacityLimiter(4),
        concurrency=2,
        read_only=True,
        order=lambda a: a[0],
    )
    results: dict[str, str] = {}

    async def one(key: int, label: str) -> None:
        results[label] = await group.run(note, key, label)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 1, "first")
        await trio.testing.wait_all_tasks_blocked()  # its batch runs, in its thread
        nursery.start_soon(one, 1, "second")  # the same key: waits for that batch
        with trio.fail_after(5):  # another key: the second slot takes it meanwhile
            await one(2, "other")
        release.set()
    assert ran == ["other", "first", "second"]
    assert results == {"first": "first", "second": "second", "other": "other"}
