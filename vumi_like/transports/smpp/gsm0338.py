"""The GSM 03.38 (3GPP TS 23.038) default alphabet: text to septets and back, and packing.

An SMS in data_coding 0 is a string of 7-bit *septets*. 128 characters have a septet
of their own (the basic table); ten more (``^{}\\[~]|€`` and form feed) are written as
the escape septet 0x1B followed by a second septet (the extension table), so they
cost two. Everything else is not in the alphabet at all: ``can_encode`` says so, and
the caller sends the text as UCS-2 instead (``encoding.py``); nothing is dropped or
replaced on the way out.

On the wire, septets are either sent one per octet ("unpacked", what most SMSCs
expect from an ESME over SMPP) or packed eight into seven octets, as the air
interface carries them. ``pack``/``unpack`` do the latter; ``fill_bits`` shifts the
first septet so that it starts on a septet boundary after a user data header, as
TS 23.040 9.2.3.24 requires.
"""

from __future__ import annotations

__all__ = ["ESCAPE", "can_encode", "decode", "encode", "pack", "septet_count", "unpack"]

ESCAPE = 0x1B
_CR = 0x0D

# Index = septet. Position 0x1B is the escape to the extension table, never a character.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_BASIC) == 128

_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_SEPTETS: dict[str, bytes] = {
    char: bytes([septet]) for septet, char in enumerate(_BASIC) if septet != ESCAPE
}
_SEPTETS.update({char: bytes([ESCAPE, septet]) for septet, char in _EXTENSION.items()})


def can_encode(text: str) -> bool:
    """True if every character of ``text`` is in the basic or the extension table."""
    return all(char in _SEPTETS for char in text)


def septet_count(char: str) -> int:
    """Septets ``char`` takes: 1 (basic table) or 2 (escape + extension table)."""
    return len(_SEPTETS[char])


def encode(text: str) -> bytes:
    """``text`` as septets, one per byte; ``ValueError`` naming the first character not
    in the alphabet (check with ``can_encode`` first)."""
    try:
        return b"".join(_SEPTETS[char] for char in text)
    except KeyError as exc:
        raise ValueError(f"{exc.args[0]!r} is not in the GSM 03.38 alphabet") from None


def decode(septets: bytes) -> str:
    """Septets (one per byte) as text. Never fails: a value above 0x7F is read modulo
    128, an escape before an unknown septet reads as that septet's basic character
    (TS 23.038 6.2.1.1), and an escape at the very end is dropped."""
    chars: list[str] = []
    escaped = False
    for value in septets:
        septet = value & 0x7F
        if escaped:
            escaped = False
            chars.append(_EXTENSION.get(septet, _BASIC[septet] if septet != ESCAPE else " "))
        elif septet == ESCAPE:
            escaped = True
        else:
            chars.append(_BASIC[septet])
    return "".join(chars)


def pack(septets: bytes, *, fill_bits: int = 0) -> bytes:
    """Septets packed into octets, least significant bit first, after ``fill_bits`` zero
    bits. When the last octet would end with seven spare bits, a CR septet fills them,
    so that the receiver does not read an ``@`` there; a CR that the text itself ends
    with on an octet boundary is doubled, so that ``unpack`` keeps it (TS 23.038
    6.1.2.3.1: CR CR means the same as CR)."""
    spare = -(fill_bits + 7 * len(septets)) % 8
    if spare == 7 or (spare == 0 and septets.endswith(bytes([_CR]))):
        septets += bytes([_CR])
    bits = 0
    width = fill_bits
    for septet in septets:
        bits |= (septet & 0x7F) << width
        width += 7
    return bits.to_bytes((width + 7) // 8, "little")


def unpack(data: bytes, *, fill_bits: int = 0) -> bytes:
    """Packed octets back to septets (one per byte), skipping ``fill_bits`` first. A CR
    whose last bit is the last bit of the data is padding and is dropped (see ``pack``).
    """
    total = 8 * len(data) - fill_bits
    if total <= 0:
        return b""
    bits = int.from_bytes(data, "little") >> fill_bits
    septets = bytes((bits >> (7 * i)) & 0x7F for i in range(total // 7))
    if total % 7 == 0 and septets.endswith(bytes([_CR])):
        septets = septets[:-1]
    return septets
