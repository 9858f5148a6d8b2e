"""Good messages' throughput with poison mixed in, against a clean run.

A ``ToAddressRouter`` and a ``SimulatorTransport`` (ack and delivered report at once,
``worker_concurrency`` 50 each) run as processes on RabbitMQ, with queue names of
their own. The script publishes ``--count`` good outbound envelopes onto the
application's outbound queue (50 publishes in flight) and times, from the first
publish, the arrival of the last good message's ack back on the application's event
queue: good msg/s. A **clean** run sends only those; a **mixed** run sends them the
same way and, at the same time, ``--poison`` poison envelopes per good message from
a client process of its own (one publisher per queue, each with a window in proportion
to its share), as poison comes from other clients than the good traffic does: the
process that times the good messages does not also produce the poison. The poison
cycles through the kinds the fault suite uses (``tests/faults/harness.py``'s
``envelope_poisons``: not JSON, wrong types, missing fields, a body of ``--huge-bytes``
that is no envelope, an unknown transport, an event for an outbound never routed,
binary, a JSON list), each dead-lettered by the worker it reaches. Clean and mixed runs
alternate ``--rounds`` times on the same processes; the medians and their ratio are
printed (the target: mixed within 20 % of clean, a ratio of 0.8 or more). Each round
also prints the CPU milliseconds per good message that the router, the transport and
this script spent from the first publish to the last ack (from /proc/<pid>/stat), and
in a mixed run the poison client's for publishing its poison: what the poison costs,
and where. RabbitMQ's, over the same time, follows their sum when it runs on this
machine.

    python bench/poison.py [--count 5000] [--poison 0.25] [--rounds 3] [--huge-bytes N]

RabbitMQ comes from ``VUMI_LIKE_TEST_AMQP_URL`` (default: local guest). The run's
queues and dead letters are deleted afterwards.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from subprocess import PIPE
from urllib.parse import urlsplit

import trio

# The fault suite's harness (worker processes, poison) is this script's too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api_pipeline import LOCAL_HOSTS, cpu_seconds, service_cpu_seconds
from tests.faults.harness import (
    AMQP_URL,
    Fleet,
    Tally,
    consume_events,
    envelope_path,
    envelope_poisons,
    envelope_queues,
    fleet_in_tmp,
    outbound,
    own_broker,
    publish_all,
    wait_for_letters,
)
from vumi_like.broker import BrokerInspector, open_inspector
from vumi_like.messages import Event, EventType

DRAIN_TIMEOUT = 120
PUBLISH_WINDOW = 50  # the good messages' publishes awaiting their confirms at once
RABBITMQ = "RabbitMQ"


def poison_bodies(
    app: str, transport: str, count: int, poison: float, huge_bytes: int
) -> dict[str, list[bytes]]:
    """The poison sent with ``count`` good messages, by queue, in the order it is sent."""
    names = [kind.what for kind in envelope_poisons(app, transport)]
    by_queue: dict[str, list[bytes]] = {}
    poisons, owed = 0, 0.0
    for n in range(count):
        owed += poison
        while owed >= 1:
            name = names[poisons % len(names)]
            size = huge_bytes if name.startswith("huge") else 0  # only the one built is sent
            kind = envelope_poisons(app, transport, n, size)[poisons % len(names)]
            by_queue.setdefault(kind.queue, []).append(kind.body)
            poisons += 1
            owed -= 1
    return by_queue


async def poison_client(args: argparse.Namespace) -> None:
    """The poison's own client: connect, say ``ready``, publish on ``go``, say ``done``."""
    by_queue = poison_bodies(args.app, args.transport, args.count, args.poison, args.huge_bytes)
    async with open_inspector(AMQP_URL) as broker:
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        started = time.process_time()
        async with trio.open_nursery() as nursery:
            for queue, share in by_queue.items():
                concurrency = max(1, round(PUBLISH_WINDOW * len(share) / args.count))
                nursery.start_soon(
                    functools.partial(publish_all, broker, queue, share, concurrency=concurrency)
                )
    print("done", sum(map(len, by_queue.values())), time.process_time() - started, flush=True)


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            raise RuntimeError("the poison client exited early")
        line += chunk
    return line.decode().strip()


def cpu_now(fleet: Fleet) -> dict[str, float]:
    """CPU seconds so far of each worker and of this script, and of RabbitMQ when it
    runs on this machine."""
    pids = {name: worker.process.pid for name, worker in fleet.workers.items() if worker.process}
    used = {
        **{name: cpu_seconds(pid) for name, pid in pids.items()},
        "script": cpu_seconds(os.getpid()),
    }
    if urlsplit(AMQP_URL).hostname in LOCAL_HOSTS:
        used[RABBITMQ] = service_cpu_seconds()["rabbitmq"]
    return used


