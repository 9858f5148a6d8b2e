"""``EchoApplication``: answers every inbound message with its own content.

The smallest useful application, for trying a pipeline end to end and as a template
for your own: it replies on the connector the message arrived on, and logs the
events its replies get (ack, nack, delivery report).
"""

from __future__ import annotations

from pydantic import Field

from vumi_like.config import BaseConfig
from vumi_like.messages import Event, Message, SessionEvent
from vumi_like.worker import BaseWorker


class EchoApplicationConfig(BaseConfig):
    connector_name: str = Field(description="Connector: consumes <name>.inbound and <name>.event")
    prefix: str = Field(default="echo: ", description="Put before the echoed content")


class EchoApplication(BaseWorker):
    config_class = EchoApplicationConfig
    config: EchoApplicationConfig

    async def setup(self) -> None:
        self.connector = await self.setup_receive_inbound_connector(
            self.config.connector_name,
            inbound_handler=self.handle_inbound,
            event_handler=self.handle_event,
        )

    async def handle_inbound(self, message: Message) -> None:
        self.log.info(
            "inbound",
            message_id=message.message_id,
            from_addr=message.from_addr,
            content=message.content,
        )
        # A session that the user closed gets no answer; any other gets one that
        # keeps it open for the next input.
        if message.session_event == SessionEvent.CLOSE:
            return
        reply = message.reply(f"{self.config.prefix}{message.content or ''}")
        await self.connector.publish_outbound(reply)

    async def handle_event(self, event: Event) -> None:
        self.log.info(
            "event",
            event_id=event.event_id,
            message_id=event.user_message_id,
            event_type=str(event.event_type),
            delivery_status=str(event.delivery_status) if event.delivery_status else None,
        )
