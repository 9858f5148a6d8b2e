"""What the fault-injection tests share: real worker processes, private services to stop,
and the client side that counts what was sent against what arrived.

* ``Fleet``: workers as real processes (``vumi-like worker CLASS --config FILE``), each
  logging to its own file, that a test can ``kill`` (SIGKILL: ``kill -9``) and
  ``restart`` with the same config. Every queue name a fleet's workers use carries the
  test's ``unique`` prefix; the dead-letter queue is the shared ``vumi.dead_letter``
  (a worker process cannot be given another), so ``take_dead_letters`` takes only the
  letters whose source queue has the prefix and gives every other one back.
* ``PrivateRedis`` and ``PrivatePostgres``: a redis-server and a PostgreSQL cluster of
  the test's own, on a free port with their data in a temporary folder, so a test can
  stop and start them without touching the shared services.
* ``Tally``: message ids sent against the ids that arrived at the end of the path,
  with how many times each arrived: ``missing`` must be empty, duplicates are counted.
* ``Poison``: envelopes no worker can handle, each with the queue it goes to and the
  reason its dead letter must give.
* ``WebhookReceiver``: an HTTP/1.1 server (h11) answering webhooks as the test says
  (at once, after a delay, or with an error), recording each attempt.
* ``envelope_path`` (a router and a simulator) and ``api_pipeline`` (the Messaging API,
  its dispatcher, a router and a simulator), started in a fleet.
* ``kill_mid_stream``: envelopes published onto a connector's outbound queue, its
  events counted, and a worker killed (``kill -9``) and started again on the way.

``bench/poison.py`` and ``bench/receivers.py`` use this module too.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import h11
import httpx
import psycopg
import pytest
import sqlalchemy as sa
import trio
import yaml

from tests.conftest import IN_CI
from tests.transports.mqtt.private_broker import mosquitto_binary
from tests.transports.smpp.smsc import FakeSmsc, receipt
from vumi_like.broker import BrokerInspector, open_inspector
from vumi_like.broker.base import HEADER_DL_ERROR
from vumi_like.dlq import DeadLetter
from vumi_like.messages import DeliveryStatus, Event, EventType, Message

AMQP_URL = os.environ.get("VUMI_LIKE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "VUMI_LIKE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

REDIS_URL = os.environ.get("VUMI_LIKE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

START_TIMEOUT = 60  # seconds for a fleet's workers to answer /health
MESSAGES = int(os.environ.get("FAULTS_MESSAGES", "5000"))  # envelopes a fault test sends
KILL_AFTER = 0.3  # the share of messages through before a kill
DRAIN_TIMEOUT = 90  # seconds for the rest to arrive after the killed worker is back
STOP_TIMEOUT = 15  # seconds a worker gets after SIGTERM before SIGKILL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vumi_like_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("vumi-like")), *args]


# ------------------------------------------------------------------ worker processes


@attrs.define
class WorkerProcess:
    name: str
    class_path: str
    config_file: Path
    log_file: Path
    http_url: str
    process: subprocess.Popen[bytes] | None = None


class Fleet:
    """Worker processes; every one still running is stopped when the block is left."""

    def __init__(self, directory: Path, amqp_url: str = AMQP_URL) -> None:
        self.directory = directory
        self.amqp_url = amqp_url
        self.workers: dict[str, WorkerProcess] = {}

    def add(self, name: str, class_path: str, config: dict[str, Any]) -> WorkerProcess:
        """Start worker ``name`` (``config`` plus the broker and a free HTTP port)."""
        port = free_port()
        config = {
            "amqp_url": self.amqp_url,
            "http_bind": f"127.0.0.1:{port}",
            "shutdown_timeout": 5,
            **config,
        }
        config_file = self.directory / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        worker = WorkerProcess(
            name=name,
            class_path=class_path,
            config_file=config_file,
            log_file=self.directory / f"{name}.log",
            http_url=f"http://{config['http_bind']}",
        )
        self.workers[name] = worker
        self._start(worker)
        return worker

    def _start(self, worker: WorkerProcess) -> None:
        command = vumi_like_command(
            "worker", worker.class_path, "--config", str(worker.config_file)
        )
        with open(worker.log_file, "ab") as log:
            worker.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def kill(self, name: str) -> None:
        """``kill -9``: no shutdown, no acks, nothing flushed."""
        process = self.workers[name].process
        assert process is not None and process.poll() is None, f"{name} is not running"
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, name: str) -> None:
        """Start ``name`` again with the same config (after ``kill``)."""
        worker = self.workers[name]
        assert worker.process is None or worker.process.poll() is not None
        with open(worker.log_file, "ab") as log:
            log.write(b"\n---- restarted ----\n")
        self._start(worker)

    def url(self, name: str) -> str:
        return self.workers[name].http_url

    def check_alive(self) -> None:
        for name, worker in self.workers.items():
            if worker.process is not None and worker.process.poll() is not None:
                raise AssertionError(
                    f"{name} exited {worker.process.returncode}:\n{self.log_tail(name)}"
                )

    def log_text(self, name: str) -> str:
        return self.workers[name].log_file.read_text(errors="replace")

    def log_tail(self, name: str, lines: int = 20) -> str:
        return "\n".join(self.log_text(name).splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} (end of log) ---\n{self.log_tail(name)}" for name in self.workers
        )

    async def wait_healthy(self, *names: str) -> None:
        """Until each of ``names`` (every worker by default) answers ``/health`` 200
        (``START_TIMEOUT`` at most)."""
        async with httpx.AsyncClient(timeout=2) as client:
            with trio.fail_after(START_TIMEOUT):
                for name in names or tuple(self.workers):
                    while True:
                        self.check_alive()
                        with contextlib.suppress(httpx.HTTPError):
                            if (await client.get(f"{self.url(name)}/health")).status_code == 200:
                                break
                        await trio.sleep(0.2)

    def stop(self) -> None:
        running = [w.process for w in self.workers.values() if w.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# A worker's log line for a delivery put off on the broker because a service it needs
# (a store, a cache) could not be reached.
PUT_OFF = "service unavailable: retrying later"


def put_off_counts(
    fleet: Fleet,
    names: Sequence[str],
    prefix: str,
    *,
    events: Sequence[str] = (PUT_OFF,),
    error: str = "",
) -> Counter[str]:
    """How many deliveries workers ``names`` put off, by queue (``prefix`` cut off): the
    lines of their JSON logs that are one of ``events`` with ``error`` in their error."""
    counts: Counter[str] = Counter()
    for name in names:
        for line in fleet.log_text(name).splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line) if line.startswith("{") else {}
                if entry.get("event") in events and error in str(entry.get("error", "")):
                    counts[str(entry["queue"]).removeprefix(prefix)] += 1
    return counts


def refusal(answer: httpx.Response) -> str:
    """A refused request's answer: its status, content type, problem code and
    Retry-After."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    return (
        f"{answer.status_code} {answer.headers.get('content-type')} {code} "
        f"Retry-After: {answer.headers.get('retry-after', 'none')}"
    )


