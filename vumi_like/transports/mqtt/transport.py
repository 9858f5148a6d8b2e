"""``MqttTransport``: messages published to an MQTT broker, and subscriptions as inbound.

Outbound: each message is published on a topic built from ``topic_template`` (by
default the notification layout ``/{topic_base}/{target_type}/{target_id}/messages/
publish``), with ``qos`` and ``retain``. The template's fields come from the config
(``topic_base``), the envelope's ``helper_metadata["mqtt"]`` (``target_type``,
``target_id``, or any other field the template names) and the envelope itself
(``to_addr``, ``from_addr``, ``message_id``); a field with no value is a ``nack``.
The payload is ``helper_metadata["mqtt"]["payload"]`` as JSON when the envelope carries
one (the notifications app puts the documented notification there), else
``{"payload": {"message": content}, "id": message_id, "time": ...}`` in the same shape.

The ``ack`` follows the broker's acknowledgement: at QoS 1 its PUBACK, at QoS 2 its
PUBCOMP, at QoS 0 the write to the socket. MQTT has no message ids of its own, so the
ack's ``sent_message_id`` is the message id, and there are no delivery reports:
SENT is as far as a status goes.

While the broker cannot be reached the transport stops taking outbound (it pauses its
consumer; ``/health`` says why) and reconnects with backoff, resuming once connected.

Inbound: each topic filter in ``subscriptions`` is subscribed to (again after every
reconnect). A message arriving becomes an inbound message, ``from_addr`` its topic,
``to_addr`` the filter it matched, ``content`` the payload as UTF-8 text (a payload
that is not UTF-8 comes as ``content`` None and ``transport_metadata.mqtt.
payload_base64``), and is acknowledged to the broker only once it is published to
``<transport_name>.inbound``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any, Literal

from paho.mqtt.client import topic_matches_sub
from pydantic import Field, model_validator

from vumi_like.messages import Message
from vumi_like.transports.base import BaseTransport, TransportConfig
from vumi_like.transports.mqtt.client import ConnectionState, InboundMessage, TrioMqttClient
from vumi_like.transports.mqtt.settings import MqttSettings
from vumi_like.transports.mqtt.topics import (
    DEFAULT_TOPIC_TEMPLATE,
    TopicError,
    TopicTemplate,
    check_topic_filter,
)
from vumi_like.transports.outcomes import PermanentFailure

__all__ = ["MqttTransport", "MqttTransportConfig"]

HELPER_KEY = "mqtt"


class MqttTransportConfig(TransportConfig, MqttSettings):
    qos: Literal[0, 1, 2] = Field(
        default=1,
        description="QoS of outbound publishes; the ack waits for PUBACK (1) or PUBCOMP (2)",
    )
    retain: bool = Field(default=False, description="Publish outbound with the retain flag")
    topic_base: str = Field(
        default="onadata", description="The topic root, {topic_base} in topic_template"
    )
    topic_template: str = Field(
        default=DEFAULT_TOPIC_TEMPLATE,
        description="Topic of outbound publishes; {fields} from topic_base, "
        "helper_metadata.mqtt, to_addr, from_addr, message_id",
    )
    subscriptions: list[str] = Field(
        default_factory=list, description="Topic filters whose messages become inbound"
    )
    subscription_qos: Literal[0, 1, 2] = Field(
        default=1, description="QoS asked for on the subscriptions"
    )
    inbound_transport_type: str = Field(
        default="mqtt", description="transport_type of inbound messages"
    )

    @model_validator(mode="after")
    def _topics_usable(self) -> MqttTransportConfig:
        TopicTemplate(self.topic_template)  # a template no topic can come from: refused
        for topic_filter in self.subscriptions:
            check_topic_filter(topic_filter)
        return self


class MqttTransport(BaseTransport):
    config_class = MqttTransportConfig
    config: MqttTransportConfig
    tracks_connection = True  # the client reports every loss and recovery

    async def setup_provider(self) -> None:
        settings = MqttSettings.model_validate(
            self.config.model_dump(include=set(MqttSettings.model_fields))
        )
        self.topics = TopicTemplate(self.config.topic_template)
        self.client = TrioMqttClient(settings, on_state_change=self._state_changed)
        self.provider_down("not connected yet")
        for topic_filter in self.config.subscriptions:
            await self.client.subscribe(topic_filter, self.config.subscription_qos)
        await self.nursery.start(self.client.run)
        self.nursery.start_soon(self._receive)

    def _state_changed(self, state: ConnectionState) -> None:
        if state.connected:
            self.provider_up()
        else:
            self.provider_down(state.reason)

    async def send(self, message: Message) -> Sequence[str]:
        extras = message.helper_metadata.get(HELPER_KEY) or {}
        if not isinstance(extras, dict):
            raise PermanentFailure("helper_metadata.mqtt must be an object")
        values = {
            "topic_base": self.config.topic_base,
            "to_addr": message.to_addr,
            "from_addr": message.from_addr,
            "message_id": message.message_id,
            **{key: value for key, value in extras.items() if key != "payload"},
        }
        try:
            topic = self.topics.render(values)
        except TopicError as exc:
            raise PermanentFailure(f"no topic for the message: {exc}") from None
        await self.client.publish(
            topic, _payload(message, extras), qos=self.config.qos, retain=self.config.retain
        )
        return [message.message_id]

    async def _receive(self) -> None:
        async for received in self.client.messages:
            await self._inbound(received)

    async def _inbound(self, received: InboundMessage) -> None:
        metadata: dict[str, Any] = {
            "topic": received.topic,
            "qos": received.qos,
            "retain": received.retain,
            "duplicate": received.duplicate,
        }
        try:
            content: str | None = received.payload.decode()
        except UnicodeDecodeError:
            content = None
            metadata["payload_base64"] = base64.b64encode(received.payload).decode()
        message = Message(
            to_addr=_matching_filter(received.topic, self.config.subscriptions),
            from_addr=received.topic,
            transport_name=self.config.transport_name,
            transport_type=self.config.inbound_transport_type,
            content=content,
            transport_metadata={HELPER_KEY: metadata},
        )
        await self.publish_inbound(message)
        self.client.ack(received)


def _payload(message: Message, extras: dict[str, Any]) -> bytes:
    if "payload" in extras:
        body = extras["payload"]
    else:
        timestamp = message.timestamp.replace(tzinfo=message.timestamp.tzinfo or UTC)
        body = {
            "payload": {"message": message.content},
            "id": message.message_id,
            "time": timestamp.isoformat(),
        }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _matching_filter(topic: str, filters: list[str]) -> str:
    """The first subscription filter ``topic`` matches (the topic itself if none does)."""
    return next((f for f in filters if topic_matches_sub(f, topic)), topic)
