"""Webhooks: the bodies the event dispatcher POSTs to subscribers, and their signature.

**Signature.** Every webhook is signed as the Standard Webhooks specification says
(standardwebhooks.com), so a receiver can verify it with that project's libraries in
any language, or by hand in a few lines:

* ``webhook-id``: the delivery's id. It stays the same across retries of one delivery,
  so a receiver that has seen it can drop the repeat;
* ``webhook-timestamp``: Unix seconds when this attempt was sent; a receiver refuses
  old ones (we suggest five minutes), which stops a captured request being replayed;
* ``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256 over
  ``{webhook-id}.{webhook-timestamp}.{raw body}``, keyed with the subscription's
  secret. Secrets we generate look like ``whsec_<base64>`` and the key is the decoded
  bytes, as the specification has it; a secret a client chose is used as its UTF-8
  bytes.

**Delivery ids are derived, not drawn.** ``delivery_id(webhook, message, status)`` is a
hash of the three, so when a dispatcher dies after recording a status change but
before queueing its webhooks, the redelivered event queues them again under the same
ids, and the receiver de-duplicates what did get through the first time.

**Bodies.** A status change (seed 000's callbacks): ``statusCode`` (QUEUED, SENT,
DELIVERY_RETRIED, DELIVERY_FAILED, DELIVERED), ``messageId``, ``channelName``,
``context`` (the object the client sent with the message, echoed), ``timestamp``, and
``id`` (the delivery id). An inbound message: ``statusCode`` MESSAGE_RECEIVED, with
``sender``, ``receiver``, ``content`` and ``inReplyTo``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from vumi_like.messaging.subscriptions import Subscriptions
from vumi_like.stores import Webhook

__all__ = [
    "MESSAGE_RECEIVED",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_ID_HEADER",
    "WebhookJob",
    "delivery_id",
    "inbound_body",
    "new_secret",
    "queue_webhooks",
    "sign",
    "signature_headers",
    "status_body",
    "verify",
    "webhook_jobs",
]

WEBHOOK_ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
MESSAGE_RECEIVED = "MESSAGE_RECEIVED"


class WebhookJob(BaseModel):
    """One delivery of one webhook to one subscriber: a job on the dispatcher's queue.

    The body is fixed when the job is made, so every attempt sends the same bytes. The
    secret is not in the job (queues are not for secrets): the dispatcher looks up the
    subscription when it sends a job, so one deleted meanwhile is not posted to (a
    first try takes the subscriptions the dispatcher read at most
    ``subscriptions_max_age`` ago; a retry reads the store).

    A job the dispatcher queues after its own first attempt failed says so: ``tried``
    attempts were made already (they count against the retries allowed), and it is
    not to be tried before ``not_before`` (Unix seconds), the retry policy's delay.
    One queued again by a redelivered event says so with ``again``: its delivery may
    have got through the first time, so the dispatcher checks its record first.
    """

    delivery_id: str
    webhook_id: str
    tenant: str
    message_id: str
    status_code: str
    url: str
    body: dict[str, Any]
    tried: int = 0
    not_before: float | None = None
    again: bool = False

    def log_ids(self) -> dict[str, str]:
        return {
            "delivery_id": self.delivery_id,
            "webhook_id": self.webhook_id,
            "message_id": self.message_id,
        }


def delivery_id(webhook_id: str, message_id: str, status_code: str) -> str:
    digest = hashlib.sha256(f"{webhook_id}\n{message_id}\n{status_code}".encode()).hexdigest()
    return f"wh_{digest[:32]}"


async def webhook_jobs(
    subscriptions: Subscriptions,
    *,
    tenant: str,
    message_id: str,
    status_code: str,
    body: Callable[[str], dict[str, Any]],
) -> list[tuple[Webhook, WebhookJob]]:
    """One job per subscription of ``tenant`` that wants ``status_code``, beside its
    subscription. ``body(delivery_id)`` makes each job's body."""
    jobs = []
    for webhook in await subscriptions.wanting(tenant, status_code):
        delivery = delivery_id(webhook.webhook_id, message_id, status_code)
        job = WebhookJob(
            delivery_id=delivery,
            webhook_id=webhook.webhook_id,
            tenant=tenant,
            message_id=message_id,
            status_code=status_code,
            url=webhook.url,
            body=body(delivery),
        )
        jobs.append((webhook, job))
    return jobs


async def queue_webhooks(
    subscriptions: Subscriptions,
    publish: Callable[[WebhookJob], Awaitable[None]],
    *,
    tenant: str,
    message_id: str,
    status_code: str,
    body: Callable[[str], dict[str, Any]],
) -> int:
    """Queue one job per subscription of ``tenant`` that wants ``status_code``.

    ``body(delivery_id)`` makes each job's body; ``publish`` puts a job on the
    dispatcher's webhook queue. Returns how many were queued.
    """
    jobs = await webhook_jobs(
        subscriptions, tenant=tenant, message_id=message_id, status_code=status_code, body=body
    )
    for _, job in jobs:
        await publish(job)
    return len(jobs)


def _timestamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status_body(
    status_code: str,
    *,
    delivery: str,
    message_id: str,
    channel: str,
    context: Mapping[str, Any] | None,
    at: datetime,
    reason: str | None = None,
) -> dict[str, Any]:
    """A status-change webhook's body. ``at`` is UTC, naive or aware (when the change
    happened)."""
    body: dict[str, Any] = {
        "id": delivery,
        "statusCode": status_code,
        "messageId": message_id,
        "channelName": channel,
        "context": dict(context or {}),
        "timestamp": _timestamp(at),
    }
    if reason:
        body["reason"] = reason
    return body


def inbound_body(
    *,
    delivery: str,
    message_id: str,
    channel: str,
    sender: str,
    receiver: str,
    content: str | None,
    in_reply_to: str | None,
    at: datetime,
) -> dict[str, Any]:
    """A MESSAGE_RECEIVED webhook's body."""
    return {
        "id": delivery,
        "statusCode": MESSAGE_RECEIVED,
        "messageId": message_id,
        "channelName": channel,
        "sender": sender,
        "receiver": receiver,
        "content": content,
        "inReplyTo": in_reply_to,
        "timestamp": _timestamp(at),
    }


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except binascii.Error:
            pass  # not base64 after all: a client's own secret that happens to look like one
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for this id, timestamp and raw body."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secret: str, webhook_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The three headers for one attempt at sending ``body``."""
    timestamp = int(time.time() if now is None else now)
    return {
        WEBHOOK_ID_HEADER: webhook_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, webhook_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """Whether ``headers`` sign ``body`` with ``secret`` within ``tolerance`` seconds.

    What a receiver does; here for tests and for receivers written in Python. Header
    names are matched in any case. A signature header may carry several
    space-separated signatures (during a secret rotation); one good one is enough.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = lowered.get(WEBHOOK_ID_HEADER)
    timestamp_text = lowered.get(TIMESTAMP_HEADER, "")
    signatures = lowered.get(SIGNATURE_HEADER, "").split()
    if not webhook_id or not timestamp_text.isdigit() or not signatures:
        return False
    timestamp = int(timestamp_text)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, webhook_id, timestamp, body)
    return any(hmac.compare_digest(candidate, expected) for candidate in signatures)