@contextlib.contextmanager
def fleet_in_tmp(amqp_url: str = AMQP_URL) -> Iterator[Fleet]:
    """A fleet whose configs and logs live in a temporary folder; on a failure the end of
    every log is printed (pytest shows it with the failure)."""
    with (
        tempfile.TemporaryDirectory(prefix="vumi-faults-") as tmp,
        Fleet(Path(tmp), amqp_url) as f,
    ):
        try:
            yield f
        except BaseException:
            print(f.logs())
            raise


# ------------------------------------------------------------------ counting


@attrs.define
class Tally:
    """Ids sent, and how many times each arrived at the end of its path."""

    sent: set[str] = attrs.field(factory=set)
    arrived: Counter[str] = attrs.field(factory=Counter)
    changed: trio.Event = attrs.field(factory=trio.Event)
    # Every arrival in order, so a waiter looks only at those since it last looked: one
    # set difference per arrival would make a wait for n ids cost n squared.
    log: list[str] = attrs.field(factory=list)

    def arrive(self, key: str) -> None:
        self.arrived[key] += 1
        self.log.append(key)
        self.changed.set()
        self.changed = trio.Event()

    @property
    def missing(self) -> set[str]:
        return self.sent - self.arrived.keys()

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for key, n in self.arrived.items() if key in self.sent and n > 1)

    @property
    def unexpected(self) -> set[str]:
        return self.arrived.keys() - self.sent

    async def wait_all(self) -> None:
        """Until every id sent has arrived. Callers bound it with ``move_on_after`` and
        then check ``missing``, which names what did not arrive."""
        await self.wait_count(len(self.sent))

    async def wait_count(self, count: int) -> None:
        """Until ``count`` of the ids sent have arrived."""
        missing, seen = self.missing, len(self.log)
        while len(self.sent) - len(missing) < count:
            await self.changed.wait()
            missing.difference_update(self.log[seen:])
            seen = len(self.log)

    def report(self, what: str) -> str:
        return (
            f"{what}: sent {len(self.sent)}, arrived {len(self.arrived.keys() & self.sent)}, "
            f"missing {len(self.missing)}, duplicates {self.duplicates}"
        )


