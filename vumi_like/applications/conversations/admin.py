"""The admin API, under ``admin_prefix``, for ``admin_token`` holders: businesses'
access tokens (set, never shown) and channels (asked for, listed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from vumi_like.applications.conversations.config import VcitaChannelAppConfig
from vumi_like.applications.conversations.routes import (
    no_content,
    read_body,
    require_bearer,
)
from vumi_like.applications.conversations.wire import (
    CreateChannelJob,
    NewChannel,
    TokenBody,
    channel_body,
)
from vumi_like.errors import ProblemError
from vumi_like.openapi.http import json_response
from vumi_like.stores import AlreadyExists, MessageStore
from vumi_like.worker import JobConnector, PublishFailed

__all__ = ["AdminApi"]


class AdminApi:
    """The admin routes; a channel asked for is created at VCS by a job on ``jobs``."""

    def __init__(
        self, config: VcitaChannelAppConfig, store: MessageStore, jobs: JobConnector, log: Any
    ) -> None:
        self.config = config
        self.tenant = config.tenant
        self.store = store
        self.jobs = jobs
        self.log = log

    def register(self, http: QuartTrio) -> None:
        admin = self.config.admin_prefix
        routes: list[tuple[str, str, Callable[..., Awaitable[Response]], str]] = [
            ("/businesses/<business_uid>/token", "set_token", self._set_token_route, "PUT"),
            ("/businesses", "businesses", self._businesses_route, "GET"),
            ("/channels", "add_channel", self._add_channel_route, "POST"),
            ("/channels", "channels", self._channels_route, "GET"),
            ("/channels/<channel_id>", "get_channel", self._get_channel_route, "GET"),
        ]
        for path, name, route, method in routes:
            http.add_url_rule(admin + path, name, route, methods=[method])

    async def _set_token_route(self, business_uid: str) -> Response:
        require_bearer(self.config.admin_token, "admin")
        if not business_uid.strip() or len(business_uid) > 255:
            raise ProblemError(
                400, "business_uid must be 1 to 255 characters", code="invalid_business_uid"
            )
        body = await read_body(TokenBody, self.config.max_body_bytes)
        created = await self.store.set_vcita_token(self.tenant, business_uid, body.access_token)
        self.log.info("access token set", business_uid=business_uid, new_business=created)
        return no_content()

    async def _businesses_route(self) -> Response:
        require_bearer(self.config.admin_token, "admin")
        businesses = await self.store.list_vcita_businesses(self.tenant)
        return json_response(
            [
                {"business_uid": b.business_uid, "updated_at": b.updated_at.isoformat()}
                for b in businesses
            ],
            200,
        )

    async def _add_channel_route(self) -> Response:
        require_bearer(self.config.admin_token, "admin")
        body = await read_body(NewChannel, self.config.max_body_bytes)
        if await self.store.vcita_access_token(self.tenant, body.business_uid) is None:
            raise ProblemError(
                409,
                f"business {body.business_uid!r} has no access token: set one first",
                code="no_access_token",
            )
        try:
            channel = await self.store.add_vcita_channel(
                self.tenant, body.business_uid, body.type, body.transport_name, body.address
            )
        except AlreadyExists as exc:
            raise ProblemError(409, str(exc), code="channel_exists") from None
        try:
            await self.jobs.publish(CreateChannelJob(channel_id=channel.channel_id))
        except PublishFailed as exc:
            self.log.error("queueing a channel's creation failed", error=str(exc))
            raise ProblemError(
                503,
                f"channel {channel.channel_id} is stored but its creation at VCS could not "
                "be queued; delete it or try later",
                code="broker_unavailable",
            ) from None
        self.log.info(
            "channel requested", channel_id=channel.channel_id, business_uid=channel.business_uid
        )
        return json_response(channel_body(channel), 202)

    async def _channels_route(self) -> Response:
        require_bearer(self.config.admin_token, "admin")
        channels = await self.store.list_vcita_channels(self.tenant)
        return json_response([channel_body(channel) for channel in channels], 200)

    async def _get_channel_route(self, channel_id: str) -> Response:
        require_bearer(self.config.admin_token, "admin")
        channel = await self.store.vcita_channel(self.tenant, channel_id)
        if channel is None:
            raise ProblemError(404, f"no channel {channel_id!r}", code="channel_not_found")
        return json_response(channel_body(channel), 200)
