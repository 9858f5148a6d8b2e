"""The communication-app interface (the seed's Appendix 1 and 3): what VCS calls on the
app's registered URI, under ``interface_prefix``. Each call is authenticated with the
shared ``webhook_secret`` and answered 204, or with a problem."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from quart import Response
from quart_trio import QuartTrio

from vumi_like.applications.conversations.config import VcitaChannelAppConfig
from vumi_like.applications.conversations.routes import no_content, read_body, require_bearer
from vumi_like.applications.conversations.wire import (
    TYPING_KEY,
    ChannelUpdate,
    MessageUpdate,
    SessionUpdate,
    StaffMessage,
    Typing,
)
from vumi_like.errors import ProblemError
from vumi_like.messages import Message
from vumi_like.stores import ChannelStatus, Direction, MessageStore, VcitaChannel, new_id
from vumi_like.worker import PublishFailed, ReceiveInboundConnector

__all__ = ["CommunicationInterface"]

B = TypeVar("B", bound=BaseModel)


class CommunicationInterface:
    """The routes VCS calls; staff messages and typing go out on ``connector``."""

    def __init__(
        self,
        config: VcitaChannelAppConfig,
        store: MessageStore,
        connector: ReceiveInboundConnector,
        log: Any,
    ) -> None:
        self.config = config
        self.tenant = config.tenant
        self.store = store
        self.connector = connector
        self.log = log

    def register(self, http: QuartTrio) -> None:
        app = self.config.interface_prefix
        routes: list[tuple[str, str, Callable[..., Awaitable[Response]], str]] = [
            ("/channels/<channel_uid>", "channel", self._channel_route, "PUT"),
            ("/sessions/<session_uid>", "session", self._session_route, "PUT"),
            ("/messages", "new_message", self._new_message_route, "POST"),
            ("/messages/<message_uid>", "message", self._message_route, "PUT"),
            ("/<session_uid>/typing", "typing", self._typing_route, "POST"),
        ]
        for path, name, route, method in routes:
            http.add_url_rule(app + path, name, route, methods=[method])

    async def _body(self, model: type[B]) -> B:
        require_bearer(self.config.webhook_secret, "vcs")
        return await read_body(model, self.config.max_body_bytes)

    async def _known_channel(self, channel_uid: str) -> VcitaChannel:
        channel = await self.store.vcita_channel_by_uid(self.tenant, channel_uid)
        if channel is None:
            raise ProblemError(404, f"no channel {channel_uid!r}", code="channel_not_found")
        return channel

    async def _channel_route(self, channel_uid: str) -> Response:
        body = await self._body(ChannelUpdate)
        channel = await self.store.set_vcita_channel_status(self.tenant, channel_uid, body.status)
        if channel is None:
            raise ProblemError(404, f"no channel {channel_uid!r}", code="channel_not_found")
        self.log.info("channel status from VCS", channel_uid=channel_uid, status=str(body.status))
        return no_content()

    async def _session_route(self, session_uid: str) -> Response:
        body = await self._body(SessionUpdate)
        session = await self.store.set_vcita_session_status(self.tenant, session_uid, body.status)
        if session is None:
            raise ProblemError(404, f"no session {session_uid!r}", code="session_not_found")
        self.log.info("session status from VCS", session_uid=session_uid, status=str(body.status))
        return no_content()

    async def _new_message_route(self) -> Response:
        """A staff member's message: published to the client on the channel's transport."""
        body = await self._body(StaffMessage)
        channel = await self._known_channel(body.channel_uid)
        if channel.status != ChannelStatus.ACTIVE:
            raise ProblemError(
                409,
                f"channel {body.channel_uid!r} is {channel.status}: messages flow only on "
                "an active channel",
                code="channel_not_active",
            )
        stored, _ = await self.store.add_vcita_message(
            self.tenant,
            message_id=new_id(),
            channel_id=channel.channel_id,
            message_uid=body.message_uid,
            direction=Direction.OUTBOUND,
            external_uid=body.external_uid,
            content=body.message,
            status=body.status,
        )
        if stored.direction != Direction.OUTBOUND or (stored.external_uid, stored.content) != (
            body.external_uid,
            body.message,
        ):
            raise ProblemError(
                409,
                f"message_uid {body.message_uid!r} is another message's on this channel",
                code="message_uid_taken",
            )
        if stored.reported_status is not None:
            return no_content()  # a repeated POST of a message already on its way
        message = Message(
            message_id=stored.message_id,
            to_addr=stored.external_uid,
            from_addr=channel.address,
            transport_name=channel.transport_name,
            transport_type=self.config.transport_type,
            content=stored.content,
        )
        try:
            await self.connector.publish_outbound(message)
        except PublishFailed as exc:
            self.log.error("publishing a staff message failed", error=str(exc))
            raise ProblemError(
                503,
                "the message could not be queued; try again",
                code="broker_unavailable",
            ) from None
        # Handed on: a repeat of this POST now answers without sending it twice. What
        # VCS has is the status it sent, not the stored one: that may be ahead already
        # (a delivery report handled while an earlier POST of this message failed), and
        # recording it as told would leave the report's handler nothing to tell.
        await self.store.set_vcita_message_reported(stored.message_id, body.status)
        self.log.info(
            "staff message sent",
            message_id=stored.message_id,
            message_uid=stored.message_uid,
            transport_name=channel.transport_name,
        )
        return no_content()

    async def _message_route(self, message_uid: str) -> Response:
        body = await self._body(MessageUpdate)
        channel = await self._known_channel(body.channel_uid)
        stored = await self.store.vcita_message_by_uid(
            self.tenant, channel.channel_id, message_uid
        )
        if stored is None:
            raise ProblemError(
                404,
                f"no message {message_uid!r} on channel {body.channel_uid!r}",
                code="message_not_found",
            )
        updated = await self.store.update_vcita_message_status(stored.message_id, body.status)
        assert updated is not None
        if updated.status != body.status:
            self.log.info(
                "message status not moved back",
                message_uid=message_uid,
                status=str(updated.status),
                proposed=str(body.status),
            )
        return no_content()

    async def _typing_route(self, session_uid: str) -> Response:
        """A staff member's typing state: recorded, and passed to the client where the
        channel's transport takes typing indications (``typing_transports``)."""
        body = await self._body(Typing)
        session = await self.store.record_vcita_typing(self.tenant, session_uid, body.typing)
        if session is None:
            raise ProblemError(404, f"no session {session_uid!r}", code="session_not_found")
        channel = await self.store.vcita_channel(self.tenant, session.channel_id)
        assert channel is not None  # sessions go with their channel
        if channel.transport_name in self.config.typing_transports:
            indication = Message(
                to_addr=session.external_uid,
                from_addr=channel.address,
                transport_name=channel.transport_name,
                transport_type=self.config.transport_type,
                content=None,
                helper_metadata={TYPING_KEY: body.typing},
            )
            try:
                await self.connector.publish_outbound(indication)
            except PublishFailed as exc:
                # Recorded all the same; a typing state is not worth a retry by VCS.
                self.log.warning("publishing a typing indication failed", error=str(exc))
        return no_content()