def event_tallies(message_ids: set[str]) -> tuple[Tally, Tally, Callable[[Event], None]]:
    """Tallies of the acks and of the delivered reports of ``message_ids``, and the
    event handler that fills them (for ``consume_events``)."""
    acks, delivered = Tally(sent=set(message_ids)), Tally(sent=set(message_ids))

    def on_event(event: Event) -> None:
        if event.event_type == EventType.ACK:
            acks.arrive(event.user_message_id)
        elif event.delivery_status == DeliveryStatus.DELIVERED:
            delivered.arrive(event.user_message_id)

    return acks, delivered, on_event


async def consume_events(
    broker: BrokerInspector,
    queue: str,
    on_event: Callable[[Event], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hand every event on ``queue`` to ``on_event`` and ack it, until cancelled."""
    async with broker.consume(queue, prefetch=500) as deliveries:
        task_status.started()
        async for delivery in deliveries:
            on_event(Event.from_json(delivery.body))
            broker.ack(delivery)


def outbound(prefix: str, i: int, transport: str, **fields: Any) -> Message:
    """The ``i``-th test message, for ``transport``."""
    return Message(
        to_addr=f"+2782{i:07d}",
        from_addr="1234",
        transport_name=transport,
        transport_type="sms",
        content=f"{prefix} message {i}",
        **fields,
    )


async def publish_all(
    broker: BrokerInspector, queue: str, bodies: list[bytes], *, concurrency: int = 50
) -> None:
    """Publish ``bodies`` to ``queue``, ``concurrency`` confirms in flight at once."""
    items = iter(bodies)

    async def publisher() -> None:
        for body in items:
            await broker.publish(queue, body)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(publisher)


@contextlib.asynccontextmanager
async def own_broker(
    queues: list[str], amqp_url: str = AMQP_URL
) -> AsyncIterator[BrokerInspector]:
    """The test's own connection to RabbitMQ, declaring ``queues`` (deleted afterwards,
    with whatever is left in them)."""
    async with open_inspector(amqp_url) as broker:
        for queue in queues:
            await broker.declare_queue(queue)
        try:
            yield broker
        finally:
            with trio.CancelScope(shield=True):
                for queue in queues:
                    await broker.delete_queue(queue)


async def take_dead_letters(broker: BrokerInspector, prefix: str) -> list[DeadLetter]:
    """Take (ack) the dead letters whose source queue starts with ``prefix`` from the
    shared dead-letter queue; every other letter is given back as it was."""
    mine: list[DeadLetter] = []
    others: list[DeadLetter] = []
    while (delivery := await broker.get(broker.dead_letter_queue)) is not None:
        letter = DeadLetter(delivery)
        (mine if letter.source_queue.startswith(prefix) else others).append(letter)
    for letter in mine:
        broker.ack(letter.delivery)
    for letter in reversed(others):
        broker.requeue(letter.delivery)
    return mine


async def wait_for_letters(
    broker: BrokerInspector, prefix: str, count: int, within: float = 20
) -> list[DeadLetter]:
    """``take_dead_letters`` until there are ``count`` (or ``within`` seconds passed)."""
    letters: list[DeadLetter] = []
    with trio.move_on_after(within):
        while len(letters) < count:
            letters += await take_dead_letters(broker, prefix)
            if len(letters) < count:
                await trio.sleep(0.5)
    return letters


def letter_error(letter: DeadLetter) -> str:
    return str(letter.delivery.headers.get(HEADER_DL_ERROR, ""))


# ------------------------------------------------------------------ poison


@attrs.frozen
class Poison:
    """An envelope no worker can handle, where it is sent, and what its dead letter's
    error must say."""

    what: str
    queue: str
    body: bytes
    reason: str


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def envelope_poisons(
    app: str, transport: str, n: int = 0, huge_bytes: int = 1_000_000
) -> list[Poison]:
    """Poison for a router (on ``app``'s and ``transport``'s queues) and a transport;
    ``n`` makes the bodies distinct (a dead letter is matched to its poison by body)."""
    good = json.loads(outbound(f"poison {n}", n, transport).to_json())
    return [
        Poison("not JSON", f"{app}.outbound", f"not json {n} {{".encode(), "invalid envelope"),
        Poison(
            "wrong types",
            f"{app}.outbound",
            _json({**good, "to_addr": 27820000000 + n, "content": ["a", n]}),
            "invalid envelope",
        ),
        Poison(
            "missing fields",
            f"{app}.outbound",
            _json({"message_id": uuid.uuid4().hex, "content": n}),
            "invalid envelope",
        ),
        Poison(
            "huge body, not an envelope",
            f"{app}.outbound",
            b"[" + b"1," * (huge_bytes // 2) + f"{n}]".encode(),
            "invalid envelope",
        ),
        Poison(
            "unknown transport",
            f"{app}.outbound",
            outbound(f"poison {n}", n, "nowhere").to_json(),
            "no transport connector 'nowhere'",
        ),
        Poison(
            "event for an outbound never routed",
            f"{transport}.event",
            Event.ack(uuid.uuid4().hex, sent_message_id=f"p{n}").to_json(),
            "event for unknown outbound",
        ),
        Poison(
            "binary", f"{transport}.outbound", bytes([0, 255, 254, n % 256]), "invalid envelope"
        ),
        Poison("a JSON list", f"{transport}.outbound", _json([1, 2, n]), "invalid envelope"),
    ]


def dispatcher_poisons(connector: str, n: int = 0) -> list[Poison]:
    """Poison for the Messaging API's event dispatcher (``connector``'s queues)."""
    return [
        Poison(
            "event for an unknown message",
            f"{connector}.event",
            Event.delivery_report(uuid.uuid4().hex, "delivered").to_json(),
            "no message",
        ),
        Poison(
            "event of an unknown type",
            f"{connector}.event",
            _json(
                {
                    **json.loads(Event.ack(uuid.uuid4().hex, sent_message_id="x").to_json()),
                    "event_type": f"bogus{n}",
                }
            ),
            "invalid envelope",
        ),
        Poison(
            "inbound on an unknown channel",
            f"{connector}.inbound",
            Message(
                to_addr="1234",
                from_addr=f"+2782{n:07d}",
                transport_name="nowhere",
                transport_type="sms",
                content="hello",
            ).to_json(),
            "no tenant has '1234' as a sender",
        ),
        Poison(
            "webhook job of the wrong shape",
            f"{connector}.webhooks",
            _json({"url": 5, "n": n}),
            "invalid envelope",
        ),
    ]


# ------------------------------------------------------------------ private services


def _wait_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
        time.sleep(0.1)


class PrivateRedis:
    """A redis-server of the test's own: no persistence, its files in a temporary folder."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="vumi-faults-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, 10, self._process)

    def pause(self) -> None:
        """Stop the server process (SIGSTOP): connected clients time out, nothing is
        refused, nothing is forgotten; ``resume`` carries on."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
            self._process.terminate()
            self._process.wait(10)
        self._process = None

    def __enter__(self) -> PrivateRedis:
        require_program(shutil.which("redis-server"), "redis-server")
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._dir.cleanup()


class PrivateMosquitto:
    """A Mosquitto of the test's own, which queues without limit for a subscriber that
    falls behind. The shared one keeps at most 1,000 messages for it (Mosquitto's
    default ``max_queued_messages``) and drops the rest, which a test counting at its
    own subscriber would take for messages the transport lost."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="vumi-faults-mosquitto-")
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrivateMosquitto:
        binary = require_program(mosquitto_binary(), "mosquitto")
        config = Path(self._dir.name) / "mosquitto.conf"
        config.write_text(
            "persistence false\n"
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "max_queued_messages 0\n"
            f"listener {self.port} {self.host}\n"
        )
        self._process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, 10, self._process)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._dir.cleanup()


