"""The in-memory broker: RabbitMQ's semantics inside one process.

``vumi-like run`` runs several workers in one process on this broker, and demos and
tests use it with no server. It is a real peer of ``rabbitmq.py``, not a mock: both
pass the same contract suite, so a worker that is right here is right on RabbitMQ.
What it copies from RabbitMQ, and why each choice matters to a worker:

* **Direct exchange, mandatory publishes.** ``declare_queue(name)`` binds ``name``
  with routing key ``name``. Publishing to a key no queue is bound to raises
  ``PublishError`` (RabbitMQ returns such a mandatory publish), so a typo in a
  queue name fails loudly instead of dropping messages.
* **Push delivery with prefetch, round-robin.** A publish hands the message at once
  to the next subscription in turn that has a free prefetch slot, as RabbitMQ
  pushes to consumers; the subscription buffers it until its task asks. So a
  delivery counts against ``prefetch`` from the moment it is handed out, not from
  when the task takes it, exactly as on RabbitMQ, and the order in which
  consumers' tasks happen to wake up does not decide who gets what.
* **Nothing unsettled is lost.** Leaving a ``consume`` context puts every delivery
  of that subscription that was not acked (taken or still buffered) back at the
  *front* of its queue, in the order it was delivered, flagged ``redelivered``.
  That is what RabbitMQ does when a channel closes: those messages were ahead of
  everything still ready, and putting them at the back would let a restart
  reorder a queue. A later ack of such a delivery is ignored (its tag is void), the
  same as an ack on a closed channel. ``requeue`` also puts a message back at the
  front, so a handler that gives a message back does not send it behind a backlog.
* **Settling is idempotent.** ``ack``/``requeue`` of a delivery that is already
  settled, or whose subscription has ended, does nothing: the connectors may race
  a shutdown with a late ack, and the promise is "acks of old deliveries are
  dropped", never an exception in a handler's path.
* **Delays held by the broker, in buckets.** ``retry_later`` rounds the delay with
  ``delay_bucket_ms`` and parks the body in that bucket's FIFO, one timer task per
  bucket in the broker's own nursery. That is the shape of RabbitMQ's TTL delay
  queues: bodies in a bucket come back in the order they went in, and a long delay
  in one bucket never holds up a short one in another. Timers run on the trio
  clock, so tests with pytest-trio's ``autojump_clock`` cover hour-long backoffs
  instantly. When the target queue is gone by then, the body goes to the
  dead-letter queue with an error header saying so (RabbitMQ would silently drop
  an unroutable dead-lettered message; we promise never to lose one).

Every async method is a full trio checkpoint, done as a cancel point *before* the
work and a cancel-shielded schedule point *after* it (trio's idiom for operations
that complete synchronously). A publisher in a tight loop therefore yields to the
consumers, and a cancelled ``publish`` has certainly not published: it either
happened or raised ``Cancelled``, never both.

Waiting is done on trio primitives only: a consumer with nothing buffered parks on
its subscription's ``ParkingLot`` and is unparked by the publish, ack or requeue that
gives it something. Queues and buffers are ``deque``s, so each operation costs O(1)
per message moved.

**Not durable.** Everything lives in this process: queued messages, unsettled
deliveries and bodies waiting in ``retry_later`` are gone when the broker closes or
the process exits. That is the point of the in-memory broker (no server), and why
production runs on RabbitMQ.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
import trio

from vumi_like.broker.base import (
    DEAD_LETTER_QUEUE,
    BrokerError,
    BrokerInspector,
    Delivery,
    Headers,
    PublishError,
    Subscription,
    dead_letter_headers,
    delay_bucket_ms,
)

log = structlog.get_logger(__name__)

# What a dead-lettered retry names as its worker: the broker itself put it there.
RETRY_WORKER = "memory-broker"


class _Message:
    """A message while it sits in a queue or is out with a consumer."""

    __slots__ = ("body", "headers", "redelivered")

    def __init__(self, body: bytes, headers: dict[str, Any], redelivered: bool = False) -> None:
        self.body = body
        self.headers = headers
        self.redelivered = redelivered


class _Tag:
    """A delivery's handle: which message, from which queue, held by whom.

    ``settled`` turns true once the delivery is acked or requeued, or is voided
    because its subscription ended or its queue was deleted; from then on settling
    it again does nothing.
    """

    __slots__ = ("broker", "message", "queue", "settled", "subscription")

    def __init__(
        self,
        broker: MemoryBroker,
        queue: _Queue,
        message: _Message,
        subscription: _MemorySubscription | None,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.message = message
        self.subscription = subscription  # None for a delivery taken with ``get``
        self.settled = False


class _Queue:
    """Ready messages and the subscriptions consuming them.

    ``rotation`` holds exactly the subscriptions that are consuming and have a free
    prefetch slot, in round-robin order; ``dispatch`` hands ready messages out from
    its front and puts a subscription back at the end while it still has room.
    """

    __slots__ = ("deleted", "name", "ready", "rotation", "subscriptions")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: deque[_Message] = deque()
        self.subscriptions: set[_MemorySubscription] = set()
        self.rotation: deque[_MemorySubscription] = deque()
        self.deleted = False

    def push(self, message: _Message) -> None:
        self.ready.append(message)
        self.dispatch()

    def put_back(self, messages: list[_Message]) -> None:
        """Put ``messages`` back ahead of everything ready, keeping their order.

        No dispatch: the caller frees the slot they held first, so that the slot
        cannot go to a message behind them.
        """
        for message in messages:
            message.redelivered = True
        self.ready.extendleft(reversed(messages))

    def make_room(self, subscription: _MemorySubscription) -> None:
        """``subscription`` just got a free slot: give it its turn again."""
        if subscription.in_rotation or not subscription.has_room():
            return
        subscription.in_rotation = True
        self.rotation.append(subscription)
        self.dispatch()

    def dispatch(self) -> None:
        while self.ready and self.rotation:
            subscription = self.rotation.popleft()
            subscription.deliver(self.ready.popleft())
            if subscription.has_room():
                self.rotation.append(subscription)
            else:
                subscription.in_rotation = False


class _MemorySubscription(Subscription):
    """One consumer of a queue: its buffer of handed-out deliveries and its prefetch."""

    def __init__(self, broker: MemoryBroker, queue: _Queue, prefetch: int) -> None:
        self.queue = queue.name
        self._broker = broker
        self._queue = queue
        self._prefetch = prefetch
        # Handed out but not yet taken by ``__anext__``.
        self._buffer: deque[Delivery] = deque()
        # Handed out and not yet settled, taken or not; dicts keep insertion order,
        # which is the delivery order that leaving the context restores.
        self._unsettled: dict[_Tag, None] = {}
        self._waiters = trio.lowlevel.ParkingLot()
        self._ended = False
        self._error: BrokerError | None = None
        self.in_rotation = False

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            # Cancelled while parked: nothing was taken, the buffer keeps it all.
            await self._waiters.park()
        delivery = self._buffer.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return delivery

    def has_room(self) -> bool:
        return not self._ended and len(self._unsettled) < self._prefetch

    def deliver(self, message: _Message) -> None:
        tag = _Tag(self._broker, self._queue, message, self)
        self._unsettled[tag] = None
        self._buffer.append(self._broker._delivery(tag))
        self._waiters.unpark()

    def settled(self, tag: _Tag) -> None:
        del self._unsettled[tag]
        self._queue.make_room(self)

    def start(self) -> None:
        self._queue.subscriptions.add(self)
        self._queue.make_room(self)

    def leave(self) -> None:
        """The consume context ended: stop, and give back what was not acked."""
        if self._ended:
            return
        unsettled = self._end()
        queue = self._queue
        if unsettled and not queue.deleted and not self._broker._closed:
            queue.put_back([tag.message for tag in unsettled])
            queue.dispatch()

    def end(self, error: BrokerError | None = None) -> None:
        """The queue was deleted (iteration stops) or the broker closed (it raises)."""
        self._error = error
        self._end()

    def _end(self) -> list[_Tag]:
        """Stop receiving, void every unsettled tag and return them, in delivery order."""
        self._ended = True
        queue = self._queue
        queue.subscriptions.discard(self)
        if self.in_rotation:
            # O(consumers of the queue), once per subscription: subscriptions are few.
            queue.rotation.remove(self)
            self.in_rotation = False
        unsettled = list(self._unsettled)
        for tag in unsettled:
            tag.settled = True
        self._unsettled.clear()
        self._buffer.clear()
        self._waiters.unpark_all()
        return unsettled


class MemoryBroker(BrokerInspector):
    """An in-process broker with RabbitMQ's semantics; see the module docstring.

    Open it with ``open_memory_broker``, which runs the timers of ``retry_later``.
    """

    def __init__(self, *, dead_letter_queue: str = DEAD_LETTER_QUEUE) -> None:
        self.dead_letter_queue = dead_letter_queue
        self._queues: dict[str, _Queue] = {}
        # Delay bucket (ms) -> (due time, target queue, message), in due-time order.
        self._delayed: dict[int, deque[tuple[float, str, _Message]]] = {}
        self._timers: trio.Nursery | None = None
        self._closed = False
        self._declare(dead_letter_queue)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the timers of ``retry_later`` until ``aclose``.

        The timers get a nursery of their own, cancelled by ``aclose``: cancelling
        the nursery ``open_memory_broker`` opens would also cancel the code running
        inside the ``async with``.
        """
        async with trio.open_nursery() as timers:
            self._timers = timers
            task_status.started()
            await trio.sleep_forever()

    @property
    def connected(self) -> bool:
        return not self._closed

    async def declare_queue(self, queue: str) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._check_open()
            self._declare(queue)
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def publish(
        self, routing_key: str, body: bytes, *, headers: Headers | None = None
    ) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._check_open()
            queue = self._queues.get(routing_key)
            if queue is None:
                raise PublishError(f"unroutable: no queue is bound to routing key {routing_key!r}")
            # Copies: what the publisher does with its objects afterwards is not our message.
            queue.push(_Message(bytes(body), dict(headers or {})))
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()

    @asynccontextmanager
    async def consume(self, queue: str, *, prefetch: int) -> AsyncIterator[Subscription]:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch}")
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            subscription = _MemorySubscription(self, self._existing(queue), prefetch)
            subscription.start()
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()
        try:
            yield subscription
        finally:
            subscription.leave()

    def ack(self, delivery: Delivery) -> None:
        tag = self._open_tag(delivery)
        if tag is None:
            return
        tag.settled = True
        if tag.subscription is not None:
            tag.subscription.settled(tag)

    def requeue(self, delivery: Delivery) -> None:
        tag = self._open_tag(delivery)
        if tag is None:
            return
        tag.settled = True
        queue = tag.queue
        if not queue.deleted:  # only a ``get`` delivery can outlive its queue
            queue.put_back([tag.message])
        if tag.subscription is not None:
            # Its freed slot may take the message straight back, unless another
            # consumer with room is ahead in the rotation: then that one gets it.
            tag.subscription.settled(tag)
        queue.dispatch()

    async def retry_later(
        self, queue: str, body: bytes, *, delay: float, headers: Headers | None = None
    ) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._check_open()
            if self._timers is None:
                raise BrokerError("memory broker not running: open it with open_memory_broker")
            bucket = delay_bucket_ms(delay)
            due = trio.current_time() + bucket / 1000
            message = _Message(bytes(body), dict(headers or {}))
            pending = self._delayed.get(bucket)
            if pending is None:
                pending = self._delayed[bucket] = deque()
                self._timers.start_soon(self._release_bucket, bucket, pending)
            # Same bucket, same delay: due times only grow, so the deque stays sorted.
            pending.append((due, queue, message))
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def purge(self, queue: str) -> int:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            ready = self._existing(queue).ready
            count = len(ready)
            # Like RabbitMQ: only ready messages; deliveries out with consumers stay theirs.
            ready.clear()
            return count
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def delete_queue(self, queue: str) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._check_open()
            deleted = self._queues.pop(queue, None)
            if deleted is None:
                return  # RabbitMQ's queue.delete of a missing queue succeeds too
            deleted.deleted = True
            deleted.ready.clear()
            for subscription in list(deleted.subscriptions):
                subscription.end()
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def get(self, queue: str) -> Delivery | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            existing = self._existing(queue)
            if not existing.ready:
                return None
            return self._delivery(_Tag(self, existing, existing.ready.popleft(), None))
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        """Close: consumers still iterating get ``BrokerError``; pending retries are dropped.

        Unsettled deliveries are not put back: their queues go away with the broker.
        """
        if not self._closed:
            self._closed = True
            closed = BrokerError("memory broker closed")
            for queue in self._queues.values():
                queue.deleted = True
                for subscription in list(queue.subscriptions):
                    subscription.end(closed)
            self._queues.clear()
            self._delayed.clear()
            if self._timers is not None:
                self._timers.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError("memory broker closed")

    def _declare(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(name)
        return queue

    def _existing(self, name: str) -> _Queue:
        self._check_open()
        queue = self._queues.get(name)
        if queue is None:
            # RabbitMQ answers 404 NOT_FOUND; silently creating it would hide a typo.
            raise BrokerError(f"no such queue: {name!r} (declare it first)")
        return queue

    def _delivery(self, tag: _Tag) -> Delivery:
        message = tag.message
        return Delivery(
            queue=tag.queue.name,
            body=message.body,
            # A copy per delivery: a handler editing its headers must not change
            # what the next consumer of a requeued message sees.
            headers=dict(message.headers),
            redelivered=message.redelivered,
            tag=tag,
        )

    def _open_tag(self, delivery: Delivery) -> _Tag | None:
        """``delivery``'s tag if settling it still means something, else None."""
        tag = delivery.tag
        if not isinstance(tag, _Tag) or tag.broker is not self:
            raise TypeError(f"delivery {delivery!r} did not come from this memory broker")
        if self._closed or tag.settled:
            return None
        return tag

    async def _release_bucket(
        self, bucket: int, pending: deque[tuple[float, str, _Message]]
    ) -> None:
        """Bring the bodies of one delay bucket back as they come due; end when empty."""
        while pending:
            due, queue, message = pending[0]
            await trio.sleep_until(due)
            if self._closed:
                return  # woken in the same instant ``aclose`` ran: drop, as documented
            pending.popleft()
            self._bring_back(queue, message)
        # No checkpoint since the last ``while pending``: nothing was added meanwhile.
        del self._delayed[bucket]

    def _bring_back(self, queue_name: str, message: _Message) -> None:
        queue = self._queues.get(queue_name)
        if queue is None:
            error = f"retry target queue {queue_name!r} no longer exists"
            log.warning("retry dead-lettered", queue=queue_name, error=error)
            unroutable = Delivery(
                queue=queue_name,
                body=message.body,
                headers=message.headers,
                redelivered=False,
                tag=None,
            )
            message = _Message(
                message.body, dead_letter_headers(unroutable, error=error, worker=RETRY_WORKER)
            )
            # The dead-letter queue is ours; if an operator deleted it, bring it back
            # rather than lose the body.
            queue = self._declare(self.dead_letter_queue)
        queue.push(message)


@asynccontextmanager
async def open_memory_broker(
    *, dead_letter_queue: str = DEAD_LETTER_QUEUE
) -> AsyncIterator[MemoryBroker]:
    """Open an in-memory broker with ``dead_letter_queue`` declared; close it on exit.

    The broker owns a nursery for the timers of ``retry_later``. Bodies still waiting
    there when it closes are lost with everything else: this broker is not durable.
    """
    broker = MemoryBroker(dead_letter_queue=dead_letter_queue)
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.run)
        try:
            yield broker
        finally:
            with trio.CancelScope(shield=True):
                await broker.aclose()
