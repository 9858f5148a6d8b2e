"""The broker fast path on aiormq's internals: checked at import, and its frames pamqp's."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import importlib.util
import inspect
import re
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import aiormq
import pamqp.frame
import pytest
from aiormq import spec
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from vumi_like.broker import aiormq_internals
from vumi_like.broker.aiormq_internals import AiormqChanged, check, missing_internals
from vumi_like.broker.rabbitmq import open_rabbitmq_broker


def stand_in_channel(leave_out: Iterable[str] = ()) -> type:
    """A class named ``Channel`` shaped like aiormq's, without the names in ``leave_out``.

    Built from source: the check reads what ``__init__`` assigns, so a name left out
    must be absent from the code, not merely skipped at run time.
    """
    skipped = set(leave_out)
    assignments = [
        f"        self.{name} = None"
        for name in aiormq_internals.CHANNEL_STATE
        if name not in skipped
    ]
    methods = [
        f"    def {name}(self, *args):\n        return None"
        for name in aiormq_internals.CHANNEL_METHODS
        if name not in skipped
    ]
    source = "\n".join(
        ["class Channel:", "    def __init__(self):", "        pass", *assignments, *methods]
    )
    namespace: dict[str, type] = {}
    exec(source, namespace)
    return namespace["Channel"]


@dataclasses.dataclass(frozen=True)
class FrameWithoutDrain:
    payload: bytes
    should_close: bool


def test_the_installed_aiormq_has_everything_the_fast_path_uses() -> None:
    assert missing_internals(aiormq.Channel, ChannelFrame) == []
    check()  # what importing the module did


def test_a_complete_stand_in_passes() -> None:
    assert missing_internals(stand_in_channel(), ChannelFrame) == []


def test_a_missing_private_attribute_fails_with_a_clear_message() -> None:
    with pytest.raises(AiormqChanged) as raised:
        check(stand_in_channel(["_Channel__close_event"]), ChannelFrame, version="7.3.0")
    message = str(raised.value)
    assert message.startswith("aiormq 7.3.0 changed: ")
    assert "Channel.__init__ no longer sets _Channel__close_event" in message
    assert "needs aiormq 7.2.x" in message
    assert isinstance(raised.value, ImportError)


def test_every_missing_name_is_listed() -> None:
    channel = stand_in_channel(["create_future", "delivery_tag", "_Channel__lock"])
    assert missing_internals(channel, FrameWithoutDrain) == [
        "Channel has no method create_future",
        "Channel.__init__ no longer sets _Channel__lock",
        "Channel.__init__ no longer sets delivery_tag",
        "FrameWithoutDrain takes no drain_future",
    ]


def test_importing_the_fast_path_on_a_changed_aiormq_raises_import_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh copy of the module, run as an import would, against a changed aiormq.
    monkeypatch.setattr(aiormq, "Channel", stand_in_channel(["write_queue"]))
    spec = importlib.util.spec_from_file_location(
        "aiormq_internals_copy", inspect.getfile(aiormq_internals)
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError, match=r"no longer sets write_queue.*needs aiormq 7\.2\.x"):
        spec.loader.exec_module(module)


async def test_a_live_channel_has_every_attribute_the_check_looks_for(amqp_url: str) -> None:
    # The check reads aiormq's bytecode; this confirms it against a real channel.
    async with open_rabbitmq_broker(amqp_url) as broker:
        channel = broker._publish_channel
        assert isinstance(channel, aiormq.Channel)
        for name in aiormq_internals.CHANNEL_STATE + aiormq_internals.CHANNEL_METHODS:
            assert hasattr(channel, name), name


# -- the frames the fast path marshals itself are pamqp's, byte for byte


def pamqp_frame(frame: Any, channel: int) -> bytes:
    return pamqp.frame.marshal(frame, channel)


@pytest.mark.parametrize(
    ("exchange", "routing_key"),
    [("vumi", "sms.outbound"), ("", "amq.gen-x"), ("vumi.delay.500", "ünïcode.queue")],
)
def test_the_publish_method_frame_is_pamqps(exchange: str, routing_key: str) -> None:
    expected = pamqp_frame(
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True), 7
    )
    assert aiormq_internals.publish_method(7, exchange, routing_key) == expected


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"x-vumi-attempt": 3, "x-reason": "handler failed: ünïcode", "x-delay": 1.5},
        {"nested": {"a": [1, "two", True]}, "big": 2**40, "none": None},
    ],
)
def test_the_content_header_frame_is_pamqps(headers: dict[str, Any] | None) -> None:
    properties = spec.Basic.Properties(
        delivery_mode=2,
        content_type="application/json",
        headers=dict(headers) if headers else None,
        message_id="0123456789ab1f",
    )
    expected = pamqp_frame(ContentHeader(properties=properties, body_size=70_000), 3)
    assert aiormq_internals.content_header(3, 70_000, "0123456789ab1f", headers) == expected


@pytest.mark.parametrize("size", [1, 4087, 4088, 4089, 10_240])
def test_body_frames_are_pamqps_split_at_the_frame_size(size: int) -> None:
    body = (bytes(range(256)) * 40)[:size]  # up to 10,240 bytes: frames of at most 4,088
    pieces = aiormq_internals.body_frames(2, body, 4088)
    expected = [pamqp_frame(ContentBody(body[i : i + 4088]), 2) for i in range(0, size, 4088)]
    assert b"".join(pieces) == b"".join(expected)
    # Head, part of the body and end for each frame, the parts not copies of the body.
    assert len(pieces) == 3 * len(expected)
    assert all(isinstance(part, memoryview) or part is body for part in pieces[1::3])


@pytest.mark.parametrize("tag", [1, 2**31, 2**63 - 1])
def test_ack_and_requeue_frames_are_pamqps(tag: int) -> None:
    ack = pamqp_frame(spec.Basic.Ack(delivery_tag=tag), 5)
    requeue = pamqp_frame(spec.Basic.Nack(delivery_tag=tag, requeue=True), 5)
    assert aiormq_internals.settle_frame(5, tag, ack=True) == ack
    assert aiormq_internals.settle_frame(5, tag, ack=False) == requeue


def test_a_routing_key_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        aiormq_internals.publish_method(1, "vumi", "q" * 256)


# -- the frames the fast path reads are decoded as pamqp decodes them

PROPERTIES = [
    spec.Basic.Properties(),
    spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="0123456789ab1f",
        headers={"x-vumi-attempt": 3, "reason": "ünïcode", "nested": {"a": [1, None]}},
    ),
    spec.Basic.Properties(
        content_type="text/plain",
        content_encoding="gzip",
        headers={},
        delivery_mode=1,
        priority=9,
        correlation_id="c",
        reply_to="amq.rabbitmq.reply-to",
        expiration="60000",
        message_id="m",
        timestamp=datetime(2026, 11, 24, 12, 0, 1, tzinfo=UTC),
        message_type="t",
        user_id="guest",
        app_id="vumi-like",
    ),
]
FRAMES = [
    *(
        (
            spec.Basic.Deliver(
                consumer_tag="ctag1.ünï",
                delivery_tag=tag,
                redelivered=again,
                exchange=ex,
                routing_key="app.outbound",
            ),
            3,
        )
        for tag in (1, 2**63 - 1)
        for again in (True, False)
        for ex in ("", "vumi")
    ),
    *((ContentHeader(body_size=size, properties=p), 3) for p in PROPERTIES for size in (0, 2**40)),
    (ContentBody(b"{}"), 3),
    (ContentBody(bytes(range(256)) * 100), 3),
    *((spec.Basic.Ack(delivery_tag=7, multiple=m), 1) for m in (True, False)),
    *(
        (spec.Basic.Nack(delivery_tag=7, multiple=m, requeue=r), 1)
        for m in (True, False)
        for r in (True, False)
    ),
    (spec.Basic.ConsumeOk(consumer_tag="ctag1"), 3),
    (
        spec.Channel.Close(
            reply_code=406, reply_text="PRECONDITION_FAILED", class_id=50, method_id=10
        ),
        2,
    ),
    (
        spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="vumi", routing_key="x"),
        1,
    ),
]


def fields(frame: Any) -> Any:
    """A frame's type and every field, nested properties included, to compare."""
    if isinstance(frame, ContentHeader):
        return (
            ContentHeader,
            frame.class_id,
            frame.weight,
            frame.body_size,
            fields(frame.properties),
        )
    if isinstance(frame, ContentBody):
        return (ContentBody, frame.value)
    return (type(frame), {name: getattr(frame, name) for name in getattr(frame, "__slots__", ())})


