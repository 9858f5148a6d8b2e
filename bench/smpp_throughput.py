"""SMPP throughput: submit_sm/s from SmppTransport to a local SMSC, alone and behind the API.

The SMSC is the tests' fake SMSC (``tests/transports/smpp/smsc.py``: real PDUs on a
socket, each submit_sm answered at once with a fresh id), run in this process on
127.0.0.1; ``--smsc-delay`` makes it take that long to answer each one, as a real
SMSC over a network does (the window then bounds throughput: ``window / delay``). Two
measurements:

1. **transport**: ``--count`` messages are put on a ``<name>.outbound`` queue in
   RabbitMQ first; then one ``SmppTransport`` process (``vumi-like worker``, window
   ``--window``, ``worker_concurrency`` 50) is started and drains it. Figures: submit_sm/s
   at the SMSC, from the first submit_sm to the last, and the time until every ``ack``
   was on the event queue;
2. **pipeline**: ``config/smpp.yaml`` run as is by ``vumi-like run`` (Messaging API,
   dispatcher, router and the transport in one process, memory broker, SQLite), bound to
   the fake SMSC; ``--count`` POST /v1/messages over ``--concurrency`` keep-alive
   connections. Figures: accepted msg/s (202s over the time from the first POST to the
   last 202), and SMS/s at the SMSC from the first submit_sm to the last.

Each prints the processes' CPU share and peak RSS, and the load average before it
started, since the machine may be shared.

    python bench/smpp_throughput.py [--count 5000] [--window 10] [--concurrency 32]
                                    [--only {transport,pipeline}] [--smsc-delay 0.0]

RabbitMQ comes from ``VUMI_LIKE_TEST_AMQP_URL`` (default: local guest).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.transports.smpp.smsc import FakeSmsc
from vumi_like.broker import open_inspector
from vumi_like.messages import Event, Message

AMQP_URL = os.environ.get("VUMI_LIKE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30
RUN_TIMEOUT = 300
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int | str) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vmhwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def process(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def vumi_like(*args: str) -> list[str]:
    return [sys.executable, "-m", "vumi_like.cli", *args]


def load_average() -> float:
    return os.getloadavg()[0]


def outbound(name: str, n: int) -> Message:
    return Message(
        to_addr=f"2782{n:07d}",
        from_addr="1234",
        transport_name=name,
        transport_type="sms",
        content=f"Message {n}: your appointment is confirmed",
    )


def submit_rate(times: list[float]) -> tuple[float, float]:
    """(submit_sm/s from the first to the last, seconds that took)."""
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    return (len(times) - 1) / span, span


class TimedSmsc(FakeSmsc):
    """The fake SMSC, noting when each submit_sm arrived."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.times: list[float] = []
        self.expected = 0
        self.all_in = trio.Event()

    async def _submit(self, connection: Any, frame: Any, later: trio.Nursery) -> None:
        self.times.append(time.perf_counter())
        await super()._submit(connection, frame, later)
        # The fake keeps every PDU for tests; a benchmark of thousands needs only times.
        self.submitted.clear()
        if len(self.times) >= self.expected:
            self.all_in.set()


async def transport_phase(args: Any, workdir: Path) -> None:
    name = f"bench-smpp-{uuid.uuid4().hex[:8]}"
    load = load_average()
    async with trio.open_nursery() as nursery:
        smsc = TimedSmsc(response_delay=args.smsc_delay)
        smsc.expected = args.count
        await nursery.start(smsc.serve)
        config = {
            "transport_name": name,
            "amqp_url": AMQP_URL,
            "host": "127.0.0.1",
            "port": smsc.port,
            "system_id": smsc.system_id,
            "password": smsc.password,
            "window": args.window,
            "worker_concurrency": 50,
            "submit_sm_processor_config": {"registered_delivery": {"delivery_receipt": 0}},
        }
        config_path = workdir / "smpp.yaml"
        config_path.write_text(yaml.safe_dump(config))
        async with open_inspector(AMQP_URL) as broker:
            try:
                for queue in ("outbound", "event", "inbound", "unmatched_reports"):
                    await broker.declare_queue(f"{name}.{queue}")
                for n in range(args.count):
                    await broker.publish(f"{name}.outbound", outbound(name, n).to_json())
                command = vumi_like(
                    "worker",
                    "vumi_like.transports.smpp.SmppTransport",
                    "--config",
                    str(config_path),
                )
                with process(command, workdir / "smpp.log") as proc:
                    started = time.perf_counter()
                    cpu_before = cpu_seconds(proc.pid), cpu_seconds("self")
                    with trio.fail_after(RUN_TIMEOUT):
                        await smsc.all_in.wait()
                        acks = await count_events(broker, f"{name}.event", args.count)
                    acked = time.perf_counter() - started
                    cpu_after = cpu_seconds(proc.pid), cpu_seconds("self")
                    rss = vmhwm_mib(proc.pid)
            finally:
                for queue in ("outbound", "event", "inbound", "unmatched_reports"):
                    await broker.delete_queue(f"{name}.{queue}")
        nursery.cancel_scope.cancel()
    rate, span = submit_rate(smsc.times)
    transport_cpu = 100 * (cpu_after[0] - cpu_before[0]) / acked
    bench_cpu = 100 * (cpu_after[1] - cpu_before[1]) / acked
    print(
        f"transport: {rate:,.0f} submit_sm/s ({len(smsc.times)} submit_sm in {span:.2f} s, "
        f"window {args.window}, SMSC answering in {args.smsc_delay * 1000:g} ms, max "
        f"outstanding {smsc.max_outstanding}); "
        f"{acks} acks on the event queue {acked:.2f} s after start (RabbitMQ)"
    )
    print(
        f"  CPU: transport {transport_cpu:.0f}%, SMSC + bench {bench_cpu:.0f}%; "
        f"transport peak RSS {rss:.0f} MiB; load average before: {load:.2f} on 2 CPUs"
    )


