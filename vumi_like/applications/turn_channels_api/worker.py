"""``TurnChannelsApi``, the worker: Turn's requests in, our posts to Turn out.

See the package docstring for the three exchanges, retries and the status mapping.
"""

from __future__ import annotations

import hmac
from typing import Any

import httpx
import trio
from prometheus_client import Counter
from pydantic import ValidationError
from quart import request
from werkzeug.exceptions import RequestEntityTooLarge

from vumi_like.applications.turn_channels_api.config import TurnChannelsApiConfig
from vumi_like.applications.turn_channels_api.wire import (
    SIGNATURE_HEADER,
    OutboundRequest,
    signature,
    turn_inbound,
    turn_status,
    turn_status_body,
)
from vumi_like.caches import CacheError, MessageCache
from vumi_like.errors import ProblemError
from vumi_like.messages import Event, EventType, Message, SessionEvent
from vumi_like.metrics import REGISTRY
from vumi_like.retry import Unprocessable, retry_after_seconds
from vumi_like.validation import describe_validation_error
from vumi_like.worker import BaseWorker, PublishFailed

__all__ = ["TURN_POSTS", "TurnChannelsApi", "TurnPostFailed"]

TURN_POSTS = Counter(
    "vumi_like_turn_posts",
    "POSTs to Turn by endpoint (messages, statuses) and outcome (ok, retry, failed)",
    ("worker", "endpoint", "outcome"),
    registry=REGISTRY,
)

# Statuses a retry can cure: Turn is busy, overloaded or briefly broken.
_RETRYABLE_STATUSES = frozenset({408, 429})


class TurnPostFailed(Unprocessable):
    """A POST to Turn failed for good; the envelope is dead-lettered with this reason."""


_TO_ADDR = "to_addr"


