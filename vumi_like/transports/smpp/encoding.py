"""Text to submit_sm contents and back: data_coding, long messages, inbound parts.

Outbound (``encode_text``)
    The text goes in the configured alphabet, GSM 03.38 (data_coding 0) or Latin-1 (3),
    if every character is in it, else as UCS-2 (8, UTF-16-BE): a character outside the
    alphabet switches the whole message to UCS-2, it is never dropped or replaced.

    A text longer than one SMS (160 GSM septets, 140 Latin-1 octets, 70 UCS-2 code
    units) is sent in one of three ways, by configuration:

    * ``udh``: one submit_sm per part, each starting with a user data header with a
      concatenation element (IEI 0x00, 8-bit reference), esm_class 0x40 (UDHI).
    * ``sar``: one submit_sm per part, the part numbers in the sar_msg_ref_num /
      sar_total_segments / sar_segment_seqnum TLVs; the SMSC writes the header.
    * ``payload``: one submit_sm with the whole text in the message_payload TLV; the
      SMSC splits it.

    Parts hold 153 GSM septets, 134 Latin-1 octets or 67 UCS-2 code units: what is
    left of 140 octets after a 6-octet header. SAR parts use the same sizes because the
    SMSC still has to add that header on the air. Parts are cut between characters, so
    an escape sequence (``€`` is 0x1B 0x65) or a UTF-16 surrogate pair (an emoji) is
    never split across two parts, which a handset would show as garbage.

    GSM septets go one per octet by default, as most SMSCs expect over SMPP;
    ``gsm_packed`` packs them eight into seven octets instead.

Inbound (``inbound_part``)
    The content of a deliver_sm (``message_payload`` if present, else
    ``short_message``) is decoded by its data_coding: 0 as the SMSC's default
    alphabet (GSM 03.38 unless configured as ASCII or Latin-1), 1 ASCII, 3 Latin-1,
    8 UCS-2, anything else as Latin-1 so that no message is lost for its coding. A
    concatenation header (8- or 16-bit reference) or SAR TLVs make it one part of a
    longer message: the caller collects the parts under ``InboundPart.key`` and
    joins them with ``join_parts``. Decoding never fails on bad input: a broken header
    is read as no header, a byte that is no character becomes U+FFFD.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import attrs

from vumi_like.transports.outcomes import PermanentFailure
from vumi_like.transports.smpp import gsm0338
from vumi_like.transports.smpp.pdus import DeliverSm, SubmitSm

__all__ = [
    "Alphabet",
    "DefaultAlphabet",
    "EncodedPart",
    "EncodingOptions",
    "InboundPart",
    "MessageTooLong",
    "Splitting",
    "choose_data_coding",
    "decode_text",
    "encode_text",
    "inbound_part",
    "join_parts",
    "split_text",
]

GSM = 0x00
ASCII = 0x01
LATIN_1 = 0x03
UCS2 = 0x08
UDHI = 0x40

_UDH_LENGTH = 6  # UDHL, IEI 0x00, IEDL 3, reference, total, part number
_MAX_PARTS = 255  # both the UDH and sar_total_segments count parts in one octet
_MAX_PAYLOAD = 0xFFFF  # a TLV's length is two octets


class Alphabet(StrEnum):
    """The coding a text goes in when all its characters are in it; else UCS-2."""

    GSM = "gsm0338"
    LATIN_1 = "latin1"
    UCS2 = "ucs2"


class Splitting(StrEnum):
    UDH = "udh"
    SAR = "sar"
    PAYLOAD = "payload"


class DefaultAlphabet(StrEnum):
    """What an SMSC means by data_coding 0, its "default alphabet"."""

    GSM = "gsm0338"
    ASCII = "ascii"
    LATIN_1 = "latin1"


class MessageTooLong(PermanentFailure):
    """More parts than a concatenation header or SAR can count (255), or a payload
    longer than a TLV can hold (65535 octets)."""


@attrs.frozen
class EncodingOptions:
    """How texts are written and read: ``alphabet`` and ``splitting`` for outbound,
    ``default_alphabet`` for inbound data_coding 0, ``gsm_packed`` both ways."""

    alphabet: Alphabet = Alphabet.GSM
    splitting: Splitting = Splitting.UDH
    gsm_packed: bool = False
    default_alphabet: DefaultAlphabet = DefaultAlphabet.GSM


@attrs.frozen
class EncodedPart:
    """What one submit_sm carries of a text; ``submit_sm`` adds the addressing."""

    short_message: bytes
    data_coding: int
    esm_class: int = 0
    tlvs: Mapping[str, Any] = attrs.field(factory=dict)

    def submit_sm(self, **fields: Any) -> SubmitSm:
        """A ``SubmitSm`` of this part with ``fields`` (source_addr, destination_addr,
        registered_delivery, ...); esm_class bits and TLVs in ``fields`` are added to
        the part's own."""
        esm_class = self.esm_class | fields.pop("esm_class", 0)
        tlvs = {**fields.pop("tlvs", {}), **self.tlvs}
        return SubmitSm(
            short_message=self.short_message,
            data_coding=self.data_coding,
            esm_class=esm_class,
            tlvs=tlvs,
            **fields,
        )


