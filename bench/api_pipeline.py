"""The Messaging API pipeline end to end: API -> router -> simulator -> events -> webhook.

The pipeline is quickstart's (``config/quickstart.yaml``): MessagingApi, EventDispatcher,
ToAddressRouter and a SimulatorTransport per channel (sms, email, web), each at its
default ``worker_concurrency`` (the dispatcher's 100, the others' 20), with a 10 ms
``delivery_delay``. It is deployed two ways:

* **rabbitmq+postgres**: each worker its own process (``vumi-like worker CLASS --config
  FILE``) on RabbitMQ and PostgreSQL. Queue names carry a prefix of their own per run
  and the store a fresh schema; both are deleted afterwards;
* **embedded**: one ``vumi-like run PIPELINE.yaml`` process, memory broker, SQLite file
  in a temporary folder.

The script is the client and the webhook receiver. It gets a token, subscribes its
receiver (a small httptools server on 127.0.0.1 answering 204, recording when each status of
each message arrives) to every status, as the README's quick start does, so each message
brings three webhooks (QUEUED, SENT, DELIVERED), or two when its delivery report reaches
the dispatcher before its ack (the late ack changes nothing, so no SENT). Then, once
every worker's ``/health`` answers:

1. **accepted msg/s**: ``--count`` POST /v1/messages as fast as ``--concurrency``
   keep-alive connections allow (the product's own webhook poster, which costs the machine
   far less per request than httpx); 202s over the time from the first
   POST to the last 202. The pipeline then drains: the time until every DELIVERED
   webhook has arrived gives the sustained end-to-end rate;
2. **end-to-end latency**: ``--count`` more, open loop at ``--rate`` msg/s (each POST
   starts on schedule, whether or not earlier ones were answered), timed from the POST
   being sent to its DELIVERED webhook arriving; p50 and p99 of those, and of the 202;
3. **peak RSS**: the sum of VmHWM of every process the script started, read at the end.

Besides, it prints each process's CPU share in both phases (from /proc/<pid>/stat, the
script's own included, and RabbitMQ's and PostgreSQL's when they run on this machine),
which shows what limits throughput, and the CPU milliseconds each process spent per
message over phase 1 and its drain (which a busy machine changes far less than the
rates), the dispatcher's webhook POSTs by outcome (from its /metrics), and the load
average, since the machine may be shared. One run per configuration: expect some
spread between runs. A message not delivered within 30 s counts as slower than every
delivered one in the percentiles.

The workers inherit the script's environment: ``VUMI_LIKE_ASYNCIO_LOOP=asyncio`` runs
their brokers' I/O loops on asyncio's loop rather than uvloop's (the report names the
one used), to compare the two.

``--api-replicas N`` runs N MessagingApi processes (one in quickstart), the client
POSTing to each in turn, as a load balancer would spread them. ``--idempotency-keys``
sends an ``Idempotency-Key`` of its own with every POST, as a client that retries
safely does, so the API claims each key and saves each answer.

All webhooks go to one receiver, so the dispatcher's ``per_receiver_concurrency`` (POSTs
in flight to one receiver; more are put back on the broker for 0.1-0.3 s) matters; it is
the product's default unless ``--per-receiver-concurrency`` says otherwise.

    python bench/api_pipeline.py [--count 2000] [--rate 200] [--concurrency 32]
                                 [--only {rabbitmq,embedded}] [--per-receiver-concurrency N]
                                 [--api-replicas N] [--idempotency-keys]

With the defaults each configuration takes one to one and a half minutes.

RabbitMQ and PostgreSQL come from ``VUMI_LIKE_TEST_AMQP_URL`` and
``VUMI_LIKE_TEST_POSTGRES_URL`` (default: local guest, and postgres@127.0.0.1/test).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
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
from urllib.parse import urlsplit

import attrs
import httptools
import httpx
import psycopg
import sqlalchemy as sa
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from vumi_like.broker import open_inspector
from vumi_like.broker.bridge import io_loop_choice
from vumi_like.dispatch import EventDispatcherConfig
from vumi_like.dispatch.posting import Poster, PostFailed

AMQP_URL = os.environ.get("VUMI_LIKE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "VUMI_LIKE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

DELIVERY_DELAY = 0.01
SHUTDOWN_TIMEOUT = 5  # each worker's; the script kills what is still up 10 s later
START_TIMEOUT = 60
HTTP_TIMEOUT = 30  # the API's own request_timeout
DRAIN_TIMEOUT = 30  # for phase 1's DELIVERED webhooks, and phase 2's after the last POST
WEBHOOK_STATUSES = ("QUEUED", "SENT", "DELIVERED")  # the statuses a message goes through here

TENANT = "bench"
CLIENT_ID, CLIENT_SECRET = "bench", "bench-secret"
JWT_SECRET = "bench-api-pipeline-signing-key-0123456789"
# name (= type) -> the tenant's senders, as in quickstart.
CHANNELS = {"sms": ["1234"], "email": ["noreply@example.org"], "web": ["*"]}
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVICES = {"rabbitmq": "RabbitMQ", "postgres": "PostgreSQL"}  # their names in the output
SERVICE_PROCESSES = {"beam.smp": "rabbitmq", "postgres": "postgres"}  # by command name
LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1"}  # a URL's host on this machine
PER_RECEIVER_DEFAULT = EventDispatcherConfig.model_fields["per_receiver_concurrency"].default


# ------------------------------------------------------------------ the pipeline


@attrs.frozen
class WorkerSpec:
    name: str
    class_path: str
    config: dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pipeline(
    prefix: str,
    store: dict[str, Any],
    per_receiver_concurrency: int | None = None,
    api_replicas: int = 1,
) -> list[WorkerSpec]:
    """Quickstart's workers, with ``api_replicas`` MessagingApi processes (``api``,
    ``api2``...); ``prefix`` on every connector name. Each serves HTTP on a free port, for
    its ``/health``."""
    connector = f"{prefix}messaging"
    transports = {name: f"{prefix}{name}" for name in CHANNELS}
    channels = [
        {
            "name": name,
            "type": name,
            "transport_name": transports[name],
            "senders": {TENANT: senders},
        }
        for name, senders in CHANNELS.items()
    ]
    common = {"shutdown_timeout": SHUTDOWN_TIMEOUT}
    auth = {
        "jwt_secret": JWT_SECRET,
        "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "tenant": TENANT}],
    }
    specs = [
        *(
            WorkerSpec(
                "api" if n == 1 else f"api{n}",
                "vumi_like.applications.messaging_api.MessagingApi",
                {"connector_name": connector, "auth": auth, "channels": channels, **store},
            )
            for n in range(1, api_replicas + 1)
        ),
        WorkerSpec(
            "dispatcher",
            "vumi_like.dispatch.EventDispatcher",
            {"connector_name": connector, "channels": channels, **store},
        ),
        WorkerSpec(
            "router",
            "vumi_like.routers.ToAddressRouter",
            {
                "transport_names": list(transports.values()),
                "to_address_mappings": [{"name": connector, "pattern": ".*"}],
            },
        ),
        *(
            WorkerSpec(
                name,
                "vumi_like.transports.simulator.SimulatorTransport",
                {"transport_name": transport, "delivery_delay": DELIVERY_DELAY},
            )
            for name, transport in transports.items()
        ),
    ]
    if per_receiver_concurrency is not None:
        specs[api_replicas].config["per_receiver_concurrency"] = per_receiver_concurrency
    for spec in specs:
        spec.config.update(common, http_bind=f"127.0.0.1:{free_port()}")
    return specs


def queues_of(prefix: str) -> list[str]:
    """Every queue the pipeline declares (delay buckets and the dead-letter queue are
    shared by every vumi-like worker on the broker, and stay)."""
    connector = f"{prefix}messaging"
    names = [f"{connector}.webhooks", f"{connector}.batches"]
    for name in [connector, *(f"{prefix}{channel}" for channel in CHANNELS)]:
        names += [f"{name}.outbound", f"{name}.inbound", f"{name}.event"]
    return names


# ------------------------------------------------------------------ processes


def vmhwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def stat_fields(stat: str) -> tuple[str, list[str]]:
    """A /proc/<pid>/stat line's command name, and its fields after it (so utime and
    stime, the 14th and 15th, are at 11 and 12; the parent's pid at 1)."""
    head, _, rest = stat.rpartition(")")
    return head.split("(", 1)[1], rest.split()