@pytest.mark.parametrize(("frame", "channel"), FRAMES)
def test_a_frame_decodes_to_what_pamqp_decodes(frame: Any, channel: int) -> None:
    data = b"junk" + pamqp_frame(frame, channel) + b"more"
    decoded = aiormq_internals.decode_frame(data, 4, len(data) - 4)
    assert fields(decoded) == fields(pamqp.frame.unmarshal(pamqp_frame(frame, channel))[2])
    assert fields(decoded) == fields(frame) or isinstance(frame, ContentHeader)


def malformed() -> list[bytes]:
    deliver = pamqp_frame(FRAMES[0][0], 3)
    header = pamqp_frame(ContentHeader(body_size=5, properties=PROPERTIES[1]), 3)
    ack = pamqp_frame(spec.Basic.Ack(delivery_tag=7), 1)

    def resized(frame: bytes, payload: bytes) -> bytes:
        return frame[:3] + len(payload).to_bytes(4, "big") + payload + b"\xce"

    return [
        resized(deliver, deliver[7:20]),  # the consumer tag runs past the end
        resized(deliver, deliver[7:-1] + b"extra"),  # more than a Deliver holds
        resized(header, header[7:-3]),  # a property cut short
        resized(ack, ack[7:-2]),  # no flag byte
        resized(ack, b"\x00\x3c\x03\xe7" + ack[11:-1]),  # class 60, no method 999
        b"\x03\x00\x01\x00\x00\x00\x00\xce",  # an empty body frame
    ]