@attrs.frozen
class _Coding:
    data_coding: int
    single: int  # units in a message of one part
    part: int  # units in each part of a longer message

    def units(self, char: str) -> int:
        if self.data_coding == GSM:
            return gsm0338.septet_count(char)
        if self.data_coding == UCS2:
            return 2 if ord(char) > 0xFFFF else 1
        return 1


_CODINGS = {
    GSM: _Coding(GSM, single=160, part=153),
    LATIN_1: _Coding(LATIN_1, single=140, part=134),
    UCS2: _Coding(UCS2, single=70, part=67),
}


def choose_data_coding(text: str, alphabet: Alphabet) -> int:
    """The data_coding ``text`` goes in: ``alphabet``'s if it holds every character."""
    if alphabet is Alphabet.GSM and gsm0338.can_encode(text):
        return GSM
    if alphabet is Alphabet.LATIN_1 and _latin_1(text):
        return LATIN_1
    return UCS2


def split_text(text: str, data_coding: int) -> list[str]:
    """``text`` cut into the parts it is sent in with ``data_coding`` (0, 3 or 8): one
    part if it fits in one SMS, else parts of at most 153 septets / 134 octets / 67
    code units, cut between characters."""
    coding = _CODINGS[data_coding]
    if sum(coding.units(char) for char in text) <= coding.single:
        return [text]
    parts: list[str] = []
    start = used = 0
    for index, char in enumerate(text):
        units = coding.units(char)
        if used + units > coding.part:
            parts.append(text[start:index])
            start, used = index, 0
        used += units
    parts.append(text[start:])
    return parts


def encode_text(
    text: str, options: EncodingOptions = EncodingOptions(), *, reference: int | None = None
) -> list[EncodedPart]:
    """The submit_sm contents that send ``text`` (see the module docstring).

    ``reference`` numbers the parts of one long message (modulo 256 in a header,
    65536 in SAR); random if not given. Raises ``MessageTooLong``.
    """
    data_coding = choose_data_coding(text, options.alphabet)
    chunks = split_text(text, data_coding)
    if len(chunks) == 1:
        return [EncodedPart(_encode(text, data_coding, options), data_coding)]
    if options.splitting is Splitting.PAYLOAD:
        payload = _encode(text, data_coding, options)
        if len(payload) > _MAX_PAYLOAD:
            raise MessageTooLong(f"{len(payload)} octets, a message_payload holds {_MAX_PAYLOAD}")
        return [EncodedPart(b"", data_coding, tlvs={"message_payload": payload})]
    if len(chunks) > _MAX_PARTS:
        raise MessageTooLong(f"{len(chunks)} parts, at most {_MAX_PARTS} can be joined")
    if reference is None:
        reference = random.randrange(0x10000)
    total = len(chunks)
    if options.splitting is Splitting.SAR:
        return [
            EncodedPart(
                _encode(chunk, data_coding, options),
                data_coding,
                tlvs={
                    "sar_msg_ref_num": reference % 0x10000,
                    "sar_total_segments": total,
                    "sar_segment_seqnum": number,
                },
            )
            for number, chunk in enumerate(chunks, start=1)
        ]
    return [
        EncodedPart(
            bytes([5, 0x00, 3, reference % 0x100, total, number])
            + _encode(chunk, data_coding, options, header_octets=_UDH_LENGTH),
            data_coding,
            esm_class=UDHI,
        )
        for number, chunk in enumerate(chunks, start=1)
    ]


def _encode(
    text: str, data_coding: int, options: EncodingOptions, header_octets: int = 0
) -> bytes:
    if data_coding == UCS2:
        return text.encode("utf-16-be")
    if data_coding == LATIN_1:
        return text.encode("latin-1")
    septets = gsm0338.encode(text)
    if not options.gsm_packed:
        return septets
    return gsm0338.pack(septets, fill_bits=_fill_bits(header_octets))


def _fill_bits(header_octets: int) -> int:
    """Bits that make the septets after a header of ``header_octets`` start on a septet
    boundary (TS 23.040 9.2.3.24)."""
    return -(8 * header_octets) % 7


