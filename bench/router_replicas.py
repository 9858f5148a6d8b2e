"""Router replicas on one queue: throughput with 1, 2 and 4 ToAddressRouter processes.

Workers scale by running more replicas against the same queues (competing consumers).
For each replica count: preload N persistent envelopes into ``<app>.outbound``, start
that many ``vumi-like worker vumi_like.routers.ToAddressRouter`` processes on it, and
time how long the N take to arrive on ``<transport>.outbound``, from the first
arrival (process start-up is not counted), as ``bench/router_hop.py`` does for one.

What it shows depends on the cores: each replica is one process with its own I/O
thread, and RabbitMQ runs on the same machine, so on 2 cores a second replica gains
only what one replica leaves idle while it waits on the broker, and a fourth mostly
adds contention. The script prints the machine's core count beside the figures.

    python bench/router_replicas.py [--count 10000] [--replicas 1 2 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import uuid

# Run as a script, so bench/ is on the path: the same preload, timing and router
# config as the one-router benchmark.
from router_hop import cleanup, preload, router_command, rss_kib, wait_arrivals


def run_replicas(
    replicas: int, count: int, concurrency: int, config_dir: str
) -> tuple[float, int]:
    """msg/s through ``replicas`` routers on one queue, and their total RSS (KiB)."""
    tag = uuid.uuid4().hex[:6]
    app, transport = f"bench-app-{tag}", f"bench-sms-{tag}"
    asyncio.run(preload(app, transport, count))
    command = router_command(app, transport, config_dir, concurrency=concurrency)
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(replicas)
    ]
    try:
        elapsed = asyncio.run(wait_arrivals(f"{transport}.outbound", count, within=600))
        rss = sum(rss_kib(process.pid) for process in processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                _, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
            if process.returncode not in (0, -15):
                sys.stderr.write(stderr.decode(errors="replace")[-2000:])
        queues = ("outbound", "inbound", "event")
        asyncio.run(
            cleanup(*(f"{app}.{q}" for q in queues), *(f"{transport}.{q}" for q in queues))
        )
    return count / elapsed, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=20, help="worker_concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")
    args = parser.parse_args()

    rates: dict[int, list[float]] = {n: [] for n in args.replicas}
    rss: dict[int, list[int]] = {n: [] for n in args.replicas}
    with tempfile.TemporaryDirectory() as config_dir:
        # Rounds alternate the replica counts, so a slow spell of the machine does not
        # land on one of them only.
        for round_no in range(1, args.rounds + 1):
            for replicas in args.replicas:
                rate, kib = run_replicas(replicas, args.count, args.concurrency, config_dir)
                rates[replicas].append(rate)
                rss[replicas].append(kib)
                print(
                    f"round {round_no}: {replicas} replica(s) {rate:8.0f} msg/s"
                    f"   RSS total {kib / 1024:6.1f} MiB",
                    flush=True,
                )
    print(
        f"messages per run: {args.count}; worker_concurrency {args.concurrency};"
        f" {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}),"
        " RabbitMQ on the same machine"
    )
    one = statistics.median(rates[args.replicas[0]])
    for replicas in args.replicas:
        median = statistics.median(rates[replicas])
        print(
            f"median of {args.rounds}: {replicas} replica(s) {median:8.0f} msg/s"
            f"   x{median / one:4.2f} of {args.replicas[0]}"
            f"   RSS total max {max(rss[replicas]) / 1024:6.1f} MiB"
        )


if __name__ == "__main__":
    main()