@pytest.mark.parametrize("data", malformed())
def test_a_malformed_frame_is_pamqps_to_judge(data: bytes) -> None:
    # What pamqp refuses is refused with its error; what it lets through (bytes past
    # the last field, a short string cut short) decodes as it decodes it.
    try:
        theirs = pamqp.frame.unmarshal(data)[2]
    except PAMQPException as exc:
        with pytest.raises(PAMQPException) as ours:
            aiormq_internals.decode_frame(data, 0, len(data))
        # pamqp names the method object it failed on, which has an address of its own.
        assert type(ours.value) is type(exc)
        assert re.sub("0x[0-9a-f]+", "", str(ours.value)) == re.sub("0x[0-9a-f]+", "", str(exc))
    else:
        assert fields(aiormq_internals.decode_frame(data, 0, len(data))) == fields(theirs)


def test_most_of_the_malformed_frames_are_refused() -> None:
    refused = 0
    for data in malformed():
        with contextlib.suppress(PAMQPException):
            pamqp.frame.unmarshal(data)
            continue
        refused += 1
    assert refused == 4


def receive(chunks: list[bytes], eof: bool = True) -> tuple[list[Any], BaseException | None]:
    """Feed ``chunks`` to a ``BufferedFrameReceiver`` one by one, as the socket would;
    the frames it yields, and what it raised instead of another (None: it waits)."""

    async def main() -> tuple[list[Any], BaseException | None]:
        reader = asyncio.StreamReader()
        receiver = aiormq_internals.BufferedFrameReceiver(reader)
        received: list[Any] = []
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        if eof:
            reader.feed_eof()
        try:
            while True:
                received.append(await asyncio.wait_for(receiver.get_frame(), 0.2))
        except TimeoutError:
            return received, None
        except (Exception, StopAsyncIteration) as exc:
            return received, exc

    return asyncio.run(main())


STREAM_FRAMES = [*FRAMES, (Heartbeat(), 0), (ContentBody(b"x" * 300_000), 5)]


@pytest.mark.parametrize("cut", [1, 7, 1000, 1 << 20])
def test_frames_are_read_whatever_the_reads_bring(cut: int) -> None:
    stream = b"".join(pamqp_frame(frame, channel) for frame, channel in STREAM_FRAMES)
    chunks = [stream[i : i + cut] for i in range(0, len(stream), cut)]
    received, ended = receive(chunks)
    assert isinstance(ended, StopAsyncIteration)  # the end of the stream, between frames
    expected = [pamqp.frame.unmarshal(pamqp_frame(f, c)) for f, c in STREAM_FRAMES]
    assert [(w, c, fields(f)) for w, c, f in received] == [
        (w, c, fields(f)) for w, c, f in expected
    ]


def test_a_stream_cut_inside_a_frame_is_a_connection_error() -> None:
    frame = pamqp_frame(spec.Basic.Ack(delivery_tag=7), 1)
    received, ended = receive([frame + frame[:5]])
    assert len(received) == 1
    assert isinstance(ended, aiormq.exceptions.AMQPConnectionError)
    assert "unexpectedly closed" in str(ended)


def test_a_frame_without_its_end_byte_is_invalid() -> None:
    frame = pamqp_frame(spec.Basic.Ack(delivery_tag=7), 1)
    received, ended = receive([frame[:-1] + b"\x00"], eof=False)
    assert received == []
    assert isinstance(ended, aiormq.exceptions.InvalidFrameError)


def test_a_malformed_frame_is_invalid() -> None:
    received, ended = receive([malformed()[0]], eof=False)
    assert received == []
    assert isinstance(ended, aiormq.exceptions.InvalidFrameError)