def require_program(path: str | None, name: str) -> str:
    """``path`` if it names a program; else the test fails in CI, and skips elsewhere."""
    if path is not None and os.access(path, os.X_OK):
        return path
    reason = f"{name} is not installed"
    if IN_CI:
        pytest.fail(f"{reason}; the fault suite needs it in CI")
    pytest.skip(reason)


def _postgres_bin(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return require_program(str(versions[-1]) if versions else None, f"PostgreSQL's {name}")


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb into a temporary folder, trust
    auth, a free port), run as the ``postgres`` user since PostgreSQL refuses root."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._dir = Path()
        self.data = Path()

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, *command], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def _pg_ctl(self, *args: str) -> None:
        self._as_postgres(_postgres_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "30", *args)

    def start(self) -> None:
        options = f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self._dir / "server.log"), "start")
        _wait_port(self.port, 30)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def __enter__(self) -> PrivatePostgres:
        initdb = _postgres_bin("initdb")
        self._dir = Path(tempfile.mkdtemp(prefix="vumi-faults-pg-"))
        self.data = self._dir / "data"
        try:
            if os.geteuid() == 0:
                shutil.chown(self._dir, "postgres", "postgres")
            self._as_postgres(initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust")
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self._dir, ignore_errors=True)


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def stored_statuses(url: str, schema: str) -> dict[str, int]:
    """How many messages the store in ``schema`` holds, by status: every one, not only
    those a client was told of (a request killed with its replica may have stored some)."""
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        rows = conn.execute(f'SELECT status, count(*) FROM "{schema}".messages GROUP BY status')
        return {status: count for status, count in rows}