async def count_events(broker: Any, queue: str, count: int) -> int:
    seen = 0
    async with broker.consume(queue, prefetch=500) as subscription:
        async for delivery in subscription:
            Event.from_json(delivery.body)
            broker.ack(delivery)
            seen += 1
            if seen >= count:
                break
    return seen


async def pipeline_phase(args: Any, workdir: Path) -> None:
    load = load_average()
    async with trio.open_nursery() as nursery:
        smsc = TimedSmsc(response_delay=args.smsc_delay)
        smsc.expected = args.count
        await nursery.start(smsc.serve)
        pipeline = yaml.safe_load((ROOT / "config" / "smpp.yaml").read_text())
        api_port = free_port()
        for worker in pipeline["workers"]:
            worker_config = worker["config"]
            worker_config.pop("http_bind", None)
            if worker["name"] == "api":
                worker_config["http_bind"] = f"127.0.0.1:{api_port}"
            if worker["name"] == "smpp":
                worker_config.update(
                    port=smsc.port,
                    system_id=smsc.system_id,
                    password=smsc.password,
                    window=args.window,
                )
                worker_config.pop("max_tps", None)
            worker_config["worker_concurrency"] = 50
        path = workdir / "pipeline.yaml"
        path.write_text(yaml.safe_dump(pipeline))
        with process(vumi_like("run", str(path)), workdir / "pipeline.log") as proc:
            base = f"http://127.0.0.1:{api_port}"
            limits = httpx.Limits(max_connections=args.concurrency)
            async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
                token = await wait_for_token(client, proc)
                await smsc.wait_until(lambda: bool(smsc.bound))
                headers = {"Authorization": f"Bearer {token}"}
                cpu_before = cpu_seconds(proc.pid), cpu_seconds("self")
                started = time.perf_counter()
                accepted, last_accept = await post_all(client, headers, args)
                with trio.fail_after(RUN_TIMEOUT):
                    await smsc.all_in.wait()
                finished = time.perf_counter()
                cpu_after = cpu_seconds(proc.pid), cpu_seconds("self")
                rss = vmhwm_mib(proc.pid)
        nursery.cancel_scope.cancel()
    rate, span = submit_rate(smsc.times)
    elapsed = finished - started
    accepted_rate = accepted / (last_accept - started)
    print(
        f"pipeline (config/smpp.yaml, embedded): accepted {accepted_rate:,.0f} msg/s "
        f"({accepted} of {args.count}, {args.concurrency} connections); "
        f"{rate:,.0f} SMS/s submitted at the SMSC ({len(smsc.times)} in {span:.2f} s); "
        f"all submitted {elapsed:.2f} s after the first POST"
    )
    print(
        f"  CPU: pipeline {100 * (cpu_after[0] - cpu_before[0]) / elapsed:.0f}%, "
        f"SMSC + client {100 * (cpu_after[1] - cpu_before[1]) / elapsed:.0f}%; "
        f"pipeline peak RSS {rss:.0f} MiB; load average before: {load:.2f} on 2 CPUs"
    )


async def wait_for_token(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> str:
    with trio.fail_after(START_TIMEOUT):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the pipeline exited {proc.returncode}")
            try:
                answer = await client.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=("demo", "demo-secret"),
                )
                return str(answer.json()["access_token"])
            except httpx.TransportError:
                await trio.sleep(0.2)


async def post_all(
    client: httpx.AsyncClient, headers: dict[str, str], args: Any
) -> tuple[int, float]:
    next_n = 0
    accepted = 0
    last = time.perf_counter()

    async def poster() -> None:
        nonlocal next_n, accepted, last
        while next_n < args.count:
            n, next_n = next_n, next_n + 1
            body = {"channel": "sms", "receiver": f"2782{n:07d}", "content": f"Message {n}"}
            answer = await client.post("/v1/messages", json=body, headers=headers)
            if answer.status_code == 202:
                accepted += 1
                last = time.perf_counter()

    async with trio.open_nursery() as nursery:
        for _ in range(args.concurrency):
            nursery.start_soon(poster)
    return accepted, last


async def main_async(args: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="smpp-bench-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "transport"):
            await transport_phase(args, workdir)
        if args.only in (None, "pipeline"):
            await pipeline_phase(args, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", choices=("transport", "pipeline"))
    parser.add_argument(
        "--smsc-delay",
        type=float,
        default=0.0,
        help="seconds the SMSC takes to answer each submit_sm (default 0: at once)",
    )
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