def test_the_frames_read_before_a_malformed_one_come_first() -> None:
    ack = pamqp_frame(spec.Basic.Ack(delivery_tag=7), 1)
    received, ended = receive([ack + ack + malformed()[0] + ack], eof=False)
    assert [fields(frame) for _, _, frame in received] == [fields(spec.Basic.Ack(7))] * 2
    assert isinstance(ended, aiormq.exceptions.InvalidFrameError)


def test_a_server_answering_with_its_protocol_header_is_refused() -> None:
    received, ended = receive([b"AM", b"QP\x00\x00\x09\x01"], eof=False)
    assert received == []
    assert isinstance(ended, aiormq.exceptions.ProtocolSyntaxError)


def test_a_partial_frame_waits_for_the_rest() -> None:
    frame = pamqp_frame(ContentBody(b"x" * 1000), 1)
    received, ended = receive([frame[:500]], eof=False)
    assert received == [] and ended is None


def test_a_changed_frame_receiver_is_named() -> None:
    class Connection:
        async def connect(self) -> None:
            pass

    class FrameReceiver:
        def __init__(self, reader: Any) -> None:
            self.reader = reader

    assert aiormq_internals.missing_receiver_internals(Connection, FrameReceiver) == [
        "Connection.connect no longer reads FrameReceiver",
        "Connection's reader no longer puts frames on channel.frames",
        "FrameReceiver has no method get_frame",
        "FrameReceiver.__init__ no longer sets started",
    ]
    assert (
        aiormq_internals.missing_receiver_internals(
            aiormq.connection.Connection, aiormq.connection.FrameReceiver
        )
        == []
    )


async def test_a_live_connection_reads_through_the_fast_path(amqp_url: str) -> None:
    async with open_rabbitmq_broker(amqp_url) as broker:
        connection = broker._publish_channel.connection
        reader = connection._reader_task.get_coro().cr_frame.f_locals["frame_receiver"]
        assert type(reader) is aiormq_internals.BufferedFrameReceiver


# -- fast-path confirmations: settled by aiormq's reader, rejected when the channel closes


