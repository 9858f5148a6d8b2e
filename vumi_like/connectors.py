"""Connectors: a worker's named ends of the ``<name>.inbound/.outbound/.event`` queues.

* ``ReceiveInboundConnector`` (applications, and routers on their transport side)
  consumes ``<name>.inbound`` and ``<name>.event`` and publishes ``<name>.outbound``.
* ``ReceiveOutboundConnector`` (transports, and routers on their application side)
  consumes ``<name>.outbound`` and publishes ``<name>.inbound`` and ``<name>.event``.

Queue names and the envelopes on them are vumi2's, so a vumi2 worker can be the
other end of any connector.

Delivery promises, kept here for every handler:

* at-least-once: a delivery is acked only after its handler returned. Publishes
  return only once confirmed, so everything the handler published is safe first.
  A crash at any point leaves the delivery unacked and the broker redelivers it.
* nothing is lost: a body that does not decode, or a handler that raises, sends the
  raw body to the dead-letter queue with headers naming the queue, the error and
  the worker, and only then acks. The connector keeps consuming.
* a handler that raises ``RetryLater(delay)`` (``vumi_like.retry``) has its delivery
  handed to the broker, to come back on the same queue after ``delay`` seconds with its
  attempt number one higher, and the original acked. The body goes back exactly as it
  was received, so the consuming middlewares see it next time as they did this time.
  A handler that declares a parameter named ``attempt`` is given that number (0 the
  first time), and one named ``redelivered`` whether the broker delivered this body
  before without an ack (a worker that handled it may have died part-way); nothing
  about a delivery is found by ambient lookup.
* a handler that raises ``ServiceUnavailable`` (its store or cache cannot be reached)
  has its delivery brought back the same way, with the same attempt number, after a
  delay that grows with the failures in a row on this connector (0.25 s doubling, at
  most ``OUTAGE_DELAY_MAX``), however long the outage: the envelope is not at fault,
  and dead-lettering would make every message of an outage an operator's chore.
* ``close`` stops new deliveries, gives in-flight handlers ``shutdown_timeout``
  seconds, then leaves: whatever was not acked goes back to the queue. ``pause`` does
  the same but can be undone by ``resume`` (a transport whose provider is down stops
  taking outbound until it is back, leaving it queued for other replicas or later).

Filters: the worker hands each connector, per kind of envelope, the functions its
middlewares apply to that kind on this connector (``vumi_like.middlewares``). They run
in order on every envelope of that kind consumed (after decoding, before the handler;
one that raises fails the delivery as the handler would) and published (before
encoding). A connector without any pays nothing per envelope.

Publishing: a publish the broker refuses, or cannot take in time, raises
``PublishFailed``, so a worker handles a refused publish without knowing the broker.

Concurrency: each consumed queue has ``concurrency`` deliveries in flight at most,
which is also its prefetch, so the broker never hands us more than we will run.
Handlers may be plain functions or coroutine functions.
"""

from __future__ import annotations

import inspect
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import structlog
import trio
from pydantic import BaseModel, ValidationError

from vumi_like.broker import Broker, BrokerError, Delivery
from vumi_like.broker.base import HEADER_ATTEMPT
from vumi_like.messages import ENVELOPE_KINDS, EnvelopeKind, Event, InvalidEnvelope, Message
from vumi_like.metrics import QueueMetrics
from vumi_like.retry import RetryLater, ServiceUnavailable, Unprocessable
from vumi_like.sentry import report_exception
from vumi_like.validation import describe_validation_error

log = structlog.get_logger(__name__)

E = TypeVar("E", Message, Event)
# A handler takes the envelope, and its attempt number if it has a parameter `attempt`,
# and whether the broker redelivered it if it has a parameter `redelivered`.
Handler = Callable[..., Awaitable[None] | None]
# A filter (a middleware's bound handle_inbound / handle_outbound / handle_event) takes
# the envelope and the connector's name and returns the envelope to carry on with.
EnvelopeFilter = Callable[[Any, str], Awaitable[Any]]
Filters = Mapping[EnvelopeKind, Sequence[EnvelopeFilter]]

OUTAGE_DELAY_BASE = 0.25  # seconds before a delivery that met an outage comes back
OUTAGE_DELAY_MAX = 10.0


class PublishFailed(BrokerError):
    """The broker refused a publish, or could not take it in time; nothing was published."""


def _wanted(handler: Handler) -> tuple[bool, bool]:
    """Whether ``handler`` has a parameter ``attempt``, and one ``redelivered``."""
    try:
        parameters = inspect.signature(handler).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False, False
    return "attempt" in parameters, "redelivered" in parameters


