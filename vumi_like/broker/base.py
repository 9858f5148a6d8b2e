"""The broker interface every worker talks to.

A broker is the small set of operations the connectors need from a message bus:

* ``declare_queue``: a durable queue bound to the direct exchange ``vumi`` with
  routing key = queue name, declared with no queue arguments so that vumi2 workers
  can declare the very same queue;
* ``publish``: a persistent publish that returns only once the broker has the
  message (publisher confirms), and raises if it could not be routed;
* ``consume``: deliveries of one queue, at most ``prefetch`` unsettled at a time;
* ``ack`` / ``requeue``: settle a delivery;
* ``dead_letter``: park a delivery's raw body, with headers naming the source queue,
  the error and the worker, on the dead-letter queue, then ack it;
* ``retry_later``: hand a body to the broker to bring back onto a queue after a
  delay. The broker holds it, not a sleeping task, so a retry survives a worker
  restart and occupies no prefetch slot.

Operators need a few more, which no worker should call: a ``BrokerInspector`` is a
broker that can also

* ``get``: take one ready delivery without a consumer (``vumi-like dlq``);
* ``purge``: drop a queue's ready messages;
* ``delete_queue``: delete a queue and what is in it.

They live apart so that the interface a worker is given stays the small one above:
``open_broker`` promises a ``Broker``, ``open_inspector`` a ``BrokerInspector``. Both
implementations are inspectors, so the two hand out the same kind of object; the
split is in what each caller is promised, and so in what the type checker lets it call.

``memory.py`` and ``rabbitmq.py`` implement both side by side and pass one contract
test suite (``tests/broker/test_contract.py``). All methods are called from trio.
"""

from __future__ import annotations

import abc
import math
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import attrs

EXCHANGE = "vumi"
DEAD_LETTER_QUEUE = "vumi.dead_letter"
DELAY_PREFIX = "vumi.delay."

# Headers the gateway sets. vumi2 ignores AMQP headers, so they never break interop.
HEADER_ATTEMPT = "x-vumi-attempt"
HEADER_DL_ID = "x-vumi-dl-id"
HEADER_DL_QUEUE = "x-vumi-dl-source-queue"
HEADER_DL_ERROR = "x-vumi-dl-error"
HEADER_DL_WORKER = "x-vumi-dl-worker"
HEADER_DL_TIME = "x-vumi-dl-time"

Headers = Mapping[str, Any]


class BrokerError(Exception):
    """The broker could not do what was asked (connection lost for too long, closed...)."""


class PublishError(BrokerError):
    """A publish was refused: nacked by the broker or unroutable (no queue bound)."""


@attrs.frozen(eq=False)
class Delivery:
    """One message handed to a consumer, to be settled exactly once.

    ``tag`` is the broker implementation's handle on it; nothing outside the broker
    looks inside.
    """

    queue: str
    body: bytes
    headers: Headers
    redelivered: bool
    tag: Any = attrs.field(repr=False)

    @property
    def attempt(self) -> int:
        """How many times this body came back through ``retry_later`` (0 the first time)."""
        value = self.headers.get(HEADER_ATTEMPT, 0)
        return value if isinstance(value, int) else 0


class Subscription(abc.ABC):
    """Deliveries of one queue. Iterate to receive; leave the context to stop."""

    queue: str

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Delivery]: ...


def delay_bucket_ms(delay: float) -> int:
    """Round a delay to two significant digits of milliseconds (at least 1 ms).

    Each distinct delay is one broker-held queue, so delays that differ only by
    jitter noise share a queue; the error is at most 5 % of the delay.
    """
    ms = max(1, round(delay * 1000))
    if ms < 100:
        return ms
    digits = int(math.log10(ms)) - 1
    return round(ms, -digits)


