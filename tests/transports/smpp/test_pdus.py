"""Plain PDU values to the codec's objects and octets, and back."""

from __future__ import annotations

import io

import pytest
from smpp.pdu.pdu_encoding import PDUEncoder

from vumi_like.transports.smpp.framing import Frame, encode_pdu
from vumi_like.transports.smpp.pdus import DeliverSm, SubmitSm

SUBMIT = SubmitSm(
    source_addr="1234",
    destination_addr="27820000001",
    short_message=b"\x00a",
    data_coding=8,
    esm_class=0x40,
    registered_delivery=1,
    source_addr_ton=1,
    source_addr_npi=1,
    dest_addr_ton=1,
    dest_addr_npi=1,
    tlvs={"sar_msg_ref_num": 7},
)


def decode(data: bytes) -> object:
    return PDUEncoder().decode(io.BytesIO(data))


def test_a_submit_sm_is_written_as_the_specification_lays_it_out():
    body = (
        b"\x00"  # service_type
        + b"\x01\x011234\x00"  # source TON, NPI, address
        + b"\x01\x0127820000001\x00"  # destination TON, NPI, address
        + bytes([0x40, 0, 0])  # esm_class, protocol_id, priority_flag
        + b"\x00\x00"  # schedule_delivery_time, validity_period
        + bytes([1, 0, 8, 0])  # registered_delivery, replace_if_present, data_coding, default
        + b"\x02\x00a"  # sm_length, short_message
        + bytes.fromhex("020c00020007")  # sar_msg_ref_num TLV
    )
    header = (16 + len(body)).to_bytes(4, "big") + bytes.fromhex("000000040000000000000009")
    assert encode_pdu(SUBMIT.to_pdu(9)) == header + body


def test_a_submit_sm_reads_back_as_itself():
    assert SubmitSm.from_pdu(decode(encode_pdu(SUBMIT.to_pdu(9)))) == SUBMIT


def test_a_value_the_specification_does_not_allow_is_a_value_error():
    with pytest.raises(ValueError, match="AddrTon"):
        SubmitSm("1", "2", dest_addr_ton=9).to_pdu(1)
    with pytest.raises(ValueError, match="COctetString is longer"):
        encode_pdu(SubmitSm("1", "2" * 30).to_pdu(1))


@pytest.mark.parametrize(
    "deliver",
    [
        DeliverSm("27820000001", "1234", b"hello", data_coding=3, source_addr_ton=1),
        DeliverSm(
            "27820000001",
            "1234",
            b"id:1 stat:DELIVRD",
            esm_class=0x04,
            receipted_message_id="1",
            message_state=2,
            network_error_code=b"\x03\x00\x00",
        ),
        DeliverSm("a", "b", bytes([5, 0, 3, 1, 2, 1]) + b"hi", esm_class=0x40, data_coding=0xF0),
        DeliverSm("a", "b", sar_msg_ref_num=1, sar_total_segments=2, sar_segment_seqnum=2),
        DeliverSm("a", "b", command="data_sm", message_payload=b"payload", data_coding=8),
    ],
)
def test_deliver_sm_and_data_sm_read_back_as_themselves(deliver: DeliverSm):
    assert DeliverSm.from_pdu(decode(encode_pdu(deliver.to_pdu(3)))) == deliver


def test_decoding_a_payload_does_not_change_how_the_next_one_is_encoded():
    data_sm = DeliverSm("a", "b", command="data_sm", message_payload=b"12345")
    Frame(0x103, 0, 1, encode_pdu(data_sm.to_pdu(1))).decode()
    shorter = DeliverSm("a", "b", command="data_sm", message_payload=b"hi")
    assert encode_pdu(shorter.to_pdu(2)).endswith(b"\x04\x24\x00\x02hi")


def test_a_tlv_the_pdu_does_not_have_is_refused_not_left_out():
    with pytest.raises(ValueError, match="submit_sm has no TLV receipted_message_id"):
        SubmitSm("1", "2", tlvs={"receipted_message_id": "x"}).to_pdu(1)
    with pytest.raises(ValueError, match="submit_sm has no TLV esm_class"):
        SubmitSm("1", "2", tlvs={"esm_class": 3}).to_pdu(1)
