"""Fixtures for the SMPP tests: a fake SMSC serving on 127.0.0.1, and an inbox."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.transports.smpp.smsc import FakeSmsc, start_fake_smsc
from vumi_like.transports.smpp.esme import EsmeSettings
from vumi_like.transports.smpp.pdus import DeliverSm


@pytest.fixture
async def smsc(nursery: trio.Nursery) -> FakeSmsc:
    return await start_fake_smsc(nursery)


def esme_settings(smsc: FakeSmsc, **overrides: Any) -> EsmeSettings:
    """Settings to bind to ``smsc``, with timings short enough for tests."""
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": smsc.system_id,
        "password": smsc.password,
        "response_timeout": 2.0,
        "unbind_timeout": 1.0,
        "enquire_link_interval": 60.0,
    }
    return EsmeSettings(**{**fields, **overrides})


class Inbox:
    """An ``on_deliver`` callback that keeps what it gets, to be awaited one by one."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[DeliverSm](100)

    async def __call__(self, deliver: DeliverSm) -> None:
        await self._send.send(deliver)

    async def get(self) -> DeliverSm:
        return await self._receive.receive()

    def empty(self) -> bool:
        return self._receive.statistics().current_buffer_used == 0


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()
