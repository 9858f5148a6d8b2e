"""The hand-off between trio and aio-pika's asyncio loop in the broker's I/O thread.

Why a thread: every worker above ``broker/`` is trio, and aio-pika is asyncio. The
obvious bridge, trio-asyncio wrapping each aio-pika call, costs a loop hand-over per
call and measured ~440 msg/s with publisher confirms on a two-core machine, against
~1,500-1,900 msg/s for plain asyncio. Here aio-pika runs untouched on its own loop in
a dedicated thread, and the two sides exchange *batches*:

* trio -> asyncio: requests (``Publish``, ``Settle``, ``Retry``, ``Call``) are
  appended to a ``deque``; ``loop.call_soon_threadsafe`` is called only on the
  empty -> non-empty edge (``_io_wake_pending``), and the I/O side drains everything
  pending in one pass. Under load one wake-up carries many requests, and the broker
  writes a pass's publishes and acks in one socket write per channel
  (``aiormq_internals.py``).
* asyncio -> trio: deliveries and request results come back the same way through
  ``TrioToken.run_sync_soon`` (``to_trio_soon``); a trio task waiting on a request
  (its ``Pending``) wakes when the result, or the failure, arrives.

The edge flag is safe without a lock because the drainer clears the flag *before*
it starts popping: a producer that still sees the flag set appended before the
drain began, so that drain will see its item; one that sees it cleared schedules a
new drain (at worst an empty one). ``deque.append`` and ``popleft`` are atomic, and
each flag is only ever set by its producer and cleared by its drainer.

Requests are small typed values rather than bare tuples, so the I/O side's dispatch
reads as what each request is. They are slotted attrs classes, not frozen ones: a
frozen attrs class costs about three times as much to build (one
``object.__setattr__`` per field), and one is built per publish and per ack. A
slotted one costs ~70 ns more to build than a tuple, which does not show in
``bench/broker_roundtrip.py``: nine alternating rounds each, tuples 9,555 msg/s
against 9,560 for these (medians; aio-pika 5,214 and 5,189 in the same runs).

The I/O loop is uvloop's where uvloop is installed (a dependency wherever it builds:
not on Windows), asyncio's own otherwise. aio-pika runs on either unchanged; uvloop's
loop costs the I/O thread less per pass and writes each pass in fewer system calls.
``VUMI_LIKE_ASYNCIO_LOOP=asyncio`` asks for asyncio's loop anyway, for comparing the
two or ruling uvloop out when chasing a fault.

Failure: an exception escaping the I/O side's drain is a bug, and it ends both sides
loudly: every trio call waiting on a request fails with ``BrokerError``, later ones
fail at once, and the broker's ``on_failure`` hook closes its consumers, rather than
leaving anything hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import attrs
import structlog
import trio

from vumi_like.broker.base import BrokerError, Headers

log = structlog.get_logger(__name__)

LOOP_ENV = "VUMI_LIKE_ASYNCIO_LOOP"


def io_loop_choice() -> str:
    """``uvloop`` or ``asyncio``: the loop ``LOOP_ENV`` asks for (unset or empty means
    uvloop; any other value is refused)."""
    choice = os.environ.get(LOOP_ENV) or "uvloop"
    if choice not in ("uvloop", "asyncio"):
        raise BrokerError(f"{LOOP_ENV} must be uvloop or asyncio, not {choice!r}")
    return choice


def new_io_loop() -> asyncio.AbstractEventLoop:
    """The I/O thread's event loop: the one chosen, or asyncio's if uvloop is missing."""
    if io_loop_choice() == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class Pending:
    """A trio task's handle on a request running in the I/O thread."""

    __slots__ = ("error", "event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self, outcome: tuple[Any, BaseException | None]) -> None:
        """Called in trio (through ``to_trio_soon``) with ``(result, error)``."""
        self.result, self.error = outcome
        self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.result


@attrs.define(eq=False)
class Publish:
    """Publish ``body`` to ``exchange``; ``pending`` settles when it is confirmed."""

    exchange: str
    routing_key: str
    body: bytes
    headers: Headers | None
    pending: Pending


@attrs.define(eq=False)
class Settle:
    """Ack (``ack=True``) or requeue the delivery ``tag``; nobody waits for it."""

    tag: Any
    ack: bool


@attrs.define(eq=False)
class Retry:
    """``publish`` goes to a delay bucket (its exchange) that may not be declared yet."""

    publish: Publish
    delay_ms: int

    @property
    def pending(self) -> Pending:
        return self.publish.pending


@attrs.define(eq=False)
class Call:
    """Run ``fn(*args)`` on the I/O loop (declare, consume, close...); the rare requests."""

    fn: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    pending: Pending


Request = Publish | Settle | Retry | Call


class Bridge:
    """A private asyncio loop in a thread, and the two queues between it and trio.

    ``drain`` runs in the I/O thread with the queue of pending requests and must empty
    it; ``on_failure`` runs in trio after the I/O side failed and every waiter was told.
    """

    def __init__(
        self,
        drain: Callable[[deque[Request]], None],
        *,
        on_failure: Callable[[BaseException], None],
        thread_name: str,
    ) -> None:
        self.loop = new_io_loop()
        self.failure: BaseException | None = None
        self._drain = drain
        self._on_failure = on_failure
        self._thread = threading.Thread(target=self._run_loop, name=thread_name, daemon=True)

        # trio -> I/O
        self._to_io: deque[Request] = deque()
        self._io_wake_pending = False
        self._waiting: set[Pending] = set()

        # I/O -> trio: (function, its one argument), called in trio in order.
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._to_trio: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._trio_wake_pending = False

        # Tasks spawned on the I/O loop, kept referenced until they finish.
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ trio side

    def start(self) -> None:
        """Start the I/O thread; results will come back to the calling trio run."""
        self._trio_token = trio.lowlevel.current_trio_token()
        self._thread.start()

    def submit(self, request: Request) -> None:
        """Queue ``request`` for the I/O thread, waking it if the queue was empty."""
        self._to_io.append(request)
        if not self._io_wake_pending:
            self._io_wake_pending = True
            self.loop.call_soon_threadsafe(self._drain_to_io)

    async def request(self, request: Publish | Retry | Call) -> Any:
        """Submit ``request`` and wait for its outcome: its result, or its error raised."""
        if self.failure is not None:
            raise BrokerError(f"the broker's I/O thread failed: {self.failure!r}")
        pending = request.pending
        self._waiting.add(pending)
        try:
            self.submit(request)
            return await pending.wait()
        finally:
            self._waiting.discard(pending)

    async def stop(self) -> None:
        """Stop the loop, join the thread, and fail whatever still waits on it."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            await trio.to_thread.run_sync(self._thread.join)
        for pending in list(self._waiting):
            pending.settle((None, BrokerError("the broker was closed")))
        self.loop.close()

    def _drain_to_trio(self) -> None:
        self._trio_wake_pending = False
        queue = self._to_trio
        while queue:
            fn, arg = queue.popleft()
            fn(arg)

    def _fail_waiters(self, exc: BaseException) -> None:
        for pending in list(self._waiting):
            pending.settle((None, BrokerError(f"the broker's I/O thread failed: {exc!r}")))
        self._on_failure(exc)

    # ---------------------------------------------------------------- I/O thread

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Let what is left unwind. A cancelled task may start others (aiormq closes
            # a connection with tasks of its own), so a few rounds, each bounded.
            for _ in range(3):
                tasks = asyncio.all_tasks(self.loop)
                if not tasks:
                    break
                for task in tasks:
                    task.cancel()
                with contextlib.suppress(Exception):
                    self.loop.run_until_complete(asyncio.wait(tasks, timeout=1))

    def _drain_to_io(self) -> None:
        self._io_wake_pending = False
        try:
            self._drain(self._to_io)
        except BaseException as exc:  # pragma: no cover - a bug in the broker
            self.fail(exc)

    def to_trio_soon(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Call ``fn(arg)`` in trio soon, after everything queued before it."""
        self._to_trio.append((fn, arg))
        if not self._trio_wake_pending:
            self._trio_wake_pending = True
            assert self._trio_token is not None
            try:
                self._trio_token.run_sync_soon(self._drain_to_trio)
            except trio.RunFinishedError:
                pass

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task on the I/O loop, holding a reference until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def fail(self, exc: BaseException) -> None:
        """The I/O side hit a bug: fail every waiting and later request, loudly."""
        log.error("amqp I/O thread failed", error=repr(exc))
        self.failure = exc
        self.to_trio_soon(self._fail_waiters, exc)
