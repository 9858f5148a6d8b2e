"""Outbound text to submit_sm contents, inbound contents back to text and parts."""

from __future__ import annotations

import pytest

from vumi_like.transports.outcomes import PermanentFailure
from vumi_like.transports.smpp import gsm0338
from vumi_like.transports.smpp.encoding import (
    Alphabet,
    DefaultAlphabet,
    EncodedPart,
    EncodingOptions,
    MessageTooLong,
    Splitting,
    choose_data_coding,
    encode_text,
    inbound_part,
    join_parts,
    split_text,
)
from vumi_like.transports.smpp.pdus import DeliverSm

EMOJI = "\U0001f600"  # two UTF-16 code units: a surrogate pair


def udh_of(part: EncodedPart) -> bytes:
    return part.short_message[:6]


def body_of(part: EncodedPart) -> bytes:
    return part.short_message[6:]


def as_deliver(part: EncodedPart) -> DeliverSm:
    """What the far end would get for ``part``."""
    return DeliverSm(
        source_addr="27820000001",
        destination_addr="1234",
        short_message=part.short_message,
        data_coding=part.data_coding,
        esm_class=part.esm_class,
        message_payload=part.tlvs.get("message_payload"),
        sar_msg_ref_num=part.tlvs.get("sar_msg_ref_num"),
        sar_total_segments=part.tlvs.get("sar_total_segments"),
        sar_segment_seqnum=part.tlvs.get("sar_segment_seqnum"),
    )


# -- choosing the data_coding ------------------------------------------------------------


def test_text_in_the_gsm_alphabet_goes_as_data_coding_0_unpacked():
    [part] = encode_text("Hello {world} €5")
    assert part == EncodedPart(gsm0338.encode("Hello {world} €5"), data_coding=0)


def test_text_outside_the_gsm_alphabet_goes_as_ucs2_whole():
    [part] = encode_text("ça va 😀")
    assert part.data_coding == 8
    assert part.short_message == "ça va 😀".encode("utf-16-be")


def test_latin_1_when_configured_and_ucs2_when_latin_1_cannot_hold_it():
    latin = EncodingOptions(alphabet=Alphabet.LATIN_1)
    assert encode_text("ça va", latin) == [EncodedPart("ça va".encode("latin-1"), 3)]
    assert encode_text("ça coûte 5 €", latin)[0].data_coding == 8


def test_ucs2_when_configured_even_for_plain_text():
    assert choose_data_coding("hello", Alphabet.UCS2) == 8


# -- where long texts are cut ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lengths"),
    [
        ("a" * 160, [160]),
        ("a" * 161, [153, 8]),
        ("a" * 306, [153, 153]),
        ("a" * 307, [153, 153, 1]),
        ("€" * 80, [80]),  # 160 septets: one SMS
        ("€" * 81, [76, 5]),  # 76 x 2 = 152 septets; a 77th would make 154
    ],
)
def test_gsm_limits_count_escapes_as_two(text: str, lengths: list[int]):
    assert [len(chunk) for chunk in split_text(text, 0)] == lengths


def test_an_escape_pair_at_the_boundary_moves_whole_to_the_next_part():
    text = "a" * 152 + "€" + "b" * 10
    first, second = encode_text(text, reference=7)
    assert body_of(first) == b"a" * 152
    assert body_of(second) == gsm0338.encode("€" + "b" * 10)
    assert not body_of(first).endswith(b"\x1b")


@pytest.mark.parametrize(
    ("text", "lengths"),
    [
        ("ç" * 70, [70]),
        ("ç" * 71, [67, 4]),
        ("ç" * 134, [67, 67]),
        (EMOJI * 35, [35]),  # 70 code units
        (EMOJI * 36, [33, 3]),  # 33 x 2 = 66 units; a 34th would make 68
    ],
)
def test_ucs2_limits_count_code_units(text: str, lengths: list[int]):
    assert [len(chunk) for chunk in split_text(text, 8)] == lengths


def test_a_surrogate_pair_at_the_boundary_is_never_split():
    text = "ç" * 66 + EMOJI + "b" * 5  # 73 code units: two parts
    first, second = encode_text(text, reference=7)
    assert body_of(first).decode("utf-16-be") == "ç" * 66  # strict: no lone surrogate
    assert body_of(second).decode("utf-16-be") == EMOJI + "b" * 5


