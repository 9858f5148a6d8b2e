"""RabbitMQ broker: aio-pika on a private asyncio loop in an I/O thread, bridged to trio.

The broker is four ideas, one module each:

* ``bridge.py``: why aio-pika runs in a thread of its own, and how requests and
  results cross between it and trio in batches, with wake-ups only on the empty ->
  non-empty edge;
* ``aiormq_internals.py``: the publish and ack fast path that writes a pass's frames
  straight onto aiormq's channels (the only code that touches aiormq's internals,
  checked at import);
* ``reconnect.py``: the robust connection and its growing wait between attempts;
* this module: the broker itself, on the I/O side of the bridge: connecting,
  declaring queues and delay buckets, publishing (fast path, or aiormq's own call
  when the fast path steps aside), consuming, the inspector's operations, closing.

Publishing: a publish is one ``Publish`` request. The I/O side adds it to the pass's
batch (fast path), or, when the channel is busy, closing or gone, spawns a task that
publishes with aiormq's ``basic_publish`` and waits out a reconnect (up to
``publish_timeout``) instead of failing at once. Either way the trio task waits for
the confirm of its own message only, so confirms are pipelined. A confirm lost to a
closing channel means the publish is made again once the channel is back: the broker
may have had it, so it may arrive twice (at-least-once; handlers tolerate a second
delivery). A nack is not final either: it is the broker unable to take the message
just now (a quorum queue electing a new leader after losing a node), so the message
is published again after a short pause, until ``publish_timeout``.

``retry_later`` is one ``Retry`` request too, not a declare round trip then a
publish: when its delay bucket is already declared it is a publish to the bucket's
exchange on the fast path; otherwise a task declares the bucket (once, however many
retries wait for it) then publishes.

Acks: a delivery remembers the aiormq channel it came on. After a reconnect that
channel is closed and its delivery tags are void, so the ack is dropped and RabbitMQ
redelivers the message (handlers must tolerate duplicates). ``connected`` follows
the connection's close and reconnect callbacks, so ``/health`` says ``down`` during
an outage.

Queue type: ``classic`` (the default, what vumi2 declares) or ``quorum`` (replicated
over a cluster), for every queue the broker declares: the worker's queues, the
dead-letter queue and the delay buckets. docs/cluster.md weighs the two.

Shutdown: consumers are cancelled and their channels closed by the subscription
contexts (RabbitMQ requeues what was not acked), then the connection closes (within
``close_timeout``), the loop stops and the thread is joined. An unexpected error on
the I/O side fails every waiting trio call with ``BrokerError`` (``Bridge.fail``)
rather than leaving it hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aio_pika
import aiormq
import structlog
import trio
from aio_pika.abc import AbstractRobustChannel
from aiormq import spec

from vumi_like.broker.aiormq_internals import Batch, deliver_inline, read_frames_buffered
from vumi_like.broker.base import (
    DEAD_LETTER_QUEUE,
    DELAY_PREFIX,
    EXCHANGE,
    BrokerError,
    BrokerInspector,
    Delivery,
    Headers,
    PublishError,
    Subscription,
    delay_bucket_ms,
)
from vumi_like.broker.bridge import Bridge, Call, Pending, Publish, Request, Retry, Settle
from vumi_like.broker.reconnect import CONNECT_ERRORS, CONNECTION_ERRORS, BackoffConnection
from vumi_like.config import QueueType, split_amqp_urls
from vumi_like.redaction import redact_text

log = structlog.get_logger(__name__)


# Every connection this process opens reads its frames through the fast path.
read_frames_buffered()


async def _aiormq_channel(channel: AbstractRobustChannel) -> aiormq.Channel:
    """The aiormq channel under ``channel``, as its concrete class."""
    underlay = await channel.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    return underlay


class _RabbitSubscription(Subscription):
    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.send, self.receive = trio.open_memory_channel[Delivery](math.inf)
        self.channel: AbstractRobustChannel | None = None
        self.broker_closed = False

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self.receive.receive()
        except trio.EndOfChannel:
            if self.broker_closed:
                raise BrokerError(
                    f"the broker closed under the consumer of {self.queue!r}"
                ) from None
            raise StopAsyncIteration from None


class RabbitMQBroker(BrokerInspector):
    """The broker, and the inspector, on RabbitMQ: open it with ``open_rabbitmq_broker``.

    Every wait it makes has a deadline set here, in seconds: ``connect_timeout`` for
    the first connection, ``publish_timeout`` for a publish that waits out an outage,
    ``reconnect_interval`` and ``max_reconnect_interval`` for the growing wait between
    reconnect attempts, ``close_timeout`` for the clean close in ``aclose`` (after it,
    the I/O thread is stopped anyway and RabbitMQ requeues what was not acked).

    ``url`` may name several nodes of a cluster, separated by commas: the broker
    connects to the first that answers and fails over to the next when the connection
    is lost (see ``reconnect.py``). ``queue_type`` is ``classic`` or ``quorum``.
    """

    def __init__(
        self,
        url: str,
        *,
        dead_letter_queue: str = DEAD_LETTER_QUEUE,
        connect_timeout: float = 10.0,
        publish_timeout: float = 30.0,
        reconnect_interval: float = 1.0,
        max_reconnect_interval: float = 30.0,
        close_timeout: float = 10.0,
        queue_type: QueueType = "classic",
    ) -> None:
        if queue_type not in QUEUE_ARGUMENTS:
            raise ValueError(f"queue_type should be classic or quorum, not {queue_type!r}")
        self.url = url
        self.urls = split_amqp_urls(url)
        self.queue_type = queue_type
        # Quorum delay buckets are named apart: a bucket cannot change type, and classic
        # and quorum workers may share one broker (vumi.delay.<ms>, vumi.delay.quorum.<ms>).
        self._bucket_prefix = DELAY_PREFIX + ("quorum." if queue_type == "quorum" else "")
        self.dead_letter_queue = dead_letter_queue
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.reconnect_interval = reconnect_interval
        self.max_reconnect_interval = max_reconnect_interval
        self.close_timeout = close_timeout
        self._connected = False
        self._closed = False
        self._closing = False  # set in the I/O thread when aclose begins
        self._subscriptions: set[_RabbitSubscription] = set()
        self._bridge = Bridge(
            self._io_drain, on_failure=self._close_subscriptions, thread_name="vumi-like-amqp"
        )

        # I/O side; touched only from the I/O thread once started
        self._loop = self._bridge.loop
        self._connection: BackoffConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        # The channel messages are published on (``_channel`` until a nack replaces
        # it), and its concrete aiormq channel: the fast path uses its bookkeeping.
        self._publisher: AbstractRobustChannel | None = None
        self._publisher_since = 0.0  # loop time the publisher was last replaced
        self._publish_channel: aiormq.Channel | None = None
        self._reconnected: asyncio.Event | None = None
        # Queues and delay buckets declared through this connection (aio-pika's robust
        # channel declares them again after a reconnect).
        self._declared: set[str] = set()
        # Delay buckets being declared: the retries waiting for one share its task.
        self._declaring: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ trio side

    @property
    def connected(self) -> bool:
        return self._connected and not self._closed

    async def start(self) -> None:
        self._bridge.start()
        try:
            await self._call(self._io_connect)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._bridge.stop()
            raise

    async def _request(self, request: Publish | Retry | Call) -> Any:
        if self._closed:
            raise BrokerError("the broker is closed")
        return await self._bridge.request(request)

    async def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run coroutine function ``fn(*args)`` on the I/O loop; return its result here."""
        return await self._request(Call(fn, args, Pending()))

    async def declare_queue(self, queue: str) -> None:
        await self._call(self._io_declare_queue, queue)

    async def publish(
        self, routing_key: str, body: bytes, *, headers: Headers | None = None
    ) -> None:
        await self._request(Publish(EXCHANGE, routing_key, body, headers, Pending()))

    def ack(self, delivery: Delivery) -> None:
        if not self._closed:
            self._bridge.submit(Settle(delivery.tag, True))

    def requeue(self, delivery: Delivery) -> None:
        if not self._closed:
            self._bridge.submit(Settle(delivery.tag, False))

    async def retry_later(
        self, queue: str, body: bytes, *, delay: float, headers: Headers | None = None
    ) -> None:
        delay_ms = delay_bucket_ms(delay)
        publish = Publish(f"{self._bucket_prefix}{delay_ms}", queue, body, headers, Pending())
        await self._request(Retry(publish, delay_ms))

    @contextlib.asynccontextmanager
    async def consume(self, queue: str, *, prefetch: int) -> AsyncIterator[Subscription]:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        subscription = _RabbitSubscription(queue)
        await self._call(self._io_consume, subscription, prefetch)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            subscription.send.close()
            with trio.CancelScope(shield=True):
                if not self._closed:
                    # Closing the channel makes RabbitMQ requeue every delivery of this
                    # subscription that was not acked, buffered ones included.
                    await self._call(self._io_cancel, subscription)

    async def purge(self, queue: str) -> int:
        return int(await self._call(self._io_purge, queue))

    async def delete_queue(self, queue: str) -> None:
        await self._call(self._io_delete_queue, queue)

    async def get(self, queue: str) -> Delivery | None:
        return await self._call(self._io_get, queue)

    async def aclose(self) -> None:
        if self._closed:
            return
        try:
            with trio.move_on_after(self.close_timeout):
                await self._call(self._io_close)
        finally:
            self._closed = True
            self._close_subscriptions()
            await self._bridge.stop()

    def _close_subscriptions(self, _: BaseException | None = None) -> None:
        """End every consumer: iterating one raises ``BrokerError`` from now on.

        At close, and when the I/O side failed: a worker must stop loudly, not wait for
        deliveries forever.
        """
        for subscription in self._subscriptions:
            subscription.broker_closed = True
            subscription.send.close()

    # ---------------------------------------------------------------- I/O thread

    def _io_drain(self, queue: deque[Request]) -> None:
        """Handle every pending request: one I/O pass, called by the bridge."""
        batch = Batch()
        while queue:
            request = queue.popleft()
            match request:
                case Publish():
                    self._io_publish_now(request, batch)
                case Settle():
                    batch.settle(request.tag, request.ack)
                case Retry():
                    self._io_retry(request, batch)
                case Call():
                    # What came before a call goes before it (a consumer's channel close).
                    self._io_write(batch)
                    self._bridge.spawn(self._io_run_call(request))
        self._io_write(batch)

    def _io_write(self, batch: Batch) -> None:
        """Write the pass's batch; acks and requeues it cannot write take aiormq's calls."""
        for channel, settles in batch.write():
            self._bridge.spawn(self._io_settle(channel, settles))

    async def _io_run_call(self, call: Call) -> None:
        try:
            result = await call.fn(*call.args)
        except Exception as exc:
            self._bridge.to_trio_soon(call.pending.settle, (None, _as_broker_error(exc)))
        else:
            self._bridge.to_trio_soon(call.pending.settle, (result, None))

    async def _io_settle(self, channel: aiormq.Channel, settles: list[tuple[int, bool]]) -> None:
        """The slow path of a batch's acks and requeues: aiormq's own calls."""
        for delivery_tag, ack in settles:
            if channel.is_closed:
                return  # void after a reconnect: RabbitMQ redelivers
            try:
                if ack:
                    await channel.basic_ack(delivery_tag, wait=False)
                else:
                    await channel.basic_nack(delivery_tag, requeue=True, wait=False)
            except CONNECTION_ERRORS:
                return

    async def _io_open_connection(self) -> BackoffConnection:
        """A connection to the first node that answers, tried in the order given, all
        within ``connect_timeout``; the failover order then starts from that node."""
        deadline = self._loop.time() + self.connect_timeout
        problems = []
        for start, url in enumerate(self.urls):
            connection = BackoffConnection(
                [*self.urls[start:], *self.urls[:start]],
                reconnect_interval=self.reconnect_interval,
            )
            remaining = deadline - self._loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(connection.connect(), timeout=remaining)
            except CONNECT_ERRORS as exc:
                with contextlib.suppress(Exception):
                    await connection.close()
                problems.append(f"{redact_text(url)}: {exc or type(exc).__name__}")
                continue
            return connection
        if len(problems) == 1:
            raise BrokerError(f"cannot connect to {problems[0]}")
        raise BrokerError(f"cannot connect to any node: {'; '.join(problems)}")

    async def _io_connect(self) -> None:
        self._reconnected = asyncio.Event()
        self._connection = await self._io_open_connection()
        self._connection.max_reconnect_interval = self.max_reconnect_interval
        self._connection.close_callbacks.add(self._on_connection_lost)
        self._connection.reconnect_callbacks.add(self._on_reconnected)
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchange = await self._channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._publisher = self._channel
        self._publish_channel = await _aiormq_channel(self._channel)
        self._connected = True
        self._reconnected.set()
        try:
            await self._io_declare_queue(self.dead_letter_queue)
        except BaseException:
            await self._io_close()  # a clean close: not logged as a lost connection
            raise

    def _on_connection_lost(self, _: Any, exc: BaseException | None) -> None:
        if self._connected and not self._closing:
            log.warning("amqp connection lost", url=self._node_url(), error=repr(exc))
        self._connected = False
        assert self._reconnected is not None
        self._reconnected.clear()

    def _on_reconnected(self, _: Any) -> None:
        log.info("amqp connection restored", url=self._node_url())
        self._connected = True
        assert self._reconnected is not None
        self._reconnected.set()

    def _node_url(self) -> str:
        """The URL of the node connected to (or being tried), password masked."""
        connection = self._connection
        return redact_text(str(connection.url) if connection is not None else self.url)

    async def _io_declare_queue(self, queue: str) -> None:
        assert self._channel is not None and self._exchange is not None
        with self._queue_type_clash(queue):
            declared = await self._channel.declare_queue(
                queue, durable=True, arguments=QUEUE_ARGUMENTS[self.queue_type]
            )
        await declared.bind(self._exchange, routing_key=queue)
        self._declared.add(queue)

    @contextlib.contextmanager
    def _queue_type_clash(self, queue: str) -> Iterator[None]:
        """Turn RabbitMQ's refusal to redeclare ``queue`` with other arguments into one
        line an operator can act on (the usual cause: a queue declared as classic, then
        ``amqp.queue_type: quorum``, or the other way round)."""
        try:
            yield
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise BrokerError(
                f"queue {queue!r} exists with other arguments than a {self.queue_type} queue"
                f" has (amqp.queue_type: {self.queue_type}); a queue cannot change type:"
                f" set amqp.queue_type to what it is, or drain and delete it so that it is"
                f" declared again ({_reply_text(exc)})"
            ) from None

    def _io_retry(self, retry: Retry, batch: Batch) -> None:
        """A retry: a publish to its delay bucket, declared first if this is its first use."""
        if retry.publish.exchange in self._declared:
            self._io_publish_now(retry.publish, batch)
        else:
            self._bridge.spawn(self._io_declare_then_publish(retry))

    async def _io_declare_then_publish(self, retry: Retry) -> None:
        publish = retry.publish
        try:
            await self._io_declare_delay(publish.exchange, retry.delay_ms)
        except Exception as exc:
            self._bridge.to_trio_soon(publish.pending.settle, (None, _as_broker_error(exc)))
            return
        await self._io_publish(publish)

    async def _io_declare_delay(self, name: str, delay_ms: int) -> None:
        """Declare the delay bucket ``name`` for ``delay_ms``, once, however many wait."""
        if name in self._declared:
            return
        declaring = self._declaring.get(name)
        if declaring is None:
            declaring = self._loop.create_task(self._io_declare_bucket(name, delay_ms))
            self._declaring[name] = declaring
            declaring.add_done_callback(lambda _: self._declaring.pop(name, None))
        # Shielded: the retries waiting share the task, none of them owns it.
        await asyncio.shield(declaring)

    async def _io_declare_bucket(self, name: str, delay_ms: int) -> None:
        """Declare the delay bucket ``name``: messages published to it come back after
        ``delay_ms`` to the queue named by their routing key.

        Each bucket is a fanout exchange feeding a queue whose messages expire after
        ``delay_ms`` and are then dead-lettered to ``vumi``. A dead-lettered message
        keeps the routing key it was published with, and a fanout exchange ignores
        routing keys, so publishing to the bucket with routing key = target queue
        brings the message back onto the target queue when it expires. One queue-level
        TTL per bucket means every message in a bucket expires in arrival order: no
        message waits behind a longer-lived one at the head of the queue.
        """
        assert self._channel is not None
        exchange = await self._channel.declare_exchange(
            name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        with self._queue_type_clash(name):
            queue = await self._channel.declare_queue(
                name,
                durable=True,
                arguments={
                    **QUEUE_ARGUMENTS[self.queue_type],
                    **DELAY_ARGUMENTS[self.queue_type],
                    "x-message-ttl": delay_ms,
                    "x-dead-letter-exchange": EXCHANGE,
                },
            )
        await queue.bind(exchange)
        self._declared.add(name)

    def _io_publish_now(self, publish: Publish, batch: Batch) -> None:
        """Add ``publish`` to the pass's batch, or, if the fast path steps aside
        (see ``aiormq_internals``), publish it with aiormq's own call in a task."""
        if not batch.publish(
            self._publish_channel,
            publish.exchange,
            publish.routing_key,
            publish.body,
            publish.headers,
            functools.partial(self._io_confirmed, publish),
        ):
            self._bridge.spawn(self._io_publish(publish))

    def _io_confirmed(self, publish: Publish, error: BaseException | None) -> None:
        """aiormq settled the confirmation of a fast-path ``publish``: tell its waiter."""
        if error is None:
            self._bridge.to_trio_soon(publish.pending.settle, (None, None))
        elif isinstance(error, aiormq.exceptions.PublishError):
            outcome = (None, _unroutable(publish.exchange, publish.routing_key))
            self._bridge.to_trio_soon(publish.pending.settle, outcome)
        else:
            # A nack (DeliveryError): the broker cannot take the message now, publish
            # again after a pause (see ``_io_publish``). Or the channel went away
            # before the confirm: publish again once it is back (at-least-once; the
            # broker may have had it, handlers dedupe).
            self._bridge.spawn(self._io_publish(publish))

    async def _io_publish(self, publish: Publish) -> None:
        """Publish with aiormq's ``basic_publish``, waiting out a reconnect or a nack
        (the slow path), up to ``publish_timeout``.

        A nack means the broker could not take the message just now: a quorum queue
        has no leader while the cluster elects one after losing a node, or a
        reject-publish queue is full. Both pass, so the message is published again
        after a pause that doubles from 50 ms up to 1 s; only when ``publish_timeout``
        runs out is the publish refused (``PublishError``).
        """
        exchange, routing_key = publish.exchange, publish.routing_key
        properties = spec.Basic.Properties(
            delivery_mode=2,
            content_type="application/json",
            headers=dict(publish.headers) if publish.headers else None,
        )
        deadline = self._loop.time() + self.publish_timeout
        pause = 0.05
        try:
            while True:
                try:
                    channel = self._publish_channel
                    if channel is None or channel.is_closed:
                        publisher = self._publisher or self._channel
                        assert publisher is not None
                        channel = self._publish_channel = await _aiormq_channel(publisher)
                    confirm = await channel.basic_publish(
                        publish.body,
                        exchange=exchange,
                        routing_key=routing_key,
                        properties=properties,
                        mandatory=True,
                        wait=False,
                    )
                except aiormq.exceptions.PublishError:
                    raise _unroutable(exchange, routing_key) from None
                except aiormq.exceptions.DeliveryError:
                    await self._io_replace_publisher(channel)
                    pause = await self._wait_after_nack(deadline, routing_key, pause)
                    continue
                except CONNECTION_ERRORS as exc:
                    await self._wait_reconnect(deadline, exc)
                    continue
                if isinstance(confirm, spec.Basic.Nack):
                    await self._io_replace_publisher(channel)
                    pause = await self._wait_after_nack(deadline, routing_key, pause)
                    continue
                break
        except BaseException as exc:
            self._bridge.to_trio_soon(publish.pending.settle, (None, _as_broker_error(exc)))
        else:
            self._bridge.to_trio_soon(publish.pending.settle, (None, None))

    async def _io_replace_publisher(self, nacked: aiormq.Channel | None) -> None:
        """Publish on a new channel from now on, if ``nacked`` is still the one in use.

        After a quorum queue's leader moves, RabbitMQ can go on nacking every publish
        on a channel that published while the queue had no leader, long after a new
        leader is elected; a new channel publishes normally. The old channel is closed
        5 s later, once its outstanding confirms have come back (any that have not are
        published again, as after a lost channel).
        """
        if nacked is None or nacked is not self._publish_channel or self._connection is None:
            return
        if self._loop.time() - self._publisher_since < 1.0:
            return  # a full reject-publish queue nacks on any channel: no churn
        self._publisher_since = self._loop.time()
        old, self._publisher = self._publisher, None
        self._publish_channel = None  # meanwhile publishes go through ``_channel``
        try:
            publisher = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self._publish_channel = await _aiormq_channel(publisher)
        except Exception as exc:  # the connection is going: reconnecting handles it
            log.info("amqp cannot open a new publishing channel", error=repr(exc))
            return
        self._publisher = publisher
        log.info("amqp publishing on a new channel after a nack", url=self._node_url())
        if old is not None and old is not self._channel:
            self._bridge.spawn(self._io_close_later(old))

    async def _io_close_later(self, channel: AbstractRobustChannel) -> None:
        await asyncio.sleep(5.0)
        with contextlib.suppress(Exception):
            await channel.close()

    async def _wait_after_nack(self, deadline: float, routing_key: str, pause: float) -> float:
        """Pause before publishing a nacked message again; the next pause."""
        remaining = deadline - self._loop.time()
        if remaining <= 0 or self._closed:
            raise _refused(routing_key)
        await asyncio.sleep(min(pause, remaining))
        return min(pause * 2, 1.0)

    async def _wait_reconnect(self, deadline: float, cause: BaseException) -> None:
        assert self._reconnected is not None and self._channel is not None
        remaining = deadline - self._loop.time()
        if remaining <= 0 or self._closed:
            raise BrokerError(f"broker unreachable for {self.publish_timeout:g}s: {cause!r}")
        if self._reconnected.is_set():
            # The connection is up but this channel was closed: let it be restored.
            await asyncio.sleep(min(0.05, remaining))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._channel.ready(), timeout=remaining)
            return
        try:
            await asyncio.wait_for(self._reconnected.wait(), timeout=remaining)
        except TimeoutError:
            raise BrokerError(
                f"broker unreachable for {self.publish_timeout:g}s: {cause!r}"
            ) from None

    async def _io_consume(self, subscription: _RabbitSubscription, prefetch: int) -> None:
        """Consume with a robust channel of its own (its prefetch, its requeue-on-close).

        Deliveries are taken from aiormq directly rather than through aio-pika's
        ``queue.consume``: building aio-pika's ``IncomingMessage`` for every delivery
        cost about a seventh of the I/O thread's time. The price is re-registering the
        consumer ourselves when the robust channel reopens after a reconnect.
        """
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        queue_name = subscription.queue
        try:
            underlay = await channel.get_underlay_channel()
            await underlay.queue_declare(queue_name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            with contextlib.suppress(Exception):
                await channel.close()
            raise BrokerError(f"no such queue: {queue_name!r}") from None
        subscription.channel = channel
        deliver = subscription.send.send_nowait

        def hand_over(delivery: Delivery) -> None:
            try:
                deliver(delivery)
            except trio.ClosedResourceError:
                pass  # the subscription ended; closing its channel requeues this one

        def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            frame = message.delivery
            try:
                assert isinstance(frame, spec.Basic.Deliver)  # a consumer gets only these
                delivery = Delivery(
                    queue=queue_name,
                    body=message.body,
                    headers=message.header.properties.headers or {},
                    redelivered=bool(frame.redelivered),
                    tag=(message.channel, frame.delivery_tag),
                )
            except Exception:  # not into the reader: left unacked, it is redelivered later
                log.exception("amqp delivery not handed over", queue=queue_name)
                return
            self._bridge.to_trio_soon(hand_over, delivery)

        async def consumer(message: aiormq.abc.DeliveredMessage) -> None:
            on_message(message)  # aiormq's way, should the channel not deliver inline

        async def start_consuming(*_: Any) -> None:
            underlay = await channel.get_underlay_channel()
            assert isinstance(underlay, aiormq.Channel)
            deliver_inline(underlay, on_message)
            await underlay.basic_consume(queue_name, consumer, no_ack=False)

        channel.reopen_callbacks.add(start_consuming)
        await start_consuming()

    async def _io_cancel(self, subscription: _RabbitSubscription) -> None:
        if subscription.channel is not None and not subscription.channel.is_closed:
            await subscription.channel.close()

    async def _io_existing_queue(self, queue: str) -> aio_pika.abc.AbstractQueue:
        """The queue named ``queue``, or ``BrokerError`` if the broker has none.

        The existence check is a passive declare on a throwaway channel, because a
        failed passive declare closes its channel and the shared one must stay up.
        """
        assert self._channel is not None and self._connection is not None
        if queue not in self._declared:
            probe = await self._connection.channel(publisher_confirms=False)
            try:
                await probe.declare_queue(queue, passive=True, robust=False)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise BrokerError(f"no such queue: {queue!r}") from None
            finally:
                with contextlib.suppress(Exception):
                    await probe.close()
            self._declared.add(queue)
        # Passive: the queue exists, and a passive declare fits a queue of either type.
        return await self._channel.declare_queue(queue, passive=True, robust=False)

    async def _io_purge(self, queue: str) -> int:
        declared = await self._io_existing_queue(queue)
        result = await declared.purge()
        return int(result.message_count or 0)

    async def _io_delete_queue(self, queue: str) -> None:
        assert self._channel is not None
        await self._channel.queue_delete(queue)
        self._declared.discard(queue)

    async def _io_get(self, queue: str) -> Delivery | None:
        declared = await self._io_existing_queue(queue)
        message = await declared.get(no_ack=False, fail=False)
        if message is None:
            return None
        return Delivery(
            queue=queue,
            body=message.body,
            headers=message.headers,
            redelivered=bool(message.redelivered),
            tag=(message.channel, message.delivery_tag),
        )

    async def _io_close(self) -> None:
        self._closing = True
        if self._connection is not None:
            await self._connection.close()
        self._connected = False


# Arguments every declared queue carries, by ``queue_type``. Classic: none at all, so
# vumi2 workers can declare the same queues.
QUEUE_ARGUMENTS: dict[str, dict[str, Any]] = {
    "classic": {},
    "quorum": {"x-queue-type": "quorum"},
}
# ... and the delay buckets on top. A quorum queue dead-letters at most once by default
# (an expired message whose dead-lettering is lost to a node failure is gone);
# at-least-once keeps it until the target queue confirms it, and RabbitMQ allows that
# strategy only with overflow reject-publish.
DELAY_ARGUMENTS: dict[str, dict[str, Any]] = {
    "classic": {},
    "quorum": {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"},
}


def _reply_text(exc: aiormq.exceptions.AMQPError) -> str:
    frame = exc.args[0] if exc.args else None
    return str(getattr(frame, "reply_text", None) or exc)


def _unroutable(exchange: str, routing_key: str) -> PublishError:
    return PublishError(f"unroutable: no queue is bound to {routing_key!r} on {exchange!r}")


def _refused(routing_key: str) -> PublishError:
    return PublishError(f"the broker refused the message for {routing_key!r} (nacked)")


def _as_broker_error(exc: BaseException) -> BaseException:
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return BrokerError(f"not found: {exc}")
    if isinstance(exc, Exception):
        return BrokerError(f"{type(exc).__name__}: {exc}")
    return BrokerError(f"interrupted: {exc!r}")


@contextlib.asynccontextmanager
async def open_rabbitmq_broker(url: str, **options: Any) -> AsyncIterator[RabbitMQBroker]:
    """Connect to RabbitMQ at ``url``; raise ``BrokerError`` with a clear reason if it can't."""
    broker = RabbitMQBroker(url, **options)
    await broker.start()
    try:
        yield broker
    finally:
        with trio.CancelScope(shield=True):
            await broker.aclose()
