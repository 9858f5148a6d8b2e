"""A fake SMSC: an SMPP 3.4 server on 127.0.0.1 that speaks real PDUs, and misbehaves on cue.

Tests (and benchmark scripts: ``start_fake_smsc``) run it in a nursery and point an
ESME at its port. It uses the same codec as the client, through the client's own
``framing`` and ``pdus`` modules, so the bytes on the socket are real SMPP.

What it does:

* accepts bind_transceiver / bind_transmitter / bind_receiver with ``system_id`` and
  ``password`` (ESME_RINVPASWD / ESME_RINVSYSID otherwise), or refuses every bind
  with ``bind_status``;
* answers enquire_link (unless ``answer_enquire_link`` is False) and unbind;
* answers submit_sm with a message id (hex or decimal, ``id_width`` digits with
  leading zeros), after ``response_delay`` seconds, recording every submit_sm in
  ``submitted``; the next submits can be scripted through ``submit_actions``:
  throttle, any status, hang (never answer), close the connection mid-PDU, send
  garbage, or send the delivery receipt before the submit_sm_resp;
* sends deliver_sm (messages and receipts), data_sm, unbind, an unknown command or
  raw bytes to the bound ESME, and can drop every connection.

``wait_until`` waits for a condition on its state without sleeping.
"""

from __future__ import annotations

import collections
import ssl
import struct
from collections.abc import Callable
from enum import Enum, auto
from typing import Any, Literal

import attrs
import trio
from smpp.pdu import operations
from smpp.pdu.pdu_types import PDU

from vumi_like.transports.smpp.framing import (
    Frame,
    FramingError,
    PduReader,
    encode_pdu,
    generic_nack,
)
from vumi_like.transports.smpp.pdus import DeliverSm, SubmitSm
from vumi_like.transports.smpp.statuses import (
    ESME_RINVCMDID,
    ESME_RINVPASWD,
    ESME_RINVSYSID,
    ESME_ROK,
    ESME_RTHROTTLED,
    command_status,
)

__all__ = ["FakeSmsc", "SmscConnection", "SubmitAction", "receipt", "start_fake_smsc"]

UNKNOWN_COMMAND_ID = 0x00000999


class SubmitAction(Enum):
    ACCEPT = auto()
    THROTTLE = auto()
    HANG = auto()
    CLOSE_MID_PDU = auto()
    GARBAGE = auto()
    RECEIPT_FIRST = auto()


# What a client that is not speaking SMPP at all might send: an HTTP request.
GARBAGE = b"GET / HTTP/1.1\r\nHost: smsc\r\n\r\n"


def receipt(
    message_id: str, stat: str = "DELIVRD", *, err: str = "000", tlvs: bool = True
) -> DeliverSm:
    """A delivery receipt for ``message_id``: the Appendix B text, and (``tlvs``) the
    receipted_message_id and message_state TLVs with esm_class 0x04."""
    text = (
        f"id:{message_id} sub:001 dlvrd:001 submit date:2401011200 done date:2401011201"
        f" stat:{stat} err:{err} text:hello"
    )
    states = {"DELIVRD": 2, "EXPIRED": 3, "UNDELIV": 5, "ACCEPTD": 6, "REJECTD": 8}
    return DeliverSm(
        source_addr="27820000001",
        destination_addr="1234",
        short_message=text.encode("ascii"),
        esm_class=0x04 if tlvs else 0,
        receipted_message_id=message_id if tlvs else None,
        message_state=states.get(stat) if tlvs else None,
    )


@attrs.define(eq=False)
class SmscConnection:
    stream: trio.abc.Stream
    role: str | None = None  # transceiver, transmitter or receiver once bound
    write_lock: trio.Lock = attrs.field(factory=trio.Lock)
    waiting: dict[int, trio.MemorySendChannel[Frame]] = attrs.field(factory=dict)
    outstanding: int = 0  # submit_sm received and not answered yet

    @property
    def receives(self) -> bool:
        return self.role in ("transceiver", "receiver")

    async def send(self, data: bytes) -> None:
        async with self.write_lock:
            await self.stream.send_all(data)


