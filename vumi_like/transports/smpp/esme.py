"""An SMPP 3.4 ESME session on trio: bind, a window of submits, inbound, keep-alive, unbind.

``open_session`` connects (TCP, or TLS with an ``ssl.SSLContext``), binds as a
transceiver, or as a transmitter and a receiver on two connections, and yields an
``EsmeSession`` whose ``submit_sm`` sends one message and returns the SMSC's answer.
The session ends when the SMSC unbinds, a connection breaks or stops answering
enquire_link, or the ``async with`` block is left (which unbinds politely, waiting
at most ``unbind_timeout`` for the answer). The block is not cancelled when the
session ends: ``submit_sm`` raises ``SessionClosed`` from then on, and
``wait_closed`` returns the reason. Binding again is the caller's decision
(``Rebinder`` does it with backoff).

How it works
    Each connection has one reader task, which cuts the stream into PDUs
    (``framing.PduReader``) and routes each one: a response wakes the request
    waiting under its sequence number; enquire_link and unbind are answered at once;
    deliver_sm and data_sm each get a task of their own. Requests are written under
    a per-connection lock, shielded from cancellation and bounded by
    ``response_timeout``: a PDU half written would corrupt the stream for every
    request behind it, so a write that cannot finish in time ends the session.

Window
    At most ``window`` submit_sm wait for their submit_sm_resp at once (a semaphore
    held from before the write until the response, its timeout, or the end of the
    session). SMSCs configure such a window per bind and throttle or disconnect an
    ESME that exceeds it. A response that does not come within ``response_timeout``
    fails that submit with ``ResponseTimeout`` and frees its slot; a response that
    comes later is logged and dropped. The session stays up: one lost response says
    little about the link, which enquire_link watches.

Inbound
    A deliver_sm or data_sm goes to the ``on_deliver`` callback, and is answered only
    when the callback has returned, so the caller can make it durable first. If the
    callback raises, the answer is ESME_RX_T_APPN (a temporary application error) and
    the SMSC delivers it again later. The reader does not wait for the callback, so a
    callback may itself submit and wait for the response; the SMSC's own window
    bounds how many inbound tasks run at once. When the session ends, callbacks still
    running are cancelled; their PDUs were not answered, so the SMSC redelivers them.

Bad input
    A PDU with an unknown or unsupported command gets a generic_nack with
    ESME_RINVCMDID; a deliver_sm the codec cannot read gets a deliver_sm_resp with the
    codec's error status; either way the session goes on. A command_length no PDU can
    have, or the connection closing inside a PDU, ends the session: the stream cannot
    be cut into PDUs any more. Each logs one line.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any

import attrs
import structlog
import trio
from smpp.pdu import constants, operations, pdu_types
from smpp.pdu.pdu_types import PDU

from vumi_like.transports.outcomes import PermanentFailure, ProviderUnavailable, TemporaryFailure
from vumi_like.transports.smpp.framing import (
    DEFAULT_MAX_COMMAND_LENGTH,
    HEADER,
    Frame,
    FramingError,
    PduReader,
    UndecodablePdu,
    encode_pdu,
    generic_nack,
)
from vumi_like.transports.smpp.pdus import DeliverSm, SubmitSm, SubmitSmResp
from vumi_like.transports.smpp.sequence import RandomStartSequence, SequenceAllocator
from vumi_like.transports.smpp.statuses import (
    ESME_RINVCMDID,
    ESME_RINVPASWD,
    ESME_RINVSYSID,
    ESME_ROK,
    ESME_RUNKNOWNERR,
    ESME_RX_T_APPN,
    command_status,
    describe_status,
)

__all__ = [
    "BadCredentials",
    "BindFailed",
    "BindMode",
    "BindRefused",
    "DeliverHandler",
    "EsmeSession",
    "EsmeSettings",
    "ResponseTimeout",
    "SessionClosed",
    "open_session",
]

log = structlog.get_logger(__name__)

DeliverHandler = Callable[[DeliverSm], Awaitable[None]]

_SUBMIT_SM_RESP = constants.command_id_name_map["submit_sm_resp"]
_GENERIC_NACK = constants.command_id_name_map["generic_nack"]


class BindMode(StrEnum):
    TRANSCEIVER = "transceiver"
    TRANSMITTER_RECEIVER = "transmitter_receiver"


def _at_most(length: int) -> Callable[[Any, attrs.Attribute[str], str], None]:
    def check(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
        if len(value) > length:
            raise ValueError(f"{attribute.name} is longer than {length} characters")

    return check


def _one_of(values: Mapping[int, str]) -> Callable[[Any, attrs.Attribute[int], int], None]:
    def check(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
        if value not in values:
            raise ValueError(f"{attribute.name} {value:#x} is not defined by SMPP 3.4")

    return check


_positive = attrs.validators.gt(0.0)


@attrs.frozen
class EsmeSettings:
    """Where the SMSC is, how to bind, and the session's timings (in seconds)."""

    host: str
    port: int
    system_id: str = attrs.field(validator=_at_most(15))
    password: str = attrs.field(repr=False, validator=_at_most(8))
    system_type: str = attrs.field(default="", validator=_at_most(12))
    interface_version: int = 0x34
    addr_ton: int = attrs.field(default=0, validator=_one_of(constants.addr_ton_value_map))
    addr_npi: int = attrs.field(default=0, validator=_one_of(constants.addr_npi_value_map))
    address_range: str = attrs.field(default="", validator=_at_most(40))
    bind_mode: BindMode = BindMode.TRANSCEIVER
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, repr=False)
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    response_timeout: float = attrs.field(default=10.0, validator=_positive)
    enquire_link_interval: float = attrs.field(default=30.0, validator=_positive)
    unbind_timeout: float = attrs.field(default=2.0, validator=_positive)
    window: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    max_command_length: int = attrs.field(
        default=DEFAULT_MAX_COMMAND_LENGTH, validator=attrs.validators.ge(HEADER.size)
    )