@pytest.mark.parametrize(("length", "parts"), [(140, 1), (141, 2), (268, 2), (269, 3)])
def test_latin_1_limits(length: int, parts: int):
    options = EncodingOptions(alphabet=Alphabet.LATIN_1)
    encoded = encode_text("é" * length, options)
    assert len(encoded) == parts
    assert all(len(body_of(part)) <= 134 for part in encoded[:-1] if parts > 1)


# -- the three ways of sending a long text -----------------------------------------------


def test_udh_parts_carry_a_concatenation_header_and_esm_class_0x40():
    parts = encode_text("a" * 400, reference=300)
    assert [udh_of(part) for part in parts] == [
        bytes([5, 0, 3, 300 % 256, 3, number]) for number in (1, 2, 3)
    ]
    assert {part.esm_class for part in parts} == {0x40}
    assert all(len(part.short_message) == 6 + 153 for part in parts[:2])
    assert all(part.tlvs == {} for part in parts)


def test_sar_parts_carry_tlvs_and_no_header():
    parts = encode_text("a" * 400, EncodingOptions(splitting=Splitting.SAR), reference=70000)
    assert [part.tlvs for part in parts] == [
        {"sar_msg_ref_num": 70000 % 65536, "sar_total_segments": 3, "sar_segment_seqnum": n}
        for n in (1, 2, 3)
    ]
    assert [part.short_message for part in parts] == [b"a" * 153, b"a" * 153, b"a" * 94]
    assert {part.esm_class for part in parts} == {0}


def test_payload_sends_one_submit_with_the_whole_text():
    text = "ç" * 500
    [part] = encode_text(text, EncodingOptions(splitting=Splitting.PAYLOAD))
    assert part.short_message == b""
    assert part.tlvs == {"message_payload": text.encode("utf-16-be")}
    assert part.data_coding == 8


def test_payload_splitting_still_uses_short_message_when_the_text_fits():
    [part] = encode_text("hi", EncodingOptions(splitting=Splitting.PAYLOAD))
    assert part == EncodedPart(b"hi", 0)


def test_more_parts_than_a_header_can_count_is_a_permanent_failure():
    with pytest.raises(MessageTooLong, match="256 parts") as caught:
        encode_text("a" * (153 * 255 + 1))
    assert isinstance(caught.value, PermanentFailure)
    assert len(encode_text("a" * (153 * 255))) == 255


def test_a_payload_longer_than_a_tlv_holds_is_a_permanent_failure():
    with pytest.raises(MessageTooLong):
        encode_text("ç" * 40000, EncodingOptions(splitting=Splitting.PAYLOAD))


def test_packed_gsm_fits_153_septets_and_the_header_in_140_octets():
    options = EncodingOptions(gsm_packed=True)
    [single] = encode_text("hellohello", options)
    assert single.short_message.hex() == "e8329bfd4697d9ec37"
    parts = encode_text("a" * 200, options)
    assert len(parts[0].short_message) == 140
    assert join_parts(inbound_part(as_deliver(part), options) for part in parts) == "a" * 200


def test_part_to_submit_sm_adds_addressing_and_merges_esm_class_and_tlvs():
    part = encode_text("a" * 200, EncodingOptions(splitting=Splitting.SAR), reference=1)[0]
    submit = part.submit_sm(
        source_addr="1234",
        destination_addr="27820000001",
        registered_delivery=1,
        esm_class=0x03,
        tlvs={"user_message_reference": 9},
    )
    assert submit.short_message == part.short_message
    assert submit.esm_class == 0x03
    assert submit.registered_delivery == 1
    assert submit.tlvs == {"user_message_reference": 9, **part.tlvs}


# -- inbound -----------------------------------------------------------------------------

TEXTS = ["hello", "a" * 400, "€" * 200, "ça " * 50, EMOJI * 100, "ç" * 66 + EMOJI + "b" * 5]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("splitting", [Splitting.UDH, Splitting.SAR, Splitting.PAYLOAD])
@pytest.mark.parametrize("packed", [False, True])
def test_what_is_sent_reads_back_as_the_same_text(text: str, splitting: Splitting, packed: bool):
    options = EncodingOptions(splitting=splitting, gsm_packed=packed)
    parts = [inbound_part(as_deliver(part), options) for part in encode_text(text, options)]
    assert join_parts(reversed(parts)) == text
    if len(parts) > 1:
        [key] = {part.key for part in parts}
        assert key is not None
        assert key[:2] == ("27820000001", "1234")
        assert sorted(part.part_number for part in parts) == list(range(1, len(parts) + 1))
        assert {part.total_parts for part in parts} == {len(parts)}
    else:
        assert parts[0].key is None
        assert (parts[0].part_number, parts[0].total_parts) == (1, 1)


