"""``VcitaChannelApp``, the worker: VCS's calls in, our calls to VCS out, envelopes
between them and the transports. See the package docstring for the flows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NoReturn

import httpx
from prometheus_client import Counter
from quart import Response

from vumi_like.applications.conversations.admin import AdminApi
from vumi_like.applications.conversations.config import VcitaChannelAppConfig
from vumi_like.applications.conversations.interface import CommunicationInterface
from vumi_like.applications.conversations.vcs import VcsClient, VcsError, VcsUnavailable
from vumi_like.applications.conversations.wire import (
    CreateChannelJob,
    message_uid_for,
    status_for_event,
    typing_of,
)
from vumi_like.errors import store_unavailable_response
from vumi_like.messages import Event, Message
from vumi_like.metrics import REGISTRY
from vumi_like.retry import Unprocessable
from vumi_like.stores import (
    ChannelStatus,
    ConversationMessageStatus,
    Direction,
    SessionStatus,
    StoreUnavailable,
    VcitaChannel,
    VcitaSession,
)
from vumi_like.worker import BaseWorker

__all__ = ["VCS_CALLS", "ConversationError", "VcitaChannelApp"]

VCS_CALLS = Counter(
    "vumi_like_vcs_calls",
    "Calls to the vcita Communication Service by flow and outcome (ok, retry, failed)",
    ("worker", "flow", "outcome"),
    registry=REGISTRY,
)

# A channel in these states takes no more messages; one in the others may yet.
_CLOSED = frozenset({ChannelStatus.BLOCKED, ChannelStatus.DELETED})
# A claim to open a client's session (see ``_create_session``) that has lasted this
# many ``vcs_timeout``s is its opener's no more (it died): another handler takes it over.
SESSION_CLAIM_TIMEOUTS = 3


class ConversationError(Unprocessable):
    """An envelope or job that cannot be handled; it is dead-lettered with this reason."""


def _now() -> datetime:
    return datetime.now(UTC)


class VcitaChannelApp(BaseWorker):
    config_class = VcitaChannelAppConfig
    config: VcitaChannelAppConfig

    async def setup(self) -> None:
        self.retry_policy = self.config.retry_policy()
        self.tenant = self.config.tenant
        # Built before anything can fail, so teardown always has both to close.
        self.client = httpx.AsyncClient()
        self.vcs = VcsClient(self.config.vcs_url, self.config.vcs_timeout, self.client)
        self.store = self.config.make_store()
        await self.store.open()
        self.jobs = await self.setup_job_connector(
            f"{self.config.connector_name}.vcs", CreateChannelJob, self.handle_create_channel
        )
        self.connector = await self.setup_receive_inbound_connector(
            self.config.connector_name,
            inbound_handler=self.handle_inbound,
            event_handler=self.handle_event,
        )
        http = self.http
        assert http is not None  # http_bind is required by the config
        http.config["MAX_CONTENT_LENGTH"] = self.config.max_body_bytes
        CommunicationInterface(self.config, self.store, self.connector, self.log).register(http)
        AdminApi(self.config, self.store, self.jobs, self.log).register(http)
        http.register_error_handler(StoreUnavailable, self._store_unavailable)

    async def teardown(self) -> None:
        await self.client.aclose()
        await self.store.aclose()

    # -- calling VCS: every call goes through here, for the retry policy

    async def _token(self, business_uid: str) -> str:
        token = await self.store.vcita_access_token(self.tenant, business_uid)
        if token is None:
            raise ConversationError(
                f"no access token for business {business_uid!r}: add one (admin API or "
                "`vumi-like vcita add-token`), then replay this from the dead-letter queue"
            )
        return token

    def _vcs_failed(self, flow: str, exc: VcsError, attempt: int) -> NoReturn:
        """After a failed call: ``RetryLater`` while retries are left (the broker brings
        the envelope back), else the reason it is dead-lettered with."""
        if isinstance(exc, VcsUnavailable):
            outcome = "failed" if self.retry_policy.gives_up_after(attempt) else "retry"
            VCS_CALLS.labels(self.name, flow, outcome).inc()
            self.retry_policy.retry(attempt, str(exc), retry_after=exc.retry_after)
        VCS_CALLS.labels(self.name, flow, "failed").inc()
        raise ConversationError(f"{exc} (not retried)")

    # -- channels: created by the admin API, confirmed by VCS

    async def handle_create_channel(self, job: CreateChannelJob, attempt: int) -> None:
        channel = await self.store.vcita_channel(self.tenant, job.channel_id)
        if channel is None:
            self.log.info("channel gone before it was created", channel_id=job.channel_id)
            return
        if channel.channel_uid is not None:
            return  # created already (a redelivered job)
        token = await self._token(channel.business_uid)
        try:
            created = await self.vcs.create_channel(
                token, channel.business_uid, str(channel.channel_type)
            )
        except VcsError as exc:
            self._vcs_failed("channel", exc, attempt)
        VCS_CALLS.labels(self.name, "channel", "ok").inc()
        status = _channel_status(created.status)
        await self.store.vcita_channel_created(
            self.tenant, channel.channel_id, created.uid, status
        )
        self.log.info(
            "channel created at VCS",
            channel_id=channel.channel_id,
            channel_uid=created.uid,
            status=str(status),
        )

    # -- inbound: a client's message (or typing) -> VCS

    async def handle_inbound(self, message: Message, attempt: int) -> None:
        channel = await self.store.vcita_channel_for_address(
            self.tenant, message.transport_name, message.to_addr
        )
        if channel is None:
            raise ConversationError(
                f"no channel for {message.transport_name} address {message.to_addr!r}"
            )
        if channel.status in _CLOSED:
            raise ConversationError(f"channel {channel.channel_uid} is {channel.status}")
        if channel.status != ChannelStatus.ACTIVE or channel.channel_uid is None:
            # Messages flow only on an active channel: this one waits for VCS.
            self.retry_policy.retry(attempt, f"channel {channel.channel_id} is {channel.status}")
        typing = typing_of(message)
        if typing is None and message.content is None:
            # A session event or an empty message: nothing a staff member could read.
            self.log.info("inbound without content not posted", message_id=message.message_id)
            return
        token = await self._token(channel.business_uid)
        session = await self._active_session(channel, message.from_addr, token, attempt)
        if typing is not None:
            await self._post_typing(message, session, token, typing, attempt)
        else:
            await self._post_message(message, channel, token, attempt)

    async def _active_session(
        self, channel: VcitaChannel, external_uid: str, token: str, attempt: int
    ) -> VcitaSession:
        """The client's session on the channel, once active: created or reactivated at
        VCS if need be. Until VCS confirms it, the envelope is retried later."""
        session = await self.store.vcita_session(self.tenant, channel.channel_id, external_uid)
        if session is None or session.session_uid is None:
            session = await self._create_session(channel, external_uid, token, attempt)
        elif session.status == SessionStatus.INACTIVE:
            try:
                session = await self._reactivate_session(session, token)
            except VcsError as exc:
                self._vcs_failed("session", exc, attempt)
            VCS_CALLS.labels(self.name, "session", "ok").inc()
        if session.status != SessionStatus.ACTIVE:
            self.retry_policy.retry(attempt, f"session {session.session_uid} is {session.status}")
        return session

    async def _create_session(
        self, channel: VcitaChannel, external_uid: str, token: str, attempt: int
    ) -> VcitaSession:
        """Create the client's session at VCS (one session per client and channel, the
        seed says). A client's first messages often come together, and are handled at
        once, here or by another replica: one of them claims the opening in the store,
        the others are retried later, when the session is open."""
        assert channel.channel_uid is not None
        claim, mine = await self.store.claim_vcita_session(
            self.tenant,
            channel.channel_id,
            external_uid,
            stale_after=self.config.vcs_timeout * SESSION_CLAIM_TIMEOUTS,
        )
        if not mine:
            if claim.session_uid is None:
                self.retry_policy.retry(attempt, "the client's session is being opened at VCS")
            return claim  # opened since it was read
        try:
            created = await self.vcs.create_session(
                token, channel.business_uid, channel.channel_uid, external_uid
            )
        except VcsError as exc:
            await self.store.release_vcita_session_claim(claim)
            self._vcs_failed("session", exc, attempt)
        VCS_CALLS.labels(self.name, "session", "ok").inc()
        self.log.info("session created at VCS", session_uid=created.uid)
        return await self.store.save_vcita_session(
            self.tenant,
            channel.channel_id,
            external_uid,
            created.uid,
            _session_status(created.status),
        )

    async def _reactivate_session(self, session: VcitaSession, token: str) -> VcitaSession:
        """Reactivate the client's inactive session at VCS, rather than create another."""
        assert session.session_uid is not None
        answered = await self.vcs.activate_session(token, session.session_uid)
        self.log.info("session reactivated at VCS", session_uid=session.session_uid)
        # Only from inactive: VCS's confirmation may have got here first.
        updated = await self.store.set_vcita_session_status(
            self.tenant,
            session.session_uid,
            _session_status(answered),
            only_from=SessionStatus.INACTIVE,
        )
        return updated or session

    async def _post_message(
        self, message: Message, channel: VcitaChannel, token: str, attempt: int
    ) -> None:
        assert channel.channel_uid is not None
        stored, _ = await self.store.add_vcita_message(
            self.tenant,
            message_id=message.message_id,
            channel_id=channel.channel_id,
            message_uid=message_uid_for(message),
            direction=Direction.INBOUND,
            external_uid=message.from_addr,
            content=message.content,
        )
        if stored.reported_status is not None:
            return  # posted already: a redelivered envelope
        try:
            status = await self.vcs.create_message(
                token,
                channel.channel_uid,
                stored.message_uid,
                message.from_addr,
                message.content or "",
            )
        except VcsError as exc:
            self._vcs_failed("message", exc, attempt)
        VCS_CALLS.labels(self.name, "message", "ok").inc()
        await self.store.set_vcita_message_reported(
            stored.message_id, _message_status(status) or ConversationMessageStatus.PENDING
        )
        self.log.info(
            "client message posted to VCS",
            message_id=message.message_id,
            message_uid=stored.message_uid,
        )

    async def _post_typing(
        self, message: Message, session: VcitaSession, token: str, typing: bool, attempt: int
    ) -> None:
        age = (_now() - message.timestamp.replace(tzinfo=UTC)).total_seconds()
        if age > self.config.typing_max_age:
            self.log.info(
                "stale typing indication dropped", message_id=message.message_id, age=round(age, 1)
            )
            return
        assert session.session_uid is not None
        try:
            await self.vcs.typing(token, session.session_uid, typing)
        except VcsError as exc:
            self._vcs_failed("typing", exc, attempt)
        VCS_CALLS.labels(self.name, "typing", "ok").inc()

    # -- events: our ack / delivery report / nack of a staff message -> its status at VCS

    async def handle_event(self, event: Event, attempt: int) -> None:
        proposed = status_for_event(event)
        if proposed is None:
            return  # an ack: VCS made the message pending itself, and it still is
        stored = await self.store.update_vcita_message_status(event.user_message_id, proposed)
        if stored is None or stored.direction != Direction.OUTBOUND:
            self.log.info(
                "event for a message that is not a staff message; ignored",
                event_id=event.event_id,
                message_id=event.user_message_id,
            )
            return
        # VCS is told of a status once, by the handler of the event that brought it: an
        # event behind a later status (a nack after the delivery report, say) has
        # nothing to tell. That handler's event stays unacked until VCS was told, so
        # if it dies first, its redelivery tells VCS.
        if stored.status != proposed or stored.status == stored.reported_status:
            return
        channel = await self.store.vcita_channel(self.tenant, stored.channel_id)
        if channel is None or channel.channel_uid is None:
            raise ConversationError(f"the channel of message {stored.message_uid} is gone")
        token = await self._token(channel.business_uid)
        try:
            await self.vcs.update_message_status(
                token, stored.message_uid, channel.channel_uid, str(stored.status)
            )
        except VcsError as exc:
            self._vcs_failed("status", exc, attempt)
        VCS_CALLS.labels(self.name, "status", "ok").inc()
        await self.store.set_vcita_message_reported(stored.message_id, stored.status)
        self.log.info(
            "message status sent to VCS", message_uid=stored.message_uid, status=str(stored.status)
        )

    async def _store_unavailable(self, error: StoreUnavailable) -> Response:
        self.log.error("store unavailable", error=str(error))
        return store_unavailable_response()


def _channel_status(value: str | None) -> ChannelStatus:
    """VCS's status for a channel it just created: pending, as the seed says, unless it
    named another one we know."""
    try:
        return ChannelStatus(value or "")
    except ValueError:
        return ChannelStatus.PENDING


def _session_status(value: str | None) -> SessionStatus:
    try:
        return SessionStatus(value or "")
    except ValueError:
        return SessionStatus.PENDING


def _message_status(value: str | None) -> ConversationMessageStatus | None:
    try:
        return ConversationMessageStatus(value or "")
    except ValueError:
        return None