def cpu_seconds(pid: int | str) -> float:
    _, fields = stat_fields(Path(f"/proc/{pid}/stat").read_text())
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def service_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this machine's RabbitMQ (its ``beam.smp``) and
    PostgreSQL (every ``postgres`` process, and the children the server has reaped:
    connections closed since it started)."""
    used = dict.fromkeys(SERVICES, 0.0)
    parsed: dict[str, tuple[str, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone since listed
                parsed[entry.name] = stat_fields((entry / "stat").read_text())
    for name, fields in parsed.values():
        service = SERVICE_PROCESSES.get(name)
        if service is None:
            continue
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        parent = parsed.get(fields[1])
        if service == "postgres" and (parent is None or parent[0] != "postgres"):
            ticks += int(fields[13]) + int(fields[14])  # the server: its reaped children's
        used[service] += ticks / CLK_TCK
    return used


def services_are_local() -> bool:
    """Whether RabbitMQ and PostgreSQL run on this machine, so their CPU can be read."""
    return {sa.make_url(POSTGRES_URL).host, urlsplit(AMQP_URL).hostname} <= LOCAL_HOSTS


class Fleet:
    """The processes a configuration runs, each logging to a file in ``log_dir``; all of
    them stopped (SIGTERM, then SIGKILL after a timeout) when the block is left. With
    ``services``, ``cpu`` also reads the local RabbitMQ's and PostgreSQL's."""

    def __init__(self, log_dir: Path, *, services: bool = False) -> None:
        self.log_dir = log_dir
        self.services = services
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str]) -> None:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process, and by this one ("bench")."""
        used = {name: cpu_seconds(p.pid) for name, p in self.processes.items()}
        used["bench"] = cpu_seconds("self")
        if self.services:
            used.update(service_cpu_seconds())
        return used

    def peak_rss_kib(self) -> int:
        return sum(vmhwm_kib(p.pid) for p in self.processes.values())

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT + 10
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop within the timeout: killed", file=sys.stderr)
                process.kill()
                process.wait()


