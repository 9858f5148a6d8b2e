"""The broker's I/O loop: uvloop's by default, asyncio's when asked, a bad choice refused."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from vumi_like.broker import BrokerError
from vumi_like.broker.bridge import LOOP_ENV, new_io_loop


@pytest.mark.parametrize(
    ("choice", "loop_class"),
    [
        (None, uvloop.Loop),
        ("", uvloop.Loop),
        ("uvloop", uvloop.Loop),
        ("asyncio", asyncio.BaseEventLoop),
    ],
)
def test_the_io_loop_is_the_one_chosen(
    monkeypatch: pytest.MonkeyPatch, choice: str | None, loop_class: type
) -> None:
    if choice is None:
        monkeypatch.delenv(LOOP_ENV, raising=False)
    else:
        monkeypatch.setenv(LOOP_ENV, choice)
    loop = new_io_loop()
    try:
        assert isinstance(loop, loop_class)
        assert isinstance(loop, uvloop.Loop) == (choice != "asyncio")
    finally:
        loop.close()


def test_an_unknown_loop_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "tokio")
    with pytest.raises(
        BrokerError, match=r"VUMI_LIKE_ASYNCIO_LOOP must be uvloop or asyncio, not 'tokio'"
    ):
        new_io_loop()