async def one_run(
    broker: BrokerInspector,
    fleet: Fleet,
    app: str,
    transport: str,
    count: int,
    poison: float,
    huge_bytes: int,
) -> tuple[float, int, dict[str, float]]:
    """Good msg/s, how many poison envelopes went with them, and the CPU milliseconds
    per good message each process spent from the first publish to the last ack (the
    poison client's: publishing it all)."""
    tag = uuid.uuid4().hex[:6]
    good = [outbound(f"{app} {tag}", i, transport) for i in range(count)]
    acks = Tally(sent={m.message_id for m in good})
    good_bodies = [message.to_json() for message in good]

    def on_event(event: Event) -> None:
        if event.event_type == EventType.ACK:
            acks.arrive(event.user_message_id)

    client = [sys.executable, __file__, "--client", app, transport]
    client += [f"--count={count}", f"--poison={poison}", f"--huge-bytes={huge_bytes}"]
    async with trio.open_nursery() as nursery:
        await nursery.start(consume_events, broker, f"{app}.event", on_event)
        process = None
        if poison:
            process = await nursery.start(
                functools.partial(trio.run_process, client, stdin=PIPE, stdout=PIPE)
            )
            assert await read_line(process.stdout) == "ready"
            await process.stdin.send_all(b"go\n")
        start, cpu_before = trio.current_time(), cpu_now(fleet)
        nursery.start_soon(
            functools.partial(
                publish_all, broker, f"{app}.outbound", good_bodies, concurrency=PUBLISH_WINDOW
            )
        )
        with trio.fail_after(DRAIN_TIMEOUT):
            await acks.wait_all()
        elapsed = trio.current_time() - start
        cpu = {name: seconds - cpu_before[name] for name, seconds in cpu_now(fleet).items()}
        poisons = 0
        if process is not None:
            with trio.fail_after(DRAIN_TIMEOUT):
                done, sent, client_cpu = (await read_line(process.stdout)).split()
                assert done == "done" and await process.wait() == 0
            poisons, cpu["poison client"] = int(sent), float(client_cpu)
        nursery.cancel_scope.cancel()
    per_message = {name: seconds * 1000 / count for name, seconds in cpu.items()}
    return count / elapsed, poisons, per_message


def cpu_line(per_message: dict[str, float]) -> str:
    ours = {name: ms for name, ms in per_message.items() if name != RABBITMQ}
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in ours.items())
    broker = f"; {RABBITMQ} {per_message[RABBITMQ]:.2f}" if RABBITMQ in per_message else ""
    return f"{sum(ours.values()):.2f} ({parts}){broker}"


async def measure(args: argparse.Namespace) -> None:
    unique = f"bench-poison-{uuid.uuid4().hex[:8]}"
    app, transport, queues = envelope_queues(unique)
    clean: list[float] = []
    mixed: list[float] = []
    letters = 0
    async with own_broker(queues) as broker:
        with fleet_in_tmp() as fleet:
            envelope_path(fleet, unique, app, transport, None)
            await fleet.wait_healthy()
            await one_run(broker, fleet, app, transport, 500, 0, 0)  # warm-up
            for round_ in range(args.rounds):
                rate, _, clean_cpu = await one_run(broker, fleet, app, transport, args.count, 0, 0)
                clean.append(rate)
                rate, poisons, mixed_cpu = await one_run(
                    broker, fleet, app, transport, args.count, args.poison, args.huge_bytes
                )
                mixed.append(rate)
                # Its dead letters, taken before the next run, which a queue of them
                # growing from round to round would slow.
                letters += len(await wait_for_letters(broker, unique, poisons, 120))
                print(
                    f"round {round_ + 1}: clean {clean[-1]:.0f} good msg/s, mixed "
                    f"{mixed[-1]:.0f} good msg/s ({poisons} poison envelopes); CPU ms per good "
                    f"message: clean {cpu_line(clean_cpu)}, mixed {cpu_line(mixed_cpu)}",
                    flush=True,
                )
    ratio = statistics.median(mixed) / statistics.median(clean)
    print(
        f"router + simulator, {args.count} good messages per run, {args.poison:g} poison "
        f"per good message (huge ones {args.huge_bytes} bytes): clean "
        f"{statistics.median(clean):.0f} msg/s, mixed "
        f"{statistics.median(mixed):.0f} msg/s (medians of {args.rounds}); ratio "
        f"{ratio:.3f} ({'within' if ratio >= 0.8 else 'NOT within'} 20 %); "
        f"{letters} poison envelopes dead-lettered"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="good messages per run")
    parser.add_argument(
        "--poison", type=float, default=0.25, help="poison envelopes per good message"
    )
    parser.add_argument("--rounds", type=int, default=3, help="clean/mixed pairs")
    parser.add_argument(
        "--huge-bytes",
        type=int,
        default=1_000_000,
        help="size of the huge poison body (one poison kind in eight)",
    )
    # The poison's client process (see one_run): the run's queues, given by the parent.
    parser.add_argument("--client", nargs=2, metavar=("APP", "TRANSPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        args.app, args.transport = args.client
        trio.run(poison_client, args)
    else:
        trio.run(measure, args)


if __name__ == "__main__":
    main()
