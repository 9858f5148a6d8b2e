"""The publish fast path's use of aiormq internals is checked once, at import."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Iterable

import aiormq
import pytest
from aiormq.abc import ChannelFrame

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


class FrameWithoutDrain:
    @classmethod
    def marshall(cls, channel_number: int, frames: list[object]) -> None: ...


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
    channel = stand_in_channel(["_split_body", "delivery_tag", "_Channel__lock"])
    assert missing_internals(channel, FrameWithoutDrain) == [
        "Channel has no method _split_body",
        "Channel.__init__ no longer sets _Channel__lock",
        "Channel.__init__ no longer sets delivery_tag",
        "FrameWithoutDrain.marshall takes no drain_future",
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
