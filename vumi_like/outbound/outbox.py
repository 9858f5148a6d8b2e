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
cannot be reached is 503 and nothing was sent. A broker that refuses the publish
after the store took the message is 503 too; the message is then marked
DELIVERY_FAILED with the reason, so its history says what happened, and the client may
retry (with the same ``Idempotency-Key``, which is released for that purpose).

At-least-once, as everywhere: a replica that dies while publishing a batch leaves the
batch job unacked, and the replica that takes it over publishes the whole batch again;
a transport may then see a message twice (its ``message_id`` is the same).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from pydantic import BaseModel

from vumi_like.errors import ProblemError
from vumi_like.messages import Message
from vumi_like.messaging.channels import ChannelConfig, Channels, message_type_of
from vumi_like.messaging.subscriptions import Subscriptions
from vumi_like.messaging.webhooks import queue_webhooks, status_body
from vumi_like.stores import (
    MessageStatus,
    MessageStore,
    NewBatch,
    NewMessage,
    StoredMessage,
    new_id,
)
from vumi_like.worker import JobConnector, PublishFailed, ReceiveInboundConnector

__all__ = ["BatchJob", "Draft", "Outbox"]

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
    ) -> None:
        self.store = store
        self.subscriptions = subscriptions
        self.channels = channels
        self.connector = connector
        self.webhooks = webhooks
        self.batches = batches

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
        self, tenant: str, draft: Draft, batch_id: str | None
    ) -> tuple[NewMessage, Message | None]:
        """The message to store and, unless it cannot be sent, its envelope."""
        if draft.unreachable:
            record = NewMessage(
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
        message_id = new_id()
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
        self, tenant: str, drafts: Sequence[Draft], *, batch: bool, asynchronous: bool = False
    ) -> tuple[str | None, list[str]]:
        """Store, then send (or queue as a batch job); return ``(batch_id, message_ids)``."""
        batch_id = new_id() if batch else None
        prepared = [self._prepare(tenant, draft, batch_id) for draft in drafts]
        records = [record for record, _ in prepared]
        await self.store.create_messages(
            records, batch=NewBatch(tenant=tenant, batch_id=batch_id) if batch_id else None
        )
        message_ids = [record.message_id for record in records]
        if asynchronous and batch_id is not None:
            job = BatchJob(
                tenant=tenant,
                batch_id=batch_id,
                message_ids=[r.message_id for r, env in prepared if env is not None],
            )
            await self._publish_or_fail(job.message_ids, self.batches.publish(job))
        else:
            for record, envelope in prepared:
                if envelope is not None:
                    await self._send(tenant, record.message_id, envelope, record)
        return batch_id, message_ids

    async def send_batch(self, job: BatchJob) -> None:
        """Publish an accepted batch (the batch queue's handler)."""
        for message_id in job.message_ids:
            stored = await self.store.get_message(job.tenant, message_id)
            if stored is None or stored.status != MessageStatus.QUEUED:
                continue  # failed already, or a redelivered job whose message moved on
            envelope = Message.model_validate(stored.payload["envelope"])
            await self._send(job.tenant, message_id, envelope, stored)

    async def _send(
        self, tenant: str, message_id: str, envelope: Message, record: NewMessage | StoredMessage
    ) -> None:
        at = _now()  # queued: before the transport can have acked it
        await self._publish_or_fail([message_id], self.connector.publish_outbound(envelope))
        await queue_webhooks(
            self.subscriptions,
            self.webhooks.publish,
            tenant=tenant,
            message_id=message_id,
            status_code=MessageStatus.QUEUED,
            body=lambda delivery: status_body(
                MessageStatus.QUEUED,
                delivery=delivery,
                message_id=message_id,
                channel=record.channel,
                context=record.context,
                at=at,
            ),
        )

    async def _publish_or_fail(self, message_ids: list[str], publish: Awaitable[None]) -> None:
        try:
            await publish
        except PublishFailed as exc:
            for message_id in message_ids:
                await self.store.apply_event(
                    message_id,
                    event_id=None,
                    event_type="publish_failed",
                    proposed_status=MessageStatus.DELIVERY_FAILED,
                    occurred_at=_now(),
                    raw={"error": str(exc)},
                )
            raise ProblemError(
                503,
                "the message could not be queued; try again",
                code="BROKER_UNAVAILABLE",
            ) from exc


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