class TurnChannelsApi(BaseWorker):
    config_class = TurnChannelsApiConfig
    config: TurnChannelsApiConfig

    async def setup(self) -> None:
        self.retry_policy = self.config.retry_policy()
        # One client for the worker's life: its connection pool is what makes a busy
        # channel cheap. Timeouts are per request (each endpoint has its own).
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {self.config.auth_token.get_secret_value()}"}
        )
        # Built before anything can fail, so teardown always has both to close.
        self.message_cache: MessageCache = self.config.make_message_cache()
        await self.message_cache.open()
        assert self.http is not None  # http_bind is required by the config
        self.http.config["MAX_CONTENT_LENGTH"] = self.config.max_body_bytes
        self.http.add_url_rule(
            f"{self.config.vumi_api_path}/messages",
            "turn_outbound",
            self._outbound_route,
            methods=["POST"],
        )
        self.connector = await self.setup_receive_inbound_connector(
            self.config.connector_name,
            inbound_handler=self.handle_inbound,
            event_handler=self.handle_event,
        )

    async def teardown(self) -> None:
        await self.client.aclose()
        await self.message_cache.aclose()

    # -- outbound: Turn -> us

    async def _outbound_route(self) -> tuple[dict[str, Any], int]:
        try:
            with trio.fail_after(self.config.request_timeout):
                message = await self._accept_outbound()
        except trio.TooSlowError:
            raise ProblemError(
                504,
                f"the message was not accepted within {self.config.request_timeout} s; "
                "it may or may not be sent",
                code="timeout",
            ) from None
        except CacheError as exc:
            self.log.error("message cache failed", error=str(exc))
            raise ProblemError(
                503, "the message cache is unavailable; try again", code="cache_unavailable"
            ) from None
        except PublishFailed as exc:
            self.log.error("publishing the outbound failed", error=str(exc))
            raise ProblemError(
                503, "the message could not be queued; try again", code="broker_unavailable"
            ) from None
        return {"messages": [{"id": message.message_id}]}, 200

    async def _accept_outbound(self) -> Message:
        try:
            raw: bytes | None = await request.get_data(
                cache=False, as_text=False, parse_form_data=False
            )
        except RequestEntityTooLarge:
            raw = None
        # Quart refuses a body over MAX_CONTENT_LENGTH by its Content-Length or, sent
        # chunked, as it is read; the length check is for a server that did not.
        if raw is None or len(raw) > self.config.max_body_bytes:
            raise ProblemError(
                413,
                f"the body is larger than {self.config.max_body_bytes} bytes",
                code="body_too_large",
            )
        self._check_signature(raw)
        try:
            body = OutboundRequest.model_validate_json(raw)
        except ValidationError as exc:
            detail = describe_validation_error(exc, subject="the body")
            raise ProblemError(400, detail, code="invalid_body") from None
        message = await self._build_outbound(body)
        # Stored before publishing, so events arriving at once find it.
        await self.message_cache.store_outbound(message.message_id, {_TO_ADDR: message.to_addr})
        await self.connector.publish_outbound(message)
        self.log.info(
            "outbound accepted",
            message_id=message.message_id,
            in_reply_to=message.in_reply_to,
            session_event=message.session_event,
        )
        return message

    def _check_signature(self, raw: bytes) -> None:
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            raise ProblemError(
                401, f"the {SIGNATURE_HEADER} header is missing", code="missing_signature"
            )
        expected = signature(self.config.turn_hmac_secret.get_secret_value(), raw)
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise ProblemError(
                401,
                f"the {SIGNATURE_HEADER} header does not match the body",
                code="invalid_signature",
            )

    async def _build_outbound(self, body: OutboundRequest) -> Message:
        content = body.turn.content()
        if body.reply_to is not None:
            inbound = await self.message_cache.get_inbound(body.reply_to)
            if inbound is None:
                raise ProblemError(
                    400,
                    f"reply_to {body.reply_to!r} is not a known inbound message "
                    "(never received, or older than the cache's inbound_ttl)",
                    code="unknown_reply_to",
                )
        else:
            # Turn does not say which message it answers; a session transport (USSD)
            # needs to know, so the last message from this address is the one.
            inbound = await self.message_cache.get_last_inbound_from(body.to)
        if inbound is not None:
            session_event = SessionEvent.RESUME if body.waiting else SessionEvent.CLOSE
            return inbound.reply(content, session_event=session_event)
        return Message(
            to_addr=body.to,
            from_addr=body.from_addr or self.config.default_from_addr,
            transport_name=self.config.transport_name or self.config.connector_name,
            transport_type=self.config.transport_type,
            content=content,
            session_event=SessionEvent.NEW if body.waiting else None,
        )

    # -- inbound and events: us -> Turn

    async def handle_inbound(self, message: Message, attempt: int) -> None:
        if attempt == 0:
            # Not again on a retry: "the last inbound from" must stay the newest one.
            await self.message_cache.store_inbound(message)
        await self._post_to_turn(
            "messages", turn_inbound(message), self.config.mo_message_url_timeout, attempt
        )

    async def handle_event(self, event: Event, attempt: int) -> None:
        status = turn_status(event)
        if status is None:
            log = self.log.warning if event.event_type == EventType.NACK else self.log.debug
            log(
                "event not forwarded to Turn",
                event_id=event.event_id,
                message_id=event.user_message_id,
                event_type=str(event.event_type),
                nack_reason=event.nack_reason,
            )
            return
        info = await self.message_cache.get_outbound(event.user_message_id)
        if info is None:
            self.log.info(
                "event for an unknown outbound not forwarded (not ours, or older than the "
                "cache's outbound_ttl)",
                event_id=event.event_id,
                message_id=event.user_message_id,
            )
            return
        body = turn_status_body(event, status, info.get(_TO_ADDR, ""), self.config.status_format)
        await self._post_to_turn("statuses", body, self.config.event_url_timeout, attempt)

    async def _post_to_turn(
        self, endpoint: str, body: dict[str, Any], time_allowed: float, attempt: int
    ) -> None:
        """POST ``body``. On failure raise ``RetryLater`` (the broker brings the envelope
        back), or for good ``TurnPostFailed`` / ``RetriesExhausted`` (dead-lettered)."""
        url = f"{self.config.turn_api_url}/{endpoint}"
        retry_after = None
        try:
            # httpx's timeout bounds each phase; the cancel scope bounds the whole.
            with trio.fail_after(time_allowed):
                response = await self.client.post(url, json=body, timeout=time_allowed)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            failure = f"POST {url} failed: {type(exc).__name__}: {exc}".rstrip(": ")
        else:
            if response.is_success:
                TURN_POSTS.labels(self.name, endpoint, "ok").inc()
                return
            failure = f"POST {url} answered {response.status_code}: {response.text[:200]}"
            if response.status_code < 500 and response.status_code not in _RETRYABLE_STATUSES:
                TURN_POSTS.labels(self.name, endpoint, "failed").inc()
                raise TurnPostFailed(f"{failure} (not retried)")
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        outcome = "failed" if self.retry_policy.gives_up_after(attempt) else "retry"
        TURN_POSTS.labels(self.name, endpoint, outcome).inc()
        self.retry_policy.retry(attempt, failure, retry_after=retry_after)