def _latin_1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def decode_text(
    data: bytes,
    data_coding: int,
    options: EncodingOptions = EncodingOptions(),
    *,
    header_octets: int = 0,
    keep_surrogates: bool = False,
) -> str:
    """``data`` (after any header of ``header_octets``) decoded by ``data_coding``.

    ``keep_surrogates`` keeps half of a surrogate pair in UCS-2 (as a lone surrogate)
    instead of replacing it, for a part whose pair continues in the next part.
    """
    if data_coding == GSM or _gsm_message_class(data_coding) == GSM:
        if options.default_alphabet is DefaultAlphabet.ASCII:
            return data.decode("ascii", "replace")
        if options.default_alphabet is DefaultAlphabet.LATIN_1:
            return data.decode("latin-1")
        if options.gsm_packed:
            return gsm0338.decode(gsm0338.unpack(data, fill_bits=_fill_bits(header_octets)))
        return gsm0338.decode(data)
    if data_coding == ASCII:
        return data.decode("ascii", "replace")
    if data_coding == UCS2:
        return _utf_16(data, keep_surrogates)
    # Latin-1 (3), and codings with no text meaning here (8-bit data, JIS, ...): every
    # byte stays one character, so nothing sent is lost.
    return data.decode("latin-1")


def _utf_16(data: bytes, keep_surrogates: bool) -> str:
    if not keep_surrogates:
        return data.decode("utf-16-be", "replace")
    # surrogatepass covers surrogates only: an odd octet at the end must go first.
    even = len(data) - len(data) % 2
    text = data[:even].decode("utf-16-be", "surrogatepass")
    return text + "\ufffd" if even < len(data) else text


def _gsm_message_class(data_coding: int) -> int | None:
    """For data_coding 0xF0-0xFF (message class groups): GSM or 8-bit data (4)."""
    if data_coding & 0xF0 != 0xF0:
        return None
    return data_coding & 0x04


@attrs.frozen
class InboundPart:
    """One deliver_sm's text. For part of a longer message, ``key`` identifies the
    message (sender, recipient, reference) and ``part_number`` runs 1..``total_parts``;
    a whole message has key None, part 1 of 1."""

    key: tuple[str, str, int] | None
    part_number: int
    total_parts: int
    text: str


def inbound_part(deliver: DeliverSm, options: EncodingOptions = EncodingOptions()) -> InboundPart:
    """The text of ``deliver``, and where it goes in a longer message (never raises)."""
    data = deliver.content
    header_octets = 0
    concatenation = None
    if deliver.esm_class & UDHI and data and data[0] + 1 <= len(data):
        header_octets = data[0] + 1
        concatenation = _concatenation(data[1:header_octets])
        data = data[header_octets:]
    if concatenation is None:
        concatenation = _sar(deliver)
    if concatenation is None:
        text = decode_text(data, deliver.data_coding, options, header_octets=header_octets)
        return InboundPart(None, 1, 1, text)
    reference, total, number = concatenation
    text = decode_text(
        data, deliver.data_coding, options, header_octets=header_octets, keep_surrogates=True
    )
    return InboundPart(
        (deliver.source_addr, deliver.destination_addr, reference), number, total, text
    )


def _concatenation(header: bytes) -> tuple[int, int, int] | None:
    """(reference, total, number) from a concatenation element of a user data header."""
    offset = 0
    while offset + 2 <= len(header):
        iei, length = header[offset], header[offset + 1]
        value = header[offset + 2 : offset + 2 + length]
        offset += 2 + length
        if len(value) != length:
            return None
        if iei == 0x00 and length == 3:
            return _valid(value[0], value[1], value[2])
        if iei == 0x08 and length == 4:
            return _valid(int.from_bytes(value[:2], "big"), value[2], value[3])
    return None


def _sar(deliver: DeliverSm) -> tuple[int, int, int] | None:
    reference = deliver.sar_msg_ref_num
    total = deliver.sar_total_segments
    number = deliver.sar_segment_seqnum
    if reference is None or total is None or number is None:
        return None
    return _valid(reference, total, number)


def _valid(reference: int, total: int, number: int) -> tuple[int, int, int] | None:
    """None for a "part 0", "part 3 of 2" or "1 of 1": not part of a longer message."""
    if total < 2 or not 1 <= number <= total:
        return None
    return reference, total, number


def join_parts(parts: Iterable[InboundPart]) -> str:
    """The whole text of a message from all its parts, in any order. A surrogate pair
    that the sender split across two parts is joined again; a lone half left over
    becomes U+FFFD."""
    ordered = sorted(parts, key=lambda part: part.part_number)
    joined = "".join(part.text for part in ordered)
    return joined.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")
