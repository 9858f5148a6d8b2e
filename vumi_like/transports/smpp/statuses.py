"""SMPP command_status values, and what a submit_sm_resp's status means for the message.

``submit_sm_outcome`` is where an SMSC's answer becomes one of the transport outcomes
(``vumi_like.transports.outcomes``): the message id on ESME_ROK, ``TemporaryFailure``
for a status that says "not now" (throttled, queue full, system error, ...), and
``PermanentFailure`` for everything else (invalid destination or source address,
invalid esm_class, ...), which sending the same PDU again would get again.

SMSC vendors put their own statuses in 0x400-0x4FF, and they mean different things
from one SMSC to the next; they count as permanent unless the operator lists them in
``temporary``, because retrying a refusal costs money and never helps, while a
transient error taken for a permanent one only costs that one message.

Statuses are handled as the numbers on the wire: the codec turns numbers it does not
know into one "reserved" enum member, which would lose the vendor's code.
"""

from __future__ import annotations

from collections.abc import Collection

from smpp.pdu import constants, pdu_types

from vumi_like.transports.outcomes import PermanentFailure, TemporaryFailure
from vumi_like.transports.smpp.pdus import SubmitSmResp

__all__ = [
    "ESME_RINVCMDID",
    "ESME_RINVPASWD",
    "ESME_RINVSYSID",
    "ESME_RMSGQFUL",
    "ESME_ROK",
    "ESME_RSYSERR",
    "ESME_RTHROTTLED",
    "ESME_RX_T_APPN",
    "TEMPORARY_STATUSES",
    "command_status",
    "describe_status",
    "submit_sm_outcome",
]

ESME_ROK = 0x00
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RSYSERR = 0x08
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RSUBMITFAIL = 0x45
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64
ESME_RDELIVERYFAILURE = 0xFE
ESME_RUNKNOWNERR = 0xFF

# "Not now" rather than "never": the SMSC or its link is busy or failing, or the
# session is in a state where it cannot take the message (not bound as transmitter).
TEMPORARY_STATUSES = frozenset(
    {
        ESME_RINVBNDSTS,
        ESME_RSYSERR,
        ESME_RMSGQFUL,
        ESME_RSUBMITFAIL,
        ESME_RTHROTTLED,
        ESME_RX_T_APPN,
        ESME_RDELIVERYFAILURE,
        ESME_RUNKNOWNERR,
    }
)


def command_status(value: int) -> pdu_types.CommandStatus:
    """The codec's enum member for ``value``, one the specification defines."""
    return getattr(pdu_types.CommandStatus, constants.command_status_value_map[value]["name"])


def describe_status(value: int) -> str:
    """``ESME_RTHROTTLED (0x00000058): Throttling error ...`` for ``value``, or its hex
    alone when the specification does not name it (a vendor's own code)."""
    known = constants.command_status_value_map.get(value) if value >= 0 else None
    if known is None:
        return f"command_status 0x{value:08X}"
    return f"{known['name']} (0x{value:08X}): {known['description']}"


def submit_sm_outcome(resp: SubmitSmResp, *, temporary: Collection[int] = ()) -> str:
    """The SMSC's message id for an accepted submit_sm ("" if it gave none), or raise.

    ``TemporaryFailure`` for a status in ``TEMPORARY_STATUSES`` or in ``temporary``
    (an SMSC's own transient codes), ``PermanentFailure`` for any other error.
    """
    status = resp.command_status
    if status == ESME_ROK:
        return resp.message_id or ""
    reason = f"submit_sm refused: {describe_status(status)}"
    if status in TEMPORARY_STATUSES or status in temporary:
        raise TemporaryFailure(reason)
    raise PermanentFailure(reason)