# ------------------------------------------------------------------ webhook receiver


@attrs.frozen
class Attempt:
    """One webhook POST as the receiver saw it."""

    path: str
    webhook_id: str
    status_code: str
    message_id: str
    at: float  # trio.current_time() when the request arrived


Answer = Callable[[Attempt], Awaitable[int]]


async def answer_at_once(attempt: Attempt) -> int:
    return 204


class WebhookReceiver:
    """Answers webhook POSTs (keep-alive, HTTP/1.1): per path, ``answers[path]`` decides
    the status code (and may sleep first); 204 at once otherwise. Every attempt is
    recorded in ``attempts``; ``delivered`` counts the answered-2xx ones per
    ``(statusCode, messageId)``, and ``ids`` the distinct ``webhook-id``s of those."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.attempts: list[Attempt] = []
        self.delivered: dict[str, Tally] = {}  # statusCode -> message ids that got it
        self.ids: Counter[str] = Counter()  # webhook-id -> 2xx answers for it
        self.base_url = ""

    def tally(self, status_code: str) -> Tally:
        return self.delivered.setdefault(status_code, Tally())

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, self._connection, 0, host="127.0.0.1")
            )
            self.base_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            task_status.started()

    async def _connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        body = bytearray()
        target, webhook_id = "", ""
        with contextlib.suppress(h11.RemoteProtocolError, trio.BrokenResourceError):
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    connection.receive_data(data)
                elif isinstance(event, h11.Request):
                    body.clear()
                    target = event.target.decode()
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    webhook_id = headers.get("webhook-id", "")
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    status = await self._answer(target, webhook_id, bytes(body))
                    head = connection.send(h11.Response(status_code=status, headers=[]))
                    tail = connection.send(h11.EndOfMessage())
                    assert head is not None and tail is not None
                    await stream.send_all(head + tail)
                    if connection.our_state is not h11.DONE:
                        return
                    connection.start_next_cycle()
                else:
                    return

    async def _answer(self, path: str, webhook_id: str, body: bytes) -> int:
        try:
            webhook = json.loads(body)
            status_code, message_id = webhook["statusCode"], webhook["messageId"]
        except (ValueError, KeyError, TypeError):
            return 400
        attempt = Attempt(path, webhook_id, status_code, message_id, trio.current_time())
        self.attempts.append(attempt)
        status = await self.answers.get(path, answer_at_once)(attempt)
        if 200 <= status < 300:
            self.ids[webhook_id] += 1
            self.tally(status_code).arrive(message_id)
        return status


# ------------------------------------------------------------------ an SMSC's receipts


# A provider's delivery reports (an SMSC's receipts, Kannel's and Meta's callbacks):
RECEIPT_SENDERS = 20  # sent and not answered yet, at most
RECEIPT_TIMEOUT = 5  # seconds to wait for an answer before sending one again


async def send_receipts(smsc: FakeSmsc, receipts: Tally) -> None:
    """As an SMSC does: a DELIVRD receipt for every message id given, each sent until
    the ESME answers it (again after ``RECEIPT_TIMEOUT``, or once a session is bound);
    each id in ``receipts.sent`` when given, and arriving there once answered."""
    ids, pending = trio.open_memory_channel[str](math.inf)
    async with trio.open_nursery() as nursery:
        for _ in range(RECEIPT_SENDERS):
            nursery.start_soon(send_receipts_from, smsc, pending.clone(), receipts)
        given = 0
        while True:
            await smsc.wait_until(functools.partial(more_given, smsc, given))
            for message_id in smsc.message_ids[given:]:
                receipts.sent.add(message_id)
                ids.send_nowait(message_id)
            given = len(smsc.message_ids)


def more_given(smsc: FakeSmsc, given: int) -> bool:
    return len(smsc.message_ids) > given


async def send_receipts_from(
    smsc: FakeSmsc, pending: trio.MemoryReceiveChannel[str], receipts: Tally
) -> None:
    async for message_id in pending:
        while True:
            await smsc.wait_until(lambda: any(c.receives for c in smsc.bound))
            with (
                trio.move_on_after(RECEIPT_TIMEOUT),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                answer = await smsc.deliver(receipt(message_id))
                if answer.command_status == 0:
                    receipts.arrive(message_id)
                    break
            await trio.sleep(0.1)


def smpp_config(transport: str, smsc: FakeSmsc, cache: dict[str, Any]) -> dict[str, Any]:
    """An SMPP transport bound to ``smsc``, its provider ids kept in ``cache``
    (``redis_cache``) for five minutes."""
    return {
        "transport_name": transport,
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": smsc.system_id,
        "password": smsc.password,
        "worker_concurrency": 50,
        "provider_id_ttl": 300,
        "final_report_ttl": 60,
        **cache,
    }


# ------------------------------------------------------------------ pipelines


SENDERS = 16  # POSTs in flight at once
TENANT = "faults"
CLIENT_ID, CLIENT_SECRET = "faults", "faults-secret"
JWT_SECRET = "faults-suite-signing-key-0123456789abcdef"
API = "vumi_like.applications.messaging_api.MessagingApi"
DISPATCHER = "vumi_like.dispatch.EventDispatcher"
ROUTER = "vumi_like.routers.ToAddressRouter"
SIMULATOR = "vumi_like.transports.simulator.SimulatorTransport"
SMPP = "vumi_like.transports.smpp.SmppTransport"


def envelope_queues(unique: str) -> tuple[str, str, list[str]]:
    """The application and transport connector names, and every queue of theirs."""
    app, transport = f"{unique}-app", f"{unique}-sms"
    kinds = ("outbound", "inbound", "event")
    return app, transport, [f"{name}.{kind}" for name in (app, transport) for kind in kinds]


def redis_cache(unique: str, redis_url: str = REDIS_URL) -> dict[str, Any]:
    """A worker's config keys for a message cache in the Redis at ``redis_url``, under
    the test's prefix."""
    return {
        "message_cache_class": "redis",
        "message_cache_config": {
            "redis_url": redis_url,
            "key_prefix": f"{unique}:",
            "connect_timeout": 1,
            "command_timeout": 1,
        },
    }


