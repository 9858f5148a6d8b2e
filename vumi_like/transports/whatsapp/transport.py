"""``WhatsAppCloudTransport``, the worker: sends through the Graph API, serves the webhook.

See the package docstring for the exchanges and the outcomes.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

import httpx
import trio
from quart import Response, request

from vumi_like.caches import CacheError
from vumi_like.errors import ProblemError
from vumi_like.messages import Message
from vumi_like.retry import retry_after_seconds
from vumi_like.transports.base import BaseTransport
from vumi_like.transports.outcomes import TemporaryFailure
from vumi_like.transports.whatsapp.config import WhatsAppCloudConfig
from vumi_like.transports.whatsapp.graph import (
    TokenRejected,
    graph_failure,
    message_request,
    sent_message_id,
)
from vumi_like.transports.whatsapp.webhook import (
    SIGNATURE_HEADER,
    InvalidNotification,
    ReceivedMessage,
    StatusUpdate,
    inbound_message,
    read_notification,
    signature_matches,
)
from vumi_like.worker import PublishFailed

__all__ = ["WhatsAppCloudTransport"]


class WhatsAppCloudTransport(BaseTransport):
    config_class = WhatsAppCloudConfig
    config: WhatsAppCloudConfig

    async def setup_provider(self) -> None:
        config = self.config
        self._number_url = f"{config.api_base_url}/{config.api_version}/{config.phone_number_id}"
        # One client for the worker's life: its connection pool keeps sends cheap.
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {config.access_token.get_secret_value()}"},
            timeout=config.request_timeout,
        )
        self._token_checks: trio.CancelScope | None = None
        assert self.http is not None  # http_bind is required by the config
        self.http.add_url_rule(
            config.webhook_path, "whatsapp_verify", self._verify_route, methods=["GET"]
        )
        self.http.add_url_rule(
            config.webhook_path, "whatsapp_webhook", self._webhook_route, methods=["POST"]
        )

    async def teardown_provider(self) -> None:
        if self._token_checks is not None:
            self._token_checks.cancel()
        await self.client.aclose()

    # -- sending

    async def send(self, message: Message) -> Sequence[str]:
        body = message_request(message)
        timeout = self.config.request_timeout
        try:
            # httpx's timeout bounds each phase of the request; this bounds the whole.
            with trio.fail_after(timeout):
                response = await self.client.post(f"{self._number_url}/messages", json=body)
        except (trio.TooSlowError, httpx.TimeoutException):
            raise TemporaryFailure(f"the Graph API did not answer within {timeout} s") from None
        except httpx.HTTPError as exc:
            reason = f"Graph API request failed: {type(exc).__name__}: {exc}"
            raise TemporaryFailure(reason) from None
        if not response.is_success:
            failure = graph_failure(
                response.status_code,
                response.content,
                retry_after_seconds(response.headers.get("Retry-After")),
            )
            if isinstance(failure, TokenRejected):
                self._check_token_until_taken()
            raise failure
        provider_id = sent_message_id(response.content)
        if provider_id is None:
            # Meta has the message: trying again would send it twice. Its statuses
            # cannot be matched, so they end dead-lettered as unmatched reports.
            self.log.error(
                "the Graph API took a message without saying its id; acked under ours",
                message_id=message.message_id,
                answer=response.text[:200],
            )
            return [message.message_id]
        return [provider_id]

    def _check_token_until_taken(self) -> None:
        if self._token_checks is None:
            self._token_checks = trio.CancelScope()
            self.nursery.start_soon(self._check_token, self._token_checks)

    async def _check_token(self, scope: trio.CancelScope) -> None:
        """Every ``auth_check_interval``, ask for the phone number with the token; once
        the Graph API answers, the provider is up again (outbound resumes)."""
        try:
            with scope:
                while True:
                    await trio.sleep(self.config.auth_check_interval)
                    if await self._token_taken():
                        self.provider_up()
                        return
        finally:
            self._token_checks = None

    async def _token_taken(self) -> bool:
        try:
            with trio.fail_after(self.config.request_timeout):
                response = await self.client.get(self._number_url, params={"fields": "id"})
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            self.log.info("access token check failed", error=repr(exc))
            return False
        if not response.is_success:
            self.log.info("access token still refused", status=response.status_code)
        return response.is_success

    # -- the webhook

    async def _verify_route(self) -> Response:
        """Meta's subscription check: echo ``hub.challenge`` if the token is ours."""
        args = request.args
        token = args.get("hub.verify_token", "")
        challenge = args.get("hub.challenge")
        expected = self.config.verify_token.get_secret_value()
        if (
            args.get("hub.mode") == "subscribe"
            and challenge
            and hmac.compare_digest(token.encode(), expected.encode())
        ):
            return Response(challenge, 200, content_type="text/plain; charset=utf-8")
        self.log.warning("webhook verification refused", mode=args.get("hub.mode"))
        raise ProblemError(
            403,
            "hub.mode must be 'subscribe', with a hub.challenge and the configured "
            "hub.verify_token",
            code="verification_failed",
        )

    async def _webhook_route(self) -> tuple[str, int]:
        raw: bytes = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        # Checked on the raw bytes before they are parsed: nothing of an unsigned body
        # is looked at.
        given = request.headers.get(SIGNATURE_HEADER)
        if not signature_matches(self.config.app_secret.get_secret_value(), given, raw):
            problem = "missing" if not given else "does not match the body"
            self.log.warning(f"webhook refused: {SIGNATURE_HEADER} {problem}")
            raise ProblemError(
                403,
                f"the {SIGNATURE_HEADER} header is {problem}",
                code="missing_signature" if not given else "invalid_signature",
            )
        try:
            notification = read_notification(raw)
        except InvalidNotification as exc:
            self.log.warning("webhook refused: unreadable body", error=str(exc))
            raise ProblemError(400, str(exc), code="invalid_body") from None
        if notification.errors:
            self.log.warning("Meta reported errors in a webhook", errors=notification.errors)
        try:
            for item in notification.items:
                if isinstance(item, ReceivedMessage):
                    await self._received(item)
                else:
                    await self._status(item)
        except PublishFailed as exc:
            # Not answered 200, so Meta sends the whole body again later; what was
            # published of it already is then published twice (at least once).
            self.log.error("webhook not published; Meta will retry", error=str(exc))
            raise ProblemError(
                503, "not published; try again", code="broker_unavailable"
            ) from None
        # Answered only now: everything in the body is safe with the broker.
        return "", 200

    async def _received(self, item: ReceivedMessage) -> None:
        context = item.message.context or {}
        quoted = context.get("id")
        in_reply_to = await self._our_message_id(quoted) if isinstance(quoted, str) else None
        await self.publish_inbound(
            inbound_message(
                item,
                transport_name=self.config.transport_name,
                phone_number_id=self.config.phone_number_id,
                in_reply_to=in_reply_to,
            )
        )

    async def _our_message_id(self, provider_id: str) -> str | None:
        """The id of the message we sent as ``provider_id`` (a reply quotes it), if known."""
        try:
            for form in self.provider_id_forms(provider_id):
                found = await self.cache.get_provider_message_id(self.config.transport_name, form)
                if found is not None:
                    return found
        except CacheError as exc:
            # The inbound matters more than knowing what it answers.
            self.log.warning("message cache failed: in_reply_to left out", error=str(exc))
        return None

    async def _status(self, update: StatusUpdate) -> None:
        status = update.delivery_status
        if status is None:
            self.log.info(
                "WhatsApp status not reported",
                status=update.status,
                provider_id=update.provider_id,
            )
            return
        await self.delivery_report(update.provider_id, status, {"whatsapp": update.raw})
