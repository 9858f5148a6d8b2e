"""The outbox: how an accepted message becomes a stored, queued, published one.

Both HTTP surfaces (``/v1`` and the per-type endpoints) turn requests into ``Draft``s
and hand them here. For each draft the outbox checks the channel (the tenant must have
senders on it) and the sender (one of the tenant's, or the channel's default for it),
builds the vumi envelope, then, in this order:

1. stores every message of the request, status QUEUED, in one transaction, so a status
   query can never miss a message the client was told about;
2. publishes each envelope on the connector (a router takes it to its transport by
   ``transport_name``), or, for an asynchronous batch, one job naming the batch on the
   API's own batch queue, which whichever replica takes it publishes later;
3. queues a QUEUED webhook job for each subscription that wants one.

What can fail, and what the client is told: an unknown channel or a sender the tenant
may not use is the client's mistake (404 / 403) and nothing is stored. A store that
cannot be reached is 503 and nothing was sent. A request that fails after the store
took its messages (a broker that refuses a publish: 503; the request's time limit)
marks those it did not send DELIVERY_FAILED with the reason, so no message stays
QUEUED with nothing to send it and its history says what happened; the client may
retry (with the same ``Idempotency-Key``, which is released for that purpose).

A replica that dies in the middle of a request marks nothing. Its client's retry
with the same ``Idempotency-Key`` takes the claim over once it is abandoned, and
resumes it (``RequestIds``): it finds the messages the dead run stored, under the same
ids, and sends those still QUEUED, rather than storing new ones.

What no retry resumes is found all the same (``unsent.py``): each message to send is
stored with a row among the unsent messages, struck off once the broker confirmed it
or the request marked it failed; what a dead replica left there is marked
DELIVERY_FAILED by any replica's sweep, which queues its webhooks. A message that an
event moved on meanwhile was published after all, and is left as it is.

At-least-once, as everywhere: a replica that dies while publishing a batch leaves the
batch job unacked, and the replica that takes it over publishes the whole batch again;
a transport may then see a message twice (its ``message_id`` is the same).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import structlog
import trio
from pydantic import BaseModel

from vumi_like.errors import ProblemError
from vumi_like.messages import Message
from vumi_like.messaging.channels import ChannelConfig, Channels, message_type_of
from vumi_like.messaging.subscriptions import Subscriptions
from vumi_like.messaging.webhooks import queue_webhooks, status_body
from vumi_like.outbound.unsent import Unsent
from vumi_like.stores import (
    MessageStatus,
    MessageStore,
    NewBatch,
    NewMessage,
    RequestIds,
    StoredMessage,
    StoreError,
)
from vumi_like.worker import JobConnector, PublishFailed, ReceiveInboundConnector

__all__ = ["BatchJob", "Draft", "Outbox"]

log = structlog.get_logger(__name__)

# Where a message's channel-specific parts travel in its vumi envelope, for transports.
HELPER_KEY = "messaging_api"


@attrs.frozen(kw_only=True)
class Draft:
    """One message as a request asked for it, before checks."""

    channel: str
    receiver: str
    content: str | None
    sender: str | None = None
    # SMS, EMAIL, WEB_MESSAGE...; by default the channel's (see ``message_type_of``).
    message_type: str | None = None
    payload: dict[str, Any] = attrs.field(factory=dict)
    context: dict[str, Any] = attrs.field(factory=dict)
    party_id: str | None = None
    origin: str | None = None
    issuer: str | None = None
    # A party with no contact settings: stored as NO_FEEDBACK_SETTINGS_FOUND, never sent.
    unreachable: bool = False


class BatchJob(BaseModel):
    """An accepted asynchronous batch, to be published by whichever replica takes it."""

    tenant: str
    batch_id: str
    message_ids: list[str]

    def log_ids(self) -> dict[str, str]:
        return {"batch_id": self.batch_id}


# The event a message that its request stored and failed to send is marked with.
PUBLISH_FAILED = "publish_failed"

# Seconds a failed request may spend marking what it did not send (``_fail_unsent``),
# before it frees its Idempotency-Key (``ABANDONED_CLAIM_MARGIN`` counts them).
_FAIL_UNSENT_TIME = 2

# What a message stored by a request whose replica died before sending it is marked with.
ABANDONED_REASON = "the API replica that took its request stopped before sending it"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Outbox:
    def __init__(
        self,
        *,
        store: MessageStore,
        channels: Channels,
        connector: ReceiveInboundConnector,
        webhooks: JobConnector,
        batches: JobConnector,
        subscriptions: Subscriptions,
        track_unsent: bool = True,
    ) -> None:
        """``track_unsent``: keep what it stores to send among the unsent (``unsent``,
        whose ``keep`` the owner runs; None without), for a caller whose dead runs
        nothing else finds; the notifications' fan-out, run again by the broker, finds
        its own."""
        self.store = store
        self.subscriptions = subscriptions
        self.channels = channels
        self.connector = connector
        self.webhooks = webhooks
        self.batches = batches
        self.unsent: Unsent[str] | None = (
            Unsent(forget=store.forget_unsent, sweep=self._sweep_unsent, what="messages")
            if track_unsent
            else None
        )

    # -- checks and envelopes

    def _channel(self, tenant: str, name: str) -> ChannelConfig:
        channel = self.channels.get(name, tenant)
        if channel is None:
            raise ProblemError(
                404,
                f"the channel {name!r} was not found for this tenant",
                code="CHANNEL_NOT_FOUND",
            )
        return channel

    def _sender(self, tenant: str, channel: ChannelConfig, sender: str | None) -> str:
        if sender is None:
            default = channel.default_sender(tenant)
            if default is None:
                raise ProblemError(
                    400,
                    f"a sender is required on channel {channel.name!r}",
                    code="VALIDATION_FAILED",
                )
            return default
        if not channel.allows(tenant, sender):
            raise ProblemError(
                403,
                f"sender {sender!r} may not be used on channel {channel.name!r}",
                code="SENDER_NOT_ALLOWED",
            )
        return sender

    def _prepare(
        self, tenant: str, draft: Draft, batch_id: str | None, message_id: str
    ) -> tuple[NewMessage, Message | None]:
        """The message to store and, unless it cannot be sent, its envelope."""
        if draft.unreachable:
            record = NewMessage(
                message_id=message_id,
                tenant=tenant,
                channel=draft.channel,
                message_type=draft.message_type or "MESSAGE",
                sender=draft.sender or "",
                receiver=draft.receiver,
                content=draft.content,
                payload=draft.payload,
                context=draft.context,
                batch_id=batch_id,
                party_id=draft.party_id,
                origin=draft.origin,
                issuer=draft.issuer,
                status=MessageStatus.NO_FEEDBACK_SETTINGS_FOUND,
            )
            return record, None
        channel = self._channel(tenant, draft.channel)
        sender = self._sender(tenant, channel, draft.sender)
        envelope = Message(
            message_id=message_id,
            to_addr=draft.receiver,
            from_addr=sender,
            transport_name=channel.transport_name,
            transport_type=channel.type,
            content=draft.content,
            helper_metadata={
                HELPER_KEY: {"tenant": tenant, "channel": channel.name, **draft.payload},
                **email_metadata(draft.payload),
            },
        )
        record = NewMessage(
            message_id=message_id,
            tenant=tenant,
            channel=channel.name,
            message_type=draft.message_type or message_type_of(channel.type),
            sender=sender,
            receiver=draft.receiver,
            content=draft.content,
            payload={**draft.payload, "envelope": envelope.model_dump(mode="json")},
            context=draft.context,
            batch_id=batch_id,
            party_id=draft.party_id,
            origin=draft.origin,
            issuer=draft.issuer,
        )
        return record, envelope

    # -- submitting

    async def submit(
        self,
        tenant: str,
        drafts: Sequence[Draft],
        *,
        batch: bool,
        asynchronous: bool = False,
        ids: RequestIds | None = None,
    ) -> tuple[str | None, list[str]]:
        """Store, then send (or queue as a batch job); return ``(batch_id, message_ids)``.

        ``ids`` gives the batch and its messages their ids. A request resuming its own
        abandoned ``Idempotency-Key`` claim (``ids.resumed``) finds what its first run
        stored, if it got that far, and sends what of it is still queued."""
        ids = ids or RequestIds()
        batch_id = ids.new() if batch else None
        prepared = [self._prepare(tenant, draft, batch_id, ids.new()) for draft in drafts]
        records = [record for record, _ in prepared]
        new_batch = NewBatch(tenant=tenant, batch_id=batch_id) if batch_id else None
        if ids.resumed:
            stored = await self.store.resume_messages(
                records, batch=new_batch, unsent=self.unsent is not None
            )
            if any(t.event_type == PUBLISH_FAILED for m in stored for t in m.transitions):
                # The first run failed, and marked what it had not sent: the request
                # failed, as that run answered (or would have), and its client starts
                # again with a request of its own.
                raise _broker_unavailable() from PublishFailed(
                    "an earlier run of this request could not send it"
                )
            queued = {m.message_id for m in stored if m.status == MessageStatus.QUEUED}
        else:
            await self.store.create_messages(
                records, batch=new_batch, unsent=self.unsent is not None
            )
            queued = {record.message_id for record in records}
        to_send = [(r, env) for r, env in prepared if env is not None and r.message_id in queued]
        send_ids = [record.message_id for record, _ in to_send]
        published = 0  # of to_send, in order
        try:
            if asynchronous and batch_id is not None:
                await self.batches.publish(
                    BatchJob(tenant=tenant, batch_id=batch_id, message_ids=send_ids)
                )
                published = len(to_send)
                self._settled(*send_ids)  # the job sends them, or marks them failed
            else:
                for record, envelope in to_send:
                    at = _now()  # queued: before the transport can have acked it
                    await self.connector.publish_outbound(envelope)
                    published += 1
                    self._settled(record.message_id)
                    await self._queue_webhooks(tenant, record, at)
        except BaseException as exc:
            await self._fail_unsent(send_ids[published:], exc)
            if isinstance(exc, PublishFailed):
                raise _broker_unavailable() from exc
            raise
        return batch_id, [record.message_id for record in records]

    async def send_batch(self, job: BatchJob) -> None:
        """Publish an accepted batch (the batch queue's handler)."""
        for message_id in job.message_ids:
            stored = await self.store.get_message(job.tenant, message_id)
            if stored is None or stored.status != MessageStatus.QUEUED:
                continue  # failed already, or a redelivered job whose message moved on
            envelope = Message.model_validate(stored.payload["envelope"])
            at = _now()
            try:
                await self.connector.publish_outbound(envelope)
            except PublishFailed as exc:
                await self._fail_unsent([message_id], exc)
                raise _broker_unavailable() from exc
            await self._queue_webhooks(job.tenant, stored, at)

    async def _queue_webhooks(
        self,
        tenant: str,
        record: NewMessage | StoredMessage,
        at: datetime,
        status: MessageStatus = MessageStatus.QUEUED,
        reason: str | None = None,
    ) -> None:
        """Queue the ``status`` webhooks of a message that took it at ``at``."""
        message_id = record.message_id
        await queue_webhooks(
            self.subscriptions,
            self.webhooks.publish,
            tenant=tenant,
            message_id=message_id,
            status_code=status,
            body=lambda delivery: status_body(
                status,
                delivery=delivery,
                message_id=message_id,
                channel=record.channel,
                context=record.context,
                at=at,
                reason=reason,
            ),
        )

    async def _fail_unsent(self, message_ids: list[str], exc: BaseException) -> None:
        """Mark what a failed request stored but did not send DELIVERY_FAILED, with why,
        so that no message stays QUEUED with nothing to send it: the client is told of
        the failure and may retry. Bounded and shielded, as a cancelled (timed out)
        request has the same duty; a store that cannot be reached leaves them QUEUED."""
        if isinstance(exc, PublishFailed):
            reason = f"the broker refused the message: {exc}"
        elif isinstance(exc, trio.Cancelled):
            reason = "the request ended (timed out, or its client left) before it was sent"
        else:
            reason = f"the request failed before it was sent: {exc!r}"

        async def fail(message_id: str) -> None:
            with contextlib.suppress(StoreError):
                await self.store.apply_event(
                    message_id,
                    event_id=None,
                    event_type=PUBLISH_FAILED,
                    proposed_status=MessageStatus.DELIVERY_FAILED,
                    occurred_at=_now(),
                    raw={"error": reason},
                )
                self._settled(message_id)

        # All at once, so that the store applies them in shared transactions: one by
        # one, a batch of a thousand would outlast the time allowed.
        with trio.CancelScope(shield=True), trio.move_on_after(_FAIL_UNSENT_TIME):
            async with trio.open_nursery() as nursery:
                for message_id in message_ids:
                    nursery.start_soon(fail, message_id)

    def _settled(self, *message_ids: str) -> None:
        if self.unsent is not None:
            self.unsent.settled(*message_ids)

    async def _sweep_unsent(self, older_than: float) -> list[str]:
        """Mark failed what dead replicas stored and never sent, and queue the
        DELIVERY_FAILED webhooks of each: its client, who got no answer, learns of it
        so. A message is struck off the unsent once its webhooks are queued; with the
        broker away, a later sweep finds it again and queues them then."""
        failed = await self.store.fail_abandoned_unsent(
            older_than, event_type=PUBLISH_FAILED, raw={"error": ABANDONED_REASON}
        )
        told: list[str] = []
        try:
            for message in failed:
                at, reason = _failure(message)
                await self._queue_webhooks(
                    message.tenant, message, at, MessageStatus.DELIVERY_FAILED, reason
                )
                told.append(message.message_id)
        except PublishFailed as exc:
            log.warning(
                "cannot queue the webhooks of messages a stopped replica never sent: "
                "broker unavailable; a later sweep queues them",
                count=len(failed) - len(told),
                error=str(exc),
            )
        if told:
            await self.store.forget_unsent(told)
        return [message.message_id for message in failed]


def _failure(message: StoredMessage) -> tuple[datetime, str | None]:
    """When ``message`` became DELIVERY_FAILED (UTC), and the reason its event gave: a
    failed publish's error or a transport's nack reason."""
    for transition in reversed(message.transitions):
        if transition.changed and transition.status_after == MessageStatus.DELIVERY_FAILED:
            raw = transition.raw or {}
            reason = raw.get("error") or raw.get("nack_reason")
            return transition.occurred_at, reason
    return message.updated_at, None


def _broker_unavailable() -> ProblemError:
    return ProblemError(
        503, "the message could not be queued; try again", code="BROKER_UNAVAILABLE"
    )


def email_metadata(payload: dict[str, Any]) -> dict[str, Any]:
    """``{"email": {...}}``: the e-mail parts of a message, as every e-mail transport reads
    them from ``helper_metadata``, whichever surface they came through (or ``{}``).

    ``subject``, ``html`` (the HTML as text), ``sender_name``, ``reply_to`` and
    ``attachments`` (``[{"name", "content" (base64), "content_type"}]``).
    """
    email: dict[str, Any] = {
        key: payload[key]
        for key in ("subject", "html", "sender_name", "reply_to")
        if key in payload
    }
    if "html_base64" in payload:
        try:
            email["html"] = base64.b64decode(payload["html_base64"], validate=True).decode()
        except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
            raise ProblemError(
                400, "the HTML body is not base64 of UTF-8 text", code="VALIDATION_FAILED"
            ) from None
    if attachments := payload.get("attachments"):
        email["attachments"] = [
            {
                "name": attachment["name"],
                "content": attachment["content"],
                "content_type": attachment.get("contentType"),
            }
            for attachment in attachments
        ]
    return {"email": email} if email else {}
