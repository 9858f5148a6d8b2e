"""Delivery receipts: telling them from messages, and reading id and status out of them.

An SMSC reports the fate of a message it accepted with a deliver_sm (or data_sm) back
to the ESME. Which parts of it say so varies by SMSC, so all are read:

* esm_class message type 0x04 (SMSC delivery receipt) or 0x20 (intermediate
  notification), the receipted_message_id and message_state TLVs (SMPP 3.4 5.3.2.12,
  5.3.2.35), and
* the text of Appendix B, which many SMSCs send alone, with esm_class 0:
  ``id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm
  stat:DDDDDDD err:E text:...``, read here in any order and case, with ``_`` for the
  spaces in the date keys.

The id prefers the receipted_message_id TLV over the text's; the status prefers the
message_state TLV over the text's ``stat``. A ``stat`` this module does not know reads
as pending: it claims no outcome, and the raw value is kept for whoever looks.

The id in a receipt is often not written the way the submit_sm_resp wrote it: hex in
one and decimal in the other, with or without leading zeros, in another case.
``provider_id_candidates`` lists the forms to look a receipt's id up under, the
normalised form (what to store a submit_sm_resp's id under) first.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

import attrs

from vumi_like.messages import DeliveryStatus
from vumi_like.transports.smpp.pdus import DeliverSm

__all__ = [
    "DeliveryReceipt",
    "normalise_provider_id",
    "parse_receipt",
    "parse_receipt_text",
    "provider_id_candidates",
]

# esm_class message types (bits 2-5): delivery receipt, intermediate notification.
_RECEIPT_TYPES = {0x04, 0x20}

_PENDING, _DELIVERED, _FAILED = (
    DeliveryStatus.PENDING,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.FAILED,
)

# The text's stat values (Appendix B abbreviates them to 7 letters; some SMSCs don't).
_STATS = {
    "DELIVRD": _DELIVERED,
    "DELIVERED": _DELIVERED,
    "ACCEPTD": _PENDING,
    "ACCEPTED": _PENDING,
    "ENROUTE": _PENDING,
    "BUFFRED": _PENDING,
    "BUFFERED": _PENDING,
    "EXPIRED": _FAILED,
    "DELETED": _FAILED,
    "UNDELIV": _FAILED,
    "UNDELIVERABLE": _FAILED,
    "REJECTD": _FAILED,
    "REJECTED": _FAILED,
    "UNKNOWN": _FAILED,
}

# message_state TLV values (SMPP 3.4 5.2.28): name and status.
_MESSAGE_STATES = {
    1: ("ENROUTE", _PENDING),
    2: ("DELIVERED", _DELIVERED),
    3: ("EXPIRED", _FAILED),
    4: ("DELETED", _FAILED),
    5: ("UNDELIVERABLE", _FAILED),
    6: ("ACCEPTED", _PENDING),
    7: ("UNKNOWN", _FAILED),
    8: ("REJECTED", _FAILED),
}

_KEY = re.compile(r"\b(id|sub|dlvrd|submit[ _]date|done[ _]date|stat|err|text)\s*:", re.IGNORECASE)


@attrs.frozen
class DeliveryReceipt:
    """What a receipt says. ``message_id`` is the SMSC's id as the receipt wrote it (None
    if it gave none); ``stat`` and ``err`` are the raw values (``stat`` is the
    message_state's name when only the TLV gave one); ``fields`` holds everything read
    from the text, by the Appendix B keys (``submit date``, ``text``, ...)."""

    message_id: str | None
    status: DeliveryStatus
    stat: str | None
    err: str | None
    fields: Mapping[str, str] = attrs.field(factory=dict)


def parse_receipt_text(text: str) -> dict[str, str]:
    """The key/value pairs of an Appendix B receipt text; {} if it has no ``id`` and
    ``stat``. ``text:`` runs to the end, whatever follows it."""
    matches = list(_KEY.finditer(text))
    fields: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        key = match.group(1).lower().replace("_", " ")
        if key == "text":
            fields[key] = text[match.end() :].strip()
            break
        fields.setdefault(key, text[match.end() : end].strip())
    if "id" not in fields or "stat" not in fields:
        return {}
    return fields


def parse_receipt(deliver: DeliverSm) -> DeliveryReceipt | None:
    """The receipt ``deliver`` is, or None if it is a message from a phone."""
    fields = parse_receipt_text(deliver.content.decode("latin-1"))
    if (
        deliver.esm_class & 0x3C not in _RECEIPT_TYPES
        and deliver.receipted_message_id is None
        and not fields
    ):
        return None
    message_id = deliver.receipted_message_id or fields.get("id") or None
    stat = fields.get("stat")
    if deliver.message_state is not None:
        name, status = _MESSAGE_STATES.get(deliver.message_state, (None, _PENDING))
        stat = stat or name
    elif stat is not None:
        status = _STATS.get(stat.upper(), _PENDING)
    else:
        status = _PENDING
    return DeliveryReceipt(message_id, status, stat, fields.get("err"), fields)


def normalise_provider_id(provider_id: str) -> str:
    """``provider_id`` stripped of spaces and leading zeros, in lower case."""
    lowered = provider_id.strip().lower()
    return lowered.lstrip("0") or lowered[:1]


def provider_id_candidates(provider_id: str) -> list[str]:
    """The forms to look ``provider_id`` up under, most likely first: its normalised
    form, then, if it reads as a number, that number in the other base (decimal read
    as hex, hex as decimal), all normalised."""
    normalised = normalise_provider_id(provider_id)
    candidates = [normalised]
    if normalised and normalised.isdecimal() and normalised.isascii():
        candidates.append(format(int(normalised), "x"))
    if normalised and all(char in string.hexdigits for char in normalised):
        candidates.append(str(int(normalised, 16)))
    return list(dict.fromkeys(candidates))