def transport_queues(transport: str) -> list[str]:
    """A transport's queues: its connector's three and its unmatched delivery reports."""
    kinds = ("outbound", "inbound", "event", "unmatched_reports")
    return [f"{transport}.{kind}" for kind in kinds]


async def fault_mid_stream(
    broker: BrokerInspector,
    connector: str,
    messages: list[Message],
    on_event: Callable[[Event], None],
    acks: Tally,
    *ends: Tally,
    fault: Callable[[], Awaitable[object]],
    after: float = KILL_AFTER,
    beside: Sequence[Callable[[], Awaitable[object]]] = (),
) -> None:
    """Publish ``messages`` on ``connector``'s outbound queue, handing every event of
    its event queue to ``on_event``; run ``fault`` once ``after`` of them are acked,
    and then wait until ``acks`` and every one of ``ends`` have all their ids
    (``DRAIN_TIMEOUT`` at most: the caller checks ``missing``). ``beside`` runs
    meanwhile (the other side's counting, say), and is cancelled after."""
    async with trio.open_nursery() as nursery:
        for task in beside:
            nursery.start_soon(task)
        await nursery.start(consume_events, broker, f"{connector}.event", on_event)
        bodies = [message.to_json() for message in messages]
        nursery.start_soon(publish_all, broker, f"{connector}.outbound", bodies)
        with trio.fail_after(60):
            await acks.wait_count(int(len(messages) * after))
        await fault()
        with trio.move_on_after(DRAIN_TIMEOUT):
            for tally in (acks, *ends):
                await tally.wait_all()
        nursery.cancel_scope.cancel()


