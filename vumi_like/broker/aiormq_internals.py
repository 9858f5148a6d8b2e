"""The publish and ack fast path, written on aiormq's channel internals.

This is the one module that reads or writes aiormq's private state; everything else
in ``broker/`` uses aio-pika's and aiormq's public calls.

Why touch internals at all: aiormq's ``basic_publish`` is right for one caller at a
time, but a pipelined publisher pays for things it does not need per message (a task,
a timeout scope, the channel lock round trip, a drain future), and every
``basic_ack`` is a write-queue entry, so a socket write, of its own. The bridge
(``bridge.py``) hands the I/O thread many publishes and acks per pass; a ``Batch``
turns one pass's publishes into one ``write_queue`` entry on the publishing channel
and its acks and requeues into one entry per consuming channel. With that, the broker
as a whole does about 1.7 times plain asyncio aio-pika (``bench/broker_roundtrip.py``).

What it keeps: aiormq's publish bookkeeping exactly (the next delivery tag, the
confirmation future in ``confirmations``, ``message_id`` -> tag for returned
messages), so aiormq's reader settles our confirmations, returns and nacks as it
settles its own, and confirms stay pipelined: each publish waits only for its own.
The confirmation future comes from ``channel.create_future`` so that the channel
rejects it when it closes, and the broker learns that the publish must be retried.
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
fast path would fail at the first publish, or worse, half-work; instead importing this
module raises ``AiormqChanged`` (an ``ImportError``) naming what is missing and the
aiormq version needed. Methods are looked up on the classes, and the keyword arguments
of ``ChannelFrame.marshall`` in its signature. The instance attributes
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
import dis
import importlib.metadata
import inspect
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import aiormq
from aiormq import spec
from aiormq.abc import ChannelFrame
from pamqp.header import ContentHeader

NEEDED = "aiormq 7.2.x"

# Looked up on ``aiormq.Channel``.
CHANNEL_METHODS = ("_split_body", "create_future")
# Assigned in ``aiormq.Channel.__init__``: ``__lock`` and ``__close_event`` are
# ``self.__lock`` and ``self.__close_event`` there, mangled with the class name.
LOCK = "_Channel__lock"
CLOSE_EVENT = "_Channel__close_event"
CHANNEL_STATE = (
    LOCK,
    CLOSE_EVENT,
    "confirmations",
    "delivery_tag",
    "message_id_delivery_tag",
    "write_queue",
)
# Keyword arguments of ``ChannelFrame.marshall``.
MARSHALL_PARAMETERS = ("channel_number", "frames", "drain_future")


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
    marshall = getattr(frame_class, "marshall", None)
    if not callable(marshall):
        missing.append(f"{frame_class.__name__} has no method marshall")
    else:
        parameters = inspect.signature(marshall).parameters
        missing += [
            f"{frame_class.__name__}.marshall takes no {name}"
            for name in MARSHALL_PARAMETERS
            if name not in parameters
        ]
    return missing


def check(
    channel_class: type = aiormq.Channel,
    frame_class: type = ChannelFrame,
    version: str | None = None,
) -> None:
    """Raise ``AiormqChanged`` if the fast path cannot work on these classes."""
    missing = missing_internals(channel_class, frame_class)
    if missing:
        version = version or importlib.metadata.version("aiormq")
        raise AiormqChanged(
            f"aiormq {version} changed: {'; '.join(missing)}. vumi_like's publish fast path"
            f" (vumi_like/broker/aiormq_internals.py) needs {NEEDED}"
        )


check()


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
        self.publishes: list[Any] = []
        self.settles: dict[aiormq.Channel, list[spec.Basic.Ack | spec.Basic.Nack]] = {}

    def publish(
        self,
        channel: aiormq.Channel | None,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any] | None,
        confirmed: Callable[[asyncio.Future[Any]], None],
    ) -> bool:
        """Add a persistent, mandatory publish on ``channel``, as aiormq's
        ``basic_publish`` would send it; ``confirmed(future)`` is called when aiormq
        settles its confirmation (a confirm, a return, a nack, or the channel closing).

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
        self.publish_channel = channel
        message_id = uuid.uuid4().hex
        properties = spec.Basic.Properties(
            delivery_mode=2,
            content_type="application/json",
            headers=dict(headers) if headers else None,
            message_id=message_id,
        )
        frames = self.publishes
        frames.append(
            spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True)
        )
        frames.append(ContentHeader(properties=properties, body_size=len(body)))
        frames.extend(channel._split_body(body))
        channel.delivery_tag += 1
        delivery_tag = channel.delivery_tag
        confirmation = channel.create_future()
        channel.confirmations[delivery_tag] = confirmation
        tags = channel.message_id_delivery_tag
        tags[message_id] = delivery_tag

        def settled(future: asyncio.Future[Any]) -> None:
            # What aiormq's own publish does once confirmed: forget the id of a message
            # that can no longer be returned (unless the tag was reused meanwhile).
            if tags.get(message_id) == delivery_tag:
                del tags[message_id]
            confirmed(future)

        confirmation.add_done_callback(settled)
        return True

    def settle(self, tag: tuple[aiormq.Channel, int], ack: bool) -> None:
        """Add an ack (``ack``) or a requeue of the delivery ``tag``: (channel, tag)."""
        channel, delivery_tag = tag
        frame: spec.Basic.Ack | spec.Basic.Nack
        if ack:
            frame = spec.Basic.Ack(delivery_tag=delivery_tag)
        else:
            frame = spec.Basic.Nack(delivery_tag=delivery_tag, requeue=True)
        frames = self.settles.get(channel)
        if frames is None:
            frames = self.settles[channel] = []
        frames.append(frame)

    def write(self) -> list[tuple[aiormq.Channel, list[spec.Basic.Ack | spec.Basic.Nack]]]:
        """Queue everything added for the writer, and start an empty batch.

        Returns the acks and requeues that must take aiormq's own calls instead, by
        channel (closed or closing, or its write queue full).
        """
        if self.publishes:
            channel = self.publish_channel
            assert channel is not None  # the publishes were added on it
            _write(channel, self.publishes)
            self.publishes = []
            self.publish_channel = None
        slow = []
        if self.settles:
            for channel, frames in self.settles.items():
                if (
                    channel.is_closed
                    or getattr(channel, CLOSE_EVENT).is_set()
                    or channel.write_queue.full()
                ):
                    slow.append((channel, frames))
                else:
                    _write(channel, frames)
            self.settles = {}
        return slow


def _write(channel: aiormq.Channel, frames: list[Any]) -> None:
    """Queue ``frames`` for ``channel`` as one writer entry (one socket write)."""
    channel.write_queue.put_nowait(
        ChannelFrame.marshall(frames=frames, channel_number=channel.number, drain_future=None)
    )
