"""One router hop on RabbitMQ: ToAddressRouter against a minimal aio-pika forwarder.

For each contender: preload N persistent vumi envelopes into ``<app>.outbound``, start
the forwarder as its own process, and time how long the N take to arrive on
``<transport>.outbound``. The clock starts when the first envelope arrives there, so
process start-up (imports, connecting) is not counted for either.

* ``ToAddressRouter``: ``vumi-like worker vumi_like.routers.ToAddressRouter`` with a
  memory message cache, ``worker_concurrency`` as given (``--concurrency``).
* baseline: plain asyncio aio-pika written below, the obvious way: prefetch 20,
  publisher confirms, and per message decode JSON, re-encode, publish, await the
  confirm, ack.

Prints msg/s for both, the ratio, and the router's resident memory (VmRSS) after the
run, which must stay flat as N grows (the cache is bounded by ``max_entries``).

    python bench/router_hop.py [--count 10000] [--concurrency 20 100] [--rounds 3]
    python bench/router_hop.py --count 100000 --concurrency 100 --skip-baseline --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
import yaml

AMQP_URL = os.environ.get("VUMI_LIKE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CACHE_MAX_ENTRIES = 10_000


def envelope(i: int, transport: str) -> bytes:
    return json.dumps(
        {
            "to_addr": f"+2782{i:07d}",
            "from_addr": "12345",
            "transport_name": transport,
            "transport_type": "sms",
            "message_version": "20110921",
            "message_type": "user_message",
            "timestamp": "2026-11-23 12:00:00.000000",
            "routing_metadata": {},
            "helper_metadata": {},
            "message_id": uuid.uuid4().hex,
            "in_reply_to": None,
            "provider": None,
            "session_event": None,
            "content": f"benchmark message number {i}",
            "transport_metadata": {},
            "group": None,
            "to_addr_type": None,
            "from_addr_type": None,
        }
    ).encode()


async def declare(channel: aio_pika.abc.AbstractChannel, name: str) -> aio_pika.abc.AbstractQueue:
    exchange = await channel.declare_exchange("vumi", aio_pika.ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(name, durable=True)
    await queue.bind(exchange, routing_key=name)
    return queue


async def preload(app: str, transport: str, count: int) -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare(channel, f"{app}.outbound")
        await declare(channel, f"{transport}.outbound")
        exchange = await channel.get_exchange("vumi")
        batch = 200
        for start in range(0, count, batch):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(envelope(i, transport), delivery_mode=2),
                        routing_key=f"{app}.outbound",
                    )
                    for i in range(start, min(start + batch, count))
                )
            )


async def wait_arrivals(queue_name: str, count: int, within: float) -> float:
    """Seconds from the first arrival on ``queue_name`` until ``count`` are there."""
    # A plain connection: a robust channel answers a repeated passive declare from
    # its cache, with the message count of the first one.
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        deadline = time.monotonic() + within
        first: float | None = None
        while time.monotonic() < deadline:
            queue = await channel.declare_queue(queue_name, passive=True)
            arrived = queue.declaration_result.message_count or 0
            now = time.perf_counter()
            if arrived and first is None:
                first = now
            if arrived >= count:
                assert first is not None
                return now - first
            await asyncio.sleep(0.02)
    raise TimeoutError(f"only part of {count} arrived on {queue_name} within {within}s")


async def cleanup(*queues: str) -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_contender(command: list[str], app: str, transport: str, count: int) -> tuple[float, int]:
    asyncio.run(preload(app, transport, count))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Arrivals are counted (not consumed), so the (first) ~0.6 s of settling
        # is in the window too; the ack of the last is not.
        elapsed = asyncio.run(wait_arrivals(f"{transport}.outbound", count, within=600))
        rss = rss_kib(process.pid)
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        asyncio.run(
            cleanup(
                f"{app}.outbound",
                f"{transport}.outbound",
                f"{app}.inbound",
                f"{app}.event",
                f"{transport}.inbound",
                f"{transport}.event",
            )
        )
    if process.returncode not in (0, -15):
        sys.stderr.write(stderr.decode(errors="replace")[-2000:])
        raise RuntimeError(f"{command[:3]} exited {process.returncode}")
    return count / elapsed, rss


def router_command(app: str, transport: str, config_dir: str, *, concurrency: int) -> list[str]:
    config = {
        "amqp_url": AMQP_URL,
        "worker_concurrency": concurrency,
        "log_level": "WARNING",
        "transport_names": [transport],
        "to_address_mappings": {app: ".*"},
        "message_cache_class": "memory",
        "message_cache_config": {"max_entries": CACHE_MAX_ENTRIES},
    }
    path = Path(config_dir) / f"router-{concurrency}.yaml"
    path.write_text(yaml.safe_dump(config))
    vumi_like = Path(sys.executable).with_name("vumi-like")
    return [str(vumi_like), "worker", "vumi_like.routers.ToAddressRouter", "--config", str(path)]


# ------------------------------------------------------------------ the baseline


def forwarder_command(app: str, transport: str, _config_dir: str) -> list[str]:
    return [sys.executable, __file__, "--forwarder", app, transport]


async def forward(app: str, transport: str) -> None:
    """The naive forwarder: prefetch 20, one confirmed publish per message, then ack."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=20)
    source = await declare(channel, f"{app}.outbound")
    exchange = await channel.get_exchange("vumi")

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        msg = json.loads(message.body)
        body = json.dumps(msg).encode()
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=2),
            routing_key=f"{msg['transport_name']}.outbound",
        )
        await message.ack()

    await source.consume(on_message)
    await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")
    parser.add_argument(
        "--forwarder", nargs=2, metavar=("APP", "TRANSPORT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.forwarder:
        asyncio.run(forward(*args.forwarder))
        return

    contenders: list[tuple[str, Callable[[str, str, str], list[str]]]] = []
    if not args.skip_baseline:
        contenders.append(("aio-pika forwarder, prefetch 20", forwarder_command))
    for concurrency in args.concurrency:
        contenders.append(
            (
                f"ToAddressRouter, worker_concurrency {concurrency}",
                functools.partial(router_command, concurrency=concurrency),
            )
        )

    # Rounds alternate the contenders, so a slow spell of the machine (RabbitMQ
    # compacting its message store, say) does not land on one of them only.
    rates: dict[str, list[float]] = {name: [] for name, _ in contenders}
    rss: dict[str, list[int]] = {name: [] for name, _ in contenders}
    with tempfile.TemporaryDirectory() as config_dir:
        for round_no in range(1, args.rounds + 1):
            for index, (name, make_command) in enumerate(contenders):
                tag = uuid.uuid4().hex[:6]
                app, transport = f"bench-app-{tag}-{index}", f"bench-sms-{tag}-{index}"
                rate, kib = run_contender(
                    make_command(app, transport, config_dir), app, transport, args.count
                )
                rates[name].append(rate)
                rss[name].append(kib)
                print(
                    f"round {round_no}: {name:<40} {rate:8.0f} msg/s   RSS {kib / 1024:6.1f} MiB",
                    flush=True,
                )
    print(f"messages per run: {args.count}; router cache max_entries {CACHE_MAX_ENTRIES}")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, _ in contenders:
        print(
            f"median of {args.rounds}: {name:<40} {medians[name]:8.0f} msg/s   "
            f"RSS max {max(rss[name]) / 1024:6.1f} MiB"
        )
    if not args.skip_baseline:
        baseline_name = contenders[0][0]
        for name, _ in contenders[1:]:
            per_round = [r / b for r, b in zip(rates[name], rates[baseline_name], strict=True)]
            print(
                f"ratio {name} / baseline: {medians[name] / medians[baseline_name]:5.2f} "
                f"(rounds {min(per_round):.2f}-{max(per_round):.2f})"
            )


if __name__ == "__main__":
    main()
