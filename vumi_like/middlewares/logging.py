"""``LoggingMiddleware``: one log event per envelope passing, the envelope unchanged.

vumi2's ``vumi2.middlewares.logging.LoggingMiddleware`` is read as this one, with the
same options (``log_level``, ``logger_name``). Where vumi2 logs the whole envelope as
text, this logs the fields that identify it as structured keys: the ids that let an
operator follow one message through every worker, and its addresses. Content and
metadata are left out: they are the users', and they can be large.
"""

from __future__ import annotations

import structlog
from pydantic import Field

from vumi_like.logs import LogLevel
from vumi_like.messages import EnvelopeKind, Event, Message
from vumi_like.middlewares.base import BaseMiddleware, BaseMiddlewareConfig

__all__ = ["LoggingMiddleware", "LoggingMiddlewareConfig"]


class LoggingMiddlewareConfig(BaseMiddlewareConfig):
    log_level: LogLevel = Field(
        default="INFO", description="Level to log at: DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
    logger_name: str = Field(default=__name__, description="Name of the logger to log to.")


class LoggingMiddleware(BaseMiddleware):
    config_class = LoggingMiddlewareConfig
    config: LoggingMiddlewareConfig

    async def handle_inbound(self, message: Message, connector_name: str) -> Message:
        self._log_message("inbound", message, connector_name)
        return message

    async def handle_outbound(self, message: Message, connector_name: str) -> Message:
        self._log_message("outbound", message, connector_name)
        return message

    async def handle_event(self, event: Event, connector_name: str) -> Event:
        self._emit(
            "processed event",
            direction="event",
            connector=connector_name,
            event_id=event.event_id,
            event_type=event.event_type.value,
            user_message_id=event.user_message_id,
            sent_message_id=event.sent_message_id,
            delivery_status=event.delivery_status.value if event.delivery_status else None,
            nack_reason=event.nack_reason,
        )
        return event

    def _log_message(self, direction: EnvelopeKind, message: Message, connector: str) -> None:
        self._emit(
            f"processed {direction} message",
            direction=direction,
            connector=connector,
            message_id=message.message_id,
            in_reply_to=message.in_reply_to,
            to_addr=message.to_addr,
            from_addr=message.from_addr,
            transport_name=message.transport_name,
            session_event=message.session_event.value if message.session_event else None,
        )

    def _emit(self, event: str, **fields: object) -> None:
        # Looked up per call, not kept: logging may be configured after we are built.
        logger = structlog.get_logger(self.config.logger_name)
        getattr(logger, self.config.log_level.lower())(event, **fields)