# ------------------------------------------------------------------ webhook receiver


class _Request:
    """httptools' callbacks: the bodies of the requests read whole so far."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.body = bytearray()
        self.bodies: list[bytes] = []
        self.keep_alive = True

    def on_message_begin(self) -> None:
        self.body.clear()

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.bodies.append(bytes(self.body))


class WebhookReceiver:
    """A minimal HTTP/1.1 server (httptools, keep-alive) that answers 204 to every
    request and records when each (statusCode, messageId) first arrived, in trio's
    clock. (It stands for the client's own server, elsewhere in a deployment: the
    cheaper it is here, the less it takes from the pipeline it measures.)"""

    def __init__(self) -> None:
        self.arrivals: dict[str, dict[str, float]] = {}
        self.received = 0
        self.url = ""
        self._delivered = trio.Event()  # set, and replaced, at each DELIVERED
        self._delivered_log: list[str] = []  # message ids, as their DELIVERED arrived

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, self._connection, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            self.url = f"http://127.0.0.1:{port}/webhook"
            task_status.started()

    async def _connection(self, stream: trio.SocketStream) -> None:
        request = _Request()
        with contextlib.suppress(httptools.HttpParserError, trio.BrokenResourceError):
            while chunk := await stream.receive_some(65536):
                request.parser.feed_data(chunk)
                if not request.bodies:
                    continue
                for body in request.bodies:
                    self._record(body)
                answers, request.bodies = len(request.bodies), []
                await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n" * answers)
                if not request.keep_alive:
                    return

    def _record(self, body: bytes) -> None:
        now = trio.current_time()
        self.received += 1
        try:
            webhook = json.loads(body)
            status = webhook["statusCode"]
            self.arrivals.setdefault(status, {}).setdefault(webhook["messageId"], now)
        except (ValueError, KeyError, TypeError):
            return
        if status == "DELIVERED":
            self._delivered_log.append(webhook["messageId"])
            self._delivered.set()
            self._delivered = trio.Event()

    def delivered(self, message_ids: set[str]) -> int:
        arrived = self.arrivals.get("DELIVERED", {})
        return sum(1 for message_id in message_ids if message_id in arrived)

    async def wait_delivered(self, message_ids: set[str]) -> bool:
        """Whether every one of ``message_ids`` got its DELIVERED webhook within
        ``DRAIN_TIMEOUT``."""
        missing = message_ids - self.arrivals.get("DELIVERED", {}).keys()
        seen = len(self._delivered_log)
        with trio.move_on_after(DRAIN_TIMEOUT):
            while missing:
                await self._delivered.wait()
                # Only what arrived since the last look: a wait for n ids stays linear.
                missing.difference_update(self._delivered_log[seen:])
                seen = len(self._delivered_log)
            return True
        return False


# ------------------------------------------------------------------ the client


@attrs.define
class Figures:
    configuration: str
    count: int = 0
    concurrency: int = 0
    rate: float = 0
    accepted_per_s: float = 0
    accept_errors: dict[str, int] = attrs.field(factory=dict)
    drained_s: float | None = None  # phase 1: first POST to last DELIVERED webhook
    drain_delivered: int = 0
    offered_per_s: float = 0
    max_lateness_ms: float = 0
    send_errors: dict[str, int] = attrs.field(factory=dict)
    delivered: int = 0
    latencies_ms: list[float] = attrs.field(factory=list)
    accept_latencies_ms: list[float] = attrs.field(factory=list)
    webhooks_received: int = 0
    webhooks_by_status: dict[str, int] = attrs.field(factory=dict)  # messages with one
    webhook_posts: dict[str, float] = attrs.field(factory=dict)  # the dispatcher's, by outcome
    cpu: dict[str, dict[str, float]] = attrs.field(factory=dict)  # phase -> process -> %
    # process -> CPU ms per message over phase 1 and its drain (when it drained)
    cpu_ms_per_message: dict[str, float] = attrs.field(factory=dict)
    peak_rss_kib: int = 0
    processes: int = 0
    load_average: float = 0  # the machine's (1 min) when measuring started: it is shared


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def milliseconds(value: float) -> str:
    return f"over {DRAIN_TIMEOUT} s" if math.isinf(value) else f"{value:.0f} ms"


def message_body(i: int) -> dict[str, Any]:
    return {"channel": "sms", "receiver": f"+2782{i:07d}", "content": f"benchmark message {i}"}


def count_error(errors: dict[str, int], what: str) -> None:
    errors[what] = errors.get(what, 0) + 1


@attrs.define
class ApiClient:
    """POSTs messages to the API on kept-alive connections: the product's own webhook
    poster (on trio, a stack of idle connections per origin), which costs the
    machine a fraction of what httpx does per request. Whatever the script spends is
    taken from the pipeline measured, which shares its two cores."""

    urls: list[str]  # the API replicas', message i to the i-th in turn
    headers: dict[str, str]
    poster: Poster = attrs.field(factory=lambda: Poster(max_idle=1000))
    idempotency_keys: bool = False  # a key of its own with every POST

    async def post_message(self, i: int, errors: dict[str, int]) -> str | None:
        """POST one message; its id on a 202, else None with the failure counted."""
        body = json.dumps(message_body(i)).encode()
        url = self.urls[i % len(self.urls)]
        headers = self.headers
        if self.idempotency_keys:
            headers = {**headers, "Idempotency-Key": uuid.uuid4().hex}
        try:
            with trio.fail_after(HTTP_TIMEOUT):
                answer = await self.poster.post(url, body, headers)
        except (PostFailed, trio.TooSlowError) as exc:
            count_error(errors, type(exc).__name__)
            return None
        if answer.status != 202:
            count_error(errors, str(answer.status))
            return None
        return str(json.loads(answer.body)["messageId"])


async def wait_healthy(fleet: Fleet, urls: list[str]) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        with trio.fail_after(START_TIMEOUT):
            for url in urls:
                while True:
                    fleet.check_alive()
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url)).status_code == 200:
                            break
                    await trio.sleep(0.2)


def cpu_shares(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    return {name: 100 * (after[name] - before[name]) / seconds for name in after}


async def raise_on_signal(
    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Raise KeyboardInterrupt on SIGINT or SIGTERM, from a task, so that trio unwinds.

    A Python-level handler raising it would interrupt whatever code was running, which
    httpx or trio may swallow; and SIGINT is ignored altogether in a background job.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            raise KeyboardInterrupt


async def measure(figures: Figures, fleet: Fleet, specs: list[WorkerSpec], args: Any) -> None:
    receiver = WebhookReceiver()
    async with trio.open_nursery() as nursery:
        await nursery.start(raise_on_signal)
        await wait_healthy(fleet, [f"{http_url(spec)}/health" for spec in specs])
        figures.load_average = os.getloadavg()[0]
        workers = {spec.name: spec for spec in specs}
        api_url = http_url(workers["api"])
        await nursery.start(receiver.serve)
        async with httpx.AsyncClient(base_url=api_url, timeout=HTTP_TIMEOUT) as client:
            token = await client.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                },
            )
            token.raise_for_status()
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            subscribe = await client.post(
                "/v1/webhooks", json={"url": receiver.url}, headers=headers
            )
            subscribe.raise_for_status()

        api_urls = [f"{http_url(spec)}/v1/messages" for spec in specs if is_api(spec)]
        client = ApiClient(
            api_urls,
            {**headers, "content-type": "application/json"},
            idempotency_keys=args.idempotency_keys,
        )
        try:
            await accept_phase(figures, fleet, client, receiver, args)
            # An open loop must not queue requests in the client, only in the system
            # measured: the poster opens a connection for each POST that finds none
            # idle, so each is sent on schedule.
            await latency_phase(figures, fleet, client, receiver, args)
        finally:
            await client.poster.aclose()

        figures.webhooks_received = receiver.received
        figures.webhooks_by_status = {
            status: len(arrived) for status, arrived in receiver.arrivals.items()
        }
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            figures.webhook_posts = await webhook_posts(client, http_url(workers["dispatcher"]))
        figures.peak_rss_kib = fleet.peak_rss_kib()
        figures.processes = len(fleet.processes)
        nursery.cancel_scope.cancel()


async def accept_phase(
    figures: Figures, fleet: Fleet, client: ApiClient, receiver: WebhookReceiver, args: Any
) -> None:
    """Closed loop: ``concurrency`` tasks, each POSTing the next message once the last
    is answered. Then wait for the pipeline to deliver them all."""
    ids: set[str] = set()
    next_index = iter(range(args.count))
    last_accepted = 0.0

    async def sender() -> None:
        nonlocal last_accepted
        for i in next_index:
            message_id = await client.post_message(i, figures.accept_errors)
            if message_id is not None:
                ids.add(message_id)
                last_accepted = trio.current_time()

    cpu_before, start = fleet.cpu(), trio.current_time()
    async with trio.open_nursery() as senders:
        for _ in range(args.concurrency):
            senders.start_soon(sender)
    figures.cpu["accepting"] = cpu_shares(cpu_before, fleet.cpu(), trio.current_time() - start)
    figures.count, figures.concurrency = args.count, args.concurrency
    figures.accepted_per_s = len(ids) / (last_accepted - start) if ids else 0.0

    drained = await receiver.wait_delivered(ids)
    figures.drain_delivered = receiver.delivered(ids)
    if drained:
        figures.drained_s = max(receiver.arrivals["DELIVERED"][i] for i in ids) - start
        # What each message cost each process, all the way: the same on a busy machine
        # as on a quiet one, unlike the rates.
        cpu_after = fleet.cpu()
        figures.cpu_ms_per_message = {
            name: 1000 * (cpu_after[name] - cpu_before[name]) / len(ids) for name in cpu_after
        }


async def latency_phase(
    figures: Figures,
    fleet: Fleet,
    client: ApiClient,
    receiver: WebhookReceiver,
    args: Any,
) -> None:
    """Open loop: message i is POSTed at start + i / rate, answered or not."""
    sent_at: dict[str, float] = {}
    first = args.count  # message numbers after phase 1's

    async def send(i: int) -> None:
        sent = trio.current_time()
        message_id = await client.post_message(i, figures.send_errors)
        if message_id is not None:
            sent_at[message_id] = sent
            figures.accept_latencies_ms.append(1000 * (trio.current_time() - sent))

    figures.rate = args.rate
    cpu_before, start = fleet.cpu(), trio.current_time()
    lateness = 0.0
    async with trio.open_nursery() as senders:
        for n in range(args.count):
            scheduled = start + n / args.rate
            await trio.sleep_until(scheduled)
            lateness = max(lateness, trio.current_time() - scheduled)
            senders.start_soon(send, first + n)
        last_sent = trio.current_time()
        # While sending: the steady state, without the drain after.
        figures.cpu["at fixed rate"] = cpu_shares(cpu_before, fleet.cpu(), last_sent - start)
    figures.offered_per_s = (args.count - 1) / (last_sent - start) if args.count > 1 else 0.0
    figures.max_lateness_ms = 1000 * lateness
    ids = set(sent_at)
    await receiver.wait_delivered(ids)
    arrived = receiver.arrivals.get("DELIVERED", {})
    figures.latencies_ms = [1000 * (arrived[i] - sent_at[i]) for i in ids if i in arrived]
    figures.delivered = len(figures.latencies_ms)


async def webhook_posts(client: httpx.AsyncClient, dispatcher_url: str) -> dict[str, float]:
    """The dispatcher's webhook POSTs by outcome, from its /metrics."""
    text = (await client.get(f"{dispatcher_url}/metrics")).text
    posts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "vumi_like_webhook_posts":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    outcome = sample.labels["outcome"]
                    posts[outcome] = posts.get(outcome, 0) + sample.value
    return posts