class _Consumer:
    """One consumed queue: its decoder, filters, handler and the scope that stops it."""

    def __init__(
        self,
        queue: str,
        decode: Callable[[bytes], Any],
        handler: Handler,
        filters: Sequence[EnvelopeFilter] = (),
    ) -> None:
        self.queue = queue
        self.decode = decode
        self.handler = handler
        self.wants_attempt, self.wants_redelivered = _wanted(handler)
        self.filters = tuple(filters)
        self.receive_scope = trio.CancelScope()
        self.metrics: QueueMetrics | None = None


class BaseConnector:
    def __init__(
        self,
        broker: Broker,
        name: str,
        *,
        worker_name: str = "",
        concurrency: int = 20,
        shutdown_timeout: float = 10.0,
        filters: Filters | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.broker = broker
        self.name = name
        self._filters: dict[EnvelopeKind, tuple[EnvelopeFilter, ...]] = {
            kind: tuple((filters or {}).get(kind, ())) for kind in ENVELOPE_KINDS
        }
        self.worker_name = worker_name or name
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        self._consumers: list[_Consumer] = []
        self._finished = trio.Event()
        self._started = False
        self._closing = False
        self._resumed = trio.Event()
        self._resumed.set()
        self._nursery: trio.Nursery | None = None
        self._metrics: dict[str, QueueMetrics] = {}
        self._outage_streak = 0  # handlers in a row that met ServiceUnavailable

    def _queue(self, kind: str) -> str:
        return f"{self.name}.{kind}"

    def metrics_for(self, queue: str) -> QueueMetrics:
        metrics = self._metrics.get(queue)
        if metrics is None:
            metrics = self._metrics[queue] = QueueMetrics(self.worker_name, self.name, queue)
        return metrics

    async def _publish(self, kind: EnvelopeKind, envelope: Message | Event) -> None:
        if filters := self._filters[kind]:
            envelope = await _through_filters(filters, envelope, self.name)
        await self._publish_body(self._queue(kind), envelope.to_json())

    async def _publish_body(self, queue: str, body: bytes) -> None:
        try:
            await self.broker.publish(queue, body)
        except BrokerError as exc:
            raise PublishFailed(f"publishing to {queue!r} failed: {exc}") from exc
        self.metrics_for(queue).published.inc()

    async def _setup(
        self,
        nursery: trio.Nursery,
        consumers: list[_Consumer],
        publishes_to: list[str],
        start: bool,
    ) -> None:
        if self._consumers:
            raise RuntimeError(f"connector {self.name!r} is already set up")
        # Declare what we publish to as well as what we consume, so nothing we
        # publish before the other end starts is unroutable.
        for queue in {*(c.queue for c in consumers), *publishes_to}:
            await self.broker.declare_queue(queue)
        for consumer in consumers:
            consumer.metrics = self.metrics_for(consumer.queue)
        self._consumers = consumers
        self._nursery = nursery
        if start:
            await self.start()

    async def start(self) -> None:
        """Start consuming (after ``setup(..., start=False)``)."""
        if self._nursery is None:
            raise RuntimeError(f"connector {self.name!r} is not set up")
        if self._started:
            raise RuntimeError(f"connector {self.name!r} is already started")
        self._started = True
        await self._nursery.start(self._run)

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for consumer in self._consumers:
                    await nursery.start(self._consume, consumer)
                task_status.started()
        finally:
            self._finished.set()

    async def _consume(
        self, consumer: _Consumer, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        starting = True
        while not self._closing:
            if not self._resumed.is_set():
                if starting:
                    task_status.started()
                    starting = False
                await self._resumed.wait()
                continue
            consumer.receive_scope = trio.CancelScope()
            async with (
                self.broker.consume(consumer.queue, prefetch=self.concurrency) as subscription,
                trio.open_nursery() as handlers,
            ):
                if starting:
                    task_status.started()
                    starting = False
                with consumer.receive_scope:
                    async for delivery in subscription:
                        handlers.start_soon(self._handle, consumer, delivery)
                # Stopped or paused: in-flight handlers get a bounded time to finish.
                # Those cancelled leave their delivery unacked, to be redelivered, as
                # does leaving the subscription for those received but not started.
                handlers.cancel_scope.deadline = trio.current_time() + self.shutdown_timeout
            if not consumer.receive_scope.cancel_called:
                return  # the subscription ended by itself (its queue went): as before

    async def _handle(self, consumer: _Consumer, delivery: Delivery) -> None:
        metrics = consumer.metrics
        assert metrics is not None
        metrics.consumed.inc()
        started = time.perf_counter()
        try:
            envelope = consumer.decode(delivery.body)
        except InvalidEnvelope as exc:
            ids = _ids_in_raw(delivery.body)
            await self._dead_letter(delivery, f"invalid envelope: {exc}", metrics, ids)
            return
        try:
            if consumer.filters:
                envelope = await _through_filters(consumer.filters, envelope, self.name)
            if consumer.wants_attempt or consumer.wants_redelivered:
                about: dict[str, Any] = {}
                if consumer.wants_attempt:
                    about["attempt"] = delivery.attempt
                if consumer.wants_redelivered:
                    about["redelivered"] = delivery.redelivered
                result = consumer.handler(envelope, **about)
            else:
                result = consumer.handler(envelope)
            if inspect.isawaitable(result):
                await result
        except RetryLater as retry:
            await self._retry_later(delivery, retry, metrics, _envelope_ids(envelope))
            return
        except ServiceUnavailable as exc:
            put_off = self._outage_retry(exc, delivery.queue)
            await self._retry_later(delivery, put_off, metrics, _envelope_ids(envelope))
            return
        except Exception as exc:
            metrics.failed.inc()
            # Unprocessable has a reason, which the dead-lettering's warning gives:
            # anything else is a bug, worth its traceback.
            if not isinstance(exc, Unprocessable):
                log.exception(
                    "handler failed",
                    connector=self.name,
                    queue=delivery.queue,
                    **_envelope_ids(envelope),
                )
                report_exception(exc)
            error = f"{type(exc).__name__}: {exc}"
            await self._dead_letter(delivery, error, metrics, _envelope_ids(envelope))
            return
        finally:
            metrics.handler_seconds.observe(time.perf_counter() - started)
        self._outage_streak = 0
        self.broker.ack(delivery)

    def _outage_retry(self, exc: ServiceUnavailable, queue: str) -> RetryLater:
        """The put-off of a delivery whose handler could not reach a service."""
        self._outage_streak += 1
        delay = min(OUTAGE_DELAY_MAX, OUTAGE_DELAY_BASE * 2 ** min(self._outage_streak, 16))
        reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "service unavailable: retrying later",
            connector=self.name,
            queue=queue,
            error=reason,
            failures_in_a_row=self._outage_streak,
        )
        return RetryLater(delay * random.uniform(0.8, 1.2), reason, counts=False)

    async def _retry_later(
        self, delivery: Delivery, retry: RetryLater, metrics: QueueMetrics, ids: dict[str, str]
    ) -> None:
        """Have the broker hold ``delivery``'s body for ``retry.delay``, then ack it.

        The ack follows the broker's confirm, so a crash in between leaves a duplicate
        (the retry and the redelivered original), never a loss.
        """
        attempt = delivery.attempt + 1 if retry.counts else delivery.attempt
        where = {"connector": self.name, "queue": delivery.queue, **ids}
        # A put-off that is not a failure (counts=False) is routine: not a warning.
        (log.warning if retry.counts else log.debug)(
            "retrying later", reason=retry.reason, attempt=attempt, delay=retry.delay, **where
        )
        try:
            await self.broker.retry_later(
                delivery.queue, delivery.body, delay=retry.delay, headers={HEADER_ATTEMPT: attempt}
            )
        except BrokerError as exc:
            # Left unacked: the broker redelivers it once it is reachable again.
            log.error("scheduling the retry failed", error=str(exc), **where)
            return
        metrics.retried.inc()
        self.broker.ack(delivery)

    async def _dead_letter(
        self, delivery: Delivery, error: str, metrics: QueueMetrics, ids: dict[str, str]
    ) -> None:
        where = {"connector": self.name, "queue": delivery.queue, **ids}
        log.warning("dead-lettering", error=error, **where)
        try:
            await self.broker.dead_letter(delivery, error=error, worker=self.worker_name)
        except BrokerError as exc:
            # Left unacked: the broker redelivers it once it is reachable again.
            log.error("dead-lettering failed", error=str(exc), **where)
            return
        metrics.dead_lettered.inc()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def pause(self) -> None:
        """Stop taking deliveries until ``resume``: in-flight handlers finish (bounded by
        ``shutdown_timeout``); deliveries received but not yet handled go back to the
        queue, for another replica or for later. Publishing is unaffected."""
        if self._resumed.is_set():
            self._resumed = trio.Event()
            for consumer in self._consumers:
                consumer.receive_scope.cancel()

    def resume(self) -> None:
        """Take deliveries again after ``pause``."""
        self._resumed.set()

    async def close(self) -> None:
        """Stop new deliveries; wait (bounded) for in-flight handlers; requeue the rest."""
        self._closing = True
        for consumer in self._consumers:
            consumer.receive_scope.cancel()
        self._resumed.set()
        if self._started:
            await self._finished.wait()


class ReceiveInboundConnector(BaseConnector):
    """Consumes ``<name>.inbound`` and ``<name>.event``; publishes ``<name>.outbound``.

    Without handlers it only publishes: for a worker that sends on a connector whose
    inbound and events another worker handles (the Messaging API and its event
    dispatcher).
    """

    async def setup(
        self,
        nursery: trio.Nursery,
        *,
        inbound_handler: Handler | None,
        event_handler: Handler | None,
        start: bool = True,
    ) -> None:
        """Declare the queues and (unless ``start=False``) start consuming, in ``nursery``."""
        if (inbound_handler is None) != (event_handler is None):
            raise ValueError("give both handlers (consume inbound and events) or neither")
        consumers = []
        if inbound_handler is not None and event_handler is not None:
            consumers = [
                _Consumer(
                    self._queue("inbound"),
                    Message.from_json,
                    inbound_handler,
                    self._filters["inbound"],
                ),
                _Consumer(
                    self._queue("event"),
                    Event.from_json,
                    event_handler,
                    self._filters["event"],
                ),
            ]
        await self._setup(nursery, consumers, [self._queue("outbound")], start)

    async def publish_outbound(self, message: Message) -> None:
        await self._publish("outbound", message)


class ReceiveOutboundConnector(BaseConnector):
    """Consumes ``<name>.outbound``; publishes ``<name>.inbound`` and ``<name>.event``."""

    async def setup(
        self, nursery: trio.Nursery, *, outbound_handler: Handler, start: bool = True
    ) -> None:
        """Declare the queues and (unless ``start=False``) start consuming, in ``nursery``."""
        await self._setup(
            nursery,
            [
                _Consumer(
                    self._queue("outbound"),
                    Message.from_json,
                    outbound_handler,
                    self._filters["outbound"],
                )
            ],
            [self._queue("inbound"), self._queue("event")],
            start,
        )

    async def publish_inbound(self, message: Message) -> None:
        await self._publish("inbound", message)

    async def publish_event(self, event: Event) -> None:
        await self._publish("event", event)


class JobConnector(BaseConnector):
    """A work queue of typed jobs: the queue named ``name``, bodies ``job_model`` JSON.

    For work a worker hands itself or another worker that is not a vumi envelope
    (a webhook to deliver, say), with every promise the envelope connectors keep:
    acked after the handler, dead-lettered with the reason when the body does not
    validate or the handler raises, ``RetryLater`` held by the broker, ``attempt``
    given to a handler that asks for it. Jobs pass through no middlewares. A job
    model may define ``log_ids() -> dict[str, str]`` to name itself in log lines.
    """

    def __init__(self, broker: Broker, name: str, job_model: type[BaseModel], **options: Any):
        super().__init__(broker, name, **options)
        self.job_model = job_model

    def _decode(self, body: bytes) -> BaseModel:
        try:
            return self.job_model.model_validate_json(body)
        except ValidationError as exc:
            raise InvalidEnvelope(
                [("job", describe_validation_error(exc, subject="the body"))], "job"
            ) from None

    async def setup(
        self, nursery: trio.Nursery, *, handler: Handler | None = None, start: bool = True
    ) -> None:
        """Declare the queue and, given a ``handler``, consume it (unless ``start=False``)."""
        consumers = [_Consumer(self.name, self._decode, handler)] if handler else []
        await self._setup(nursery, consumers, [self.name], start)

    async def publish(self, job: BaseModel) -> None:
        """Put ``job`` on the queue; returns once the broker has it (``PublishFailed`` if not)."""
        if not isinstance(job, self.job_model):
            raise TypeError(f"expected a {self.job_model.__name__}, got {type(job).__name__}")
        await self._publish_body(self.name, job.model_dump_json().encode())


# An envelope is a few kB: a body past this is not parsed again only to name its ids.
ID_SCAN_BYTES = 64 * 1024


def _ids_in_raw(body: bytes) -> dict[str, str]:
    """The ids an undecodable body still names, for the log line about it (none for a
    body over ``ID_SCAN_BYTES``)."""
    if len(body) > ID_SCAN_BYTES:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    if "event_id" in data:
        ids = {"event_id": data.get("event_id"), "message_id": data.get("user_message_id")}
    else:
        ids = {"message_id": data.get("message_id")}
    return {key: value for key, value in ids.items() if isinstance(value, str)}


def _envelope_ids(envelope: Any) -> dict[str, str]:
    if isinstance(envelope, Event):
        return {"event_id": envelope.event_id, "message_id": envelope.user_message_id}
    if isinstance(envelope, Message):
        return {"message_id": envelope.message_id}
    log_ids = getattr(envelope, "log_ids", None)
    return log_ids() if callable(log_ids) else {}


async def _through_filters(
    filters: Sequence[EnvelopeFilter], envelope: Message | Event, connector_name: str
) -> Message | Event:
    """``envelope`` as the filters, in order, leave it."""
    for handle in filters:
        result = await handle(envelope, connector_name)
        # A handler that forgets to return would otherwise fail far from its cause.
        if not isinstance(result, type(envelope)):
            raise TypeError(
                f"middleware {handle.__qualname__} returned {type(result).__name__}, "
                f"not {type(envelope).__name__}"
            )
        envelope = result
    return envelope
