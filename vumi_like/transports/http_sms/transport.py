"""``HttpSmsTransport``: the send request and the callbacks, as the config describes them.

* ``send`` renders the request (``request.py``), sends it with the worker's one httpx
  client within ``timeout`` seconds, and reads the answer (``answers.py``). No answer
  in time, a refused or broken connection: a temporary failure, retried under the
  retry policy (the base turns it into a pending report and a broker-held retry).
  This transport never declares the provider down (``ProviderUnavailable``), because
  nothing here would notice it coming back: each retry is the probe.
* ``dlr_path`` (GET or POST): a delivery report, verified (``callbacks.py``), its id
  and status read from the configured fields, the status mapped by ``status_map``
  (``unknown_status`` otherwise, logged), the provider's raw status in
  ``transport_metadata["provider_status"]`` (and its error code in
  ``"provider_error"``). The base matches the id to the message, or holds the report
  until it can; either way the provider is answered 200 once the report is safe with
  the broker.
* ``inbound_path`` (GET or POST): an inbound message, verified alike, published with
  the provider's id for it in ``transport_metadata["provider_message_id"]``.

A callback that fails verification is answered 403 and one log line, and publishes
nothing; one without a required field, 400 likewise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import trio
from quart import Response

from vumi_like.errors import ProblemError
from vumi_like.messages import Message
from vumi_like.transports.base import BaseTransport
from vumi_like.transports.http_sms.answers import AnswerRules, MissingProviderId
from vumi_like.transports.http_sms.callbacks import Callback, read_callback, refusal
from vumi_like.transports.http_sms.config import HttpSmsTransportConfig
from vumi_like.transports.http_sms.request import RequestTemplate
from vumi_like.transports.outcomes import TemporaryFailure

__all__ = ["HttpSmsTransport"]

_EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class HttpSmsTransport(BaseTransport):
    config_class = HttpSmsTransportConfig
    config: HttpSmsTransportConfig

    async def setup_provider(self) -> None:
        # One client for the worker's life: its connection pool keeps a busy route cheap.
        self.client = httpx.AsyncClient(timeout=self.config.timeout)
        self.request_template = RequestTemplate(self.config)
        self.answer_rules = AnswerRules.from_config(self.config)
        if self.http is not None:
            methods = ["GET", "POST"]
            self.http.add_url_rule(self.config.dlr_path, "dlr", self._dlr_route, methods=methods)
            self.http.add_url_rule(
                self.config.inbound_path, "inbound", self._inbound_route, methods=methods
            )

    async def teardown_provider(self) -> None:
        client: httpx.AsyncClient | None = getattr(self, "client", None)
        if client is not None:
            await client.aclose()

    async def send(self, message: Message) -> Sequence[str]:
        request = self.request_template.build(self.client, message)
        timeout = self.config.timeout
        try:
            # httpx's timeout bounds each phase (connect, each read); this bounds the whole.
            with trio.fail_after(timeout):
                response = await self.client.send(request)
        except (trio.TooSlowError, httpx.TimeoutException):
            raise TemporaryFailure(f"no answer within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"request failed: {type(exc).__name__}: {exc}") from None
        try:
            provider_id = self.answer_rules.provider_id(response)
        except MissingProviderId as exc:
            # Accepted: acked under our id rather than sent twice (see answers.py).
            self.log.warning(
                "accepted without a provider id: acked under the message id",
                message_id=message.message_id,
                reason=str(exc),
            )
            return [message.message_id]
        return [provider_id or message.message_id]

    def reported_message_id(self, provider_id: str) -> str | None:
        # With no id read from the answer, every message is sent as its message_id,
        # and only a callback URL carrying that id back can report on it.
        return None if self.answer_rules.reads_an_id else provider_id

    # -- callbacks

    async def _verified_callback(self, kind: str) -> Callback:
        callback = await read_callback(self.config.callback_base_url)
        reason = refusal(callback, self.config)
        if reason is not None:
            self.log.warning("callback refused", kind=kind, reason=reason)
            raise ProblemError(
                403, f"the {kind} could not be verified", code="callback_not_verified"
            )
        return callback

    def _required(self, callback: Callback, name: str, kind: str) -> str:
        value = callback.text(name)
        if value is None:
            self.log.warning("callback without a required field", kind=kind, field=name)
            raise ProblemError(400, f"the {kind} has no {name!r}", code="invalid_callback")
        return value

    async def _dlr_route(self) -> Response:
        config = self.config
        kind = "delivery report"
        callback = await self._verified_callback(kind)
        provider_id = self._required(callback, config.dlr_id_field, kind)
        provider_status = self._required(callback, config.dlr_status_field, kind)
        status = config.status_map.get(provider_status)
        if status is None:
            status = config.unknown_status
            self.log.warning(
                "unknown provider status",
                provider_id=provider_id,
                provider_status=provider_status,
                taken_as=str(status),
            )
        metadata: dict[str, Any] = {"provider_status": provider_status}
        if config.dlr_error_field and (error := callback.text(config.dlr_error_field)):
            metadata["provider_error"] = error
        await self.delivery_report(provider_id, status, metadata)
        return Response("", 200, content_type="text/plain")

    async def _inbound_route(self) -> Response:
        config = self.config
        kind = "inbound message"
        callback = await self._verified_callback(kind)
        metadata: dict[str, Any] = {}
        if config.inbound_id_field and (provider_id := callback.text(config.inbound_id_field)):
            metadata["provider_message_id"] = provider_id
        message = Message(
            from_addr=self._required(callback, config.inbound_from_field, kind),
            to_addr=self._required(callback, config.inbound_to_field, kind),
            content=callback.text(config.inbound_content_field),
            transport_name=config.transport_name,
            transport_type=config.transport_type,
            transport_metadata=metadata,
        )
        await self.publish_inbound(message)
        if config.inbound_answer == "twiml":
            return Response(_EMPTY_TWIML, 200, content_type="text/xml")
        return Response("", 200, content_type="text/plain")
