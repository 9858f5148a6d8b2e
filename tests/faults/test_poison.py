"""Poison input ends in the dead-letter queue with a reason, or as a problem answer,
and the good messages mixed in with it all arrive.

The Messaging API pipeline (API, dispatcher, router, simulator) runs as processes; the
router also serves an application connector of the test's (``raw``), so that good
envelopes sent straight to the router come back to the test as events. Poison goes in
at every door: the HTTP API (not JSON, wrong types, a body over ``max_body_bytes``, an
unknown channel), the router's and the transport's queues (not JSON, wrong types,
missing fields, a huge body, an unknown transport, an event for an outbound never
routed, binary), the dispatcher's (an event for an unknown message or of an unknown
type, an inbound on a channel no tenant has, a malformed webhook job). Every poison
envelope must come out of the dead-letter queue once, from the queue it was sent to,
with its reason; every good message must get its ack (raw envelopes) or its DELIVERED
webhook (POSTs); every worker must still be running.

How much the poison slows the good messages is measured by ``bench/poison.py``, not here.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from tests.faults.harness import (
    MESSAGES,
    POSTGRES_URL,
    Poison,
    Tally,
    WebhookReceiver,
    api_pipeline,
    api_queues,
    consume_events,
    dispatcher_poisons,
    drop_schema,
    envelope_poisons,
    fleet_in_tmp,
    letter_error,
    outbound,
    own_broker,
    post_all,
    publish_all,
    subscribe,
    wait_for_letters,
)
from vumi_like.broker import BrokerInspector
from vumi_like.messages import Event, EventType

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

GOOD_ENVELOPES = MESSAGES // 5
GOOD_POSTS = 100
ROUNDS = 5  # each kind of poison, this many times
MAX_BODY = 64 * 1024
DRAIN_TIMEOUT = 60


async def test_poison_is_dead_lettered_or_refused_and_good_messages_flow(
    services: None, unique: str
) -> None:
    prefix = f"{unique}-"
    connector, transport, raw = f"{prefix}messaging", f"{prefix}sms", f"{prefix}raw"
    schema = unique.replace("-", "_")
    store = {"store_url": POSTGRES_URL, "store_schema": schema}
    poisons = [
        poison
        for n in range(ROUNDS)
        for poison in envelope_poisons(raw, transport, n) + dispatcher_poisons(connector, n)
    ]
    good = [outbound(unique, i, transport) for i in range(GOOD_ENVELOPES)]
    acks = Tally(sent={m.message_id for m in good})
    receiver = WebhookReceiver()
    delivered = receiver.tally("DELIVERED")
    accepted: set[str] = set()

    def on_event(event: Event) -> None:
        if event.event_type == EventType.ACK:
            acks.arrive(event.user_message_id)

    queues = [*api_queues(prefix), f"{raw}.outbound", f"{raw}.inbound", f"{raw}.event"]
    try:
        async with own_broker(queues) as broker:
            with fleet_in_tmp() as fleet:
                api_pipeline(
                    fleet, prefix, store, api={"max_body_bytes": MAX_BODY}, extra_apps=("raw",)
                )
                async with trio.open_nursery() as nursery:
                    await nursery.start(receiver.serve)
                    await nursery.start(consume_events, broker, f"{raw}.event", on_event)
                    await fleet.wait_healthy()
                    headers = await subscribe(fleet.url("api0"), receiver)
                    # Poison and good messages at once, through every door.
                    async with (
                        httpx.AsyncClient(
                            base_url=fleet.url("api0"), headers=headers, timeout=30
                        ) as client,
                        trio.open_nursery() as senders,
                    ):
                        senders.start_soon(publish_poison, broker, poisons)
                        senders.start_soon(
                            publish_all, broker, f"{raw}.outbound", [m.to_json() for m in good]
                        )
                        senders.start_soon(post_all, [client], GOOD_POSTS, accepted)
                        problems = await post_poison(client)
                    delivered.sent = set(accepted)
                    with trio.move_on_after(DRAIN_TIMEOUT):
                        await acks.wait_all()
                        await delivered.wait_all()
                    # The last poison may still be on its way to the dead-letter queue.
                    letters = await wait_for_letters(broker, unique, len(poisons))
                    nursery.cancel_scope.cancel()
                fleet.check_alive()
    finally:
        drop_schema(POSTGRES_URL, schema)

    assert not acks.missing, acks.report("acks of good envelopes")
    assert not delivered.missing, delivered.report("DELIVERED webhooks of good POSTs")
    for what, (status, problem) in problems.items():
        expected = EXPECTED_PROBLEMS[what]
        assert (status, problem.get("code")) == expected, (what, problem)
        assert problem.get("status") == status and problem.get("detail"), (what, problem)
    by_body = {poison.body: poison for poison in poisons}
    found: dict[bytes, int] = {}
    for letter in letters:
        poison = by_body.get(letter.delivery.body)
        assert poison is not None, f"a dead letter that is no poison: {letter.summary()}"
        assert letter.source_queue == poison.queue, (poison.what, letter.summary())
        assert poison.reason in letter_error(letter), (poison.what, letter_error(letter))
        found[letter.delivery.body] = found.get(letter.delivery.body, 0) + 1
    lost = sorted({by_body[body].what for body in by_body.keys() - found.keys()})
    assert not lost, f"poison neither dead-lettered nor refused: {lost}"
    print(
        f"{len(letters)} dead letters for {len(poisons)} poison envelopes, "
        f"{len(problems)} problem answers; {acks.report('good envelopes')}; "
        f"{delivered.report('good POSTs')}"
    )


EXPECTED_PROBLEMS = {
    "not JSON": (400, "VALIDATION_FAILED"),
    "wrong types": (400, "VALIDATION_FAILED"),
    "huge body": (413, "PAYLOAD_TOO_LARGE"),
    "unknown channel": (404, "CHANNEL_NOT_FOUND"),
}


async def post_poison(client: httpx.AsyncClient) -> dict[str, tuple[int, dict[str, object]]]:
    """Each kind of bad request once: its status and problem document."""
    requests: dict[str, dict[str, Any]] = {
        "not JSON": {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        "wrong types": {"json": {"channel": 5, "receiver": ["+27820000000"], "content": 7}},
        "huge body": {
            "json": {"channel": "sms", "receiver": "+27820000000", "content": "x" * 2 * MAX_BODY}
        },
        "unknown channel": {
            "json": {"channel": "nowhere", "receiver": "+27820000000", "content": "hi"}
        },
    }
    answers: dict[str, tuple[int, dict[str, object]]] = {}
    for what, request in requests.items():
        answer = await client.post("/v1/messages", **request)
        assert answer.headers["content-type"].startswith("application/problem+json"), what
        answers[what] = (answer.status_code, answer.json())
    return answers


async def publish_poison(broker: BrokerInspector, poisons: list[Poison]) -> None:
    for poison in poisons:
        await broker.publish(poison.queue, poison.body)
