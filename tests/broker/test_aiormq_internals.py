"""The publish fast path's use of aiormq internals is checked once, at import."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
from collections.abc import Iterable
from typing import Any

import aiormq
import pamqp.frame
import pytest
from aiormq import spec
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

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


def test_body_frames_are_pamqps_split_at_the_frame_size() -> None:
    body = bytes(range(256)) * 40  # 10,240 bytes: three frames of at most 4,088
    frames = aiormq_internals.body_frames(2, body, 4088)
    assert len(frames) == 3
    expected = [pamqp_frame(ContentBody(body[i : i + 4088]), 2) for i in (0, 4088, 8176)]
    assert frames == expected


@pytest.mark.parametrize("tag", [1, 2**31, 2**63 - 1])
def test_ack_and_requeue_frames_are_pamqps(tag: int) -> None:
    ack = pamqp_frame(spec.Basic.Ack(delivery_tag=tag), 5)
    requeue = pamqp_frame(spec.Basic.Nack(delivery_tag=tag, requeue=True), 5)
    assert aiormq_internals.settle_frame(5, tag, ack=True) == ack
    assert aiormq_internals.settle_frame(5, tag, ack=False) == requeue


def test_a_routing_key_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        aiormq_internals.publish_method(1, "vumi", "q" * 256)