# ------------------------------------------------------------------ configurations


def vumi_like_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("vumi-like")), *args]


def is_api(spec: WorkerSpec) -> bool:
    return spec.class_path.endswith(".MessagingApi")


def http_url(spec: WorkerSpec) -> str:
    return f"http://{spec.config['http_bind']}"


def run_rabbitmq(args: Any) -> Figures:
    tag = uuid.uuid4().hex[:8]
    prefix, schema = f"bench-{tag}-", f"bench_{tag}"
    store = {"store_url": POSTGRES_URL, "store_schema": schema}
    specs = pipeline(prefix, store, args.per_receiver_concurrency, args.api_replicas)
    figures = Figures("rabbitmq+postgres")
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            Fleet(Path(tmp), services=services_are_local()) as fleet,
        ):
            for spec in specs:
                path = Path(tmp) / f"{spec.name}.yaml"
                path.write_text(yaml.safe_dump({"amqp_url": AMQP_URL, **spec.config}))
                fleet.start(
                    spec.name, vumi_like_command("worker", spec.class_path, "--config", str(path))
                )
            with reporting_failure(fleet):
                trio.run(measure, figures, fleet, specs, args)
    finally:
        trio.run(delete_queues, queues_of(prefix))
        drop_schema(schema)
    return figures