class FakeSmsc:
    def __init__(
        self,
        *,
        system_id: str = "esme",
        password: str = "secret",
        id_format: Literal["hex", "decimal"] = "hex",
        id_width: int = 0,
        response_delay: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.system_id = system_id
        self.password = password
        self.id_format = id_format
        self.id_width = id_width
        self.response_delay = response_delay
        self.ssl_context = ssl_context
        self.bind_status: int | None = None
        self.answer_enquire_link = True
        self.submit_actions: collections.deque[SubmitAction | int] = collections.deque()
        self.port = 0
        self.connections: list[SmscConnection] = []
        self.binds: list[str] = []  # the role of every accepted bind, in order
        self.bind_times: list[float] = []  # trio.current_time() of every bind, refused or not
        self.submitted: list[SubmitSm] = []
        self.message_ids: list[str] = []  # given in submit_sm_resp, in order
        self.enquire_links = 0
        self.unbinds = 0
        self.max_outstanding = 0  # the most submit_sm a connection had unanswered
        self._next_id = 0xABC0
        self._sequence = 1
        self._changed = trio.Event()

    # -- for tests ----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (a free port) until cancelled; reports the port."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` is true; it is checked after every change."""
        while not condition():
            await self._changed.wait()

    @property
    def bound(self) -> list[SmscConnection]:
        return [connection for connection in self.connections if connection.role]

    async def request(self, build: Callable[[int], bytes]) -> Frame:
        """Send ``build(sequence_number)`` to the bound ESME's receiving connection;
        the ESME's response."""
        connection = self._receiver()
        sequence = self._next_sequence()
        send, receive = trio.open_memory_channel[Frame](1)
        connection.waiting[sequence] = send
        await connection.send(build(sequence))
        return await receive.receive()

    async def deliver(self, deliver: DeliverSm) -> Frame:
        """Send ``deliver`` (a deliver_sm or data_sm); the ESME's response."""
        return await self.request(lambda sequence: encode_pdu(deliver.to_pdu(sequence)))

    async def send_unknown_command(self) -> Frame:
        """A PDU with a command_id SMPP 3.4 does not define; the ESME's response."""
        return await self.request(
            lambda sequence: struct.pack("!IIII", 16, UNKNOWN_COMMAND_ID, 0, sequence)
        )

    async def send_enquire_link(self) -> Frame:
        return await self.request(
            lambda sequence: encode_pdu(operations.EnquireLink(seqNum=sequence))
        )

    async def unbind(self) -> None:
        """Unbind every bound connection (without waiting for the answers)."""
        for connection in self.bound:
            await connection.send(encode_pdu(operations.Unbind(seqNum=self._next_sequence())))

    async def send_raw(self, data: bytes) -> None:
        """Write ``data`` as it is to the bound receiving connection."""
        await self._receiver().send(data)

    async def drop_connections(self) -> None:
        for connection in list(self.connections):
            await trio.aclose_forcefully(connection.stream)

    # -- serving ------------------------------------------------------------------------

    def _changes(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def _receiver(self) -> SmscConnection:
        for connection in self.connections:
            if connection.receives:
                return connection
        raise AssertionError("no ESME is bound to receive")

    async def _handle(self, stream: trio.abc.Stream) -> None:
        if self.ssl_context is not None:
            stream = trio.SSLStream(stream, self.ssl_context, server_side=True)
        connection = SmscConnection(stream)
        self.connections.append(connection)
        self._changes()
        try:
            async with trio.open_nursery() as later:
                await self._read(connection, later)
                later.cancel_scope.cancel()
        finally:
            self.connections.remove(connection)
            await trio.aclose_forcefully(stream)
            self._changes()

    async def _read(self, connection: SmscConnection, later: trio.Nursery) -> None:
        reader = PduReader(connection.stream)
        try:
            while (frame := await reader.read()) is not None:
                await self._route(connection, frame, later)
        except (FramingError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _route(self, connection: SmscConnection, frame: Frame, later: trio.Nursery) -> None:
        name = frame.command_name
        sequence = frame.sequence_number
        if frame.is_response:
            waiting = connection.waiting.pop(sequence, None)
            if waiting is not None:
                waiting.send_nowait(frame)
        elif name.startswith("bind_"):
            await self._bind(connection, frame)
        elif name == "enquire_link":
            self.enquire_links += 1
            if self.answer_enquire_link:
                await connection.send(encode_pdu(operations.EnquireLinkResp(seqNum=sequence)))
        elif name == "unbind":
            self.unbinds += 1
            await connection.send(encode_pdu(operations.UnbindResp(seqNum=sequence)))
            await trio.aclose_forcefully(connection.stream)
        elif name == "submit_sm":
            await self._submit(connection, frame, later)
        else:
            await connection.send(generic_nack(sequence, ESME_RINVCMDID))
        self._changes()

    async def _bind(self, connection: SmscConnection, frame: Frame) -> None:
        self.bind_times.append(trio.current_time())
        pdu = frame.decode()
        resp_class = operations.getPDUClass(pdu.requireAck.commandId)
        status = self.bind_status
        if status is None and pdu.params["system_id"].decode() != self.system_id:
            status = ESME_RINVSYSID
        if status is None and pdu.params["password"].decode() != self.password:
            status = ESME_RINVPASWD
        if status is None:
            connection.role = frame.command_name.removeprefix("bind_")
            self.binds.append(connection.role)
            resp = resp_class(seqNum=frame.sequence_number, system_id="fakesmsc")
        else:
            resp = resp_class(seqNum=frame.sequence_number, status=command_status(status))
        await connection.send(encode_pdu(resp))

    async def _submit(self, connection: SmscConnection, frame: Frame, later: trio.Nursery) -> None:
        self.submitted.append(SubmitSm.from_pdu(frame.decode()))
        connection.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, connection.outstanding)
        action = self.submit_actions.popleft() if self.submit_actions else SubmitAction.ACCEPT
        sequence = frame.sequence_number
        if action is SubmitAction.HANG:
            return
        if action is SubmitAction.GARBAGE:
            await connection.send(GARBAGE)
            return
        if action is SubmitAction.CLOSE_MID_PDU:
            whole = self._submit_sm_resp(sequence, ESME_ROK, "abc")
            await connection.send(whole[: len(whole) // 2])
            await trio.aclose_forcefully(connection.stream)
            return
        if action is SubmitAction.THROTTLE:
            action = ESME_RTHROTTLED
        if isinstance(action, int):
            await self._answer_submit(connection, self._submit_sm_resp(sequence, action))
            return
        message_id = self._new_message_id()
        if action is SubmitAction.RECEIPT_FIRST:
            receiver = self._receiver()
            deliver = receipt(message_id)
            await receiver.send(encode_pdu(deliver.to_pdu(self._next_sequence())))
        resp = self._submit_sm_resp(sequence, ESME_ROK, message_id)
        if self.response_delay:
            later.start_soon(self._answer_later, connection, resp)
        else:
            await self._answer_submit(connection, resp)

    async def _answer_later(self, connection: SmscConnection, resp: bytes) -> None:
        await trio.sleep(self.response_delay)
        try:
            await self._answer_submit(connection, resp)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the ESME has gone
        self._changes()

    async def _answer_submit(self, connection: SmscConnection, resp: bytes) -> None:
        connection.outstanding -= 1
        await connection.send(resp)

    def _new_message_id(self) -> str:
        self._next_id += 1
        spec = f"0{self.id_width}{'x' if self.id_format == 'hex' else 'd'}"
        message_id = format(self._next_id, spec)
        self.message_ids.append(message_id)
        return message_id

    @staticmethod
    def _submit_sm_resp(sequence: int, status: int, message_id: str | None = None) -> bytes:
        fields: dict[str, Any] = {} if message_id is None else {"message_id": message_id}
        pdu: PDU = operations.SubmitSMResp(
            seqNum=sequence, status=command_status(status), **fields
        )
        return encode_pdu(pdu)


async def start_fake_smsc(nursery: trio.Nursery, **options: Any) -> FakeSmsc:
    """A ``FakeSmsc(**options)`` serving in ``nursery``; its ``port`` is set."""
    smsc = FakeSmsc(**options)
    await nursery.start(smsc.serve)
    return smsc
