"""The ``mqtt`` backend: a notification published on its target's topic (seed 004).

The API publishes one outbound envelope per notification on ``mqtt_connector``, the
``transport_name`` of an ``MqttTransport``, which publishes ``helper_metadata.mqtt``'s
payload on ``/{topic_base}/{target_type}/{target_id}/messages/publish``. The envelope
is confirmed by the broker before the API answers 201; the transport retries through
the broker, and every outcome it reports (``ack``: published to the MQTT broker; a
``pending`` report: retrying; ``nack``: failed) is recorded on the notification under
``deliveries.mqtt``.
"""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from vumi_like.messages import DeliveryStatus, Event, EventType, Message
from vumi_like.stores import MessageStore, Notification
from vumi_like.worker import ReceiveInboundConnector

__all__ = ["BACKEND", "MqttBackend"]

BACKEND = "mqtt"
_MESSAGE_ID = re.compile(r"^notification-(\d+)-mqtt$")


class MqttBackend:
    def __init__(
        self, *, connector: ReceiveInboundConnector, connector_name: str, store: MessageStore
    ) -> None:
        self.connector = connector
        self.connector_name = connector_name
        self.store = store

    async def publish(self, notification: Notification) -> None:
        """Hand the notification to the transport; ``PublishFailed`` if the broker refuses."""
        await self.connector.publish_outbound(self.envelope(notification))

    def envelope(self, notification: Notification) -> Message:
        return Message(
            message_id=f"notification-{notification.id}-{BACKEND}",
            to_addr=f"{notification.target_type}/{notification.target_id}",
            from_addr=notification.author,
            transport_name=self.connector_name,
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

    async def handle_event(self, event: Event) -> bool:
        """Record the transport's outcome; False if the notification was deleted."""
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
        return await self.store.record_notification_delivery(int(match[1]), BACKEND, outcome)
