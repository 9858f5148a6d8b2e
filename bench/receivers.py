"""A healthy webhook receiver's latency, alone and beside a slow or a failing one.

The Messaging API pipeline (API, event dispatcher, router, simulator; each its own
process, on RabbitMQ and PostgreSQL, queues and schema of its own) with the
dispatcher's defaults. The script POSTs ``--count`` messages at ``--rate`` msg/s
(open loop) in each of three phases and times, for each message, from its POST to
the DELIVERED webhook reaching the healthy receiver (subscribed to every status, so
three webhooks per message):

1. **alone**: only the healthy receiver is subscribed;
2. **beside a slow one**: a second receiver, subscribed to every status, takes
   ``--slow`` seconds (default 10) to answer each webhook;
3. **beside a failing one**: the slow one unsubscribed, a third receiver answering
   500 to everything is subscribed to every status.

p50, p99 and max of each phase are printed: the promise is that the second and third
stay close to the first (``vumi_like/dispatch/receivers.py`` keeps a receiver to its
share of the delivery slots).

    python bench/receivers.py [--count 300] [--rate 50] [--slow 10]

RabbitMQ and PostgreSQL come from ``VUMI_LIKE_TEST_AMQP_URL`` and
``VUMI_LIKE_TEST_POSTGRES_URL`` (default: local guest, and postgres@127.0.0.1/test).
"""

from __future__ import annotations

import argparse
import math
import sys
import uuid
from pathlib import Path

import httpx
import trio

# The fault suite's harness (worker processes, webhook receivers) is this script's too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.harness import (
    POSTGRES_URL,
    Attempt,
    WebhookReceiver,
    api_pipeline,
    api_queues,
    api_token,
    drop_schema,
    fleet_in_tmp,
    own_broker,
    sms,
    take_dead_letters,
)

DRAIN_TIMEOUT = 60


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def phase(
    client: httpx.AsyncClient, healthy: WebhookReceiver, args: argparse.Namespace, first: int
) -> tuple[list[float], int]:
    """Latencies (ms) POST -> DELIVERED at the healthy receiver, and how many did not
    arrive within the drain timeout (they count as slower than all the others)."""
    sent_at: dict[str, float] = {}
    delivered = healthy.tally("DELIVERED")
    arrived_at: dict[str, float] = {}

    async def send(i: int) -> None:
        sent = trio.current_time()
        answer = await client.post("/v1/messages", json=sms(i))
        if answer.status_code == 202:
            sent_at[answer.json()["messageId"]] = sent

    start = trio.current_time()
    async with trio.open_nursery() as senders:
        for n in range(args.count):
            await trio.sleep_until(start + n / args.rate)
            senders.start_soon(send, first + n)
    delivered.sent |= set(sent_at)
    with trio.move_on_after(DRAIN_TIMEOUT):
        await delivered.wait_all()
    for attempt in healthy.attempts:
        if attempt.status_code == "DELIVERED" and attempt.message_id in sent_at:
            arrived_at.setdefault(attempt.message_id, attempt.at)
    latencies = [1000 * (arrived_at[i] - sent_at[i]) for i in sent_at if i in arrived_at]
    return latencies, args.count - len(latencies)


async def measure(args: argparse.Namespace) -> None:
    unique = f"bench-receivers-{uuid.uuid4().hex[:8]}"
    schema = unique.replace("-", "_")
    store = {"store_url": POSTGRES_URL, "store_schema": schema}
    healthy, slow, failing = WebhookReceiver(), WebhookReceiver(), WebhookReceiver()

    async def take_a_while(attempt: Attempt) -> int:
        await trio.sleep(args.slow)
        return 204

    async def fail(attempt: Attempt) -> int:
        return 500

    slow.answers["/hook"] = take_a_while
    failing.answers["/hook"] = fail
    results: dict[str, tuple[list[float], int]] = {}
    try:
        async with own_broker(api_queues(f"{unique}-")) as broker:
            with fleet_in_tmp() as fleet:
                api_pipeline(fleet, f"{unique}-", store)
                async with trio.open_nursery() as nursery:
                    for receiver in (healthy, slow, failing):
                        await nursery.start(receiver.serve)
                    await fleet.wait_healthy()
                    async with httpx.AsyncClient(base_url=fleet.url("api0"), timeout=30) as c:
                        c.headers.update(await api_token(c))

                        async def subscribe(receiver: WebhookReceiver) -> str:
                            answer = await c.post(
                                "/v1/webhooks", json={"url": f"{receiver.base_url}/hook"}
                            )
                            answer.raise_for_status()
                            return str(answer.json()["id"])

                        await subscribe(healthy)
                        results["alone"] = await phase(c, healthy, args, 0)
                        slow_id = await subscribe(slow)
                        results[f"beside a slow ({args.slow:g} s) one"] = await phase(
                            c, healthy, args, args.count
                        )
                        (await c.delete(f"/v1/webhooks/{slow_id}")).raise_for_status()
                        await subscribe(failing)
                        results["beside a failing (500) one"] = await phase(
                            c, healthy, args, 2 * args.count
                        )
                    nursery.cancel_scope.cancel()
            await take_dead_letters(broker, unique)
    finally:
        drop_schema(POSTGRES_URL, schema)
    print(
        f"healthy receiver, POST -> DELIVERED webhook, {args.count} messages per phase at "
        f"{args.rate:g} msg/s:"
    )
    for name, (latencies, late) in results.items():
        padded = latencies + [math.inf] * late
        p50, p99 = percentile(padded, 50), percentile(padded, 99)
        print(
            f"  {name}: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(padded):.0f} ms"
            + (f" ({late} not within {DRAIN_TIMEOUT} s)" if late else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="messages per phase")
    parser.add_argument("--rate", type=float, default=50, help="offered msg/s")
    parser.add_argument("--slow", type=float, default=10, help="the slow receiver's seconds")
    trio.run(measure, parser.parse_args())


if __name__ == "__main__":
    main()
