"""Group commit: concurrent calls of one kind share a transaction, and a thread hop.

A dispatcher under load applies dozens of events and records dozens of webhook posts
at once, each a transaction of one or two statements. What each costs is mostly not
its statements but what surrounds them: a thread hop, a pooled connection's checkout
(and liveness check), BEGIN, COMMIT and the commit's flush to disk. ``Group`` runs the
calls waiting at one moment as one transaction on one thread, in the order they came:

* at low load nothing waits: a call alone is a batch of one, at once;
* under load, calls arriving while ``concurrency`` batches are running queue up and
  go together in the next (at most ``max_batch``), so the cost of a transaction is
  shared and the number of transactions per second adapts to the load;
* each call keeps its own outcome: if the shared transaction fails (one call raised:
  a conflict, a deadlock between two processes' batches, a lost connection), it is
  rolled back whole and every call of it is run again alone, in its own transaction,
  so one call's failure is never another's;
* with an ``order`` key, a batch runs its calls sorted by it (stably: calls with equal
  keys keep their order). Calls that lock rows (``SELECT ... FOR UPDATE`` of the row
  the key names) then take their locks in one global order, so two batches running
  at once can wait for each other but never deadlock. Without it, the ack of one
  message and the delivery report of another, each behind the other in two batches,
  deadlocked: PostgreSQL's detector takes a second to break that, and both batches
  then ran again call by call;
* calls with equal ``order`` keys run in the order they came, across batches too: a
  call whose key a running batch holds waits for that batch to end. Two batches run
  in two threads, and the second can reach a row before the first: under load, a
  message's delivery report, come after its ack, was now and then applied before it
  (the ack, late, then changed nothing, and no SENT webhook went out);
* with ``together``, a batch of more than one call is ``together(connection, [args of
  each call, in order])``, which returns each call's result: one function doing in a
  few statements what the calls would do in many (``queries/messages.py``'s
  ``apply_events``, four statements for a batch of events where each event took
  four). It must give each call what the call alone, run in that order, would have.

The calls are the store's query functions (``fn(connection, *args)``), which do their
reads and writes through the connection they are given and keep no state of their
own, so running one again after a rollback is running it for the first time. A caller
cancelled while its batch runs is in the same position as one cancelled while its own
thread runs (``store.py``): the transaction finishes, and is not undone.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import attrs
import trio

from vumi_like.stores.database import Database

__all__ = ["Group"]


@attrs.define(eq=False)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    key: Any = None  # its ``order`` key, when the group has one
    taken: bool = False  # by a batch, running or about to
    done: bool = False
    value: Any = None
    error: BaseException | None = None
    settled: trio.Event = attrs.field(factory=trio.Event)

    def run_alone(self, database: Database, read_only: bool) -> None:
        try:
            self.value = database.transaction(self.fn, *self.args, read_only=read_only)
        except Exception as exc:
            self.error = exc
        self.done = True


class Group:
    def __init__(
        self,
        database: Callable[[], Database],
        limiter: trio.CapacityLimiter,
        *,
        concurrency: int = 2,
        max_batch: int = 64,
        read_only: bool = False,
        order: Callable[[tuple[Any, ...]], Any] | None = None,
        together: Callable[[Any, list[tuple[Any, ...]]], list[Any]] | None = None,
    ) -> None:
        self._database = database
        self._order = order
        self._together = together
        self._limiter = limiter
        self._slots = trio.Semaphore(concurrency)
        self._max_batch = max_batch
        self._read_only = read_only
        self._waiting: list[_Call] = []
        # The order keys of the calls in running batches, and how many of each.
        self._running: collections.Counter[Any] = collections.Counter()
        self._batch_ended = trio.Event()  # set, and replaced, each time a batch ends

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(connection, *args)`` in a transaction, maybe shared; its result."""
        database = self._database()
        call = _Call(fn, args, None if self._order is None else self._order(args))
        self._waiting.append(call)
        try:
            while not call.done:
                async with self._slots:
                    if not call.taken:
                        await self._run_waiting(database)
                if call.taken:
                    await call.settled.wait()
                elif not call.done:
                    # Held back (its key's turn had not come) or past ``max_batch``:
                    # once a batch ends, this call may go in the next.
                    await self._batch_ended.wait()
        except BaseException:
            if call in self._waiting:  # cancelled before any batch took it: never run
                self._waiting.remove(call)
            raise
        if call.error is not None:
            raise call.error
        return call.value

    async def _run_waiting(self, database: Database) -> None:
        batch, held = self._take()
        if not batch:
            return
        self._waiting = held
        keys = [] if self._order is None else [call.key for call in batch]
        self._running.update(keys)
        for call in batch:
            call.taken = True
        try:
            await trio.to_thread.run_sync(self._run_batch, database, batch, limiter=self._limiter)
        finally:
            for key in keys:
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]
            # Not run (cancelled before the thread started): back to the front of the
            # queue for the next batch; their callers wake, and wait again.
            undone = [call for call in batch if not call.done]
            self._waiting[:0] = undone
            for call in batch:
                call.settled.set()
                if not call.done:
                    call.taken, call.settled = False, trio.Event()
            self._batch_ended.set()
            self._batch_ended = trio.Event()

    def _take(self) -> tuple[list[_Call], list[_Call]]:
        """The next batch (at most ``max_batch`` of the waiting calls, in order, none
        with a key a running batch holds), and the calls left waiting, in order."""
        if self._order is None:
            return self._waiting[: self._max_batch], self._waiting[self._max_batch :]
        running = self._running
        batch: list[_Call] = []
        held: list[_Call] = []
        for call in self._waiting:
            if len(batch) < self._max_batch and call.key not in running:
                batch.append(call)
            else:
                held.append(call)
        return batch, held

    def _run_batch(self, database: Database, batch: list[_Call]) -> None:
        read_only = self._read_only
        if len(batch) > 1:
            order, many = self._order, self._together
            ordered = batch if order is None else sorted(batch, key=lambda c: c.key)

            def together(connection: Any) -> list[Any]:
                if many is not None:
                    return many(connection, [call.args for call in ordered])
                return [call.fn(connection, *call.args) for call in ordered]

            try:
                results = database.transaction(together, read_only=read_only)
            except Exception:
                pass  # each alone, below: one call's failure is not the others'
            else:
                for call, value in zip(ordered, results, strict=True):
                    call.value, call.done = value, True
                return
        for call in batch:
            call.run_alone(database, read_only)
