"""The publish, ack and frame-reading fast path, written on aiormq's internals.

This is the one module that reads or writes aiormq's private state; everything else
in ``broker/`` uses aio-pika's and aiormq's public calls.

Why touch internals at all: aiormq's ``basic_publish`` is right for one caller at a
time, but a pipelined publisher pays for things it does not need per message (a task,
a timeout scope, the channel lock round trip, a drain future), and every
``basic_ack`` is a write-queue entry, so a socket write, of its own. The bridge
(``bridge.py``) hands the I/O thread many publishes and acks per pass; a ``Batch``
turns one pass's publishes into one ``write_queue`` entry on the publishing channel
and its acks and requeues into one entry per consuming channel. It marshals those
frames itself (byte for byte what pamqp writes, for the few kinds it sends) rather
than building pamqp objects for aiormq to walk: that was a sixth of the I/O thread's
time in ``bench/router_hop.py``. And a consuming channel's reader hands each delivery
over itself (``deliver_inline``) instead of starting a task for it. With that, the
broker as a whole does over twice what plain asyncio aio-pika does
(``bench/broker_roundtrip.py``). A delivery's frames are gathered where the
connection's reader reads them (``_InlineDeliveries``), not passed one by one through
the channel's queue to its reader task.

Reading, each connection's frames are cut from what one read brought rather than
awaited three reads at a time, and the frames every message brings (a delivery's
method, header and body, a confirm) are decoded here into the objects pamqp would
build (``BufferedFrameReceiver``): that was a quarter of the router's time in
``bench/router_hop.py``, half of it pamqp's field-by-field walk. Any other frame, and
one of those that does not decode cleanly, is pamqp's to decode, errors included.

What it keeps: aiormq's publish bookkeeping exactly (the next delivery tag, an
entry in ``confirmations``, ``message_id`` -> tag for returned messages), so
aiormq's reader settles our confirmations, returns and nacks as it settles its own,
and confirms stay pipelined: each publish waits only for its own. The entry is a
``Confirmation`` that tells the broker at once, not a future; a future in the
channel's store, one per channel, rejects those still waiting when the channel
closes, and the broker learns that those publishes must be made again.
A pass's publishes go out in tag order, and nothing else writes on the channel
between a publish being added and the batch being written (the pass is synchronous),
so frame order and tag order stay in step.

When it steps aside (``Batch.publish`` returns False, ``Batch.write`` hands frames
back), the broker takes aiormq's public calls, which wait where the fast path must not:

* publish: no channel, the channel closed, its lock held (an RPC is awaiting its
  reply, and frames written now would land inside it), or the write queue full (the
  socket is behind);
* ack/requeue: the channel closed or closing (aiormq's calls then drop them: after a
  reconnect those tags are void and RabbitMQ redelivers), or the write queue full.

Acks are single, never ``multiple=True``: handlers finish out of order, so a
multiple ack is only safe for a contiguous finished prefix. Many single acks in one
write are the simple correct default.

Checked once, at import. If aiormq renamed or dropped one of the names used here the
fast path would fail at the first publish, or worse, half-work (a receiver class that
``Connection.connect`` no longer looks up would be silently ignored); instead importing this
module raises ``AiormqChanged`` (an ``ImportError``) naming what is missing and the
aiormq version needed. Methods are looked up on the classes, and the fields of
``ChannelFrame`` in its signature. The instance attributes
(``delivery_tag``, ``confirmations``, the name-mangled ``_Channel__lock``...) exist
only on a channel, and a channel needs a connection; so the check reads the bytecode
of ``__init__`` (of ``Channel`` and its bases) for an assignment to each name,
``self.__lock = ...`` compiling to a store of ``_Channel__lock``, exactly the name
read here. That needs no source file and constructs nothing. What it cannot see is an
attribute that keeps its name and changes its meaning (``write_queue`` no longer an
``asyncio.Queue``, say), or one that ``__init__`` assigns only on some path: that is
what pinning aiormq to 7.2.x in ``pyproject.toml`` and the contract tests on a real
RabbitMQ (batched publishes and acks) are for, with a test that every name checked is
there on a live channel.
"""