def run_embedded(args: Any) -> Figures:
    figures = Figures("embedded")
    with tempfile.TemporaryDirectory() as tmp, Fleet(Path(tmp)) as fleet:
        store = {"store_url": f"sqlite:///{tmp}/bench.db"}
        specs = pipeline("", store, args.per_receiver_concurrency, args.api_replicas)
        pipeline_file = Path(tmp) / "pipeline.yaml"
        workers = [{"name": s.name, "class": s.class_path, "config": s.config} for s in specs]
        pipeline_file.write_text(yaml.safe_dump({"amqp_url": "memory://", "workers": workers}))
        fleet.start("pipeline", vumi_like_command("run", str(pipeline_file)))
        with reporting_failure(fleet):
            trio.run(measure, figures, fleet, specs, args)
    return figures


@contextlib.contextmanager
def reporting_failure(fleet: Fleet) -> Iterator[None]:
    """On a failure, print the end of every process's log before the traceback."""
    try:
        yield
    except Exception:
        for name in fleet.processes:
            print(f"--- {name} log (end) ---\n{fleet.log_tail(name)}", file=sys.stderr)
        raise


async def delete_queues(names: list[str]) -> None:
    async with open_inspector(AMQP_URL) as broker:
        for name in names:
            await broker.delete_queue(name)


