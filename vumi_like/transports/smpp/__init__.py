"""SMPP 3.4: ``SmppTransport`` (``transport``), on an ESME client on trio and the
encodings SMS needs.

* ``esme``: a bound session (``open_session``): submit_sm within a window, inbound
  deliver_sm/data_sm to a callback, enquire_link, unbind. ``rebind.Rebinder`` keeps
  one bound, binding again with backoff.
* ``encoding``: text to submit_sm contents (data_coding, long messages by UDH, SAR or
  message_payload) and inbound content back to text, with the parts of long messages.
* ``receipts``: delivery receipts from deliver_sm, and the forms of a provider id.
* ``statuses``: what a submit_sm_resp's command_status means for the message.
* ``pdus``, ``framing``, ``gsm0338``, ``sequence``: the pieces under those.

None of it knows about workers, brokers or envelopes: a transport maps its messages
to ``SubmitSm`` values and ``DeliverSm`` values back to its messages and events.
"""

from vumi_like.transports.smpp.encoding import (
    Alphabet,
    DefaultAlphabet,
    EncodedPart,
    EncodingOptions,
    InboundPart,
    MessageTooLong,
    Splitting,
    encode_text,
    inbound_part,
    join_parts,
)
from vumi_like.transports.smpp.esme import (
    BadCredentials,
    BindFailed,
    BindMode,
    BindRefused,
    EsmeSession,
    EsmeSettings,
    ResponseTimeout,
    SessionClosed,
    open_session,
)
from vumi_like.transports.smpp.pdus import DeliverSm, SubmitSm, SubmitSmResp
from vumi_like.transports.smpp.rebind import Rebinder
from vumi_like.transports.smpp.receipts import (
    DeliveryReceipt,
    parse_receipt,
    provider_id_candidates,
)
from vumi_like.transports.smpp.sequence import RandomStartSequence, RedisSequence
from vumi_like.transports.smpp.statuses import submit_sm_outcome
from vumi_like.transports.smpp.transport import SmppTransport, SmppTransportConfig

__all__ = [
    "Alphabet",
    "BadCredentials",
    "BindFailed",
    "BindMode",
    "BindRefused",
    "DefaultAlphabet",
    "DeliverSm",
    "DeliveryReceipt",
    "EncodedPart",
    "EncodingOptions",
    "EsmeSession",
    "EsmeSettings",
    "InboundPart",
    "MessageTooLong",
    "RandomStartSequence",
    "Rebinder",
    "RedisSequence",
    "ResponseTimeout",
    "SessionClosed",
    "SmppTransport",
    "SmppTransportConfig",
    "Splitting",
    "SubmitSm",
    "SubmitSmResp",
    "encode_text",
    "inbound_part",
    "join_parts",
    "open_session",
    "parse_receipt",
    "provider_id_candidates",
    "submit_sm_outcome",
]
