"""PDUs over a byte stream: cut the stream into PDUs, and encode and decode them.

An SMPP connection is a TCP stream of PDUs, each starting with a 16-octet header:
command_length (of the whole PDU, header included), command_id, command_status,
sequence_number. ``PduReader`` reads exactly command_length octets per PDU however
the stream chunks them, and hands out ``Frame``s: the header as numbers plus the
octets, *before* the body is decoded. That split matters for bad input:

* A command_length below 16 or above the configured limit means the stream cannot
  be cut into PDUs any more (garbage, or another protocol): ``InvalidCommandLength``,
  and the connection must go. The limit keeps a corrupt length from making us wait
  for, and buffer, up to 4 GB.
* The peer closing the connection inside a PDU is ``ConnectionClosedMidPdu``; between
  two PDUs it is a clean end (``read`` returns None).
* A frame whose body the codec cannot read (an unknown command_id, a bad field) still
  has a sequence number, so the session can answer it with an error and go on:
  ``Frame.decode`` raises ``UndecodablePdu`` carrying the status to answer with.
"""

from __future__ import annotations

import io
import struct

import attrs
import trio
from smpp.pdu import constants
from smpp.pdu.error import PDUParseError
from smpp.pdu.pdu_encoding import PDUEncoder
from smpp.pdu.pdu_types import PDU

from vumi_like.transports.smpp.statuses import ESME_RSYSERR

__all__ = [
    "DEFAULT_MAX_COMMAND_LENGTH",
    "ConnectionClosedMidPdu",
    "Frame",
    "FramingError",
    "InvalidCommandLength",
    "PduReader",
    "UndecodablePdu",
    "encode_pdu",
    "generic_nack",
]

HEADER = struct.Struct("!IIII")
GENERIC_NACK = 0x80000000
RESPONSE_BIT = 0x80000000

# A submit_sm with a 64 KB message_payload, plus room for every other field.
DEFAULT_MAX_COMMAND_LENGTH = 70_000

# Two instances, never one: the codec's TLV encoder keeps the length of the last TLV it
# decoded and checks the next message_payload it *encodes* against it.
_ENCODER = PDUEncoder()
_DECODER = PDUEncoder()


class FramingError(Exception):
    """The stream can no longer be read as PDUs: the connection must be dropped."""


class InvalidCommandLength(FramingError):
    pass


class ConnectionClosedMidPdu(FramingError):
    pass


class UndecodablePdu(Exception):
    """The codec could not read a frame's body; ``status`` is the command_status to
    answer it with (ESME_RINVCMDID for an unknown command, ...)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


@attrs.frozen
class Frame:
    """One PDU as read: its header as numbers, and all its octets (header included)."""

    command_id: int
    command_status: int
    sequence_number: int
    data: bytes = attrs.field(repr=False)

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)

    @property
    def command_name(self) -> str:
        """``submit_sm_resp``, or the command_id in hex if SMPP 3.4 does not define it."""
        return constants.command_id_value_map.get(self.command_id, f"0x{self.command_id:08X}")

    def decode(self) -> PDU:
        """The codec's PDU object, or ``UndecodablePdu``."""
        try:
            return _DECODER.decode(io.BytesIO(self.data))
        except PDUParseError as exc:
            status = constants.command_status_name_map[exc.status.name]
            raise UndecodablePdu(f"{self.command_name}: {exc}", status) from exc
        except Exception as exc:
            # The codec raises whatever its field parsers do (ValueError, KeyError,
            # struct.error, ...) on input it did not expect; none of it may escape.
            raise UndecodablePdu(f"{self.command_name}: {exc!r}", ESME_RSYSERR) from exc


class PduReader:
    """Reads whole PDUs from ``stream``, refusing any longer than ``max_command_length``."""

    def __init__(
        self,
        stream: trio.abc.ReceiveStream,
        *,
        max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH,
    ) -> None:
        self._stream = stream
        self._max = max_command_length
        self._buffer = bytearray()

    async def read(self) -> Frame | None:
        """The next PDU; None if the peer closed the connection between two PDUs.

        Raises ``FramingError`` (see the module docstring) and whatever the stream
        raises when the connection breaks (``trio.BrokenResourceError``).
        """
        if not await self._fill(4):
            return None
        (length,) = struct.unpack_from("!I", self._buffer)
        if not HEADER.size <= length <= self._max:
            raise InvalidCommandLength(
                f"command_length {length} outside {HEADER.size}..{self._max}"
                f" (first octets {bytes(self._buffer[:16]).hex()})"
            )
        await self._fill(length)
        data = bytes(self._buffer[:length])
        del self._buffer[:length]
        _, command_id, status, sequence = HEADER.unpack_from(data)
        return Frame(command_id, status, sequence, data)

    async def _fill(self, size: int) -> bool:
        """Buffer at least ``size`` octets; False if the stream ended before any came."""
        while len(self._buffer) < size:
            chunk = await self._stream.receive_some()
            if not chunk:
                if self._buffer:
                    raise ConnectionClosedMidPdu(
                        f"connection closed after {len(self._buffer)} octets of a PDU"
                        f" of {size if size > 4 else 'unknown length'}"
                    )
                return False
            self._buffer += chunk
        return True


def encode_pdu(pdu: PDU) -> bytes:
    """The octets of the codec's ``pdu``; ``ValueError`` if a field is out of range."""
    return bytes(_ENCODER.encode(pdu))


def generic_nack(sequence_number: int, status: int) -> bytes:
    """A generic_nack, written here because the codec refuses sequence number 0, which
    is what a nack to a PDU whose own sequence number is 0 must carry."""
    return HEADER.pack(HEADER.size, GENERIC_NACK, status, sequence_number)
