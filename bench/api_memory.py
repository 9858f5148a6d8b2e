"""The Messaging API's resident memory as messages go through it: flat, or growing?

One ``MessagingApi`` process on RabbitMQ and PostgreSQL (its own queue prefix and a
fresh schema, both dropped afterwards), no other worker: the outbound messages and
QUEUED webhook jobs wait on the broker and are deleted with the queues. The script
subscribes a webhook (so every message also queues a job, as in production), then
POSTs ``--count`` messages to ``/v1/messages`` over ``--concurrency`` keep-alive
connections, and prints the API's VmRSS after every tenth of them, and its peak
(VmHWM). What is cached in the process (subscriptions, the token check, the store's
connection pool) is bounded, so after the first tenth the figure should stay within a
few MiB whatever the count.

    python bench/api_memory.py [--count 100000] [--concurrency 32]

RabbitMQ and PostgreSQL come from ``VUMI_LIKE_TEST_AMQP_URL`` and
``VUMI_LIKE_TEST_POSTGRES_URL``, as for ``bench/api_pipeline.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

_spec = importlib.util.spec_from_file_location(
    "api_pipeline", Path(__file__).with_name("api_pipeline.py")
)
assert _spec is not None and _spec.loader is not None
pipeline_bench = importlib.util.module_from_spec(_spec)
sys.modules["api_pipeline"] = pipeline_bench
_spec.loader.exec_module(pipeline_bench)


def vmrss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure(api: Any, fleet: Any, args: Any) -> list[tuple[int, int]]:
    """``(messages accepted, VmRSS KiB)`` after each tenth of them."""
    pid = fleet.processes["api"].pid
    await pipeline_bench.wait_healthy(fleet, [f"{pipeline_bench.http_url(api)}/health"])
    base_url = pipeline_bench.http_url(api)
    async with httpx.AsyncClient(base_url=base_url, timeout=pipeline_bench.HTTP_TIMEOUT) as setup:
        token = await setup.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": pipeline_bench.CLIENT_ID,
                "client_secret": pipeline_bench.CLIENT_SECRET,
            },
        )
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        # Nobody listens there: the jobs only wait on the broker.
        hook = await setup.post(
            "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=headers
        )
        hook.raise_for_status()
    client = pipeline_bench.ApiClient(
        [f"{base_url}/v1/messages"], {**headers, "content-type": "application/json"}
    )
    samples = [(0, vmrss_kib(pid))]
    errors: dict[str, int] = {}
    accepted = 0
    tenth = max(1, args.count // 10)
    next_index = iter(range(args.count))

    async def sender() -> None:
        nonlocal accepted
        for i in next_index:
            if await client.post_message(i, errors) is not None:
                accepted += 1
                if accepted % tenth == 0:
                    samples.append((accepted, vmrss_kib(pid)))
                    fleet.check_alive()

    started = time.monotonic()
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(args.concurrency):
                nursery.start_soon(sender)
    finally:
        await client.poster.aclose()
    took = time.monotonic() - started
    print(f"{accepted} messages accepted in {took:.0f} s ({accepted / took:.0f} msg/s)")
    if errors:
        # What the API holds after a run it refused is no measure of its memory.
        failed = ", ".join(f"{k} x{v}" for k, v in sorted(errors.items()))
        raise SystemExit(f"api_memory: {failed} of {args.count} POSTs failed")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    prefix, schema = f"bench-{tag}-", f"bench_{tag}"
    store = {"store_url": pipeline_bench.POSTGRES_URL, "store_schema": schema}
    api = pipeline_bench.pipeline(prefix, store)[0]
    assert api.name == "api"
    try:
        with tempfile.TemporaryDirectory() as tmp, pipeline_bench.Fleet(Path(tmp)) as fleet:
            path = Path(tmp) / "api.yaml"
            path.write_text(yaml.safe_dump({"amqp_url": pipeline_bench.AMQP_URL, **api.config}))
            fleet.start(
                "api",
                pipeline_bench.vumi_like_command("worker", api.class_path, "--config", str(path)),
            )
            with pipeline_bench.reporting_failure(fleet):
                samples = trio.run(measure, api, fleet, args)
            peak = pipeline_bench.vmhwm_kib(fleet.processes["api"].pid)
    finally:
        trio.run(pipeline_bench.delete_queues, pipeline_bench.queues_of(prefix))
        pipeline_bench.drop_schema(schema)
    print("messages  VmRSS (MiB)")
    for count, kib in samples:
        print(f"{count:>8}  {kib / 1024:8.1f}")
    after_first = [kib for count, kib in samples if count >= args.count // 10]
    growth = (max(after_first) - min(after_first)) / 1024 if after_first else 0.0
    print(
        f"MessagingApi after {samples[-1][0]} messages: VmRSS {samples[-1][1] / 1024:.1f} MiB, "
        f"peak {peak / 1024:.1f} MiB; spread after the first tenth {growth:.1f} MiB"
    )


if __name__ == "__main__":
    main()
