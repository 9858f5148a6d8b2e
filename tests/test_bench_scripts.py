"""Every script in ``bench/`` runs to its end and prints its figures, at a size too small
to measure anything: a change that breaks a benchmark is found here, not by the next
person who runs it. What each figure says is not checked (speed is for the scripts to
show); that every message was counted where it should arrive is.

Slow-marked: the scripts start workers as processes, read the machine's CPU, and the
poison one shares the broker's dead-letter queue.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AMQP_URL, require_service
from tests.stores.conftest import POSTGRES_URL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, *args: str, postgres: bool = False) -> str:
    """Run ``bench/SCRIPT ARGS``; its standard output, once it exited 0."""
    require_service(AMQP_URL, 5672, "RabbitMQ")
    if postgres:
        require_service(POSTGRES_URL, 5432, "PostgreSQL")
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, (
        f"bench/{script} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
    )
    return result.stdout


def figures(pattern: str, output: str) -> list[Any]:
    """What ``pattern``'s groups matched, in every match in ``output``; at least one."""
    found = re.findall(pattern, output)
    assert found, f"no line matches {pattern!r} in:\n{output}"
    return found


def test_broker_roundtrip() -> None:
    output = run_bench("broker_roundtrip.py", "--count", "300", "--rounds", "1")
    [rate] = figures(r"vumi_like broker from trio:\s+(\d+) msg/s", output)
    [baseline] = figures(r"plain asyncio \+ aio-pika:\s+(\d+) msg/s", output)
    assert int(rate) > 0 and int(baseline) > 0


def test_router_hop() -> None:
    output = run_bench("router_hop.py", "--count", "300", "--rounds", "1", "--concurrency", "20")
    [rate] = figures(r"median of 1: ToAddressRouter, worker_concurrency 20\s+(\d+) msg/s", output)
    [baseline] = figures(r"median of 1: aio-pika forwarder, prefetch 20\s+(\d+) msg/s", output)
    assert int(rate) > 0 and int(baseline) > 0


def test_router_replicas() -> None:
    output = run_bench(
        "router_replicas.py", "--count", "300", "--replicas", "1", "2", "--rounds", "1"
    )
    rates = figures(r"median of 1: (\d) replica\(s\)\s+(\d+) msg/s", output)
    assert sorted(n for n, _ in rates) == ["1", "2"]
    assert all(int(rate) > 0 for _, rate in rates)


def test_poison() -> None:
    output = run_bench("poison.py", "--count", "200", "--rounds", "1", "--huge-bytes", "10000")
    [sent] = figures(r"\((\d+) poison envelopes\)", output)
    [letters] = figures(r"(\d+) poison envelopes dead-lettered", output)
    assert int(sent) == 50 and int(letters) == 50


def test_receivers() -> None:
    output = run_bench(
        "receivers.py", "--count", "20", "--rate", "20", "--slow", "1", postgres=True
    )
    phases = figures(r"(?m)^  (alone|beside a slow|beside a failing)\b.*: p50 \d+ ms", output)
    assert phases == ["alone", "beside a slow", "beside a failing"]


def test_smpp_throughput() -> None:
    output = run_bench("smpp_throughput.py", "--count", "200")
    figures(r"transport: [\d,]+ submit_sm/s \(200 submit_sm in", output)
    figures(r"200 acks on the event queue", output)
    figures(r"accepted \d+ msg/s \(200 of 200,", output)
    figures(r"SMS/s submitted at the SMSC \(200 in", output)


@pytest.mark.parametrize("only", ["rabbitmq", "embedded"])
def test_api_pipeline(only: str) -> None:
    output = run_bench(
        "api_pipeline.py",
        "--only",
        only,
        "--count",
        "100",
        "--rate",
        "50",
        postgres=only == "rabbitmq",
    )
    [(accepted, count)] = figures(r"accepted (\d+) msg/s \((\d+) msgs", output)
    assert int(accepted) > 0 and count == "100"
    figures(r"100/100 delivered", output)
    figures(r"phase 1 drained: all 100 DELIVERED webhooks", output)
    # Both phases' messages; SENT may be missing where a router put an ack after its report.
    [(queued, sent, delivered)] = figures(r"QUEUED (\d+), SENT (\d+), DELIVERED (\d+)", output)
    assert (queued, delivered) == ("200", "200") and int(sent) <= 200
    assert "failed POSTs" not in output, output


def test_api_memory() -> None:
    output = run_bench("api_memory.py", "--count", "200", postgres=True)
    figures(r"(?m)^200 messages accepted", output)
    figures(r"MessagingApi after 200 messages: VmRSS [\d.]+ MiB", output)


def test_every_script_is_run_here() -> None:
    tested = {
        "api_memory.py",
        "api_pipeline.py",
        "broker_roundtrip.py",
        "poison.py",
        "receivers.py",
        "router_hop.py",
        "router_replicas.py",
        "smpp_throughput.py",
    }
    assert {path.name for path in BENCH.glob("*.py")} == tested