class BindFailed(Exception):
    """No bound session: the SMSC could not be reached, or did not answer the bind."""


class BindRefused(BindFailed):
    """The SMSC answered the bind with an error ``status``."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


class BadCredentials(BindRefused):
    """The SMSC refused the system_id or the password."""


class SessionClosed(ProviderUnavailable):
    """The session ended before the SMSC answered (or before the request was sent)."""


class ResponseTimeout(TemporaryFailure):
    """The SMSC did not answer a request within ``response_timeout``."""


@attrs.define
class _Waiter:
    """A request waiting for its response, under its sequence number."""

    done: trio.Event = attrs.field(factory=trio.Event)
    frame: Frame | None = None


class _Connection:
    def __init__(self, role: str, stream: trio.abc.Stream, max_command_length: int) -> None:
        self.role = role
        self.stream = stream
        self.reader = PduReader(stream, max_command_length=max_command_length)
        self.write_lock = trio.Lock()
        self.waiting: dict[int, _Waiter] = {}


class EsmeSession:
    """A bound session; made by ``open_session``."""

    def __init__(
        self, settings: EsmeSettings, on_deliver: DeliverHandler, sequence: SequenceAllocator
    ) -> None:
        self.settings = settings
        self._on_deliver = on_deliver
        self._sequence = sequence
        self._connections: list[_Connection] = []
        self._window = trio.Semaphore(settings.window)
        self._closed = trio.Event()
        self._unbinding = False
        self._tasks: trio.Nursery | None = None
        self.closed_reason: str | None = None

    @property
    def bound(self) -> bool:
        return not self._closed.is_set()

    @property
    def outstanding(self) -> int:
        """submit_sm sent (or about to be) whose response has not come yet."""
        return self.settings.window - self._window.value

    async def wait_closed(self) -> str:
        """Wait until the session has ended; the reason it did."""
        await self._closed.wait()
        return self.closed_reason or ""

    async def submit_sm(self, submit: SubmitSm) -> SubmitSmResp:
        """Send ``submit`` when the window has room; the SMSC's answer, whatever its status.

        Raises ``SessionClosed`` if the session ends first, ``ResponseTimeout`` if no
        answer comes in time, ``PermanentFailure`` if a field cannot be encoded (an
        address longer than SMPP allows, ...). ``statuses.submit_sm_outcome`` turns
        the answer into a message id or a failure.
        """
        transmitter = self._connections[0]
        async with self._window:
            self._raise_if_closed()
            sequence = await self._next_sequence()
            try:
                data = encode_pdu(submit.to_pdu(sequence))
            except ValueError as exc:
                raise PermanentFailure(f"cannot encode submit_sm: {exc}") from exc
            try:
                frame = await self._request(transmitter, sequence, data, "submit_sm")
            except ResponseTimeout as exc:
                log.warning("smpp submit_sm unanswered", reason=str(exc), sequence_number=sequence)
                raise
        if frame.command_id not in (_SUBMIT_SM_RESP, _GENERIC_NACK):
            raise TemporaryFailure(f"the SMSC answered submit_sm with {frame.command_name}")
        if frame.command_id == _GENERIC_NACK:
            return SubmitSmResp(frame.command_status or ESME_RUNKNOWNERR, None)
        if frame.command_status != ESME_ROK:
            return SubmitSmResp(frame.command_status, None)
        return SubmitSmResp(ESME_ROK, _c_string(frame.data[HEADER.size :]))

    async def unbind(self) -> None:
        """Unbind every connection, waiting at most ``unbind_timeout`` for the SMSC's
        answers, and end the session. Nothing happens if it has ended already."""
        if self._closed.is_set():
            return
        self._unbinding = True
        try:
            with trio.move_on_after(self.settings.unbind_timeout):
                async with trio.open_nursery() as nursery:
                    for connection in self._connections:
                        nursery.start_soon(self._unbind_connection, connection)
        finally:
            self._close("unbound")

    async def _unbind_connection(self, connection: _Connection) -> None:
        try:
            sequence = await self._next_sequence()
            data = encode_pdu(operations.Unbind(seqNum=sequence))
            await self._request(connection, sequence, data, "unbind")
        except TemporaryFailure:
            pass  # no answer: the connection is closed all the same

    async def _next_sequence(self) -> int:
        try:
            return await self._sequence.next_sequence()
        except Exception as exc:  # a RedisSequence without its Redis
            raise TemporaryFailure(f"no sequence number for a PDU: {exc!r}") from exc

    # -- connecting and binding ------------------------------------------------------

    async def _open(self) -> None:
        """Connect and bind every connection the bind mode needs; ``BindFailed``."""
        roles = (
            ["transceiver"]
            if self.settings.bind_mode is BindMode.TRANSCEIVER
            else ["transmitter", "receiver"]
        )
        try:
            for role in roles:
                connection = await self._connect(role)
                self._connections.append(connection)
                await self._bind(connection)
        except BaseException:
            for connection in self._connections:
                await trio.aclose_forcefully(connection.stream)
            raise

    async def _connect(self, role: str) -> _Connection:
        settings = self.settings
        where = f"{settings.host}:{settings.port}"
        stream: trio.abc.Stream | None = None
        with trio.move_on_after(settings.connect_timeout):
            try:
                stream = await trio.open_tcp_stream(settings.host, settings.port)
                if settings.ssl_context is not None:
                    tls = trio.SSLStream(
                        stream, settings.ssl_context, server_hostname=settings.host
                    )
                    stream = tls
                    await tls.do_handshake()
                return _Connection(role, stream, settings.max_command_length)
            except (OSError, trio.BrokenResourceError) as exc:
                if stream is not None:
                    await trio.aclose_forcefully(stream)
                raise BindFailed(f"cannot connect to {where}: {_describe(exc)}") from exc
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise BindFailed(
            f"no connection to the SMSC at {where} within {settings.connect_timeout} s"
        )

    async def _bind(self, connection: _Connection) -> None:
        settings = self.settings
        command = f"bind_{connection.role}"
        bind = operations.getPDUClass(getattr(pdu_types.CommandId, command))
        try:
            sequence = await self._next_sequence()
        except TemporaryFailure as exc:
            raise BindFailed(f"{command} not sent: {exc}") from exc
        pdu = bind(
            seqNum=sequence,
            system_id=settings.system_id,
            password=settings.password,
            system_type=settings.system_type,
            interface_version=settings.interface_version,
            addr_ton=getattr(pdu_types.AddrTon, constants.addr_ton_value_map[settings.addr_ton]),
            addr_npi=getattr(pdu_types.AddrNpi, constants.addr_npi_value_map[settings.addr_npi]),
            address_range=settings.address_range,
        )
        # Not _write/_request: no reader runs yet, and a connection that fails to bind
        # is dropped whole, so a write cut short by the timeout harms nothing.
        frame = None
        with trio.move_on_after(settings.response_timeout):
            try:
                await connection.stream.send_all(encode_pdu(pdu))
                frame = await self._read_bind_response(connection, sequence)
            except (FramingError, trio.BrokenResourceError) as exc:
                raise BindFailed(f"{command} failed: {_describe(exc)}") from exc
        if frame is None:
            raise BindFailed(f"no answer to {command} within {settings.response_timeout} s")
        status = frame.command_status
        if frame.command_id == _GENERIC_NACK or status != ESME_ROK:
            reason = f"{command} refused: {describe_status(status)}"
            if status in (ESME_RINVPASWD, ESME_RINVSYSID):
                raise BadCredentials(reason, status)
            raise BindRefused(reason, status)
        log.info(
            "smpp bound",
            role=connection.role,
            host=settings.host,
            port=settings.port,
            system_id=settings.system_id,
            smsc_system_id=_c_string(frame.data[HEADER.size :]),
        )

    async def _read_bind_response(self, connection: _Connection, sequence: int) -> Frame:
        """The response to the bind; until then, answer enquire_link and ignore the rest."""
        while True:
            frame = await connection.reader.read()
            if frame is None:
                raise BindFailed("the SMSC closed the connection instead of answering the bind")
            if frame.is_response and frame.sequence_number == sequence:
                return frame
            if frame.command_name == "enquire_link":
                resp = operations.EnquireLinkResp(seqNum=frame.sequence_number)
                await connection.stream.send_all(encode_pdu(resp))
            else:
                log.warning("smpp pdu before bind response ignored", command=frame.command_name)

    # -- running ----------------------------------------------------------------------

    async def _serve(self) -> None:
        """Read every connection and keep it alive until the session ends, then close.

        Shielded: when ``open_session``'s block is cancelled, the readers must go on
        long enough to see the answer to the unbind that follows; ``open_session``
        ends the session within ``unbind_timeout`` whatever happens. (The shield is
        entered before the task's first checkpoint, so no cancellation gets in first.)
        """
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as tasks:
                self._tasks = tasks
                for connection in self._connections:
                    tasks.start_soon(self._read, connection)
                    tasks.start_soon(self._keep_alive, connection)
                await self._closed.wait()
                for connection in self._connections:
                    await trio.aclose_forcefully(connection.stream)
                tasks.cancel_scope.cancel()

    def _close(self, reason: str, *, expected: bool = True) -> None:
        """End the session (the first reason given is kept); wake every request.

        Once we have sent unbind, whatever ends the session (the answer, the SMSC
        closing the connection after it, the timeout) is the unbind ending it.
        """
        if self._closed.is_set():
            return
        if self._unbinding:
            reason, expected = "unbound", True
        self.closed_reason = reason
        self._closed.set()
        if expected:
            log.info("smpp session ended", reason=reason)
        else:
            log.warning("smpp session lost", reason=reason)
        for connection in self._connections:
            for waiter in connection.waiting.values():
                waiter.done.set()

    def _raise_if_closed(self) -> None:
        if self._closed.is_set():
            raise SessionClosed(f"SMPP session ended: {self.closed_reason}")

    async def _write(self, connection: _Connection, data: bytes) -> None:
        """Write one whole PDU; ``SessionClosed`` if the connection is gone or stuck."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.settings.response_timeout) as scope:
                try:
                    async with connection.write_lock:
                        await connection.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    reason = f"{connection.role} connection lost: {_describe(exc)}"
                    self._close(reason, expected=False)
            if scope.cancelled_caught:
                reason = f"{connection.role} connection: write not done within"
                self._close(f"{reason} {self.settings.response_timeout} s", expected=False)
        self._raise_if_closed()

    async def _request(
        self, connection: _Connection, sequence: int, data: bytes, command: str
    ) -> Frame:
        """Send a request and return the response to it (a generic_nack is one)."""
        waiter = _Waiter()
        connection.waiting[sequence] = waiter
        try:
            await self._write(connection, data)
            with trio.move_on_after(self.settings.response_timeout):
                await waiter.done.wait()
        finally:
            del connection.waiting[sequence]
        if waiter.frame is not None:
            return waiter.frame
        self._raise_if_closed()
        raise ResponseTimeout(
            f"no response to {command} within {self.settings.response_timeout} s"
        )

    async def _answer(self, connection: _Connection, pdu: PDU) -> None:
        """Send a response; if the session has ended there is no one to answer."""
        try:
            await self._write(connection, encode_pdu(pdu))
        except SessionClosed:
            pass

    async def _read(self, connection: _Connection) -> None:
        role = connection.role
        while True:
            try:
                frame = await connection.reader.read()
            except FramingError as exc:
                self._close(f"{role} connection: {exc}", expected=False)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._close(f"{role} connection lost: {_describe(exc)}", expected=False)
                return
            if frame is None:
                self._close(f"the SMSC closed the {role} connection", expected=False)
                return
            await self._route(connection, frame)

    async def _route(self, connection: _Connection, frame: Frame) -> None:
        if frame.is_response:
            waiter = connection.waiting.get(frame.sequence_number)
            if waiter is None:
                log.warning(
                    "smpp response to no waiting request dropped",
                    command=frame.command_name,
                    sequence_number=frame.sequence_number,
                    command_status=frame.command_status,
                )
            else:
                waiter.frame = frame
                waiter.done.set()
            return
        command = frame.command_name
        sequence = frame.sequence_number
        if command == "enquire_link":
            await self._answer(connection, operations.EnquireLinkResp(seqNum=sequence))
        elif command == "unbind":
            await self._answer(connection, operations.UnbindResp(seqNum=sequence))
            self._close("the SMSC unbound")
        elif command in ("deliver_sm", "data_sm"):
            await self._receive(connection, frame)
        elif command == "alert_notification":
            log.info("smpp alert_notification ignored")
        else:
            log.warning(
                "smpp unsupported command answered with generic_nack",
                command=command,
                sequence_number=sequence,
            )
            try:
                await self._write(connection, generic_nack(sequence, ESME_RINVCMDID))
            except SessionClosed:
                pass

    async def _receive(self, connection: _Connection, frame: Frame) -> None:
        resp_class = operations.getPDUClass(
            getattr(pdu_types.CommandId, f"{frame.command_name}_resp")
        )
        try:
            deliver = DeliverSm.from_pdu(frame.decode())
        except UndecodablePdu as exc:
            log.warning("smpp undecodable pdu refused", error=str(exc), command_status=exc.status)
            resp = resp_class(seqNum=frame.sequence_number, status=command_status(exc.status))
            await self._answer(connection, resp)
            return
        assert self._tasks is not None
        self._tasks.start_soon(self._deliver, connection, frame, deliver, resp_class)

    async def _deliver(
        self, connection: _Connection, frame: Frame, deliver: DeliverSm, resp_class: Any
    ) -> None:
        status = ESME_ROK
        try:
            await self._on_deliver(deliver)
        except Exception:
            log.exception(
                "smpp inbound handler failed; the SMSC will deliver it again",
                command=frame.command_name,
                source_addr=deliver.source_addr,
            )
            status = ESME_RX_T_APPN
        resp = resp_class(seqNum=frame.sequence_number, status=command_status(status))
        await self._answer(connection, resp)

    async def _keep_alive(self, connection: _Connection) -> None:
        """enquire_link every ``enquire_link_interval``; no answer in time ends it all."""
        while True:
            await trio.sleep(self.settings.enquire_link_interval)
            try:
                sequence = await self._next_sequence()
                data = encode_pdu(operations.EnquireLink(seqNum=sequence))
                await self._request(connection, sequence, data, "enquire_link")
            except SessionClosed:
                return
            except TemporaryFailure as exc:  # above all ResponseTimeout
                self._close(f"{connection.role} connection: {exc}", expected=False)
                return


def _describe(exc: BaseException) -> str:
    """An exception as text; trio's BrokenResourceError says nothing, its cause does."""
    return str(exc) or repr(exc.__cause__ or exc)


def _c_string(body: bytes) -> str:
    """The C-octet string a body starts with (all of it if it has no NUL)."""
    return body.split(b"\0", 1)[0].decode("latin-1")


@asynccontextmanager
async def open_session(
    settings: EsmeSettings,
    on_deliver: DeliverHandler,
    *,
    sequence: SequenceAllocator | None = None,
) -> AsyncIterator[EsmeSession]:
    """A session bound to the SMSC, unbound when the block is left (see the module
    docstring). Raises ``BindFailed`` (``BindRefused``, ``BadCredentials``) if it
    cannot bind. An exception from the block comes out as it was raised, not in an
    exception group."""
    session = EsmeSession(settings, on_deliver, sequence or RandomStartSequence())
    await session._open()
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        # Not nursery.start(): a task that shields itself cannot see start() being
        # cancelled, and would stay inside it.
        nursery.start_soon(session._serve)
        try:
            yield session
        except Exception as exc:
            failure = exc
        finally:
            with trio.CancelScope(shield=True):
                await session.unbind()
    if failure is not None:
        raise failure
