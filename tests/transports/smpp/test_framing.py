"""Cutting a byte stream into PDUs, and what bad bytes turn into."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from vumi_like.transports.smpp.framing import (
    ConnectionClosedMidPdu,
    InvalidCommandLength,
    PduReader,
    UndecodablePdu,
    encode_pdu,
    generic_nack,
)
from vumi_like.transports.smpp.pdus import SubmitSm

SUBMIT = encode_pdu(SubmitSm("1234", "27820000001", b"hello").to_pdu(7))
ENQUIRE_LINK = struct.pack("!IIII", 16, 0x15, 0, 8)


async def read_all(chunks: list[bytes], **options: int) -> list[object]:
    """What a reader makes of a stream delivering ``chunks`` and then closing: the
    frames' (command, sequence), then None or the exception that ended it."""
    send, receive = trio.testing.memory_stream_one_way_pair()
    reader = PduReader(receive, **options)
    seen: list[object] = []
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            for chunk in chunks:
                await send.send_all(chunk)
            await send.aclose()

        nursery.start_soon(write)
        with trio.fail_after(2):
            while True:
                try:
                    frame = await reader.read()
                except Exception as exc:
                    seen.append(exc)
                    break
                if frame is None:
                    seen.append(None)
                    break
                seen.append((frame.command_name, frame.sequence_number))
    return seen


async def test_pdus_are_read_whole_however_the_stream_chunks_them():
    data = SUBMIT + ENQUIRE_LINK
    expected = [("submit_sm", 7), ("enquire_link", 8), None]
    assert await read_all([data]) == expected
    assert await read_all([bytes([octet]) for octet in data]) == expected
    assert await read_all([data[:3], data[3:20], data[20:]]) == expected


async def test_a_close_between_pdus_is_a_clean_end():
    assert await read_all([]) == [None]


@pytest.mark.parametrize("cut", [2, 10, len(SUBMIT) - 1])
async def test_a_close_inside_a_pdu_is_an_error(cut: int):
    *frames, error = await read_all([ENQUIRE_LINK, SUBMIT[:cut]])
    assert frames == [("enquire_link", 8)]
    assert isinstance(error, ConnectionClosedMidPdu)


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("!I", 15) + b"x" * 20,  # shorter than a header
        b"GET / HTTP/1.1\r\n\r\n",  # 0x47455420 octets
    ],
)
async def test_a_command_length_no_pdu_can_have_is_an_error(data: bytes):
    [error] = await read_all([data])
    assert isinstance(error, InvalidCommandLength)


async def test_the_length_limit_is_configurable():
    [error] = await read_all([SUBMIT], max_command_length=len(SUBMIT) - 1)
    assert isinstance(error, InvalidCommandLength)
    assert f"command_length {len(SUBMIT)} outside" in str(error)


async def test_an_unknown_command_is_undecodable_with_esme_rinvcmdid():
    send, receive = trio.testing.memory_stream_one_way_pair()
    await send.send_all(struct.pack("!IIII", 16, 0x999, 0, 5))
    frame = await PduReader(receive).read()
    assert frame is not None
    assert (frame.command_name, frame.sequence_number, frame.is_response) == (
        "0x00000999",
        5,
        False,
    )
    with pytest.raises(UndecodablePdu) as caught:
        frame.decode()
    assert caught.value.status == 0x03


async def test_a_body_the_codec_cannot_read_is_undecodable_not_a_crash():
    # A submit_sm whose esm_class has an undefined message type (0x0C).
    at = SUBMIT.index(b"27820000001\x00") + len(b"27820000001\x00")
    broken = SUBMIT[:at] + bytes([0x0C]) + SUBMIT[at + 1 :]
    send, receive = trio.testing.memory_stream_one_way_pair()
    await send.send_all(broken)
    frame = await PduReader(receive).read()
    assert frame is not None
    with pytest.raises(UndecodablePdu) as caught:
        frame.decode()
    assert caught.value.status == 0x43  # ESME_RINVESMCLASS


def test_generic_nack_may_carry_sequence_number_0():
    assert generic_nack(0, 0x03) == bytes.fromhex("00000010800000000000000300000000")
