"""The PDUs an ESME sends and receives as plain typed values, and their codec objects.

The ``smpp.pdu`` codec (``smpp.pdu3``, the one vumi2 and Jasmin use) represents a PDU as
an object whose ``params`` dict holds enums and named tuples: ``EsmClass(mode, type,
gsmFeatures)``, ``DataCoding(scheme, schemeData)``, ``AddrTon.INTERNATIONAL``... Code
that builds messages thinks in the numbers of the SMPP 3.4 specification (esm_class
0x40, data_coding 8, TON 1), so the rest of this package uses the values here, whose
fields are those numbers, and converts at the edge with ``to_pdu`` / ``from_pdu``.

Optional parameters (TLVs) that this package reads or writes itself have fields of
their own; any other TLV travels in ``tlvs`` under the codec's name for it, with the
value the codec uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Self

import attrs
from smpp.pdu import constants, operations, pdu_types
from smpp.pdu.pdu_types import PDU

__all__ = ["DeliverSm", "SubmitSm", "SubmitSmResp"]

# The TLVs a DeliverSm has fields for; the rest go to DeliverSm.tlvs.
_DELIVER_TLV_FIELDS = (
    "message_payload",
    "sar_msg_ref_num",
    "sar_total_segments",
    "sar_segment_seqnum",
    "receipted_message_id",
    "message_state",
    "network_error_code",
)


@attrs.frozen
class SubmitSm:
    """A submit_sm. ``tlvs`` holds further optional parameters by their codec names
    (``sar_msg_ref_num``, ``message_payload``, ``user_message_reference``, ...)."""

    source_addr: str
    destination_addr: str
    short_message: bytes = b""
    data_coding: int = 0
    esm_class: int = 0
    registered_delivery: int = 0
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    service_type: str = ""
    protocol_id: int = 0
    priority_flag: int = 0
    tlvs: Mapping[str, Any] = attrs.field(factory=dict)

    def to_pdu(self, sequence_number: int) -> PDU:
        """The codec's ``SubmitSM``; ``ValueError`` for a value the spec does not allow."""
        _check_tlvs(self.tlvs, operations.SubmitSM)
        return operations.SubmitSM(
            seqNum=sequence_number,
            service_type=self.service_type,
            source_addr_ton=_ton(self.source_addr_ton),
            source_addr_npi=_npi(self.source_addr_npi),
            source_addr=self.source_addr,
            dest_addr_ton=_ton(self.dest_addr_ton),
            dest_addr_npi=_npi(self.dest_addr_npi),
            destination_addr=self.destination_addr,
            esm_class=_esm_class(self.esm_class),
            protocol_id=self.protocol_id,
            priority_flag=_code(
                pdu_types.PriorityFlag, constants.priority_flag_value_map, self.priority_flag
            ),
            registered_delivery=_registered_delivery(self.registered_delivery),
            replace_if_present_flag=pdu_types.ReplaceIfPresentFlag.DO_NOT_REPLACE,
            data_coding=pdu_types.DataCoding(pdu_types.DataCodingScheme.RAW, self.data_coding),
            sm_default_msg_id=0,
            short_message=self.short_message,
            **self.tlvs,
        )

    @classmethod
    def from_pdu(cls, pdu: PDU) -> Self:
        params = pdu.params
        known = set(operations.SubmitSM.mandatoryParams)
        return cls(
            source_addr=_text(params["source_addr"]),
            destination_addr=_text(params["destination_addr"]),
            short_message=params["short_message"] or b"",
            data_coding=_data_coding_value(params["data_coding"]),
            esm_class=_esm_class_value(params["esm_class"]),
            registered_delivery=_registered_delivery_value(params["registered_delivery"]),
            source_addr_ton=_value(params["source_addr_ton"], constants.addr_ton_name_map),
            source_addr_npi=_value(params["source_addr_npi"], constants.addr_npi_name_map),
            dest_addr_ton=_value(params["dest_addr_ton"], constants.addr_ton_name_map),
            dest_addr_npi=_value(params["dest_addr_npi"], constants.addr_npi_name_map),
            service_type=_text(params["service_type"]),
            protocol_id=params["protocol_id"] or 0,
            priority_flag=_value(params["priority_flag"], constants.priority_flag_name_map),
            tlvs={name: value for name, value in params.items() if name not in known},
        )


