"""Delivery receipts from deliver_sm: detection, id, status; and provider id forms."""

from __future__ import annotations

from typing import Any

import pytest

from vumi_like.messages import DeliveryStatus
from vumi_like.transports.smpp.pdus import DeliverSm
from vumi_like.transports.smpp.receipts import (
    normalise_provider_id,
    parse_receipt,
    parse_receipt_text,
    provider_id_candidates,
)

STANDARD = (
    "id:0123456789 sub:001 dlvrd:001 submit date:2401011200 done date:2401011205"
    " stat:DELIVRD err:000 text:Hello: id:9 stat:X"
)


def receipt_pdu(text: str = "", esm_class: int = 0, **fields: Any) -> DeliverSm:
    return DeliverSm("27820000001", "1234", text.encode("latin-1"), esm_class=esm_class, **fields)


def test_the_standard_text_is_read_field_by_field():
    assert parse_receipt_text(STANDARD) == {
        "id": "0123456789",
        "sub": "001",
        "dlvrd": "001",
        "submit date": "2401011200",
        "done date": "2401011205",
        "stat": "DELIVRD",
        "err": "000",
        "text": "Hello: id:9 stat:X",  # runs to the end, whatever it holds
    }


def test_the_text_is_read_in_any_order_and_case_with_underscores():
    fields = parse_receipt_text("STAT:UNDELIV Err:034 ID:ab12 submit_date:2401011200")
    assert fields == {"stat": "UNDELIV", "err": "034", "id": "ab12", "submit date": "2401011200"}


def test_a_text_without_id_and_stat_is_not_a_receipt():
    assert parse_receipt_text("id:5 is my valid id") == {}
    assert parse_receipt_text("my stat: great") == {}
    assert parse_receipt(receipt_pdu("hello there")) is None


def test_a_receipt_by_esm_class_and_tlvs_prefers_them_to_the_text():
    deliver = receipt_pdu(
        STANDARD.replace("DELIVRD", "ENROUTE"),
        esm_class=0x04,
        receipted_message_id="ABC",
        message_state=5,
    )
    receipt = parse_receipt(deliver)
    assert receipt is not None
    assert receipt.message_id == "ABC"
    assert receipt.status is DeliveryStatus.FAILED  # from message_state 5, UNDELIVERABLE
    assert receipt.stat == "ENROUTE"  # the raw text value is kept
    assert receipt.err == "000"
    assert receipt.fields["done date"] == "2401011205"


def test_a_receipt_of_tlvs_only():
    receipt = parse_receipt(
        receipt_pdu(esm_class=0x04, receipted_message_id="77", message_state=2)
    )
    assert receipt is not None
    assert (receipt.message_id, receipt.status, receipt.stat, receipt.err) == (
        "77",
        DeliveryStatus.DELIVERED,
        "DELIVERED",
        None,
    )


def test_a_receipt_of_text_only_with_esm_class_0():
    receipt = parse_receipt(receipt_pdu(STANDARD))
    assert receipt is not None
    assert (receipt.message_id, receipt.status, receipt.stat) == (
        "0123456789",
        DeliveryStatus.DELIVERED,
        "DELIVRD",
    )


def test_a_receipt_in_message_payload():
    deliver = DeliverSm("a", "b", b"", esm_class=0x04, message_payload=STANDARD.encode())
    receipt = parse_receipt(deliver)
    assert receipt is not None
    assert receipt.message_id == "0123456789"


def test_an_intermediate_notification_without_a_status_is_pending():
    receipt = parse_receipt(receipt_pdu(esm_class=0x20, receipted_message_id="9"))
    assert receipt is not None
    assert (receipt.status, receipt.stat) == (DeliveryStatus.PENDING, None)


def test_a_receipt_flagged_by_esm_class_without_any_id_has_message_id_none():
    receipt = parse_receipt(receipt_pdu("no fields here", esm_class=0x04))
    assert receipt is not None
    assert receipt.message_id is None


@pytest.mark.parametrize(
    ("stat", "status"),
    [
        ("DELIVRD", DeliveryStatus.DELIVERED),
        ("delivered", DeliveryStatus.DELIVERED),
        ("ACCEPTD", DeliveryStatus.PENDING),
        ("ENROUTE", DeliveryStatus.PENDING),
        ("BUFFRED", DeliveryStatus.PENDING),
        ("EXPIRED", DeliveryStatus.FAILED),
        ("DELETED", DeliveryStatus.FAILED),
        ("UNDELIV", DeliveryStatus.FAILED),
        ("REJECTD", DeliveryStatus.FAILED),
        ("UNKNOWN", DeliveryStatus.FAILED),
        ("SOMETHINGNEW", DeliveryStatus.PENDING),  # claims no outcome; raw value kept
    ],
)
def test_stat_values_map_to_statuses(stat: str, status: DeliveryStatus):
    receipt = parse_receipt(receipt_pdu(f"id:1 stat:{stat} err:000"))
    assert receipt is not None
    assert (receipt.status, receipt.stat) == (status, stat)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (1, DeliveryStatus.PENDING),
        (2, DeliveryStatus.DELIVERED),
        (3, DeliveryStatus.FAILED),
        (4, DeliveryStatus.FAILED),
        (5, DeliveryStatus.FAILED),
        (6, DeliveryStatus.PENDING),
        (7, DeliveryStatus.FAILED),
        (8, DeliveryStatus.FAILED),
    ],
)
def test_message_state_values_map_to_statuses(state: int, status: DeliveryStatus):
    receipt = parse_receipt(
        receipt_pdu(esm_class=0x04, receipted_message_id="1", message_state=state)
    )
    assert receipt is not None
    assert receipt.status is status


@pytest.mark.parametrize(
    ("provider_id", "candidates"),
    [
        ("0000ABC1", ["abc1", "43969"]),  # hex with leading zeros: also as decimal
        ("43969", ["43969", "abc1", "276841"]),  # decimal: as hex; and read as hex itself
        ("  00123 ", ["123", "7b", "291"]),
        ("msg-uuid-1", ["msg-uuid-1"]),  # not a number: only itself
        ("0", ["0"]),
        ("000", ["0"]),
        ("", [""]),
    ],
)
def test_provider_id_candidates(provider_id: str, candidates: list[str]):
    assert provider_id_candidates(provider_id) == candidates
    assert candidates[0] == normalise_provider_id(provider_id)


def test_a_hex_submit_id_is_found_from_a_decimal_receipt_id_and_back():
    stored = normalise_provider_id("0000abc1")
    assert stored in provider_id_candidates("43969")
    stored = normalise_provider_id("0043969")
    assert stored in provider_id_candidates("ABC1")