def drop_schema(schema: str) -> None:
    libpq = sa.make_url(POSTGRES_URL).set(drivername="postgresql")
    with psycopg.connect(libpq.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ------------------------------------------------------------------ output


def report(f: Figures, args: Any) -> None:
    keyed = args.idempotency_keys
    # A message not delivered (or not accepted) counts as slower than any that was.
    padded = f.latencies_ms + [math.inf] * (f.count - f.delivered)
    p50, p99 = (milliseconds(percentile(padded, p)) for p in (50, 99))
    print(
        f"{f.configuration}: accepted {f.accepted_per_s:.0f} msg/s ({f.count} msgs, "
        f"{f.concurrency} connections{', an Idempotency-Key each' if keyed else ''}); "
        f"at {f.rate:g} msg/s offered: p50 {p50}, "
        f"p99 {p99} end to end (POST -> DELIVERED webhook), "
        f"{f.delivered}/{f.count} delivered; peak RSS {f.peak_rss_kib / 1024:.0f} MiB "
        f"({f.processes} process{'es' if f.processes > 1 else ''})"
    )
    if f.drained_s is not None:
        print(
            f"  phase 1 drained: all {f.count} DELIVERED webhooks {f.drained_s:.1f} s after "
            f"the first POST ({f.count / f.drained_s:.0f} msg/s end to end)"
        )
    else:
        print(
            f"  phase 1 NOT drained: {f.drain_delivered}/{f.count} DELIVERED webhooks "
            f"within {DRAIN_TIMEOUT} s of the last 202"
        )
    print(
        f"  phase 2: offered {f.offered_per_s:.0f} msg/s (sender up to {f.max_lateness_ms:.0f} ms "
        f"late); 202 p50 {percentile(f.accept_latencies_ms, 50):.0f} ms, "
        f"p99 {percentile(f.accept_latencies_ms, 99):.0f} ms; "
        f"max end to end {max(f.latencies_ms, default=math.nan):.0f} ms"
    )
    for what, errors in (("phase 1", f.accept_errors), ("phase 2", f.send_errors)):
        if errors:
            failures = ", ".join(f"{k} x{v}" for k, v in sorted(errors.items()))
            print(f"  {what} failed POSTs: {failures}")
    posts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(f.webhook_posts.items()))
    per_receiver = args.per_receiver_concurrency or PER_RECEIVER_DEFAULT
    # A delivery report applied before its ack moves the message from QUEUED straight to
    # DELIVERED: the late ack changes nothing, and sends no SENT webhook.
    by_status = ", ".join(
        f"{status} {f.webhooks_by_status.get(status, 0)}" for status in WEBHOOK_STATUSES
    )
    print(
        f"  webhooks received: {f.webhooks_received}; of the {2 * f.count} messages, with a "
        f"webhook of each status: {by_status}; dispatcher's POSTs (per_receiver_concurrency "
        f"{per_receiver}): {posts or 'none'}"
    )
    loop = f"; broker I/O loop {io_loop_choice()}"
    print(
        f"  load average (1 min) before measuring: {f.load_average:.2f} on {os.cpu_count()} CPUs"
        + (loop if f.configuration.startswith("rabbitmq") else "")
    )
    for phase, shares in f.cpu.items():
        busiest = sorted(shares.items(), key=lambda item: -item[1])
        print(f"  CPU {phase}: " + ", ".join(f"{name} {share:.0f}%" for name, share in busiest))
    if f.cpu_ms_per_message:
        ours = {k: v for k, v in f.cpu_ms_per_message.items() if k not in SERVICES}
        costliest = sorted(ours.items(), key=lambda item: -item[1])
        services = " and ".join(
            f"{SERVICES[name]} {ms:.2f}"
            for name, ms in f.cpu_ms_per_message.items()
            if name in SERVICES
        )
        print(
            f"  CPU per message, phase 1 to drained: {sum(ours.values()):.1f} ms ("
            + ", ".join(f"{name} {ms:.2f}" for name, ms in costliest)
            + ")"
            + (f"; {services} besides" if services else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="messages in each phase")
    parser.add_argument("--rate", type=float, default=200, help="offered msg/s in phase 2")
    parser.add_argument("--concurrency", type=int, default=32, help="connections in phase 1")
    parser.add_argument("--only", choices=["rabbitmq", "embedded"])
    parser.add_argument(
        "--per-receiver-concurrency",
        type=int,
        help="the dispatcher's limit of POSTs in flight to one receiver (default: the "
        f"product's, {PER_RECEIVER_DEFAULT}); all webhooks here go to one receiver",
    )
    parser.add_argument(
        "--api-replicas",
        type=int,
        default=1,
        help="MessagingApi processes (default 1, as in quickstart); the client POSTs to "
        "each in turn",
    )
    parser.add_argument(
        "--idempotency-keys",
        action="store_true",
        help="send an Idempotency-Key of its own with every POST, as a client that "
        "retries safely does",
    )
    args = parser.parse_args()
    # SIGTERM as Ctrl-C: the script unwinds, stopping the workers and dropping the run's
    # queues and schema. Measuring, trio receives both (``raise_on_signal``).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    runs = {"rabbitmq": run_rabbitmq, "embedded": run_embedded}
    try:
        for name, run in runs.items():
            if args.only in (None, name):
                report(run(args), args)
                sys.stdout.flush()
    except* KeyboardInterrupt:
        print("interrupted; workers stopped, the run's queues and schema dropped", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