async def kill_mid_stream(
    broker: BrokerInspector,
    fleet: Fleet,
    victim: str,
    connector: str,
    messages: list[Message],
    on_event: Callable[[Event], None],
    acks: Tally,
    *ends: Tally,
    beside: Sequence[Callable[[], Awaitable[object]]] = (),
) -> None:
    """``fault_mid_stream``, the fault a ``kill -9`` of worker ``victim`` after
    ``KILL_AFTER`` of the messages, and its start again."""

    async def kill_and_restart() -> None:
        fleet.kill(victim)
        await trio.sleep(0.5)
        fleet.restart(victim)
        await fleet.wait_healthy(victim)

    await fault_mid_stream(
        broker, connector, messages, on_event, acks, *ends, fault=kill_and_restart, beside=beside
    )


def nothing_missing(letters: list[DeadLetter], tallies: dict[str, Tally]) -> None:
    """Print each tally's counts; fail on a dead letter or on an id missing from one."""
    print(" | ".join(tally.report(what) for what, tally in tallies.items()))
    assert not letters, [letter.summary() for letter in letters]
    for what, tally in tallies.items():
        assert not tally.missing, tally.report(what)


def envelope_path(
    fleet: Fleet,
    unique: str,
    app: str,
    transport: str,
    redis_url: str | None,
    delivery_delay: float = 0,
) -> None:
    """A router (caching in the Redis at ``redis_url``, or in its memory if None) and a
    simulator (ack at once, delivered report ``delivery_delay`` seconds later) between
    ``app`` and ``transport``."""
    cache = {} if redis_url is None else redis_cache(unique, redis_url)
    fleet.add(
        "router",
        ROUTER,
        {
            "transport_names": [transport],
            "to_address_mappings": [{"name": app, "pattern": ".*"}],
            "worker_concurrency": 50,
            **cache,
        },
    )
    fleet.add(
        "sms",
        SIMULATOR,
        {
            "transport_name": transport,
            "delivery_delay": delivery_delay,
            "worker_concurrency": 50,
        },
    )


def api_queues(prefix: str) -> list[str]:
    """Every queue of the pipeline ``api_pipeline`` starts with ``prefix``."""
    connector, transport = f"{prefix}messaging", f"{prefix}sms"
    queues = [f"{connector}.webhooks", f"{connector}.batches"]
    for name in (connector, transport):
        queues += [f"{name}.outbound", f"{name}.inbound", f"{name}.event"]
    return queues


def api_channels(prefix: str) -> list[dict[str, Any]]:
    """The channels of ``api_pipeline``: ``sms``, on its simulator, the tenant's
    sender ``1234``."""
    transport = f"{prefix}sms"
    return [
        {"name": "sms", "type": "sms", "transport_name": transport, "senders": {TENANT: ["1234"]}}
    ]


def api_pipeline(
    fleet: Fleet,
    prefix: str,
    store: dict[str, Any],
    *,
    api_replicas: int = 1,
    api: dict[str, Any] | None = None,
    api_each: Sequence[dict[str, Any]] = (),
    dispatcher: dict[str, Any] | None = None,
    delivery_delay: float = 0,
    extra_apps: tuple[str, ...] = (),
) -> None:
    """Start the Messaging API pipeline (API replicas ``api0``..., ``dispatcher``,
    ``router``, ``sms``: a simulator acking at once and reporting DELIVERED
    ``delivery_delay`` seconds later) with ``prefix`` on every queue (``api_queues``);
    ``api`` and ``dispatcher`` add to those workers' configs, ``api_each[n]`` to
    ``api<n>``'s. The router also serves ``extra_apps`` (connectors
    ``<prefix><app>``, taking no inbound), for envelopes a test sends it directly."""
    connector, transport = f"{prefix}messaging", f"{prefix}sms"
    channels = api_channels(prefix)
    auth = {
        "jwt_secret": JWT_SECRET,
        "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "tenant": TENANT}],
    }
    for n in range(api_replicas):
        fleet.add(
            f"api{n}",
            API,
            {
                "connector_name": connector,
                "auth": auth,
                "channels": channels,
                **store,
                **(api or {}),
                **(api_each[n] if n < len(api_each) else {}),
            },
        )
    fleet.add(
        "dispatcher",
        DISPATCHER,
        {"connector_name": connector, "channels": channels, **store, **(dispatcher or {})},
    )
    fleet.add(
        "router",
        ROUTER,
        {
            "transport_names": [transport],
            "to_address_mappings": [
                {"name": connector, "pattern": ".*"},
                *({"name": f"{prefix}{app}", "pattern": "^$"} for app in extra_apps),
            ],
        },
    )
    fleet.add("sms", SIMULATOR, {"transport_name": transport, "delivery_delay": delivery_delay})