def test_a_16_bit_reference_header_is_read():
    deliver = DeliverSm(
        "27820000001", "1234", bytes([6, 8, 4, 1, 2, 3, 1]) + b"hi", esm_class=0x40
    )
    part = inbound_part(deliver)
    assert (part.key, part.part_number, part.total_parts, part.text) == (
        ("27820000001", "1234", 0x0102),
        1,
        3,
        "hi",
    )


def test_other_header_elements_are_skipped():
    # A port addressing element (IEI 0x05) before the concatenation element.
    header = bytes([11, 5, 4, 0, 1, 0, 2, 0, 3, 9, 2, 1])
    part = inbound_part(DeliverSm("a", "b", header + b"hi", esm_class=0x40))
    assert (part.key, part.part_number, part.total_parts, part.text) == (("a", "b", 9), 1, 2, "hi")


@pytest.mark.parametrize(
    "short_message",
    [
        bytes([40]) + b"hi",  # a header longer than the message
        bytes([5, 0, 3, 9, 2, 3]) + b"hi",  # part 3 of 2
        bytes([5, 0, 3, 9, 1, 1]) + b"hi",  # part 1 of 1
        bytes([5, 0, 9, 9]) + b"hi",  # an element longer than the header
    ],
)
def test_a_broken_header_makes_a_whole_message_not_an_error(short_message: bytes):
    part = inbound_part(DeliverSm("a", "b", short_message, esm_class=0x40))
    assert part.key is None
    assert (part.part_number, part.total_parts) == (1, 1)


@pytest.mark.parametrize(
    ("data_coding", "data", "text"),
    [
        (0, gsm0338.encode("£5 €"), "£5 €"),
        (1, b"plain", "plain"),
        (3, "café".encode("latin-1"), "café"),
        (8, "ça 😀".encode("utf-16-be"), "ça 😀"),
        (0xF0, gsm0338.encode("@home"), "@home"),  # message class 0, GSM alphabet
        (0xF4, b"\x01\xff", "\x01\xff"),  # message class 0, 8-bit data
        (4, b"\x00\x80", "\x00\x80"),  # 8-bit data, kept byte for byte
        (8, b"\x00a\x00", "a\ufffd"),  # UCS-2 with an odd octet
        (8, b"\xd8\x3d", "\ufffd"),  # half a surrogate pair, in a whole message
    ],
)
def test_inbound_is_decoded_by_data_coding(data_coding: int, data: bytes, text: str):
    assert inbound_part(DeliverSm("a", "b", data, data_coding=data_coding)).text == text


def test_data_coding_0_can_be_configured_as_latin_1_or_ascii():
    deliver = DeliverSm("a", "b", "café".encode("latin-1"))
    latin = EncodingOptions(default_alphabet=DefaultAlphabet.LATIN_1)
    assert inbound_part(deliver, latin).text == "café"
    ascii_ = EncodingOptions(default_alphabet=DefaultAlphabet.ASCII)
    assert inbound_part(deliver, ascii_).text == "caf\ufffd"


def test_message_payload_is_read_instead_of_short_message():
    deliver = DeliverSm("a", "b", b"", message_payload=b"from the payload")
    assert inbound_part(deliver).text == "from the payload"


def test_a_surrogate_pair_split_by_the_sender_is_joined_again():
    encoded = EMOJI.encode("utf-16-be")
    first = DeliverSm("a", "b", bytes([5, 0, 3, 1, 2, 1]) + b"\x00x" + encoded[:2], 8, 0x40)
    second = DeliverSm("a", "b", bytes([5, 0, 3, 1, 2, 2]) + encoded[2:] + b"\x00y", 8, 0x40)
    parts = [inbound_part(second), inbound_part(first)]
    assert join_parts(parts) == "x" + EMOJI + "y"


def test_a_lone_half_of_a_surrogate_pair_becomes_a_replacement_character():
    part = DeliverSm("a", "b", bytes([5, 0, 3, 1, 2, 1]) + b"\xd8\x3d", 8, 0x40)
    rest = DeliverSm("a", "b", bytes([5, 0, 3, 1, 2, 2]) + b"\x00y", 8, 0x40)
    assert join_parts([inbound_part(part), inbound_part(rest)]) == "\ufffdy"
