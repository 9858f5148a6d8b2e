"""MQTT: ``MqttTransport`` (``transport``), on a trio client for paho-mqtt (``client``),
its settings, publish topics, and what a broker's refusal means for a message
(``reasons``)."""

from vumi_like.transports.mqtt.client import (
    ConnectionState,
    InboundMessage,
    QoS,
    SubscriptionError,
    TrioMqttClient,
    open_mqtt_client,
)
from vumi_like.transports.mqtt.reasons import publish_failure
from vumi_like.transports.mqtt.settings import MqttSettings
from vumi_like.transports.mqtt.topics import DEFAULT_TOPIC_TEMPLATE, TopicError, TopicTemplate
from vumi_like.transports.mqtt.transport import MqttTransport, MqttTransportConfig

__all__ = [
    "DEFAULT_TOPIC_TEMPLATE",
    "ConnectionState",
    "InboundMessage",
    "MqttSettings",
    "MqttTransport",
    "MqttTransportConfig",
    "QoS",
    "SubscriptionError",
    "TopicError",
    "TopicTemplate",
    "TrioMqttClient",
    "open_mqtt_client",
    "publish_failure",
]
