"""``EventDispatcher``: events become statuses, statuses and inbound become webhooks.

It consumes the Messaging API connector's ``<name>.event`` and ``<name>.inbound``
queues, and its own webhook job queue (``<name>.webhooks`` unless configured):

* **an event** (ack, nack, delivery report) is applied to its message in the store
  through the status state machine (``vumi_like.stores.status``): recorded with its
  time and raw envelope whatever it does, moving the status only forwards. When the
  status moved, one webhook job is queued per subscription that wants the new status;
* **an inbound message** is stored (RECEIVED) for the tenant that owns the address it
  was sent to on its channel, and MESSAGE_RECEIVED jobs are queued;
* **a webhook job** is one POST to one subscriber, signed (``messaging.webhooks``). A
  failure (connection error, timeout, any non-2xx) is retried by the broker on the
  retry policy (``vumi_like.retry``: backoff with jitter, ``Retry-After`` honoured and
  capped); after the last attempt the delivery is recorded as failed and the job goes
  to the dead-letter queue, where ``vumi-like dlq replay`` can send it again.

**The first attempt is made at once.** A status change's webhooks to a receiver that
has a free slot and has been answering quickly (``receivers.py``) are posted while the
event is being handled, before it is acked, with at most ``receiver_patience`` to
answer; only what fails there, or finds its receiver busy, slow or resting, is queued
as a job (one that failed carries its attempt and the retry policy's delay). A
healthy receiver's webhook then costs one POST, not a trip through the broker and a
store read besides. Nothing is risked by it: a dispatcher that dies mid-post leaves
the event unacked, and its redelivery queues the webhooks as jobs, under the same ids.

**A first try reads nothing from the store.** Its subscription, whether posted while
the event is handled or from a job (the API's QUEUED webhooks, say), is the one read
at most ``subscriptions_max_age`` ago, so a subscription deleted within that time may
get one more webhook. A job on its first try has no delivery record to check: it
was never posted. What may have been posted before reads both afresh: a retry, a job
the broker redelivers (a dispatcher died posting it), one queued ``again`` by a
redelivered event, and a job for a subscription newer than that read.

Why a job per (event, subscription): each delivery then has its own retries, its own
place on the broker, its own record. One receiver that is down does not hold back
another's webhooks, or the next status of the same message to a receiver that is up;
``receivers.py`` also keeps a slow receiver from occupying every delivery slot.

Crash safety: statuses are applied before jobs are queued, and a redelivered event is
a duplicate to the store. So that a dispatcher killed between the two still gets the
webhooks out, a duplicate event whose first application moved the status queues the
jobs again; their delivery ids are derived from (subscription, message, status), so a
receiver that got one the first time sees the same id and drops it.

Inbound messages nobody owns (no tenant has the ``to_addr`` as a sender on the
channel) and events for messages the store does not know are dead-lettered with the
reason: they are not lost, and an operator can see what was misrouted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import trio
from prometheus_client import Counter
from pydantic import Field

from vumi_like.config import BaseConfig
from vumi_like.dispatch.posting import Poster, PostFailed
from vumi_like.dispatch.receivers import Receivers
from vumi_like.messages import Event, EventType, Message
from vumi_like.messaging.channels import Channels, ChannelsSettings, message_type_of
from vumi_like.messaging.subscriptions import Subscriptions
from vumi_like.messaging.webhooks import (
    MESSAGE_RECEIVED,
    WebhookJob,
    inbound_body,
    signature_headers,
    status_body,
    webhook_jobs,
)
from vumi_like.metrics import REGISTRY
from vumi_like.retry import (
    RetriesExhausted,
    RetryLater,
    RetrySettings,
    Unprocessable,
    retry_after_seconds,
)
from vumi_like.stores import (
    AlreadyExists,
    DeliveryState,
    MessageStatus,
    NewMessage,
    StoreSettings,
    Webhook,
    WebhookDelivery,
    status_for_event,
)
from vumi_like.worker import BaseWorker

__all__ = ["EventDispatcher", "EventDispatcherConfig"]

WEBHOOK_POSTS = Counter(
    "vumi_like_webhook_posts",
    "Webhook POSTs by outcome (delivered, retry, failed, deferred, dropped)",
    ("worker", "outcome"),
    registry=REGISTRY,
)


class EventDispatcherConfig(BaseConfig, ChannelsSettings, StoreSettings, RetrySettings):
    connector_name: str = Field(
        description="The Messaging API's connector: consumes <name>.event and <name>.inbound"
    )
    webhook_queue: str | None = Field(
        default=None, description="Webhook job queue (default <connector_name>.webhooks)"
    )
    webhook_timeout: float = Field(
        default=10, gt=0, description="Seconds allowed for one webhook POST"
    )
    # Webhook POSTs are I/O: more deliveries in hand than a CPU-bound worker's 20.
    worker_concurrency: int = Field(
        default=100, ge=1, description="Deliveries prefetched and handled at once, per connector."
    )
    per_receiver_concurrency: int = Field(
        default=16, ge=1, description="Most webhook POSTs in flight to one receiver"
    )
    subscriptions_max_age: float = Field(
        default=1.0,
        ge=0,
        description="Seconds a tenant's webhook subscriptions are kept between reads "
        "(0: read for every event)",
    )
    receiver_patience: float = Field(
        default=2.0,
        ge=0,
        description="Seconds a webhook job waits for a busy receiver's post to end before "
        "going back to the broker (how many may wait follows the receiver's pace: those "
        "it serves in an eighth of this, at least per_receiver_concurrency)",
    )
    receiver_rest: float = Field(
        default=1.0,
        gt=0,
        description="Seconds a receiver is left alone after a failed POST (doubling with "
        "each failure in a row)",
    )
    receiver_max_rest: float = Field(
        default=60, gt=0, description="Longest rest of a failing receiver, in seconds"
    )
    # Webhook receivers can be down for a while: by default about 3.5 hours of retries.
    max_retries: int = Field(
        default=12, ge=0, description="Retries of a webhook after the first attempt"
    )
    retry_delay_base: float = Field(
        default=5, gt=0, description="Seconds before the first retry (before jitter)"
    )

    def webhook_queue_name(self) -> str:
        return self.webhook_queue or f"{self.connector_name}.webhooks"


class UnknownMessage(Unprocessable):
    """An event for a message the store does not know: dead-lettered with this reason."""


class UnownedInbound(Unprocessable):
    """An inbound message no tenant owns: dead-lettered with this reason."""


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _headers(secret: str, job: WebhookJob, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "vumi-like-webhooks/1",
        **signature_headers(secret, job.delivery_id, body),
    }


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


class EventDispatcher(BaseWorker):
    config_class = EventDispatcherConfig
    config: EventDispatcherConfig

    async def setup(self) -> None:
        self.poster = Poster()
        self.store = self.config.make_store()
        await self.store.open()
        self.channels = Channels(self.config.channels)
        self.subscriptions = Subscriptions(self.store, max_age=self.config.subscriptions_max_age)
        self.retry_policy = self.config.retry_policy()
        self.receivers = Receivers(
            per_receiver_concurrency=self.config.per_receiver_concurrency,
            first_rest=self.config.receiver_rest,
            max_rest=self.config.receiver_max_rest,
            # A fast receiver's backlog may fill the prefetch window (its jobs wait
            # only briefly); a slow one's is held to twice its concurrency.
            max_waiting=self.config.worker_concurrency,
        )
        # A first attempt at once needs a retry to fall back on, and time to make it in.
        self._first_attempts = self.config.max_retries > 0 and self.config.receiver_patience > 0
        self.webhooks = await self.setup_job_connector(
            self.config.webhook_queue_name(), WebhookJob, self.deliver
        )
        await self.setup_receive_inbound_connector(
            self.config.connector_name,
            inbound_handler=self.handle_inbound,
            event_handler=self.handle_event,
        )

    async def teardown(self) -> None:
        await self.poster.aclose()
        await self.store.aclose()

    # -- events -> statuses

    async def handle_event(self, event: Event) -> None:
        proposed = status_for_event(event.event_type, event.delivery_status)
        outcome = await self.store.apply_event(
            event.user_message_id,
            event_id=event.event_id,
            event_type=str(event.event_type),
            proposed_status=proposed,
            occurred_at=_naive_utc(event.timestamp),
            raw=json.loads(event.to_json()),
        )
        if outcome is None:
            raise UnknownMessage(f"no message {event.user_message_id!r} in the store")
        changed = outcome.changed
        status = outcome.status_after
        if outcome.duplicate:
            changed, status = await self._first_outcome(outcome.message.tenant, event)
        if not changed:
            return
        message = outcome.message
        reason = event.nack_reason if event.event_type == EventType.NACK else None
        at = _naive_utc(event.timestamp)
        await self._send_webhooks(
            first_time=not outcome.duplicate,
            tenant=message.tenant,
            message_id=message.message_id,
            status_code=status,
            body=lambda delivery: status_body(
                status,
                delivery=delivery,
                message_id=message.message_id,
                channel=message.channel,
                context=message.context,
                at=at,
                reason=reason,
            ),
        )

    async def _first_outcome(self, tenant: str, event: Event) -> tuple[bool, MessageStatus]:
        """Whether the first application of ``event`` moved its message, and to what."""
        message = await self.store.get_message(tenant, event.user_message_id)
        for transition in message.transitions if message else ():
            if transition.event_id == event.event_id:
                return transition.changed, transition.status_after
        return False, MessageStatus.QUEUED

    # -- inbound -> store and webhooks

    async def handle_inbound(self, message: Message) -> None:
        owner = self.channels.inbound_owner(message.transport_name, message.to_addr)
        if owner is None:
            raise UnownedInbound(
                f"no tenant has {message.to_addr!r} as a sender on a channel of transport "
                f"{message.transport_name!r}"
            )
        channel, tenant = owner
        received = _naive_utc(message.timestamp)
        first_time = True
        try:
            await self.store.record_inbound(
                NewMessage(
                    message_id=message.message_id,
                    tenant=tenant,
                    channel=channel.name,
                    message_type=message_type_of(channel.type),
                    sender=message.from_addr,
                    receiver=message.to_addr,
                    content=message.content,
                    payload={"envelope": json.loads(message.to_json())},
                    in_reply_to=message.in_reply_to,
                )
            )
        except AlreadyExists:
            # A redelivery: stored the first time; queue its webhooks again (same ids).
            first_time = False
        await self._send_webhooks(
            first_time=first_time,
            tenant=tenant,
            message_id=message.message_id,
            status_code=MESSAGE_RECEIVED,
            body=lambda delivery: inbound_body(
                delivery=delivery,
                message_id=message.message_id,
                channel=channel.name,
                sender=message.from_addr,
                receiver=message.to_addr,
                content=message.content,
                in_reply_to=message.in_reply_to,
                at=received,
            ),
        )

    # -- webhooks -> first attempts and jobs

    async def _send_webhooks(
        self,
        *,
        first_time: bool,
        tenant: str,
        message_id: str,
        status_code: str,
        body: Callable[[str], dict[str, Any]],
    ) -> None:
        """Post or queue a status's webhooks (see "The first attempt is made at once").

        Again (``first_time`` False: a redelivered event), they are only queued: a job
        checks whether its delivery got through already."""
        jobs = await webhook_jobs(
            self.subscriptions,
            tenant=tenant,
            message_id=message_id,
            status_code=status_code,
            body=body,
        )
        at_once = first_time and self._first_attempts

        async def send(webhook: Webhook, job: WebhookJob) -> None:
            if at_once:
                await self._first_attempt(webhook, job)
            else:
                await self.webhooks.publish(
                    job if first_time else job.model_copy(update={"again": True})
                )

        if len(jobs) == 1:
            await send(*jobs[0])
            return
        try:
            async with trio.open_nursery() as nursery:
                for webhook, job in jobs:
                    nursery.start_soon(send, webhook, job)
        except BaseExceptionGroup as group:
            # What failed, as itself (a store that cannot be reached is retried, say,
            # rather than dead-lettered): the event is handled again as a whole anyway.
            raise _first_leaf(group) from group

    async def _first_attempt(self, webhook: Webhook, job: WebhookJob) -> None:
        patience = self.config.receiver_patience
        if not self.receivers.claim_now(job.url, patience):
            await self.webhooks.publish(job)
            return
        body = json.dumps(job.body, separators=(",", ":")).encode()
        ok = False
        try:
            failure, retry_after = await self._post(
                job.url,
                body,
                _headers(webhook.secret, job, body),
                min(patience, self.config.webhook_timeout),
            )
            ok = failure is None
        finally:
            self.receivers.finished(job.url, ok=ok)
        if failure is None:
            WEBHOOK_POSTS.labels(self.name, "delivered").inc()
            await self._record(job, DeliveryState.DELIVERED, 0, None)
            return
        # max_retries is at least 1 here: the retry policy's first delay, then a job.
        WEBHOOK_POSTS.labels(self.name, "retry").inc()
        await self._record(job, DeliveryState.PENDING, 0, failure)
        delay = self.retry_policy.delay(0, retry_after)
        await self.webhooks.publish(
            job.model_copy(update={"tried": 1, "not_before": time.time() + delay})
        )

    # -- webhook jobs -> POSTs

    async def deliver(self, job: WebhookJob, attempt: int, redelivered: bool) -> None:
        if job.not_before is not None:
            early = job.not_before - time.time()
            if early > 0:
                raise RetryLater(early, "its retry is not due yet", counts=False)
        attempt += job.tried
        # A resting (failing) receiver's job goes back to the broker before it costs a
        # store read.
        resting = self.receivers.resting(job.url)
        if resting is not None:
            WEBHOOK_POSTS.labels(self.name, "deferred").inc()
            raise RetryLater(resting, f"receiver {job.url} is resting", counts=False)
        webhook, done = await self._target(job, first_try=attempt == 0 and not redelivered)
        if done is not None and done.state == DeliveryState.DELIVERED:
            # Queued again by a redelivered event, or redelivered itself (see the
            # module docstring): it got through before, so the receiver need not drop
            # a repeat.
            WEBHOOK_POSTS.labels(self.name, "dropped").inc()
            return
        if webhook is None:
            # Unsubscribed since the job was queued: nobody wants it any more.
            WEBHOOK_POSTS.labels(self.name, "dropped").inc()
            await self._record(job, DeliveryState.FAILED, attempt, "the subscription was deleted")
            return
        # Then a posting slot, held for the POST alone: a slot held through the store
        # read too made the receiver look slower than it is, and kept others waiting.
        wait = await self.receivers.claim(job.url, self.config.receiver_patience)
        if wait is not None:
            WEBHOOK_POSTS.labels(self.name, "deferred").inc()
            raise RetryLater(wait, f"receiver {job.url} is busy or resting", counts=False)
        body = json.dumps(job.body, separators=(",", ":")).encode()
        ok = False
        try:
            failure, retry_after = await self._post(
                job.url, body, _headers(webhook.secret, job, body), self.config.webhook_timeout
            )
            ok = failure is None
        finally:
            self.receivers.finished(job.url, ok=ok)
        if failure is None:
            WEBHOOK_POSTS.labels(self.name, "delivered").inc()
            await self._record(job, DeliveryState.DELIVERED, attempt, None)
            return
        try:
            self.retry_policy.retry(attempt, failure, retry_after=retry_after)
        except RetriesExhausted:
            WEBHOOK_POSTS.labels(self.name, "failed").inc()
            await self._record(job, DeliveryState.FAILED, attempt, failure)
            raise
        except RetryLater:
            WEBHOOK_POSTS.labels(self.name, "retry").inc()
            await self._record(job, DeliveryState.PENDING, attempt, failure)
            raise

    async def _target(
        self, job: WebhookJob, *, first_try: bool
    ) -> tuple[Webhook | None, WebhookDelivery | None]:
        """``job``'s subscription (None if deleted) and its delivery's record so far
        (see "A first try reads nothing from the store")."""
        if first_try and not job.again:
            webhook = await self.subscriptions.find(job.tenant, job.webhook_id)
            if webhook is not None:
                return webhook, None
        return await self.store.delivery_target(job.tenant, job.webhook_id, job.delivery_id)

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], seconds: float
    ) -> tuple[str | None, float | None]:
        """POST once, allowing it ``seconds``; ``(None, None)`` on a 2xx, else what failed
        and any Retry-After."""
        try:
            with trio.fail_after(seconds):
                answer = await self.poster.post(url, body, headers)
        except PostFailed as exc:
            return f"POST {url} failed: {exc}", None
        except trio.TooSlowError:
            return f"POST {url} failed: no answer within {seconds:g} s", None
        if 200 <= answer.status < 300:
            return None, None
        text = answer.body.decode("utf-8", "replace")[:200]
        failure = f"POST {url} answered {answer.status}: {text}"
        return failure, retry_after_seconds(answer.headers.get("retry-after"))

    async def _record(
        self, job: WebhookJob, state: DeliveryState, attempt: int, error: str | None
    ) -> None:
        await self.store.record_delivery(
            job.delivery_id,
            job.webhook_id,
            job.message_id,
            job.status_code,
            state,
            attempt + 1,
            error,
        )
