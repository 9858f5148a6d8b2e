"""``MessagingApi``, the worker: the HTTP API, its token endpoint, its OpenAPI document.

Stateless, so any number of replicas can serve behind a load balancer: everything a
request needs is in the store (statuses, idempotency keys, webhooks, clients) or on
the broker. What it owns:

* ``POST /oauth/token`` (``vumi_like.auth``), and a bearer check on every API route;
* the two surfaces, ``/v1`` (``v1_api.py``) and the per-type one (``party_api.py``),
  both sending through the outbox (``outbox.py``);
* its batch queue, ``<connector_name>.batches``: accepted asynchronous batches, sent by
  whichever replica takes them;
* ``/openapi.json`` and ``/api-docs`` (the same document as YAML), generated from the
  routes' models by quart-schema, and a copy in ``docs/messaging_api.openapi.json``.

Every error is RFC 7807 ``application/problem+json`` with an upper-case ``code``
(``VALIDATION_FAILED``, ``CHANNEL_NOT_FOUND``, ``UNAUTHORIZED``...). A store or broker
that cannot be reached is 503 with ``Retry-After``; the request may be retried with
the same ``Idempotency-Key``.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from vumi_like.applications.messaging_api import party_api, v1_api
from vumi_like.applications.messaging_api.config import MessagingApiConfig
from vumi_like.auth import (
    OAuthError,
    Principal,
    TokenService,
    client_credentials,
    oauth_error_response,
)
from vumi_like.errors import ProblemError, problem_response, store_unavailable_response
from vumi_like.messaging.channels import Channels
from vumi_like.messaging.subscriptions import Subscriptions
from vumi_like.messaging.webhooks import WebhookJob
from vumi_like.openapi.document import (
    document_worker_routes,
    openapi_document,
    serve_openapi,
    yaml_response,
)
from vumi_like.openapi.idempotency import answer_once
from vumi_like.outbound.outbox import BatchJob, Outbox
from vumi_like.stores import RequestIds, StoreError, StoreUnavailable
from vumi_like.validation import describe_validation_error
from vumi_like.worker import BaseWorker

__all__ = ["MessagingApi"]

ORIGIN_HEADER = "x-origin"
ISSUER_HEADER = "x-issuer"

# The problem code of each status this API answers with, when no more precise one applies.
_CODES = {
    400: "VALIDATION_FAILED",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


class MessagingApi(BaseWorker):
    config_class = MessagingApiConfig
    config: MessagingApiConfig

    async def setup(self) -> None:
        self.store = self.config.make_store()
        await self.store.open()
        self.tokens = TokenService(self.config.auth, self.store.verify_client)
        self.channels = Channels(self.config.channels)
        connector = await self.setup_receive_inbound_connector(
            self.config.connector_name, inbound_handler=None, event_handler=None
        )
        webhooks = await self.setup_job_connector(self.config.webhook_queue_name(), WebhookJob)
        batches = await self.setup_job_connector(
            self.config.batch_queue_name(), BatchJob, self._send_batch
        )
        self.outbox = Outbox(
            store=self.store,
            channels=self.channels,
            connector=connector,
            webhooks=webhooks,
            batches=batches,
            subscriptions=Subscriptions(self.store, max_age=self.config.subscriptions_max_age),
        )
        assert self.outbox.unsent is not None  # tracked: this worker's dead runs need it
        self.nursery.start_soon(
            functools.partial(
                self.outbox.unsent.keep,
                request_timeout=self.config.request_timeout,
                sweep_every=self.config.unsent_sweep_interval,
            )
        )
        self.serve_http_api()

    async def teardown(self) -> None:
        with contextlib.suppress(StoreError):
            if self.outbox.unsent is not None:
                await self.outbox.unsent.forget_settled()
        await self.store.aclose()

    async def _send_batch(self, job: BatchJob) -> None:
        await self.outbox.send_batch(job)

    # -- HTTP

    def serve_http_api(self) -> None:
        """Add the API's routes, error handlers and OpenAPI document to the HTTP app."""
        http = self.http
        assert http is not None  # http_bind is required by the config
        http.config["MAX_CONTENT_LENGTH"] = self.config.max_body_bytes
        serve_openapi(http, "vumi_like Messaging API")
        http.register_blueprint(v1_api.blueprint(self))
        http.register_blueprint(party_api.blueprint(self))
        document_worker_routes(http, self._token_route, self._api_docs_route)
        http.register_error_handler(RequestSchemaValidationError, self._invalid_request)
        http.register_error_handler(OAuthError, self._oauth_error)
        http.register_error_handler(StoreUnavailable, self._store_unavailable)
        http.register_error_handler(UnicodeDecodeError, self._not_utf8)

    async def _http_error(self, error: HTTPException) -> Response:
        status = error.code or 500
        if isinstance(error, RequestEntityTooLarge):
            detail = f"the body is larger than {self.config.max_body_bytes} bytes"
        elif isinstance(error, BadRequest) and request.is_json:
            detail = "the body is not valid JSON"
        else:
            detail = error.description or error.name
        return problem_response(status, detail, code=_CODES.get(status))

    async def _invalid_request(self, error: RequestSchemaValidationError) -> Response:
        cause = error.validation_error
        if isinstance(cause, TypeError | ValueError) and hasattr(cause, "errors"):
            detail = describe_validation_error(cause, subject="the body")  # type: ignore[arg-type]
        else:
            detail = str(cause) or "the request is not valid"
        return problem_response(400, detail, code="VALIDATION_FAILED")

    async def _not_utf8(self, error: UnicodeDecodeError) -> Response:
        return problem_response(400, "the body is not UTF-8 text", code="VALIDATION_FAILED")

    async def _oauth_error(self, error: OAuthError) -> Response:
        return oauth_error_response(error)

    async def _store_unavailable(self, error: StoreUnavailable) -> Response:
        self.log.error("store unavailable", error=str(error))
        return store_unavailable_response()

    async def _token_route(self) -> Response:
        form = await request.form
        grant_type = form.get("grant_type")
        client_id, secret, used_basic = client_credentials(
            request.headers.get("Authorization"), form
        )
        if grant_type is None:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise OAuthError(
                "unsupported_grant_type", "only the client_credentials grant is supported"
            )
        tenant = await self.tokens.authenticate(client_id, secret, used_basic=used_basic)
        answer = self.tokens.issue(client_id, tenant)
        return Response(
            json.dumps(answer),
            status=200,
            content_type="application/json",
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    async def _api_docs_route(self) -> Response:
        assert self.http is not None
        return yaml_response(openapi_document(self.http))

    async def _unexpected_error(self, error: Exception) -> Response:
        await super()._unexpected_error(error)  # logs it and reports it to Sentry
        return problem_response(500, "internal error; see the worker's log", code="INTERNAL_ERROR")

    # -- what the route modules use

    def authenticate(self) -> Principal:
        """The caller of the current request, or a 401 problem."""
        return self.tokens.verify(request.headers.get("Authorization"))

    def trace_headers(self) -> tuple[str | None, str | None]:
        """``x-origin`` (the calling system) and ``x-issuer`` (its user), if sent."""
        return request.headers.get(ORIGIN_HEADER), request.headers.get(ISSUER_HEADER)

    def check_batch_size(self, size: int) -> None:
        if size > self.config.max_batch_size:
            raise ProblemError(
                400,
                f"a batch holds at most {self.config.max_batch_size} messages, got {size}",
                code="VALIDATION_FAILED",
            )

    async def answer_send(
        self, principal: Principal, work: Callable[[RequestIds], Awaitable[tuple[Any, int]]]
    ) -> Response:
        """Run a sending route's ``work`` once per ``Idempotency-Key`` of the tenant,
        within ``request_timeout``."""
        return await answer_once(
            self.store, principal.tenant, work, time_limit=self.config.request_timeout
        )