@attrs.frozen
class SubmitSmResp:
    """The SMSC's answer to a submit_sm: its command_status as the number it sent, and
    the message id it gave (None when it sent none, as on an error)."""

    command_status: int
    message_id: str | None


@attrs.frozen
class DeliverSm:
    """A deliver_sm or data_sm from the SMSC (``command`` says which): a message from a
    phone, or a delivery receipt (see ``receipts.py``). A data_sm carries its content in
    ``message_payload`` and has no ``short_message``."""

    source_addr: str
    destination_addr: str
    short_message: bytes = b""
    data_coding: int = 0
    esm_class: int = 0
    command: str = "deliver_sm"
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    service_type: str = ""
    message_payload: bytes | None = None
    sar_msg_ref_num: int | None = None
    sar_total_segments: int | None = None
    sar_segment_seqnum: int | None = None
    receipted_message_id: str | None = None
    message_state: int | None = None
    network_error_code: bytes | None = None
    tlvs: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def content(self) -> bytes:
        """What the message says, undecoded: ``message_payload`` if there is one, else
        ``short_message`` (the spec forbids both at once)."""
        return self.message_payload if self.message_payload is not None else self.short_message

    @classmethod
    def from_pdu(cls, pdu: PDU) -> Self:
        """From the codec's ``DeliverSM`` or ``DataSM``."""
        params = pdu.params
        known = {*pdu.mandatoryParams, *_DELIVER_TLV_FIELDS}
        message_state = params.get("message_state")
        receipted = params.get("receipted_message_id")
        return cls(
            command=pdu.id.name,
            source_addr=_text(params["source_addr"]),
            destination_addr=_text(params["destination_addr"]),
            short_message=params.get("short_message") or b"",
            data_coding=_data_coding_value(params["data_coding"]),
            esm_class=_esm_class_value(params["esm_class"]),
            source_addr_ton=_value(params["source_addr_ton"], constants.addr_ton_name_map),
            source_addr_npi=_value(params["source_addr_npi"], constants.addr_npi_name_map),
            dest_addr_ton=_value(params["dest_addr_ton"], constants.addr_ton_name_map),
            dest_addr_npi=_value(params["dest_addr_npi"], constants.addr_npi_name_map),
            service_type=_text(params["service_type"]),
            message_payload=params.get("message_payload"),
            sar_msg_ref_num=params.get("sar_msg_ref_num"),
            sar_total_segments=params.get("sar_total_segments"),
            sar_segment_seqnum=params.get("sar_segment_seqnum"),
            receipted_message_id=None if receipted is None else _text(receipted),
            message_state=(
                None
                if message_state is None
                else _value(message_state, constants.message_state_name_map)
            ),
            network_error_code=params.get("network_error_code"),
            tlvs={name: value for name, value in params.items() if name not in known},
        )

    def to_pdu(self, sequence_number: int) -> PDU:
        """The codec's ``DeliverSM`` (``command`` deliver_sm) or ``DataSM``."""
        optional: dict[str, Any] = {
            name: getattr(self, name)
            for name in _DELIVER_TLV_FIELDS
            if getattr(self, name) is not None and name != "message_state"
        }
        if self.message_state is not None:
            optional["message_state"] = _code(
                pdu_types.MessageState, constants.message_state_value_map, self.message_state
            )
        common: dict[str, Any] = {
            "service_type": self.service_type,
            "source_addr_ton": _ton(self.source_addr_ton),
            "source_addr_npi": _npi(self.source_addr_npi),
            "source_addr": self.source_addr,
            "dest_addr_ton": _ton(self.dest_addr_ton),
            "dest_addr_npi": _npi(self.dest_addr_npi),
            "destination_addr": self.destination_addr,
            "esm_class": _esm_class(self.esm_class),
            "registered_delivery": _registered_delivery(0),
            "data_coding": pdu_types.DataCoding(pdu_types.DataCodingScheme.RAW, self.data_coding),
        }
        pdu_class: Any = operations.DataSM
        if self.command == "deliver_sm":
            pdu_class = operations.DeliverSM
            common |= {
                "protocol_id": 0,
                "priority_flag": pdu_types.PriorityFlag.LEVEL_0,
                "replace_if_present_flag": pdu_types.ReplaceIfPresentFlag.DO_NOT_REPLACE,
                "sm_default_msg_id": 0,
                "short_message": self.short_message,
            }
        _check_tlvs(self.tlvs, pdu_class)
        return pdu_class(seqNum=sequence_number, **common, **optional, **self.tlvs)


