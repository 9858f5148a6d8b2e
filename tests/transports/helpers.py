"""What transport tests share: the events a transport published."""

from __future__ import annotations

from tests.broker.test_contract import receive
from vumi_like.broker import Broker
from vumi_like.messages import Event


async def events(broker: Broker, unique: str, count: int) -> list[Event]:
    """The next ``count`` events on ``<unique>.event``, acked."""
    return [Event.from_json(d.body) for d in await receive(broker, f"{unique}.event", count)]