class StandInChannel:
    """What a fast-path confirmation and its guard use of a channel."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.number = 1
        self.confirmations: dict[int, Any] = {}
        self.message_id_delivery_tag: dict[str, int] = {}
        self.futures: list[asyncio.Future[Any]] = []
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = loop

    # What ``deliver_inline`` wires up for the deliveries its channel's reader reads.
    async def _Channel__get_content_header(self) -> Any:
        raise AssertionError("read by the channel's reader, not here")

    async def _read_content(self, frame: Any, header: Any) -> Any:
        raise AssertionError("read by the channel's reader, not here")

    def create_future(self) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self.futures.append(future)
        return future


def confirmations_on(
    channel: StandInChannel, tags: list[int]
) -> dict[int, list[BaseException | None]]:
    """A confirmation of ``channel`` for each tag (guarded as ``Batch.publish`` does),
    and what each is told, in order."""
    told: dict[int, list[BaseException | None]] = {tag: [] for tag in tags}
    for tag in tags:
        aiormq_internals._guard(channel)  # type: ignore[arg-type]
        channel.message_id_delivery_tag[f"id-{tag}"] = tag
        channel.confirmations[tag] = aiormq_internals.Confirmation(
            channel.message_id_delivery_tag, f"id-{tag}", tag, told[tag].append
        )
    return told


def test_a_confirmation_tells_once_and_forgets_its_message_id() -> None:
    async def main() -> None:
        channel = StandInChannel(asyncio.get_running_loop())
        told = confirmations_on(channel, [1, 2])
        nacked = aiormq.exceptions.DeliveryError(None, spec.Basic.Nack(delivery_tag=2))
        channel.confirmations.pop(1).set_result(spec.Basic.Ack(delivery_tag=1))
        channel.confirmations[2].set_exception(nacked)
        channel.confirmations[2].set_result(spec.Basic.Ack(delivery_tag=2))  # too late
        assert told == {1: [None], 2: [nacked]}
        assert channel.message_id_delivery_tag == {}
        assert channel.confirmations[2].done()
        assert len(channel.futures) == 1  # one guard for the channel, not one a publish

    asyncio.run(main())


@pytest.mark.parametrize("how", ["rejected", "cancelled"])
def test_a_closing_channel_rejects_what_is_still_unconfirmed(how: str) -> None:
    async def main() -> None:
        channel = StandInChannel(asyncio.get_running_loop())
        told = confirmations_on(channel, [1, 2, 3])
        channel.confirmations.pop(1).set_result(spec.Basic.Ack(delivery_tag=1))
        channel.confirmations[4] = returning = object()  # aiormq's own entry: left alone
        (guard,) = channel.futures
        reason = aiormq.exceptions.ChannelClosed(320, "CONNECTION_FORCED")
        if how == "rejected":  # what aiormq's reject_all does to the channel's futures
            guard.set_exception(reason)
        else:
            guard.cancel()
        await asyncio.sleep(0)  # the guard's callback, run by the loop
        assert told[1] == [None]
        errors = [told[2][0], told[3][0]]
        assert len(told[2]) == len(told[3]) == 1
        if how == "rejected":
            assert errors == [reason, reason]
        else:
            assert all(isinstance(e, aiormq.exceptions.ChannelInvalidStateError) for e in errors)
        assert channel.confirmations == {4: returning}

    asyncio.run(main())


def test_a_guarded_channel_is_not_kept_alive_by_its_guard() -> None:
    async def main() -> None:
        channel = StandInChannel(asyncio.get_running_loop())
        confirmations_on(channel, [1])
        gone = weakref.ref(channel)
        del channel
        gc.collect()
        assert gone() is None

    asyncio.run(main())


# -- a delivery's frames, gathered as the connection reads them


def deliver(tag: int) -> spec.Basic.Deliver:
    return spec.Basic.Deliver(consumer_tag="c", delivery_tag=tag, routing_key="q")


def content(body: bytes, *, parts: int = 1) -> list[Any]:
    """A content header for ``body`` and ``body`` in ``parts`` body frames."""
    size = -(-len(body) // parts) if body else 1
    return [
        ContentHeader(body_size=len(body), properties=spec.Basic.Properties()),
        *(ContentBody(body[at : at + size]) for at in range(0, len(body), size)),
    ]


def run_inline(frames: list[Any], *, queued_first: list[Any] = ()) -> tuple[Any, list[Any]]:
    """Put ``frames`` through a channel's inline frames, with ``queued_first`` already
    on its queue; the channel (``delivered``) and what was queued."""

    async def main() -> tuple[Any, list[Any]]:
        channel = StandInChannel(asyncio.get_running_loop())
        delivered: list[Any] = []
        channel.delivered = delivered  # type: ignore[attr-defined]
        for frame in queued_first:
            channel.frames.put_nowait((0, frame))
        aiormq_internals.deliver_inline(channel, delivered.append)  # type: ignore[arg-type]
        for frame in frames:
            await channel.frames.put((1, frame))
        queued = []
        while not channel.frames.empty():
            queued.append(channel.frames.get_nowait()[1])
        return channel, queued

    return asyncio.run(main())


def test_a_delivery_is_handed_over_as_its_last_body_frame_arrives() -> None:
    frames = [deliver(1), *content(b"hello world", parts=3), deliver(2), *content(b"")]
    channel, queued = run_inline(frames)
    assert queued == []
    assert [(m.delivery.delivery_tag, m.body) for m in channel.delivered] == [
        (1, b"hello world"),
        (2, b""),
    ]
    assert channel.delivered[0].header is frames[1]
    assert all(m.channel is channel for m in channel.delivered)


def test_a_delivery_behind_queued_frames_is_queued_in_order() -> None:
    """Frames still queued (a delivery the reader has yet to take, here): the next
    delivery waits its turn, for the channel's reader."""
    earlier = [deliver(1), *content(b"first")]
    frames = [deliver(2), *content(b"second")]
    channel, queued = run_inline(frames, queued_first=earlier)
    assert queued == [*earlier, *frames]
    assert channel.delivered == []


def test_other_frames_go_on_the_queue() -> None:
    others = [spec.Basic.ConsumeOk(consumer_tag="c"), spec.Channel.Close(reply_code=320)]
    channel, queued = run_inline(others)
    assert queued == others
    assert channel.delivered == []


def test_a_delivery_broken_off_goes_to_the_reader_as_it_came() -> None:
    """A frame that is no part of the content between: the reader gets it all, in
    order, and fails on it as aiormq does."""
    header, body = content(b"abcdef", parts=2)[:2]
    close = spec.Channel.Close(reply_code=505)
    channel, queued = run_inline([deliver(7), header, body, close])
    assert channel.delivered == []
    assert [type(f) for f in queued] == [
        spec.Basic.Deliver,
        ContentHeader,
        ContentBody,
        spec.Channel.Close,
    ]
    assert queued[0].delivery_tag == 7 and queued[2].value == b"abc"
