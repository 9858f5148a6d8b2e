"""The ``channels`` backend: a notification fanned out to each recipient's own channel.

Who receives it: the target user, for a user's message; every member of the form or
project, for theirs, except its author (who wrote it, and reads it on the MQTT topic or
in the API like everyone else). Each recipient is reached the way the Messaging API
reaches a party (``POST /messages``): their contact settings in the same tenant (the
``parties`` resource, party id = the registry username) name a channel and an address.
A recipient without settings, or whose channel the tenant may not use, gets a message
stored as ``NO_FEEDBACK_SETTINGS_FOUND`` and sent nowhere, as the Messaging API does.

Why a job on the broker rather than sending in the request: a project may have many
members, and a worker that dies halfway through sending to them would leave the rest
unsent with nobody to notice. The request stores the notification and publishes one
job (``FanOutJob``, on ``<connector_name>.notifications``); the 201 waits only for the
broker to have it. Whichever replica takes the job sends through the Messaging API's
``Outbox`` (channel and sender checked, stored QUEUED, published, QUEUED webhooks), so
the messages have a status the event dispatcher drives and a place in the Messaging
API's history, like any other.

At least once, never silently lost: each recipient's outcome is recorded on the
notification as soon as it is known (``deliveries.channels.recipients``), and a job
that comes back (redelivered after a crash, or retried) skips the recipients already
done. A broker or store that refuses is retried with the broker-held ``RetryPolicy``
(``max_retries``...); the last failure marks the backend ``failed`` and dead-letters
the job with the reason. A recipient's message has an id derived from the
notification, the recipient and the attempt (``RequestIds.derived``), so a job handed
out again after its worker died finds a message the dead run stored and did not
record, and sends it only if it is still QUEUED, under the same id. A recipient can
receive a message twice when it was published and not recorded, and either not yet
acked by its transport when the worker died, or the store went just then (the
retried job, another attempt, sends it again under a new id).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from vumi_like.applications.notifications.config import NotificationsApiConfig
from vumi_like.errors import ProblemError
from vumi_like.messaging.channels import Channels, message_type_of
from vumi_like.outbound.outbox import Draft, Outbox
from vumi_like.retry import RetriesExhausted, RetryLater, RetryPolicy
from vumi_like.stores import (
    MessageStatus,
    MessageStore,
    Notification,
    RequestIds,
    StoreUnavailable,
)
from vumi_like.worker import PublishFailed

__all__ = ["BACKEND", "ChannelsBackend", "FanOutJob"]

BACKEND = "channels"
# What a notification's messages carry in the Messaging API, for webhooks and history.
ORIGIN = "notifications"


class FanOutJob(BaseModel):
    """Send notification ``notification_id`` to its recipients' channels."""

    tenant: str
    notification_id: int

    def log_ids(self) -> dict[str, str]:
        return {"notification_id": str(self.notification_id)}


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ChannelsBackend:
    def __init__(
        self,
        *,
        config: NotificationsApiConfig,
        store: MessageStore,
        outbox: Outbox,
        retry_policy: RetryPolicy,
    ) -> None:
        self.config = config
        self.store = store
        self.outbox = outbox
        self.channels = Channels(config.channels)
        self.retry_policy = retry_policy

    async def recipients(self, notification: Notification) -> list[str]:
        """The usernames the notification goes to, in order."""
        if notification.target_type == "user":
            return [notification.target_id]
        target = await self.store.notification_target(
            notification.tenant, notification.target_type, notification.target_id
        )
        if target is None:  # deleted since: its members are gone with it
            return []
        return sorted(name for name in target.members if name != notification.author)

    async def draft(self, notification: Notification, username: str) -> Draft:
        """The message for one recipient, on the channel their contact settings name."""
        tenant = notification.tenant
        common: dict[str, Any] = {
            "content": notification.message,
            "party_id": username,
            "origin": ORIGIN,
            "issuer": notification.author,
            "context": {
                "notification_id": notification.id,
                "target_type": notification.target_type,
                "target_id": notification.target_id,
            },
        }
        party = await self.store.get_party(tenant, username)
        channel = self.channels.get(party.channel, tenant) if party else None
        if party is None or channel is None:
            return Draft(
                channel="", receiver="", message_type="MESSAGE", unreachable=True, **common
            )
        payload: dict[str, Any] = {}
        if channel.type == "email":
            context = notification.payload["payload"]["context"]
            payload["subject"] = self.config.email_subject.format(
                author=notification.payload["payload"]["author"]["real_name"],
                name=context["metadata"]["name"],
                type=notification.target_type,
                id=notification.target_id,
            )
        return Draft(
            channel=channel.name,
            receiver=party.address,
            sender=self.config.channel_senders.get(channel.name),
            message_type=message_type_of(channel.type),
            payload=payload,
            **common,
        )

    async def fan_out(self, job: FanOutJob, attempt: int) -> None:
        """The job queue's handler: send to every recipient not yet done."""
        notification = await self.store.get_notification(job.tenant, job.notification_id)
        if notification is None:
            return  # deleted before it was sent: nothing to send, nobody to tell
        state = dict(notification.deliveries.get(BACKEND) or {})
        done: dict[str, Any] = dict(state.get("recipients") or {})
        try:
            for username in await self.recipients(notification):
                if done.get(username, {}).get("status", "RETRYING") != "RETRYING":
                    continue  # sent (or refused for good) by an earlier attempt
                try:
                    done[username] = await self._send(notification, username, attempt)
                except (PublishFailed, StoreUnavailable) as exc:
                    done[username] = {"status": "RETRYING", "reason": str(exc)}
                    raise
                await self._record(notification.id, state, done, "sending")
        except (PublishFailed, StoreUnavailable) as exc:
            failure = str(exc)
        else:
            await self._record(notification.id, state, done, "done")
            return
        try:
            self.retry_policy.retry(attempt, failure)
        except RetriesExhausted as exc:
            await self._record(notification.id, state, done, "failed", str(exc), lenient=True)
            raise
        except RetryLater:
            await self._record(notification.id, state, done, "retrying", failure, lenient=True)
            raise

    async def _send(
        self, notification: Notification, username: str, attempt: int
    ) -> dict[str, Any]:
        draft = await self.draft(notification, username)
        # A recipient's message has the same id in every run of one attempt of the job:
        # a run after one that died before recording it (the broker hands the job out
        # again, as the same attempt) finds it, and sends it only if it is still QUEUED.
        # A retry is another attempt, with a message of its own: the last one's publish
        # was refused, or its outcome could not be recorded.
        ids = RequestIds.derived(
            "notification",
            notification.tenant,
            str(notification.id),
            notification.created_at.isoformat(),
            username,
            str(attempt),
        )
        try:
            _, [message_id] = await self.outbox.submit(
                notification.tenant, [draft], batch=False, ids=ids
            )
        except ProblemError as exc:
            if isinstance(exc.__cause__, PublishFailed):
                # Stored, then refused by the broker: that message is DELIVERY_FAILED in
                # the Messaging API's history; the retry sends a new one.
                raise exc.__cause__ from None
            # The channel or sender is not the tenant's (a configuration mistake):
            # retrying will not cure it. Recorded, and the others are still sent.
            return {"status": "REFUSED", "channel": draft.channel, "reason": exc.detail}
        status = (
            MessageStatus.NO_FEEDBACK_SETTINGS_FOUND if draft.unreachable else MessageStatus.QUEUED
        )
        outcome = {"message_id": message_id, "status": str(status)}
        if not draft.unreachable:
            outcome["channel"] = draft.channel
        return outcome

    async def _record(
        self,
        pk: int,
        state: dict[str, Any],
        recipients: dict[str, Any],
        overall: str,
        reason: str | None = None,
        *,
        lenient: bool = False,
    ) -> None:
        """Record the outcome so far; ``lenient``: a store that cannot be reached is
        let go (the retry, or the dead-letter queue, is what matters then)."""
        state.update(state=overall, at=_now(), recipients=recipients)
        if reason is None:
            state.pop("reason", None)
        else:
            state["reason"] = reason
        try:
            await self.store.record_notification_delivery(pk, BACKEND, state)
        except StoreUnavailable:
            if not lenient:
                raise

    async def with_statuses(self, notification: Notification) -> dict[str, Any]:
        """The backend's outcome with each recipient's current status, as the event
        dispatcher has moved it since (SENT, DELIVERED...)."""
        state = dict(notification.deliveries.get(BACKEND) or {})
        recipients = {}
        for username, outcome in (state.get("recipients") or {}).items():
            message_id = outcome.get("message_id")
            stored = (
                await self.store.get_message(notification.tenant, message_id)
                if message_id
                else None
            )
            recipients[username] = (
                {**outcome, "status": str(stored.status)} if stored is not None else outcome
            )
        if recipients:
            state["recipients"] = recipients
        return state
