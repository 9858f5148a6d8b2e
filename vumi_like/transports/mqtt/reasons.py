"""What a broker's answer to a publish means for the message.

An MQTT 5 broker answers a QoS 1 publish with PUBACK and a QoS 2 one with PUBREC and,
after our PUBREL, PUBCOMP; each carries a reason code, and 0x80 or more is a refusal.
The transport needs to know whether to nack the message (the broker would refuse it
again) or retry it later:

* ``PermanentFailure``: 0x87 Not authorized (the broker's ACL refuses the topic; it
  takes an operator to change that), 0x90 Topic Name invalid, 0x99 Payload format
  invalid. Sending the same message again changes nothing.
* ``TemporaryFailure``: everything else of 0x80 or more. 0x97 Quota exceeded says
  "later"; 0x91 Packet Identifier in use and 0x92 Packet Identifier not found (the
  only refusal a PUBCOMP can carry) are the broker losing track of an exchange (a
  retry uses a new identifier); 0x80 Unspecified
  error and 0x83 Implementation specific error say nothing we could act on, so the
  retry policy decides, and its last attempt nacks.

Below 0x80 is success, including 0x10 No matching subscribers: the broker took the
message, and nobody listening is not the publisher's failure.

Two limits of what a publisher can learn, both of the protocol or of paho:

* MQTT 3.1.1 has no reason codes: a broker refusing a publish (mosquitto's ACL) acks
  it all the same, or closes the connection.
* paho does not report the reason code of PUBREC: it answers every PUBREC with PUBREL,
  and mosquitto then completes the exchange with PUBCOMP Success even when the PUBREC
  refused the message. So a QoS 2 publish succeeds when the broker completed the
  exchange, which for a refused message it does; use QoS 1 where refusals must show.
"""

from __future__ import annotations

from paho.mqtt.reasoncodes import ReasonCode

from vumi_like.transports.outcomes import PermanentFailure, ProviderError, TemporaryFailure

__all__ = ["PERMANENT_REASON_CODES", "publish_failure"]

PERMANENT_REASON_CODES = frozenset({0x87, 0x90, 0x99})


def publish_failure(reason_code: ReasonCode, topic: str) -> ProviderError | None:
    """The failure a PUBACK/PUBCOMP ``reason_code`` means, or ``None`` for success."""
    if not reason_code.is_failure:
        return None
    reason = f"broker refused the publish on {topic!r}: {reason_code} (0x{reason_code.value:02x})"
    if reason_code.value in PERMANENT_REASON_CODES:
        return PermanentFailure(reason)
    return TemporaryFailure(reason)
