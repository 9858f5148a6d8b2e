"""``NotificationsApi``: messages to users, forms and projects (seed 004), over MQTT.

Under ``prefix`` (default ``/api/v1/messaging``):

* ``POST`` ``{"target_type": "user" | "xform" | "project", "target_id", "message"}``:
  the message is stored, then published through the MQTT backend (an outbound
  envelope on ``mqtt_connector``, carrying the seed's payload and the topic's fields
  for an ``MqttTransport``), and answered 201 with the stored message. With an
  ``Idempotency-Key`` (the user's own), the same request again gets that answer and
  stores and sends nothing new (``vumi_like.openapi.idempotency``);
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

Delivery (the ``backends`` in config, ``[mqtt]`` by default) is at least once, each
backend's outcome recorded on the message under ``deliveries.<backend>``:

* ``mqtt`` (``mqtt.py``): published on the target's topic by an ``MqttTransport``;
* ``channels`` (``fanout.py``): sent to each recipient's preferred channel through the
  Messaging API's outbox, by a job on the broker, with each recipient's Messaging API
  message id and status.

The 201 comes once the broker has what each backend needs (the envelope, the fan-out
job). A request that is refused stores and publishes nothing; one whose publish the
broker refuses is removed again and answered 503.

``/openapi.json`` and ``/api-docs`` (YAML) document the API, as the Messaging API's do;
a copy is kept in ``docs/notifications.openapi.json``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import attrs
from pydantic import BaseModel, ValidationError
from quart import Response, request
from quart_schema import (
    document_headers,
    document_querystring,
    document_request,
    document_response,
)

from vumi_like.applications.notifications.config import NotificationsApiConfig
from vumi_like.applications.notifications.fanout import BACKEND as CHANNELS
from vumi_like.applications.notifications.fanout import ChannelsBackend, FanOutJob
from vumi_like.applications.notifications.models import (
    ListQuery,
    MemberBody,
    NewNotification,
    NotificationOut,
    TargetBody,
    TargetOut,
)
from vumi_like.applications.notifications.mqtt import MqttBackend
from vumi_like.applications.notifications.payload import (
    TARGET_TYPES,
    notification_body,
    seed_payload,
)
from vumi_like.auth import OAuthError, TokenService, oauth_error_response
from vumi_like.errors import ProblemError, store_unavailable_response
from vumi_like.messages import Event, Message
from vumi_like.messaging.channels import Channels
from vumi_like.messaging.subscriptions import Subscriptions
from vumi_like.messaging.webhooks import WebhookJob
from vumi_like.openapi.document import (
    NoContent,
    document_worker_routes,
    documentable,
    openapi_document,
    serve_openapi,
    yaml_response,
)
from vumi_like.openapi.http import json_response, problems
from vumi_like.openapi.idempotency import IdempotencyHeaders, answer_once
from vumi_like.outbound.outbox import BatchJob, Outbox
from vumi_like.outbound.unsent import Unsent
from vumi_like.stores import (
    AlreadyExists,
    InvalidCursor,
    Notification,
    NotificationTarget,
    NotificationUser,
    Permission,
    RequestIds,
    StoreError,
    StoreUnavailable,
)
from vumi_like.validation import describe_validation_error
from vumi_like.worker import BaseWorker, JobConnector, PublishFailed

__all__ = ["NotificationsApi"]

B = TypeVar("B", bound=BaseModel)

# What a topic level may not hold (MqttTransport refuses it too, but only after a 201).
_NOT_IN_TARGET_ID = re.compile(r"[/+#\x00]")


def _now() -> datetime:
    return datetime.now(UTC)


# The reason a backend of a notification whose request's replica died before
# publishing it is marked failed with (``outbound/unsent.py``).
ABANDONED_REASON = "the API replica that took its request stopped before publishing it"


class NotificationsApi(BaseWorker):
    config_class = NotificationsApiConfig
    config: NotificationsApiConfig

    async def setup(self) -> None:
        self.store = self.config.make_store()
        await self.store.open()
        self.tokens = TokenService(self.config.auth)
        self.mqtt: MqttBackend | None = None
        self.fanout: ChannelsBackend | None = None
        self.fanout_jobs: JobConnector | None = None
        if "mqtt" in self.config.backends:
            await self._set_up_mqtt()
        if "channels" in self.config.backends:
            await self._set_up_channels()
        self.unsent: Unsent[int] = Unsent(
            forget=self.store.forget_unsent_notifications,
            sweep=self._sweep_unsent,
            what="notifications",
        )
        self.nursery.start_soon(
            functools.partial(
                self.unsent.keep,
                request_timeout=self.config.request_timeout,
                sweep_every=self.config.unsent_sweep_interval,
            )
        )
        self.serve_http_api()

    async def _sweep_unsent(self, older_than: float) -> list[int]:
        failed = {"state": "failed", "at": _now().isoformat(), "reason": ABANDONED_REASON}
        return await self.store.fail_abandoned_unsent_notifications(older_than, failed)

    async def _set_up_mqtt(self) -> None:
        name = self.config.mqtt_connector
        assert name is not None  # the config requires it with this backend
        connector = await self.setup_receive_inbound_connector(
            name, inbound_handler=self._mqtt_inbound, event_handler=self._mqtt_event
        )
        self.mqtt = MqttBackend(connector=connector, connector_name=name, store=self.store)

    async def _set_up_channels(self) -> None:
        config = self.config
        assert config.connector_name is not None  # the config requires it with this backend
        # Publish-only, as the Messaging API's own: its event dispatcher follows them.
        connector = await self.setup_receive_inbound_connector(
            config.connector_name, inbound_handler=None, event_handler=None
        )
        outbox = Outbox(
            store=self.store,
            channels=Channels(config.channels),
            connector=connector,
            webhooks=await self.setup_job_connector(config.webhook_queue_name(), WebhookJob),
            batches=await self.setup_job_connector(config.batch_queue_name(), BatchJob),
            subscriptions=Subscriptions(self.store, max_age=config.subscriptions_max_age),
            track_unsent=False,
        )
        self.fanout = ChannelsBackend(
            config=config, store=self.store, outbox=outbox, retry_policy=config.retry_policy()
        )
        self.fanout_jobs = await self.setup_job_connector(
            config.fanout_queue_name(), FanOutJob, self._fan_out
        )

    async def teardown(self) -> None:
        with contextlib.suppress(StoreError):
            await self.unsent.forget_settled()
        await self.store.aclose()

    # -- HTTP

    def serve_http_api(self) -> None:
        """Add the API's routes, error handlers and OpenAPI document to the HTTP app."""
        http = self.http
        assert http is not None  # http_bind is required by the config
        serve_openapi(http, "vumi_like Notifications API")
        prefix = self.config.prefix
        target = f"{prefix}/targets/<target_type>/<target_id>"
        member = f"{target}/members/<username>"
        # (path, endpoint, method, route, documentation)
        routes: list[tuple[str, str, str, Callable[..., Any], list[Callable[[Any], Any]]]] = [
            (
                prefix,
                "create",
                "POST",
                self._create_route,
                [
                    document_request(NewNotification),
                    document_headers(IdempotencyHeaders),
                    document_response(NotificationOut, 201),
                    problems(400, 401, 403, 404, 409, 422, 503),
                ],
            ),
            (
                prefix,
                "list",
                "GET",
                self._list_route,
                [
                    document_querystring(ListQuery),
                    document_response(list[NotificationOut], 200),
                    problems(400, 401, 403, 404, 503),
                ],
            ),
            (
                f"{prefix}/<int:pk>",
                "get",
                "GET",
                self._get_route,
                [document_response(NotificationOut, 200), problems(401, 403, 404, 503)],
            ),
            (
                f"{prefix}/<int:pk>",
                "delete",
                "DELETE",
                self._delete_route,
                [document_response(NoContent, 204), problems(401, 403, 404, 503)],
            ),
            (
                target,
                "get_target",
                "GET",
                self._get_target_route,
                [document_response(TargetOut, 200), problems(401, 403, 404, 503)],
            ),
            (
                target,
                "set_target",
                "PUT",
                self._set_target_route,
                [
                    document_request(TargetBody),
                    document_response(TargetOut, 200),
                    document_response(TargetOut, 201),
                    problems(400, 401, 403, 404, 503),
                ],
            ),
            (
                member,
                "set_member",
                "PUT",
                self._set_member_route,
                [
                    document_request(MemberBody),
                    document_response(NoContent, 204),
                    problems(400, 401, 403, 404, 503),
                ],
            ),
            (
                member,
                "remove_member",
                "DELETE",
                self._remove_member_route,
                [document_response(NoContent, 204), problems(401, 403, 404, 503)],
            ),
        ]
        for path, endpoint, method, route, documentation in routes:
            view = documentable(route)
            for document in documentation:
                view = document(view)
            http.add_url_rule(path, endpoint, view, methods=[method])
        document_worker_routes(http, None, self._api_docs_route)
        http.register_error_handler(OAuthError, self._oauth_error)
        http.register_error_handler(StoreUnavailable, self._store_unavailable)

    async def _api_docs_route(self) -> Response:
        assert self.http is not None
        return yaml_response(openapi_document(self.http))

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
        # A key is the user's own: its replay shows what only they may see.
        owner = json.dumps(["notifications", caller.tenant, caller.username])

        async def work(ids: RequestIds) -> tuple[Any, int]:
            return notification_body(await self._create(caller, ids)), 201

        return await answer_once(self.store, owner, work, time_limit=self.config.request_timeout)

    async def _create(self, caller: NotificationUser, ids: RequestIds) -> Notification:
        """Check, store and publish the request's notification. A request resuming its
        own abandoned ``Idempotency-Key`` claim publishes the one its first run stored,
        if it got that far: a duplicate on the topic at worst, never a second
        notification (the fan-out job skips recipients already sent to)."""
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
        request_id = ids.new() if ids.keyed else None
        notification = None
        if ids.resumed and request_id is not None:
            notification = await self.store.resume_notification(tenant, request_id)
        resumed = notification is not None
        if notification is None:
            notification = await self.store.create_notification(
                tenant,
                body.target_type,
                body.target_id,
                caller.username,
                body.message,
                payload,
                {backend: {"state": "queued"} for backend in self.config.backends},
                request_id=request_id,
            )
        queued: list[str] = []  # the backends its publishes have gone to
        try:
            # The job first: if the envelope is then refused, the notification is
            # deleted and the job, finding nothing, sends nothing.
            if self.fanout_jobs is not None:
                await self.fanout_jobs.publish(
                    FanOutJob(tenant=tenant, notification_id=notification.id)
                )
                queued.append(CHANNELS)
            if self.mqtt is not None:
                await self.mqtt.publish(notification)
        except PublishFailed as exc:
            if resumed:
                # The dead run may have published it already: it stays, the backends
                # not reached marked failed. The 503 frees the key: the next try is new.
                failed = [b for b in notification.deliveries if b not in queued]
                await self._fail_queued(notification, failed, f"the broker refused it: {exc}")
            else:
                await self.store.delete_notification(tenant, notification.id)
            self.unsent.settled(notification.id)
            raise ProblemError(
                503, f"the message could not be queued: {exc}", code="BROKER_UNAVAILABLE"
            ) from exc
        self.unsent.settled(notification.id)
        return notification

    async def _fail_queued(
        self, notification: Notification, backends: list[str], reason: str
    ) -> None:
        """Mark each of ``backends`` still ``queued`` for ``notification`` failed, with why."""
        for backend in backends:
            if notification.deliveries[backend].get("state") == "queued":
                failed = {"state": "failed", "at": _now().isoformat(), "reason": reason}
                await self.store.record_notification_delivery(notification.id, backend, failed)

    async def _list_route(self) -> Response:
        caller = await self.caller()
        target_type = request.args.get("target_type")
        target_id = request.args.get("target_id")
        if target_type is None and target_id is None:
            return json_response([], 200)
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
        return json_response([notification_body(n) for n in page.items], 200, headers)

    async def _found(self, caller: NotificationUser, pk: int) -> Notification:
        notification = await self.store.get_notification(caller.tenant, pk)
        if notification is None or not await self._readable(caller, notification):
            # Not there, or not the caller's to see: the same answer, so ids leak nothing.
            raise ProblemError(404, f"no message {pk}", code="MESSAGE_NOT_FOUND")
        return notification

    async def _get_route(self, pk: int) -> Response:
        caller = await self.caller()
        notification = await self._found(caller, pk)
        body = notification_body(notification)
        if self.fanout is not None and "channels" in body["deliveries"]:
            body["deliveries"]["channels"] = await self.fanout.with_statuses(notification)
        return json_response(body, 200)

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
        return json_response(_target_body(target), 200)

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
        try:
            created = await self.store.create_notification_target(
                caller.tenant, target_type, target_id, body.name, body.form_id, caller.username
            )
            return json_response(_target_body(created), 201)
        except AlreadyExists:
            pass  # then it is a rename, by one of its admins
        existing = await self._check_member(caller, target_type, target_id, Permission.ADMIN)
        await self.store.set_notification_target(
            caller.tenant, target_type, target_id, body.name, body.form_id
        )
        renamed = attrs.evolve(existing, name=body.name, form_id=body.form_id)
        return json_response(_target_body(renamed), 200)

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

    # -- the backends' handlers

    async def _mqtt_inbound(self, message: Message) -> None:
        assert self.mqtt is not None
        await self.mqtt.handle_inbound(message)

    async def _mqtt_event(self, event: Event) -> None:
        assert self.mqtt is not None
        if not await self.mqtt.handle_event(event):
            self.log.info("outcome of a deleted message", message_id=event.user_message_id)

    async def _fan_out(self, job: FanOutJob, attempt: int) -> None:
        assert self.fanout is not None
        await self.fanout.fan_out(job, attempt)

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
