"""``NotificationsApi``: messages to users, forms and projects (seed 004), over MQTT.

Under ``prefix`` (default ``/api/v1/messaging``):

* ``POST`` ``{"target_type": "user" | "xform" | "project", "target_id", "message"}``:
  the message is stored, then published through the MQTT backend (an outbound
  envelope on ``mqtt_connector``, carrying the seed's payload and the topic's fields
  for an ``MqttTransport``), and answered 201 with the stored message;
* ``GET ?target_type=&target_id=``: that target's messages, newest first (a page at a
  time: the next page's URL is in a ``Link: <...>; rel="next"`` header); without them,
  an empty list, as the seed says;
* ``GET /{pk}``, ``DELETE /{pk}`` (204);
* the registry's forms and projects: ``PUT /targets/{xform|project}/{id}``
  (``{"name", "form_id"}``: creates one, its creator becoming its admin, or renames
  it, for its admins), ``GET`` it (with its members, for members), and
  ``PUT``/``DELETE /targets/{type}/{id}/members/{username}`` (``{"permission": "view" |
  "edit" | "admin"}``, for its admins). Users, who need client credentials, are added
  with ``vumi-like notifications add-user``.

Who may do what (each refusal an RFC 7807 problem):

* the caller is the registry user whose OAuth2 client the access token was issued to
  (tokens come from the Messaging API's ``/oauth/token``, signed with the same key);
  a client that is no registry user is refused (403);
* a form's or project's messages may be posted and read by its members with at least
  ``view``; a user may be messaged by anyone, and those messages read by that user and
  by their author (others listing them see only their own);
* a message may be deleted by its author, or by an ``admin`` of its form or project.

Delivery is at least once: the envelope is published (and confirmed by the broker)
before the 201, the transport retries through the broker, and every outcome it
reports (``ack``: published to the MQTT broker; a ``pending`` report: retrying;
``nack``: failed) is recorded on the message under ``deliveries.mqtt``. A request that
is refused stores and publishes nothing; one whose publish the broker refuses is
removed again and answered 503.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import Response, request

from vumi_like.applications.notifications.config import NotificationsApiConfig
from vumi_like.applications.notifications.payload import (
    TARGET_TYPES,
    notification_body,
    seed_payload,
)
from vumi_like.auth import OAuthError, TokenService, oauth_error_response
from vumi_like.errors import ProblemError, store_unavailable_response
from vumi_like.messages import DeliveryStatus, Event, EventType, Message
from vumi_like.stores import (
    InvalidCursor,
    Notification,
    NotificationTarget,
    NotificationUser,
    Permission,
    StoreUnavailable,
)
from vumi_like.validation import describe_validation_error
from vumi_like.worker import BaseWorker, PublishFailed

__all__ = ["NotificationsApi"]

B = TypeVar("B", bound=BaseModel)

BACKEND = "mqtt"
_MESSAGE_ID = re.compile(r"^notification-(\d+)-mqtt$")
# What a topic level may not hold (MqttTransport refuses it too, but only after a 201).
_NOT_IN_TARGET_ID = re.compile(r"[/+#\x00]")


class TargetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    form_id: str | None = Field(default=None, max_length=255)


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    permission: Permission


class NewNotification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_type: Literal["user", "xform", "project"]
    target_id: str = Field(min_length=1, max_length=255)
    message: str = Field(min_length=1)


def _now() -> datetime:
    return datetime.now(UTC)


class NotificationsApi(BaseWorker):
    config_class = NotificationsApiConfig
    config: NotificationsApiConfig

    async def setup(self) -> None:
        self.store = self.config.make_store()
        await self.store.open()
        self.tokens = TokenService(self.config.auth)
        self.mqtt = await self.setup_receive_inbound_connector(
            self.config.mqtt_connector,
            inbound_handler=self.handle_inbound,
            event_handler=self.handle_event,
        )
        http = self.http
        assert http is not None  # http_bind is required by the config
        prefix = self.config.prefix
        http.add_url_rule(prefix, "create", self._create_route, methods=["POST"])
        http.add_url_rule(prefix, "list", self._list_route, methods=["GET"])
        http.add_url_rule(f"{prefix}/<int:pk>", "get", self._get_route, methods=["GET"])
        http.add_url_rule(f"{prefix}/<int:pk>", "delete", self._delete_route, methods=["DELETE"])
        target = f"{prefix}/targets/<target_type>/<target_id>"
        http.add_url_rule(target, "get_target", self._get_target_route, methods=["GET"])
        http.add_url_rule(target, "set_target", self._set_target_route, methods=["PUT"])
        member = f"{target}/members/<username>"
        http.add_url_rule(member, "set_member", self._set_member_route, methods=["PUT"])
        http.add_url_rule(member, "remove_member", self._remove_member_route, methods=["DELETE"])
        http.register_error_handler(OAuthError, self._oauth_error)
        http.register_error_handler(StoreUnavailable, self._store_unavailable)

    async def teardown(self) -> None:
        await self.store.aclose()

    # -- who is calling, and what they may do

    async def caller(self) -> NotificationUser:
        principal = self.tokens.verify(request.headers.get("Authorization"))
        user = await self.store.notification_user_by_client(principal.client_id)
        if user is None or user.tenant != principal.tenant:
            raise ProblemError(
                403,
                f"client {principal.client_id!r} is not a notifications user",
                code="FORBIDDEN",
            )
        return user

    async def _check_member(
        self, caller: NotificationUser, target_type: str, target_id: str, needed: Permission
    ) -> NotificationTarget:
        """The form or project, if the caller has at least ``needed`` on it (else 404/403)."""
        target = await self.store.notification_target(caller.tenant, target_type, target_id)
        if target is None:
            raise ProblemError(404, f"no {target_type} {target_id!r}", code="TARGET_NOT_FOUND")
        _require(caller, target, needed)
        return target

    async def _readable(self, caller: NotificationUser, notification: Notification) -> bool:
        if caller.username == notification.author:
            return True
        if notification.target_type == "user":
            return caller.username == notification.target_id
        target = await self.store.notification_target(
            caller.tenant, notification.target_type, notification.target_id
        )
        permission = target.members.get(caller.username) if target else None
        return permission is not None and permission.includes(Permission.VIEW)

    # -- routes

    async def _create_route(self) -> Response:
        caller = await self.caller()
        body = await self._body(NewNotification)
        if _NOT_IN_TARGET_ID.search(body.target_id):
            raise ProblemError(
                400, "target_id may not contain '/', '+', '#' or NUL", code="VALIDATION_FAILED"
            )
        if len(body.message) > self.config.max_message_length:
            raise ProblemError(
                400,
                f"message is longer than {self.config.max_message_length} characters",
                code="VALIDATION_FAILED",
            )
        tenant = caller.tenant
        target_user = target = None
        if body.target_type == "user":
            target_user = await self.store.notification_user(tenant, body.target_id)
            if target_user is None:
                raise ProblemError(404, f"no user {body.target_id!r}", code="TARGET_NOT_FOUND")
        else:
            target = await self._check_member(
                caller, body.target_type, body.target_id, Permission.VIEW
            )
        payload = seed_payload(
            message=body.message,
            target_type=body.target_type,
            target_id=body.target_id,
            target_user=target_user,
            target=target,
            author=caller,
            at=_now(),
        )
        notification = await self.store.create_notification(
            tenant,
            body.target_type,
            body.target_id,
            caller.username,
            body.message,
            payload,
            {BACKEND: {"state": "queued"}},
        )
        try:
            await self.mqtt.publish_outbound(self._envelope(notification))
        except PublishFailed as exc:
            await self.store.delete_notification(tenant, notification.id)
            raise ProblemError(
                503, f"the message could not be queued: {exc}", code="BROKER_UNAVAILABLE"
            ) from exc
        return _json(notification_body(notification), 201)

    async def _list_route(self) -> Response:
        caller = await self.caller()
        target_type = request.args.get("target_type")
        target_id = request.args.get("target_id")
        if target_type is None and target_id is None:
            return _json([], 200)
        if not target_type or not target_id:
            raise ProblemError(
                400, "give both target_type and target_id, or neither", code="VALIDATION_FAILED"
            )
        if target_type not in TARGET_TYPES:
            raise ProblemError(
                400,
                f"target_type must be one of {', '.join(TARGET_TYPES)}",
                code="VALIDATION_FAILED",
            )
        author = None
        if target_type == "user":
            if caller.username != target_id:
                author = caller.username  # others see only what they sent that user
        else:
            await self._check_member(caller, target_type, target_id, Permission.VIEW)
        try:
            limit = int(request.args.get("limit", "100"))
            if limit < 1:
                raise ValueError("limit must be at least 1")
            page = await self.store.list_notifications(
                caller.tenant,
                target_type,
                target_id,
                author=author,
                cursor=request.args.get("cursor"),
                limit=limit,
            )
        except (ValueError, InvalidCursor) as exc:
            raise ProblemError(
                400, f"bad limit or cursor: {exc}", code="VALIDATION_FAILED"
            ) from None
        headers = {}
        if page.next_cursor is not None:
            query = urlencode(
                {"target_type": target_type, "target_id": target_id, "cursor": page.next_cursor}
            )
            headers["Link"] = f'<{self.config.prefix}?{query}>; rel="next"'
        return _json([notification_body(n) for n in page.items], 200, headers)

    async def _found(self, caller: NotificationUser, pk: int) -> Notification:
        notification = await self.store.get_notification(caller.tenant, pk)
        if notification is None or not await self._readable(caller, notification):
            # Not there, or not the caller's to see: the same answer, so ids leak nothing.
            raise ProblemError(404, f"no message {pk}", code="MESSAGE_NOT_FOUND")
        return notification

    async def _get_route(self, pk: int) -> Response:
        caller = await self.caller()
        return _json(notification_body(await self._found(caller, pk)), 200)

    async def _delete_route(self, pk: int) -> Response:
        caller = await self.caller()
        notification = await self._found(caller, pk)
        if caller.username != notification.author:
            if notification.target_type == "user":
                raise ProblemError(
                    403, "only its author may delete this message", code="FORBIDDEN"
                )
            await self._check_member(
                caller, notification.target_type, notification.target_id, Permission.ADMIN
            )
        await self.store.delete_notification(caller.tenant, pk)
        return Response("", 204)

    async def _body(self, model: type[B]) -> B:
        raw = await request.get_data(as_text=False)
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            detail = describe_validation_error(exc, subject="the body")
            raise ProblemError(400, detail, code="VALIDATION_FAILED") from None

    # -- the registry: forms and projects, and their members

    @staticmethod
    def _group_type(target_type: str) -> str:
        if target_type not in ("xform", "project"):
            raise ProblemError(
                404, f"no target type {target_type!r}: xform or project", code="TARGET_NOT_FOUND"
            )
        return target_type

    async def _get_target_route(self, target_type: str, target_id: str) -> Response:
        caller = await self.caller()
        target = await self._check_member(
            caller, self._group_type(target_type), target_id, Permission.VIEW
        )
        return _json(_target_body(target), 200)

    async def _set_target_route(self, target_type: str, target_id: str) -> Response:
        """Create a form or project (its creator becomes its admin), or, as its admin,
        rename it."""
        caller = await self.caller()
        self._group_type(target_type)
        body = await self._body(TargetBody)
        if _NOT_IN_TARGET_ID.search(target_id):
            raise ProblemError(
                400, "target_id may not contain '/', '+', '#' or NUL", code="VALIDATION_FAILED"
            )
        if body.form_id is not None and target_type != "xform":
            raise ProblemError(400, "only a form has a form_id", code="VALIDATION_FAILED")
        existing = await self.store.notification_target(caller.tenant, target_type, target_id)
        if existing is not None:
            _require(caller, existing, Permission.ADMIN)
        await self.store.set_notification_target(
            caller.tenant, target_type, target_id, body.name, body.form_id
        )
        if existing is None:
            await self.store.set_notification_member(
                caller.tenant, target_type, target_id, caller.username, Permission.ADMIN
            )
        target = await self.store.notification_target(caller.tenant, target_type, target_id)
        assert target is not None
        return _json(_target_body(target), 200 if existing else 201)

    async def _set_member_route(self, target_type: str, target_id: str, username: str) -> Response:
        caller = await self.caller()
        await self._check_member(
            caller, self._group_type(target_type), target_id, Permission.ADMIN
        )
        body = await self._body(MemberBody)
        if await self.store.notification_user(caller.tenant, username) is None:
            raise ProblemError(404, f"no user {username!r}", code="USER_NOT_FOUND")
        await self.store.set_notification_member(
            caller.tenant, target_type, target_id, username, body.permission
        )
        return Response("", 204)

    async def _remove_member_route(
        self, target_type: str, target_id: str, username: str
    ) -> Response:
        caller = await self.caller()
        await self._check_member(
            caller, self._group_type(target_type), target_id, Permission.ADMIN
        )
        if not await self.store.remove_notification_member(
            caller.tenant, target_type, target_id, username
        ):
            raise ProblemError(
                404, f"{username!r} is not on {target_type} {target_id!r}", code="USER_NOT_FOUND"
            )
        return Response("", 204)

    # -- the MQTT backend

    def _envelope(self, notification: Notification) -> Message:
        return Message(
            message_id=f"notification-{notification.id}-{BACKEND}",
            to_addr=f"{notification.target_type}/{notification.target_id}",
            from_addr=notification.author,
            transport_name=self.config.mqtt_connector,
            transport_type="mqtt",
            content=notification.message,
            helper_metadata={
                "mqtt": {
                    "target_type": notification.target_type,
                    "target_id": notification.target_id,
                    "payload": dict(notification.payload),
                }
            },
        )

    async def handle_inbound(self, message: Message) -> None:
        # Notifications go one way: an MQTT transport subscribed to something on this
        # connector is misconfigured. Dead-lettered, with this reason, not lost.
        raise ValueError(
            f"the notifications API takes no inbound messages (from {message.from_addr!r})"
        )

    async def handle_event(self, event: Event) -> None:
        match = _MESSAGE_ID.match(event.user_message_id)
        if match is None:
            raise ValueError(f"not a notification's event: {event.user_message_id!r}")
        at = event.timestamp.replace(tzinfo=UTC).isoformat()
        outcome: dict[str, Any] = {"at": at}
        if event.event_type == EventType.ACK:
            outcome["state"] = "published"
        elif event.event_type == EventType.NACK:
            outcome.update(state="failed", reason=event.nack_reason)
        elif event.delivery_status == DeliveryStatus.PENDING:
            retry = (event.transport_metadata or {}).get("retry") or {}
            outcome.update(state="retrying", reason=retry.get("reason"))
        else:
            outcome["state"] = str(event.delivery_status)
        if not await self.store.record_notification_delivery(int(match[1]), BACKEND, outcome):
            self.log.info("outcome of a deleted message", message_id=event.user_message_id)

    # -- errors

    async def _oauth_error(self, error: OAuthError) -> Response:
        return oauth_error_response(error)

    async def _store_unavailable(self, error: StoreUnavailable) -> Response:
        self.log.error("store unavailable", error=str(error))
        return store_unavailable_response()


def _require(caller: NotificationUser, target: NotificationTarget, needed: Permission) -> None:
    permission = target.members.get(caller.username)
    if permission is None or not permission.includes(needed):
        raise ProblemError(
            403,
            f"{caller.username!r} needs {needed.value} permission on {target.target_type} "
            f"{target.target_id!r}",
            code="FORBIDDEN",
        )


def _target_body(target: NotificationTarget) -> dict[str, Any]:
    return {
        "target_type": target.target_type,
        "target_id": target.target_id,
        "name": target.name,
        "form_id": target.form_id,
        "members": {name: str(permission) for name, permission in target.members.items()},
    }


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status,
        headers or {},
        content_type="application/json",
    )