from __future__ import annotations

import asyncio
import collections
import dis
import functools
import importlib.metadata
import inspect
import itertools
import struct
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiormq
import aiormq.abc
import aiormq.connection
import pamqp.frame
from aiormq import spec
from aiormq.abc import ChannelFrame
from pamqp import body as pamqp_body
from pamqp import decode as pamqp_decode
from pamqp import header as pamqp_header
from pamqp.encode import field_table
from pamqp.exceptions import PAMQPException
from pamqp.heartbeat import Heartbeat

NEEDED = "aiormq 7.2.x"

# Looked up on ``aiormq.Channel``; ``__get_content_header`` mangled as ``__lock`` is.
GET_CONTENT_HEADER = "_Channel__get_content_header"
CHANNEL_METHODS = ("create_future", "_on_deliver_frame", "_read_content", GET_CONTENT_HEADER)
# Assigned in ``aiormq.Channel.__init__``: ``__lock`` and ``__close_event`` are
# ``self.__lock`` and ``self.__close_event`` there, mangled with the class name.
LOCK = "_Channel__lock"
CLOSE_EVENT = "_Channel__close_event"
CHANNEL_STATE = (
    LOCK,
    CLOSE_EVENT,
    "confirmations",
    "delivery_tag",
    "frames",
    "max_content_size",
    "message_id_delivery_tag",
    "number",
    "write_queue",
)
# Fields of ``ChannelFrame``, built here from frames marshalled here.
FRAME_FIELDS = ("payload", "should_close", "drain_future")
# ``Connection.__reader``, which puts each frame on its channel's ``frames`` queue.
READER = "_Connection__reader"
# Assigned in ``aiormq.connection.FrameReceiver.__init__``, used by the subclass below.
RECEIVER_STATE = ("reader", "started")


class AiormqChanged(ImportError):
    """The installed aiormq lacks something the fast path relies on."""