def dead_letter_headers(
    delivery: Delivery, *, error: str, worker: str, now: datetime | None = None
) -> dict[str, Any]:
    """The headers of a dead letter: the original headers plus where and why it died."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    headers = dict(delivery.headers)
    headers.update(
        {
            HEADER_DL_ID: uuid.uuid4().hex[:12],
            HEADER_DL_QUEUE: delivery.queue,
            HEADER_DL_ERROR: error[:4000],
            HEADER_DL_WORKER: worker,
            HEADER_DL_TIME: stamp,
        }
    )
    return headers


class Broker(abc.ABC):
    """A message bus, seen from trio. See the module docstring for the promises.

    ``dead_letter_queue`` is declared when the broker opens (default
    ``vumi.dead_letter``); a deployment or a test may name its own.
    """

    dead_letter_queue: str = DEAD_LETTER_QUEUE

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the broker is reachable right now (``/health`` reports this)."""

    @abc.abstractmethod
    async def declare_queue(self, queue: str) -> None:
        """Declare durable ``queue`` bound to ``vumi`` with routing key ``queue``. Idempotent."""

    @abc.abstractmethod
    async def publish(
        self, routing_key: str, body: bytes, *, headers: Headers | None = None
    ) -> None:
        """Publish a persistent message to ``vumi``; return once the broker confirmed it.

        Raises ``PublishError`` if no queue is bound to ``routing_key`` or the broker
        nacks it, ``BrokerError`` if the broker stays unreachable past the timeout.
        """

    @abc.abstractmethod
    def consume(self, queue: str, *, prefetch: int) -> AbstractAsyncContextManager[Subscription]:
        """Receive deliveries from ``queue``, at most ``prefetch`` (>= 1) unsettled at once.

        Raises ``BrokerError`` if the queue does not exist. If the broker closes under
        a live subscription, iterating it raises ``BrokerError``.

        Leaving the context stops new deliveries. Deliveries received but not settled
        by then are requeued (the memory broker does so at once; RabbitMQ when the
        channel closes), so nothing is lost.
        """

    @abc.abstractmethod
    def ack(self, delivery: Delivery) -> None:
        """Settle ``delivery`` as done. Non-blocking; acks are batched.

        An ack for a delivery whose channel has gone (reconnect) is dropped: the
        broker redelivers that message, so handlers must tolerate a second delivery.
        """

    @abc.abstractmethod
    def requeue(self, delivery: Delivery) -> None:
        """Give ``delivery`` back to the queue for another consumer. Non-blocking."""

    async def dead_letter(self, delivery: Delivery, *, error: str, worker: str) -> None:
        """Park ``delivery``'s raw body on the dead-letter queue, then ack it.

        The ack follows the confirmed publish, so a crash in between leaves a
        duplicate, never a loss.
        """
        await self.publish(
            self.dead_letter_queue,
            delivery.body,
            headers=dead_letter_headers(delivery, error=error, worker=worker),
        )
        self.ack(delivery)

    @abc.abstractmethod
    async def retry_later(
        self, queue: str, body: bytes, *, delay: float, headers: Headers | None = None
    ) -> None:
        """Have the broker put ``body`` back on ``queue`` after ``delay`` seconds.

        Returns once the broker holds it. The delay is rounded by
        ``delay_bucket_ms``. Callers set ``HEADER_ATTEMPT`` themselves.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the broker. Unsettled deliveries go back to their queues."""


class BrokerInspector(Broker):
    """A broker with the operator-only operations too (``vumi-like dlq``, tests).

    Open one with ``open_inspector``; workers are given a plain ``Broker``.
    """

    @abc.abstractmethod
    async def get(self, queue: str) -> Delivery | None:
        """Take one ready delivery from ``queue`` without a consumer, or ``None``.

        Settle it with ``ack``/``requeue``. ``BrokerError`` if the queue does not exist.
        """

    @abc.abstractmethod
    async def purge(self, queue: str) -> int:
        """Drop every ready message in ``queue``; return how many. ``BrokerError`` if missing."""

    @abc.abstractmethod
    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` and what is in it. Deleting a missing queue does nothing."""
