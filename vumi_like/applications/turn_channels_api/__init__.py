"""``TurnChannelsApi``: a channel for Turn (https://whatsapp.turn.io/docs/api/channel_api).

Three HTTP exchanges, documented with examples in ``docs/turn_channels_api.md``:

* **Outbound** - Turn POSTs ``<vumi_api_path>/messages`` to us, signed with
  ``X-Turn-Hook-Signature`` (base64 HMAC-SHA256 of the raw body, keyed with
  ``turn_hmac_secret``). We answer ``{"messages": [{"id": <message_id>}]}`` once the
  outbound is confirmed by the broker, or a problem document (401 bad signature, 400
  bad body or unknown ``reply_to``, 413 too large, 504 not published within
  ``request_timeout``).
* **Inbound** - every inbound on the connector is POSTed to ``<turn_api_url>/messages``.
* **Events** - acks and delivery reports are POSTed to ``<turn_api_url>/statuses``.

Replies. Turn rarely says which message it answers, but session transports (USSD) need
to know. So an outbound with ``reply_to`` replies to that cached inbound, and one
without replies to the last inbound cached from its ``to`` address, if there is one
within the cache's ``inbound_ttl``; otherwise it is a fresh message. A reply keeps the
session open (``resume``) when Turn says it is ``waiting_for_user_input``, else it
closes it.

Posting to Turn. A failed POST (connection error, timeout, 408, 429, 5xx) is retried
with the project's one retry policy (``vumi_like.retry``): held by the broker,
exponential with jitter, ``Retry-After`` honoured and capped, at most ``max_retries``
times. After the last retry, or at once for any other 4xx (Turn will not accept it
however often we ask), the handler raises and the connector dead-letters the envelope
with the reason, where ``vumi-like dlq`` can show and replay it.

Status mapping (Turn accepts only ``sent`` and ``delivered``): ack -> ``sent``;
delivery report ``delivered`` -> ``delivered``; ``failed`` -> ``sent`` (as vumi2: Turn has
no failed status); ``pending`` -> not forwarded (it says nothing ``sent`` did not);
nack -> not forwarded (the message never left us, so ``sent`` would be false), logged
as a warning. Events for an outbound the cache does not know (sent by someone else, or
older than ``outbound_ttl``, 24 h by default) are logged and dropped, not
dead-lettered: outliving the TTL is expected, not a fault.

Layout: ``config.py`` (the keys: vumi2's, plus a few), ``wire.py`` (Turn's shapes and
the signature; no I/O), ``worker.py`` (the worker).
"""

from vumi_like.applications.turn_channels_api.config import TurnChannelsApiConfig
from vumi_like.applications.turn_channels_api.wire import (
    SIGNATURE_HEADER,
    OutboundRequest,
    signature,
    turn_inbound,
    turn_status,
    turn_status_body,
)
from vumi_like.applications.turn_channels_api.worker import TurnChannelsApi, TurnPostFailed

__all__ = [
    "SIGNATURE_HEADER",
    "OutboundRequest",
    "TurnChannelsApi",
    "TurnChannelsApiConfig",
    "TurnPostFailed",
    "signature",
    "turn_inbound",
    "turn_status",
    "turn_status_body",
]
