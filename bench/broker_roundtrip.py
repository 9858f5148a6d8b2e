"""Publish + consume + ack N persistent envelopes through RabbitMQ, two ways, in one run.

1. ``vumi_like`` RabbitMQ broker, driven from trio (the I/O-thread bridge);
2. plain asyncio + aio-pika, the baseline the bridge is measured against.

Both publish with publisher confirms and ``delivery_mode=2``, keep ``--in-flight``
publishes outstanding (that many publisher tasks, each awaiting its confirm), and
consume with prefetch ``--prefetch``, acking every message singly. The body is a real
serialised vumi user_message. Prints msg/s for each and the ratio (trio / asyncio).

    python bench/broker_roundtrip.py [--count 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import aio_pika
import trio

from vumi_like.broker import open_inspector
from vumi_like.messages import Message

AMQP_URL = os.environ.get("VUMI_LIKE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def sample_body() -> bytes:
    return Message(
        to_addr="+27820000001",
        from_addr="12345",
        transport_name="bench",
        transport_type="sms",
        content="hello from the benchmark",
    ).to_json()


async def run_trio(count: int, in_flight: int, prefetch: int, body: bytes) -> float:
    queue = f"bench-trio-{uuid.uuid4().hex[:8]}"
    async with open_inspector(AMQP_URL) as broker:
        await broker.declare_queue(queue)
        try:
            start = time.perf_counter()

            async def publisher(first: int) -> None:
                for _ in range(first, count, in_flight):
                    await broker.publish(queue, body)

            async with trio.open_nursery() as nursery:
                for i in range(in_flight):
                    nursery.start_soon(publisher, i)
                received = 0
                async with broker.consume(queue, prefetch=prefetch) as subscription:
                    async for delivery in subscription:
                        broker.ack(delivery)
                        received += 1
                        if received == count:
                            break
            elapsed = time.perf_counter() - start
        finally:
            await broker.delete_queue(queue)
    return count / elapsed


async def run_asyncio(count: int, in_flight: int, prefetch: int, body: bytes) -> float:
    queue_name = f"bench-asyncio-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        exchange = await channel.declare_exchange(
            "vumi", aio_pika.ExchangeType.DIRECT, durable=True
        )
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(exchange, routing_key=queue_name)
        done = asyncio.get_running_loop().create_future()
        received = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == count and not done.done():
                done.set_result(None)

        start = time.perf_counter()
        consumer_tag = await queue.consume(on_message)

        async def publisher(first: int) -> None:
            for _ in range(first, count, in_flight):
                await exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue_name,
                )

        await asyncio.gather(*(publisher(i) for i in range(in_flight)))
        await done
        elapsed = time.perf_counter() - start
        await queue.cancel(consumer_tag)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")
    args = parser.parse_args()
    body = sample_body()
    trio_rates, asyncio_rates = [], []
    for round_no in range(1, args.rounds + 1):
        asyncio_rates.append(
            asyncio.run(run_asyncio(args.count, args.in_flight, args.prefetch, body))
        )
        trio_rates.append(trio.run(run_trio, args.count, args.in_flight, args.prefetch, body))
        print(
            f"round {round_no}: asyncio aio-pika {asyncio_rates[-1]:8.0f} msg/s"
            f"   vumi_like trio broker {trio_rates[-1]:8.0f} msg/s"
        )
    a, t = statistics.median(asyncio_rates), statistics.median(trio_rates)
    print(f"messages per run:           {args.count} ({len(body)} bytes, persistent, confirms)")
    print(f"plain asyncio + aio-pika:   {a:8.0f} msg/s (median of {args.rounds})")
    print(f"vumi_like broker from trio: {t:8.0f} msg/s (median of {args.rounds})")
    print(f"ratio trio / asyncio:       {t / a:8.2f}")


if __name__ == "__main__":
    main()