def _code(enum: Any, value_map: Mapping[int, str], value: int) -> Any:
    """The codec's enum member for the number ``value`` of a field."""
    try:
        return getattr(enum, value_map[value])
    except KeyError:
        raise ValueError(f"{value:#x} is not a valid {enum.__name__}") from None


def _check_tlvs(tlvs: Mapping[str, Any], pdu_class: Any) -> None:
    # The codec would leave out, without a word, a TLV its PDU class does not list.
    unknown = set(tlvs) - set(pdu_class.optionalParams)
    if unknown:
        raise ValueError(f"{pdu_class.commandId.name} has no TLV {', '.join(sorted(unknown))}")


def _ton(value: int) -> Any:
    return _code(pdu_types.AddrTon, constants.addr_ton_value_map, value)


def _npi(value: int) -> Any:
    return _code(pdu_types.AddrNpi, constants.addr_npi_value_map, value)


def _value(member: Enum | None, name_map: Mapping[str, int]) -> int:
    """The number for the codec's enum ``member`` (None, a null field, is 0)."""
    return 0 if member is None else name_map[member.name]


def _text(value: bytes | None) -> str:
    # Addresses and ids are ASCII by the spec; a stray byte must not lose the message.
    return "" if value is None else value.decode("latin-1")


def _esm_class(value: int) -> pdu_types.EsmClass:
    mode = _code(pdu_types.EsmClassMode, constants.esm_class_mode_value_map, value & 0x03)
    kind = _code(pdu_types.EsmClassType, constants.esm_class_type_value_map, value & 0x3C)
    features = [
        getattr(pdu_types.EsmClassGsmFeatures, name)
        for bit, name in constants.esm_class_gsm_features_value_map.items()
        if value & bit
    ]
    return pdu_types.EsmClass(mode, kind, features)


def _esm_class_value(esm_class: pdu_types.EsmClass) -> int:
    value = constants.esm_class_mode_name_map[esm_class.mode.name]
    value |= constants.esm_class_type_name_map[esm_class.type.name]
    for feature in esm_class.gsmFeatures:
        value |= constants.esm_class_gsm_features_name_map[feature.name]
    return value


def _registered_delivery(value: int) -> pdu_types.RegisteredDelivery:
    receipt = _code(
        pdu_types.RegisteredDeliveryReceipt,
        constants.registered_delivery_receipt_value_map,
        value & 0x03,
    )
    acks = [
        getattr(pdu_types.RegisteredDeliverySmeOriginatedAcks, name)
        for bit, name in constants.registered_delivery_sme_originated_acks_value_map.items()
        if value & bit
    ]
    return pdu_types.RegisteredDelivery(receipt, acks, bool(value & 0x10))


def _registered_delivery_value(registered: pdu_types.RegisteredDelivery) -> int:
    value = constants.registered_delivery_receipt_name_map[registered.receipt.name]
    for ack in registered.smeOriginatedAcks:
        value |= constants.registered_delivery_sme_originated_acks_name_map[ack.name]
    return value | (0x10 if registered.intermediateNotification else 0)


def _data_coding_value(data_coding: pdu_types.DataCoding) -> int:
    scheme = data_coding.scheme.name
    if scheme == "RAW":
        return int(data_coding.schemeData)
    if scheme == "DEFAULT":
        return constants.data_coding_default_name_map[data_coding.schemeData.name]
    gsm = data_coding.schemeData
    return (
        constants.data_coding_scheme_name_map[scheme]
        | constants.data_coding_gsm_message_coding_name_map[gsm.msgCoding.name]
        | constants.data_coding_gsm_message_class_name_map[gsm.msgClass.name]
    )
