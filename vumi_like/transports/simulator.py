"""``SimulatorTransport``: a transport with no provider behind it, for demos, tests, benchmarks.

* Every outbound is acked at once (``sent_message_id`` = its ``message_id``); after
  ``delivery_delay`` seconds a delivery report follows: ``delivered``, or ``failed``
  with probability ``failure_rate``.
* ``POST /inbound`` with ``{"from_addr", "to_addr", "content"}`` (optionally
  ``session_event``, ``in_reply_to``) publishes an inbound message as if a phone had
  sent it, and answers ``{"message_id": ...}``.

Delivery reports wait in tasks of the worker, not in the broker: a simulator that is
stopped forgets the reports it had not sent yet, which no real provider would do,
and which does not matter for what it is for.
"""

from __future__ import annotations

import random

import trio
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from quart import request

from vumi_like.config import BaseConfig
from vumi_like.errors import ProblemError
from vumi_like.messages import DeliveryStatus, Event, Message, SessionEvent
from vumi_like.validation import describe_validation_error
from vumi_like.worker import BaseWorker


class SimulatorTransportConfig(BaseConfig):
    transport_name: str = Field(description="Connector name: consumes <transport_name>.outbound")
    transport_type: str = Field(default="sms", description="transport_type of inbound messages")
    delivery_delay: float = Field(
        default=1.0, ge=0, description="Seconds between the ack and the delivery report"
    )
    failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="Probability that a delivery report says failed"
    )


class InboundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_addr: StrictStr
    to_addr: StrictStr
    content: StrictStr | None = None
    session_event: SessionEvent | None = None
    in_reply_to: StrictStr | None = None


class SimulatorTransport(BaseWorker):
    config_class = SimulatorTransportConfig
    config: SimulatorTransportConfig

    async def setup(self) -> None:
        self.random = random.Random()
        self._reports = await self.nursery.start(self._hold_reports)
        self.connector = await self.setup_receive_outbound_connector(
            self.config.transport_name, self.handle_outbound
        )
        if self.http is not None:
            self.http.add_url_rule("/inbound", "inbound", self._inbound_route, methods=["POST"])

    async def handle_outbound(self, message: Message) -> None:
        await self.connector.publish_event(Event.ack(message, sent_message_id=message.message_id))
        if self.config.delivery_delay == 0:
            await self._report(message)
        else:
            self._reports.start_soon(self._report_later, message)

    async def teardown(self) -> None:
        # Pending reports are forgotten (see the module docstring): waiting for them
        # would hold up the stop for up to delivery_delay, past shutdown_timeout.
        self._reports.cancel_scope.cancel()

    async def _hold_reports(
        self, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as reports:
            task_status.started(reports)
            await trio.sleep_forever()

    async def _report_later(self, message: Message) -> None:
        await trio.sleep(self.config.delivery_delay)
        await self._report(message)

    async def _report(self, message: Message) -> None:
        failed = self.random.random() < self.config.failure_rate
        status = DeliveryStatus.FAILED if failed else DeliveryStatus.DELIVERED
        await self.connector.publish_event(Event.delivery_report(message, status))

    async def publish_inbound(self, request: InboundRequest) -> Message:
        message = Message(
            to_addr=request.to_addr,
            from_addr=request.from_addr,
            transport_name=self.config.transport_name,
            transport_type=self.config.transport_type,
            content=request.content,
            session_event=request.session_event,
            in_reply_to=request.in_reply_to,
        )
        await self.connector.publish_inbound(message)
        return message

    async def _inbound_route(self) -> tuple[dict[str, str], int]:
        raw = await request.get_data()
        try:
            body = InboundRequest.model_validate_json(raw)
        except ValidationError as exc:
            detail = describe_validation_error(exc, subject="the body")
            raise ProblemError(400, detail, code="invalid_body") from None
        message = await self.publish_inbound(body)
        return {"message_id": message.message_id}, 200