def _assigned_in_init(cls: type) -> set[str]:
    """Attribute names stored by the ``__init__`` of ``cls`` or of any of its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        code = getattr(inspect.unwrap(init), "__code__", None) if init is not None else None
        if code is None:
            continue
        names.update(
            instruction.argval
            for instruction in dis.get_instructions(code)
            if instruction.opname == "STORE_ATTR"
        )
    return names


def missing_internals(channel_class: type, frame_class: type) -> list[str]:
    """What ``channel_class`` (aiormq's ``Channel``) and ``frame_class`` (its
    ``ChannelFrame``) lack of what this module uses; empty when nothing."""
    missing = [
        f"{channel_class.__name__} has no method {name}"
        for name in CHANNEL_METHODS
        if not callable(getattr(channel_class, name, None))
    ]
    assigned = _assigned_in_init(channel_class)
    missing += [
        f"{channel_class.__name__}.__init__ no longer sets {name}"
        for name in CHANNEL_STATE
        if name not in assigned
    ]
    parameters = inspect.signature(frame_class).parameters
    missing += [
        f"{frame_class.__name__} takes no {name}"
        for name in FRAME_FIELDS
        if name not in parameters
    ]
    return missing


def missing_receiver_internals(connection_class: type, receiver_class: type) -> list[str]:
    """What the frame reader below needs of ``connection_class`` (aiormq's
    ``Connection``) and ``receiver_class`` (its ``FrameReceiver``); empty when nothing."""
    missing = []
    connect = getattr(connection_class, "connect", None)
    code = getattr(inspect.unwrap(connect), "__code__", None) if connect else None
    if code is None or "FrameReceiver" not in code.co_names:
        missing.append(f"{connection_class.__name__}.connect no longer reads FrameReceiver")
    reader = getattr(connection_class, READER, None)
    code = getattr(inspect.unwrap(reader), "__code__", None) if reader else None
    if code is None or not {"frames", "put"} <= set(code.co_names):
        missing.append(
            f"{connection_class.__name__}'s reader no longer puts frames on channel.frames"
        )
    if not callable(getattr(receiver_class, "get_frame", None)):
        missing.append(f"{receiver_class.__name__} has no method get_frame")
    assigned = _assigned_in_init(receiver_class)
    missing += [
        f"{receiver_class.__name__}.__init__ no longer sets {name}"
        for name in RECEIVER_STATE
        if name not in assigned
    ]
    return missing


def check(
    channel_class: type = aiormq.Channel,
    frame_class: type = ChannelFrame,
    version: str | None = None,
    connection_class: type = aiormq.connection.Connection,
    receiver_class: type = aiormq.connection.FrameReceiver,
) -> None:
    """Raise ``AiormqChanged`` if the fast path cannot work on these classes."""
    missing = missing_internals(channel_class, frame_class)
    missing += missing_receiver_internals(connection_class, receiver_class)
    if missing:
        version = version or importlib.metadata.version("aiormq")
        raise AiormqChanged(
            f"aiormq {version} changed: {'; '.join(missing)}. vumi_like's broker fast path"
            f" (vumi_like/broker/aiormq_internals.py) needs {NEEDED}"
        )


check()


# -- frames, marshalled here (AMQP 0-9-1, section 4.2.3): what pamqp would write for
# the few frames the fast path sends, byte for byte (tests/broker/test_aiormq_internals),
# without building pamqp's objects and walking their fields for each message.

_FRAME_END = b"\xce"
_FRAME_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_METHOD, _HEADER, _BODY = 1, 2, 3
# Basic.Ack and Basic.Nack: class 60, method 80 or 120, delivery tag, flag bits.
_SETTLE = struct.Struct(">BHIHHQB")
_SETTLE_SIZE = _SETTLE.size - _FRAME_HEAD.size
_ACK, _NACK, _REQUEUE = 80, 120, 0b10
# The content header: class 60, weight 0, body size, property flags.
_HEADER_START = struct.Struct(">HHQH")
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _MESSAGE_ID = 0x8000, 0x2000, 0x1000, 0x0080
_JSON = b"\x10application/json"
_PERSISTENT = b"\x02"

# A publish's message id only has to be unique on its channel (aiormq maps a returned
# message to its confirmation by it): a process prefix and a counter, not a UUID each.
_ID_PREFIX = uuid.uuid4().hex[:12]
_next_id = itertools.count()


def _short_string(value: str) -> bytes:
    encoded = value.encode()
    if len(encoded) > 255:
        raise ValueError(f"longer than 255 bytes: {value[:40]!r}...")
    return bytes((len(encoded),)) + encoded


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(kind, channel, len(payload)) + payload + _FRAME_END


@functools.lru_cache(maxsize=4096)
def publish_method(channel: int, exchange: str, routing_key: str) -> bytes:
    """The Basic.Publish method frame (mandatory) for ``routing_key`` on ``exchange``."""
    payload = b"".join(
        (
            b"\x00\x3c\x00\x28\x00\x00",  # class 60, method 40, reserved ticket
            _short_string(exchange),
            _short_string(routing_key),
            b"\x01",  # mandatory, not immediate
        )
    )
    return _frame(_METHOD, channel, payload)


def content_header(
    channel: int, body_size: int, message_id: str, headers: Mapping[str, Any] | None
) -> bytes:
    """The content header frame of a persistent JSON message with these properties."""
    if headers:
        flags = _CONTENT_TYPE | _HEADERS | _DELIVERY_MODE | _MESSAGE_ID
        table = field_table(dict(headers))
    else:
        flags = _CONTENT_TYPE | _DELIVERY_MODE | _MESSAGE_ID
        table = b""
    payload = b"".join(
        (
            _HEADER_START.pack(60, 0, body_size, flags),
            _JSON,
            table,
            _PERSISTENT,
            _short_string(message_id),
        )
    )
    return _frame(_HEADER, channel, payload)


def body_frames(channel: int, body: bytes, max_size: int) -> list[bytes | memoryview]:
    """``body`` as content body frames of at most ``max_size`` bytes each, in pieces
    that make the frames once joined: each frame's head, a view of its part of
    ``body`` and its end. The body is copied once, by the join that makes the write,
    not also into a slice and a frame of its own: a megabyte's copies cost more
    than the rest of its publish."""
    if len(body) <= max_size:
        return [_FRAME_HEAD.pack(_BODY, channel, len(body)), body, _FRAME_END]
    view = memoryview(body)
    pieces: list[bytes | memoryview] = []
    for start in range(0, len(body), max_size):
        part = view[start : start + max_size]
        pieces += (_FRAME_HEAD.pack(_BODY, channel, len(part)), part, _FRAME_END)
    return pieces


def settle_frame(channel: int, delivery_tag: int, ack: bool) -> bytes:
    """Basic.Ack of one delivery, or Basic.Nack that requeues it."""
    if ack:
        return _SETTLE.pack(_METHOD, channel, _SETTLE_SIZE, 60, _ACK, delivery_tag, 0) + _FRAME_END
    return (
        _SETTLE.pack(_METHOD, channel, _SETTLE_SIZE, 60, _NACK, delivery_tag, _REQUEUE)
        + _FRAME_END
    )


class Confirmation:
    """A fast-path publish's entry in ``channel.confirmations``, where aiormq's reader
    settles it as it settles its own futures (``set_result`` for a confirm,
    ``set_exception`` for a nack or a return): it tells ``confirmed`` there and then.

    Not an asyncio future: a future of the channel's own (``create_future``) takes
    two entries in the channel's future stores, a closure and four done-callbacks,
    each run by the loop as a callback of its own; that was a tenth of the I/O
    thread's time per publish. What the stores were for, rejecting what is still
    unconfirmed when the channel closes, one guard future per channel does
    (``_guard``).
    """

    __slots__ = ("_confirmed", "_done", "_message_id", "_tag", "_tags")

    def __init__(
        self,
        tags: dict[str, int],
        message_id: str,
        delivery_tag: int,
        confirmed: Callable[[BaseException | None], None],
    ) -> None:
        self._tags, self._message_id, self._tag = tags, message_id, delivery_tag
        self._confirmed = confirmed
        self._done = False

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def set_result(self, result: object) -> None:
        self._settle(None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(error)

    def _settle(self, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        # What aiormq's own publish does once confirmed: forget the id of a message
        # that can no longer be returned (unless the tag was reused meanwhile).
        if self._tags.get(self._message_id) == self._tag:
            del self._tags[self._message_id]
        self._confirmed(error)


# channel -> the future in its store that rejects its fast-path confirmations when it
# closes (aiormq rejects every future in a channel's store then).
_guards: weakref.WeakKeyDictionary[aiormq.Channel, asyncio.Future[Any]] = (
    weakref.WeakKeyDictionary()
)


def _guard(channel: aiormq.Channel) -> None:
    if channel in _guards:
        return
    guard = _guards[channel] = channel.create_future()
    # Weakly: the guard is the channel's entry in ``_guards``, and an entry whose value
    # held its key would keep every channel ever guarded.
    channel_ref = weakref.ref(channel)

    def closed(future: asyncio.Future[Any]) -> None:
        channel = channel_ref()
        if channel is None:
            return
        error = None if future.cancelled() else future.exception()
        if not isinstance(error, BaseException):
            error = aiormq.exceptions.ChannelInvalidStateError(f"channel {channel.number} closed")
        confirmations = channel.confirmations
        for tag, confirmation in list(confirmations.items()):
            if isinstance(confirmation, Confirmation):
                del confirmations[tag]
                confirmation.set_exception(error)

    guard.add_done_callback(closed)


class Batch:
    """The frames of one I/O pass: written as one ``write_queue`` entry per channel.

    Add publishes with ``publish`` and settlements with ``settle`` during the pass,
    then ``write`` once at its end (or before anything else that writes on these
    channels). A publish is committed when added (it takes its delivery tag then);
    an ack or requeue only when written.
    """

    __slots__ = ("publish_channel", "publishes", "settles")

    def __init__(self) -> None:
        self.publish_channel: aiormq.Channel | None = None
        self.publishes: list[bytes | memoryview] = []
        self.settles: dict[aiormq.Channel, list[tuple[int, bool]]] = {}

    def publish(
        self,
        channel: aiormq.Channel | None,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any] | None,
        confirmed: Callable[[BaseException | None], None],
    ) -> bool:
        """Add a persistent, mandatory publish on ``channel``, as aiormq's
        ``basic_publish`` would send it; ``confirmed(error)`` is called once its
        confirmation is settled: with None for a confirm, else with what aiormq would
        have raised (``PublishError`` for a return, ``DeliveryError`` for a nack), or
        with the reason the channel closed first (see ``Confirmation``).

        Returns False, adding nothing, when it must take aiormq's own call instead.
        """
        if (
            channel is None
            or channel.is_closed
            or getattr(channel, LOCK).locked()
            or channel.write_queue.full()
            or (self.publish_channel is not None and channel is not self.publish_channel)
        ):
            return False
        number = channel.number
        message_id = f"{_ID_PREFIX}{next(_next_id):x}"
        # Every frame built before any is added: one that cannot be encoded (a routing
        # key over 255 bytes) raises with the batch untouched.
        method = publish_method(number, exchange, routing_key)
        header = content_header(number, len(body), message_id, headers)
        frames = self.publishes
        frames.append(method)
        frames.append(header)
        if body:
            frames += body_frames(number, body, channel.max_content_size)
        self.publish_channel = channel
        _guard(channel)
        channel.delivery_tag += 1
        delivery_tag = channel.delivery_tag
        # Typed as a future or Returning; a Confirmation has what aiormq calls of them.
        channel.confirmations[delivery_tag] = Confirmation(  # type: ignore[assignment]
            channel.message_id_delivery_tag, message_id, delivery_tag, confirmed
        )
        channel.message_id_delivery_tag[message_id] = delivery_tag
        return True

    def settle(self, tag: tuple[aiormq.Channel, int], ack: bool) -> None:
        """Add an ack (``ack``) or a requeue of the delivery ``tag``: (channel, tag)."""
        channel, delivery_tag = tag
        settles = self.settles.get(channel)
        if settles is None:
            settles = self.settles[channel] = []
        settles.append((delivery_tag, ack))

    def write(self) -> list[tuple[aiormq.Channel, list[tuple[int, bool]]]]:
        """Queue everything added for the writer, and start an empty batch.

        Returns the acks and requeues, as ``(delivery_tag, ack)``, that must take
        aiormq's own calls instead, by channel (closed or closing, or its write queue
        full).
        """
        if self.publishes:
            channel = self.publish_channel
            assert channel is not None  # the publishes were added on it
            _write(channel, self.publishes)
            self.publishes = []
            self.publish_channel = None
        slow = []
        if self.settles:
            for channel, settles in self.settles.items():
                if (
                    channel.is_closed
                    or getattr(channel, CLOSE_EVENT).is_set()
                    or channel.write_queue.full()
                ):
                    slow.append((channel, settles))
                else:
                    number = channel.number
                    _write(channel, [settle_frame(number, tag, ack) for tag, ack in settles])
            self.settles = {}
        return slow


def _write(channel: aiormq.Channel, frames: Sequence[bytes | memoryview]) -> None:
    """Queue marshalled ``frames`` for ``channel`` as one writer entry (one socket
    write)."""
    channel.write_queue.put_nowait(
        ChannelFrame(payload=b"".join(frames), should_close=False, drain_future=None)
    )


def deliver_inline(
    channel: aiormq.Channel, on_message: Callable[[aiormq.abc.DeliveredMessage], None]
) -> None:
    """Have ``channel``'s reader call ``on_message`` with each delivery itself.

    aiormq starts a task per delivery to run the consumer's callback; ours only hands
    the delivery to trio, so the task (creating, scheduling and forgetting it) cost
    more than the call. For a channel with one consumer, which is how the broker
    consumes (a channel per subscription). ``on_message`` must not raise: it runs
    inside the channel's reader, or the connection's (``_InlineDeliveries``).
    """
    get_content_header = getattr(channel, GET_CONTENT_HEADER)
    read_content = channel._read_content

    async def on_deliver_frame(frame: spec.Basic.Deliver) -> None:
        header = await get_content_header()
        on_message(await read_content(frame, header))

    channel._on_deliver_frame = on_deliver_frame  # type: ignore[method-assign]
    frames = channel.frames
    # The connection's reader looks ``put`` up on the queue for every frame.
    frames.put = _InlineDeliveries(channel, frames, on_message).put  # type: ignore[method-assign]


class _InlineDeliveries:
    """Between the connection's reader and a consuming channel's frame queue: a
    delivery's method, header and body frames are gathered as they arrive, and the
    delivery is handed to ``on_message`` when its body is complete, with no trip
    through the queue and the channel's reader task for each frame (in
    ``bench/router_hop.py``, alternating runs: 3,289 and 3,196 msg/s against 3,089
    and 3,116 at ``worker_concurrency`` 20). Confirms stay with the reader: settled
    here too, they measured slower.

    Only when the queue is empty: then the channel's reader has taken every frame
    before this one, and may at most still be passing an RPC reply on or closing
    the channel, which a delivery does not depend on. Anything else, and a delivery
    that arrives while frames are queued, goes on the queue as before.
    """

    __slots__ = (
        "body",
        "channel",
        "deliver",
        "header",
        "on_message",
        "queue",
        "queue_put",
        "received",
    )

    def __init__(
        self,
        channel: aiormq.Channel,
        queue: asyncio.Queue[Any],
        on_message: Callable[[aiormq.abc.DeliveredMessage], None],
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.queue_put = queue.put
        self.on_message = on_message
        self.deliver: spec.Basic.Deliver | None = None
        self.header: pamqp_header.ContentHeader | None = None
        self.body: list[bytes] = []
        self.received = 0

    async def put(self, item: tuple[int, Any]) -> None:
        frame = item[1]
        deliver = self.deliver
        if deliver is None:
            if isinstance(frame, spec.Basic.Deliver) and self.queue.empty():
                self.deliver = frame
                return
            await self.queue_put(item)
            return
        header = self.header
        if header is None and isinstance(frame, pamqp_header.ContentHeader):
            self.header = frame
            if not frame.body_size:
                self._hand_over(deliver, frame, b"")
            return
        if header is not None and isinstance(frame, pamqp_body.ContentBody):
            self.body.append(frame.value)
            self.received += len(frame.value)
            if self.received >= header.body_size:
                self._hand_over(deliver, header, b"".join(self.body))
            return
        # Not a delivery's content: the reader gets what was gathered and this, in
        # order, and fails on them as it would have.
        gathered: list[Any] = [deliver, header, *map(pamqp_body.ContentBody, self.body)]
        self._reset()
        for held in gathered:
            if held is not None:
                await self.queue_put((0, held))
        await self.queue_put(item)

    def _hand_over(
        self, deliver: spec.Basic.Deliver, header: pamqp_header.ContentHeader, body: bytes
    ) -> None:
        self._reset()
        self.on_message(
            aiormq.abc.DeliveredMessage(
                delivery=deliver, header=header, body=body, channel=self.channel
            )
        )

    def _reset(self) -> None:
        self.deliver = None
        self.header = None
        self.body = []
        self.received = 0


# -- frames, read here: the socket read in chunks and cut into frames from a buffer,
# the frames every message brings decoded without pamqp's generic walk.
#
# aiormq's ``FrameReceiver`` awaits three ``readexactly`` calls per frame, under a
# lock, through a ``BytesIO``, then has pamqp decode it field by field; a delivery is
# three frames and a confirm one more. ``BufferedFrameReceiver`` awaits one ``read``
# for whatever has arrived (often many frames) and decodes Basic.Deliver, Basic.Ack,
# Basic.Nack, content headers and bodies itself into the same pamqp objects pamqp
# would build. Any other frame, and any of those that does not decode cleanly here,
# goes to pamqp, so what is malformed raises pamqp's error as before.

_READ_SIZE = 1 << 17  # RabbitMQ's default frame_max: one body frame a read at most
_PROTOCOL_HEADER = b"AMQP"
_HEARTBEAT = 8
_CLASS_METHOD = struct.Struct(">HH")
_LONG_LONG = struct.Struct(">Q")
_DELIVER, _BASIC = 60, 60
_PROPERTY_NAMES = tuple(spec.Basic.Properties.__slots__)
_PROPERTY_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(spec.Basic.Properties).parameters.items()
}


def _short_str(data: bytes, at: int) -> tuple[str, int]:
    end = at + 1 + data[at]
    if end > len(data):
        raise ValueError("short string past the end of the frame")
    return data[at + 1 : end].decode(), end


def _octet(data: bytes, at: int) -> tuple[int, int]:
    return data[at], at + 1


def _table(data: bytes, at: int) -> tuple[Any, int]:
    consumed, value = pamqp_decode.field_table(data[at:])
    return value, at + consumed


def _timestamp(data: bytes, at: int) -> tuple[Any, int]:
    if at + 8 > len(data):
        raise ValueError("timestamp past the end of the frame")
    return pamqp_decode.timestamp(data[at : at + 8])[1], at + 8


_PROPERTY_DECODERS = {
    "shortstr": _short_str,
    "octet": _octet,
    "table": _table,
    "timestamp": _timestamp,
}
# (flag bit, attribute, decoder) in the order the properties are encoded.
_PROPERTIES = tuple(
    (
        spec.Basic.Properties.flags[name],
        name,
        _PROPERTY_DECODERS[getattr(spec.Basic.Properties, f"_{name}")],
    )
    for name in _PROPERTY_NAMES
)


def _decode_deliver(data: bytes, at: int, end: int) -> spec.Basic.Deliver:
    frame = spec.Basic.Deliver.__new__(spec.Basic.Deliver)
    frame.consumer_tag, at = _short_str(data, at)
    (frame.delivery_tag,) = _LONG_LONG.unpack_from(data, at)
    frame.redelivered = bool(data[at + 8] & 1)
    frame.exchange, at = _short_str(data, at + 9)
    frame.routing_key, at = _short_str(data, at)
    if at != end:
        raise ValueError("Basic.Deliver does not fill its frame")
    return frame


def _decode_settle(cls: type[Any], data: bytes, at: int, end: int) -> Any:
    if end - at != 9:
        raise ValueError(f"{cls.__name__} of the wrong size")
    frame = object.__new__(cls)
    (frame.delivery_tag,) = _LONG_LONG.unpack_from(data, at)
    bits = data[at + 8]
    frame.multiple = bool(bits & 1)
    if cls is spec.Basic.Nack:
        frame.requeue = bool(bits & 2)
    return frame


def _decode_header(data: bytes, at: int, end: int) -> pamqp_header.ContentHeader:
    class_id, weight, body_size, flags = _HEADER_START.unpack_from(data, at)
    if class_id != _BASIC or flags & 1:  # another class, or more flag words
        raise ValueError("not a plain Basic content header")
    properties = spec.Basic.Properties.__new__(spec.Basic.Properties)
    for name in _PROPERTY_NAMES:
        setattr(properties, name, _PROPERTY_DEFAULTS[name])
    at += _HEADER_START.size
    for flag, name, decode in _PROPERTIES:
        if flags & flag:
            value, at = decode(data, at)
            setattr(properties, name, value)
    if at != end:
        raise ValueError("the properties do not fill the content header frame")
    header = pamqp_header.ContentHeader.__new__(pamqp_header.ContentHeader)
    header.class_id, header.weight, header.body_size = class_id, weight, body_size
    header.properties = properties
    return header


_METHODS: dict[tuple[int, int], Callable[[bytes, int, int], Any]] = {
    (_BASIC, _DELIVER): _decode_deliver,
    (_BASIC, _ACK): functools.partial(_decode_settle, spec.Basic.Ack),
    (_BASIC, _NACK): functools.partial(_decode_settle, spec.Basic.Nack),
}


def decode_frame(data: bytes, start: int, end: int) -> Any:
    """The pamqp frame object of the whole frame ``data[start:end]``: decoded here when
    it is one of the kinds every message brings, else by pamqp (which raises on a
    malformed one)."""
    kind = data[start]
    payload = start + _FRAME_HEAD.size
    stop = end - 1
    try:
        if kind == _BODY and stop > payload:  # pamqp refuses an empty frame
            return pamqp_body.ContentBody(data[payload:stop])
        if kind == _METHOD and stop - payload >= 4:
            decode = _METHODS.get(_CLASS_METHOD.unpack_from(data, payload))
            if decode is not None:
                return decode(data, payload + 4, stop)
        elif kind == _HEADER and stop - payload >= _HEADER_START.size:
            return _decode_header(data, payload, stop)
    except (ValueError, IndexError, struct.error):
        pass  # pamqp says what is wrong with it
    return pamqp.frame.unmarshal(bytes(data[start:end]))[2]


class BufferedFrameReceiver(aiormq.connection.FrameReceiver):
    """aiormq's frame receiver, reading whatever has arrived at once (see above)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self._pending = b""  # the start of a frame not all here yet
        self._frames: collections.deque[aiormq.connection.ReceivedFrame] = collections.deque()
        # A malformed frame read after whole ones: raised once those have been taken,
        # as aiormq's receiver, reading one frame at a time, would.
        self._error: aiormq.exceptions.InvalidFrameError | None = None

    async def get_frame(self) -> aiormq.connection.ReceivedFrame:
        frames = self._frames
        while not frames:
            if self._error is not None:
                raise self._error
            await self._read()
        return frames.popleft()

    async def _read(self) -> None:
        try:
            chunk = await self.reader.read(_READ_SIZE)
        except OSError as exc:  # reset, refused, TLS...: the connection is gone
            raise aiormq.exceptions.AMQPConnectionError(
                f"Server communication error: {exc!r}"
            ) from exc
        if not chunk:
            if self._pending:
                raise aiormq.exceptions.AMQPConnectionError(
                    "Server connection unexpectedly closed with "
                    f"{len(self._pending)} bytes of a frame read"
                )
            raise StopAsyncIteration
        data = self._pending + chunk if self._pending else chunk
        if not self.started:
            if len(data) < len(_PROTOCOL_HEADER):
                self._pending = data
                return
            if data.startswith(_PROTOCOL_HEADER):
                raise aiormq.exceptions.ProtocolSyntaxError("Unexpected AMQP protocol header")
            self.started = True
        try:
            self._pending = self._cut(data)
        except aiormq.exceptions.InvalidFrameError as exc:
            if not self._frames:
                raise
            self._error = exc

    def _cut(self, data: bytes) -> bytes:
        """Decode the whole frames at the start of ``data``; the rest, to wait for more."""
        at, size, frames = 0, len(data), self._frames
        head = _FRAME_HEAD
        while size - at >= head.size:
            kind, channel, length = head.unpack_from(data, at)
            end = at + head.size + length + 1
            if end > size:
                break
            if data[end - 1] != 0xCE:
                raise aiormq.exceptions.InvalidFrameError(
                    f"frame of type {kind} on channel {channel} does not end with 0xCE"
                )
            try:
                frame = (
                    Heartbeat()
                    if kind == _HEARTBEAT and not length
                    else decode_frame(data, at, end)
                )
            except PAMQPException as exc:
                raise aiormq.exceptions.InvalidFrameError(str(exc)) from exc
            frames.append((end - at, channel, frame))
            at = end
        return data[at:]


def read_frames_buffered() -> None:
    """Have every aiormq connection opened from now on read with
    ``BufferedFrameReceiver`` (``Connection.connect`` looks the receiver class up by
    its name in ``aiormq.connection`` each time it connects)."""
    aiormq.connection.FrameReceiver = BufferedFrameReceiver  # type: ignore[misc]
