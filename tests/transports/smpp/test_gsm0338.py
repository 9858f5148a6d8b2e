"""The GSM 03.38 alphabet: tables, escapes, packing with and without fill bits."""

from __future__ import annotations

import pytest

from vumi_like.transports.smpp import gsm0338


def test_basic_characters_are_one_septet_each():
    assert gsm0338.encode("@£$¥") == bytes([0x00, 0x01, 0x02, 0x03])
    assert gsm0338.encode("Hello") == b"Hello"
    assert gsm0338.encode("ΔΩ") == bytes([0x10, 0x15])


def test_extension_characters_are_escape_and_septet():
    assert gsm0338.encode("€") == bytes([0x1B, 0x65])
    escaped = [0x28, 0x29, 0x3C, 0x3E, 0x3D, 0x40, 0x14, 0x2F, 0x0A]
    assert gsm0338.encode("{}[]~|^\\\f") == b"".join(bytes([0x1B, s]) for s in escaped)
    assert gsm0338.septet_count("€") == 2
    assert gsm0338.septet_count("e") == 1


def test_every_encodable_text_decodes_back():
    text = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./09:;<=>?¡AZÄÖÑÜ§¿azäöñüà€{}[]~|^\\\f"
    assert gsm0338.decode(gsm0338.encode(text)) == text


def test_characters_outside_the_alphabet_are_refused_not_dropped():
    assert not gsm0338.can_encode("ça")  # lower-case c cedilla is not in the table
    assert not gsm0338.can_encode("hi 😀")
    with pytest.raises(ValueError, match="'ç'"):
        gsm0338.encode("ça")


def test_decoding_odd_input_never_fails():
    # An escape before a septet with no extension reads as the basic character, an
    # escape at the end is dropped, a byte above 0x7F is read modulo 128.
    assert gsm0338.decode(bytes([0x1B, 0x41, 0x42, 0x1B])) == "AB"
    assert gsm0338.decode(bytes([0xC1])) == "A"


def test_packing_matches_the_specification_example():
    # "hellohello" packed, the classic example of TS 23.038.
    assert gsm0338.pack(gsm0338.encode("hellohello")).hex() == "e8329bfd4697d9ec37"
    assert gsm0338.decode(gsm0338.unpack(bytes.fromhex("e8329bfd4697d9ec37"))) == "hellohello"


def test_160_septets_pack_into_140_octets():
    assert len(gsm0338.pack(gsm0338.encode("x" * 160))) == 140


@pytest.mark.parametrize("fill_bits", [0, 1, 6])
@pytest.mark.parametrize("length", [1, 6, 7, 8, 9, 15, 16, 153])
def test_pack_and_unpack_round_trip(length: int, fill_bits: int):
    septets = gsm0338.encode(("abcdefghij" * 20)[:length])
    packed = gsm0338.pack(septets, fill_bits=fill_bits)
    assert gsm0338.unpack(packed, fill_bits=fill_bits) == septets


def test_seven_spare_bits_are_filled_with_cr_not_read_as_at():
    # 7 septets use 49 bits: 7 octets would leave 7 spare bits that read as "@".
    packed = gsm0338.pack(gsm0338.encode("abcdefg"))
    assert len(packed) == 7
    assert packed[-1] >> 1 == 0x0D
    assert gsm0338.decode(gsm0338.unpack(packed)) == "abcdefg"


def test_a_text_ending_in_cr_on_an_octet_boundary_keeps_its_cr():
    septets = gsm0338.encode("abcdefg\r")  # 8 septets: exactly 7 octets
    assert gsm0338.decode(gsm0338.unpack(gsm0338.pack(septets))).rstrip("\r") == "abcdefg"
    assert gsm0338.decode(gsm0338.unpack(gsm0338.pack(septets))).startswith("abcdefg\r")