async def api_token(client: httpx.AsyncClient) -> dict[str, str]:
    """The bearer header of the pipeline's client."""
    answer = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def subscribe(
    api_url: str, receiver: WebhookReceiver, *event_types: str, path: str = "/hook"
) -> dict[str, str]:
    """Subscribe ``receiver`` (at ``path``) to ``event_types`` (every status if none);
    the bearer header."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        headers = await api_token(client)
        subscription = {"url": f"{receiver.base_url}{path}", "eventTypes": list(event_types)}
        answer = await client.post("/v1/webhooks", json=subscription, headers=headers)
        assert answer.status_code == 201, answer.text
    return headers


def sms(i: int) -> dict[str, Any]:
    return {"channel": "sms", "receiver": f"+2782{i:07d}", "content": f"fault test {i}"}


async def send_all(
    clients: list[httpx.AsyncClient],
    count: int,
    send: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    accept: Callable[[int, httpx.Response], bool],
    *,
    concurrency: int = SENDERS,
    on_failure: list[str] | None = None,
) -> None:
    """Make ``count`` requests (``send(client, i)``) over ``clients`` in turn,
    ``concurrency`` at once. One that fails (connection refused or reset, or an answer
    ``accept(i, answer)`` refuses, which must be a 5xx or a 409) is made again, with
    the next client, until one is accepted (60 s at most); ``on_failure`` collects
    what each failure was."""
    numbers = iter(range(count))
    turn = itertools.count()

    async def sender() -> None:
        for i in numbers:
            with trio.fail_after(60):
                while True:
                    client = clients[next(turn) % len(clients)]
                    try:
                        answer = await send(client, i)
                    except httpx.HTTPError as exc:
                        if on_failure is not None:
                            on_failure.append(type(exc).__name__)
                        await trio.sleep(0.05)
                        continue
                    if accept(i, answer):
                        break
                    if on_failure is not None:
                        retry_after = answer.headers.get("Retry-After")
                        on_failure.append(
                            f"{answer.status_code} Retry-After: {retry_after or 'none'}"
                        )
                    assert answer.status_code >= 500 or answer.status_code == 409, answer.text
                    await trio.sleep(0.2)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(sender)


async def post_all(
    clients: list[httpx.AsyncClient],
    count: int,
    accepted: set[str],
    *,
    concurrency: int = SENDERS,
    on_failure: list[str] | None = None,
    milestone: tuple[int, trio.Event] | None = None,
    path: str = "/v1/messages",
    body: Callable[[int], dict[str, Any]] = sms,
    created: int = 202,
    id_key: str = "messageId",
    keyed: bool = True,
) -> None:
    """POST ``count`` messages (``body(i)`` to ``path``; by default SMS to the Messaging
    API), each with its own Idempotency-Key (none if not ``keyed``), over ``clients`` in
    turn (``send_all``: a failed POST is sent again, with the same key, to the next
    client), until one answers ``created``, whose ``id_key`` goes into ``accepted``.
    ``milestone`` (n, event): the event is set once n are accepted."""
    keys = [{"Idempotency-Key": uuid.uuid4().hex} if keyed else {} for _ in range(count)]

    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(path, json=body(i), headers=keys[i])

    def accept(i: int, answer: httpx.Response) -> bool:
        if answer.status_code != created:
            return False
        accepted.add(str(answer.json()[id_key]))
        if milestone is not None and len(accepted) >= milestone[0]:
            milestone[1].set()
        return True

    await send_all(clients, count, send, accept, concurrency=concurrency, on_failure=on_failure)


async def final_statuses(client: httpx.AsyncClient, ids: set[str]) -> dict[str, int]:
    """How many of ``ids`` are in each status, as ``GET /v1/messages/{id}`` says."""
    statuses: dict[str, int] = {}
    for message_id in sorted(ids):
        answer = await client.get(f"/v1/messages/{message_id}")
        status = answer.json()["status"] if answer.status_code == 200 else str(answer.status_code)
        statuses[status] = statuses.get(status, 0) + 1
    return statuses
