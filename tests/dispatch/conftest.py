"""Fixtures and helpers for the event dispatcher's tests.

The pipeline fixtures (``deployment``, ``target``, ``pipeline_broker``) are the Messaging
API's: every end-to-end test here runs on memory broker + SQLite and on RabbitMQ +
PostgreSQL.

Waiting for "nothing more will happen" has no event to wait on, so the helpers read the
connectors' own metrics instead of sleeping: a queue is settled when every delivery
published to it (or handed back for a retry) has been through its handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from tests.applications.messaging_api.conftest import (  # noqa: F401
    deployment,
    pipeline_broker,
    target,
)
from tests.applications.messaging_api.harness import Pipeline
from vumi_like.messages import Event, Message
from vumi_like.metrics import REGISTRY
from vumi_like.stores import DeliveryState, StoredMessage

SMS = {"channel": "sms", "receiver": "+27820000001", "content": "hello"}


async def send_sms(p: Pipeline, tenant: str = "acme", **fields: object) -> str:
    response = await p.post("/v1/messages", {**SMS, **fields}, tenant)
    assert response.status_code == 202, response.text
    return str(response.json()["messageId"])


async def subscribe(p: Pipeline, url: str, *event_types: str, tenant: str = "acme") -> str:
    response = await p.post("/v1/webhooks", {"url": url, "eventTypes": list(event_types)}, tenant)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def publish_event(p: Pipeline, event: Event) -> None:
    await p.broker.publish(f"{p.connector}.event", event.to_json())


async def publish_inbound(p: Pipeline, message: Message) -> None:
    await p.broker.publish(f"{p.connector}.inbound", message.to_json())


async def stored(p: Pipeline, message_id: str, tenant: str = "acme") -> StoredMessage:
    message = await p.store.get_message(tenant, message_id)
    assert message is not None, f"no message {message_id!r} for {tenant!r}"
    return message


async def delivery_done(p: Pipeline, delivery_id: str) -> bool:
    """Whether the store has the webhook delivery recorded as delivered."""
    delivery = await p.store.get_delivery(delivery_id)
    return delivery is not None and delivery.state == DeliveryState.DELIVERED


async def poll(condition: Callable[[], Awaitable[bool]], within: float = 10) -> None:
    """Until ``condition()`` holds: for state that announces no change (the store, the
    metrics), read as an operator or a client would."""
    with trio.fail_after(within):
        while not await condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def wait_for_transitions(
    p: Pipeline, message_id: str, count: int, tenant: str = "acme", within: float = 10
) -> None:
    """Until the store has ``count`` transitions for the message."""

    async def recorded() -> bool:
        return len((await stored(p, message_id, tenant)).transitions) >= count

    await poll(recorded, within)


def _sum(metric: str, queue: str) -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == metric and sample.labels.get("queue") == queue
    )


def published(queue: str) -> int:
    """Deliveries published to ``queue`` (first times, not retries), across all workers."""
    return int(_sum("vumi_like_published_total", queue))


def handled(queue: str) -> int:
    """Deliveries of ``queue`` whose handler has finished, across all workers."""
    return int(_sum("vumi_like_handler_seconds_count", queue))


async def wait_handled(queue: str, count: int, within: float = 10) -> None:
    async def done() -> bool:
        return handled(queue) >= count

    await poll(done, within)


async def wait_settled(queue: str, within: float = 10) -> None:
    """Until every delivery published to ``queue``, first time or retry, was handled."""

    async def settled() -> bool:
        sent = _sum("vumi_like_published_total", queue) + _sum("vumi_like_retried_total", queue)
        return handled(queue) >= sent

    await poll(settled, within)
