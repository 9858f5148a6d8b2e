"""Private RabbitMQ nodes, and worker processes against them, for tests that break brokers.

The shared broker on 5672 must never be stopped (others are using it), so a test that
stops a broker or forms a cluster starts nodes of its own: ``rabbit_nodes(count, dir)``
starts ``count`` nodes, each with its own node name (``vl-<random>-<n>@localhost``),
AMQP port, Erlang distribution port, data and log directories under ``dir``, no
plugins (no management listener to clash over), and an Erlang cookie of its own that
the ``rabbitmqctl`` calls here share; with more than one node they are joined into a
cluster. Every node is stopped when the block ends, however it ends: ``rabbitmqctl
stop``, then the node's process group is killed if it still runs. Each step has a
deadline, so a node that will not start fails the test instead of hanging it.

``worker_process`` runs ``vumi-like worker CLASS --config FILE`` as a process with an
HTTP port for ``/health``, and stops it (SIGTERM, then SIGKILL) when the block ends.

Needs the RabbitMQ server scripts (``VUMI_LIKE_TEST_RABBITMQ_BIN``, default
``/usr/lib/rabbitmq/bin``); without them the tests skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import yaml

from tests.conftest import IN_CI
from vumi_like.broker import Broker
from vumi_like.messages import Event, EventType, Message

RABBITMQ_BIN = Path(os.environ.get("VUMI_LIKE_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
START_TIMEOUT = 90.0  # a node's boot on a busy 2-core machine
CTL_TIMEOUT = 60.0
AWAIT_STARTUP_TIMEOUT = 20  # seconds rabbitmqctl await_startup waits for the node
CTL_ATTEMPTS = 5  # a CLI that could not start its own Erlang node (see RabbitNode.ctl)


def require_rabbitmq_server() -> None:
    """Skip (fail in CI) unless private RabbitMQ nodes can be started here."""
    missing = [
        name
        for name in ("rabbitmq-server", "rabbitmqctl")
        if not os.access(RABBITMQ_BIN / name, os.X_OK)
    ]
    if not missing:
        return
    reason = f"no {', '.join(missing)} in {RABBITMQ_BIN} (VUMI_LIKE_TEST_RABBITMQ_BIN)"
    if IN_CI:
        pytest.fail(f"private RabbitMQ nodes are required in CI: {reason}")
    pytest.skip(f"private RabbitMQ nodes unavailable: {reason}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int, taken: set[int]) -> list[int]:
    """``count`` free ports from 20000-45000: below the ephemeral range, and low enough
    that the CLI's distribution ports (a node's + 10000) stay valid."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 45000)
        if port not in taken and port + 10000 not in taken and _port_free(port):
            taken.update({port, port + 10000})
            ports.append(port)
    return ports


@attrs.define
class RabbitNode:
    """One private RabbitMQ node; ``url`` is its AMQP URL (guest, from localhost)."""

    name: str
    amqp_port: int
    dist_port: int
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def start(self) -> None:
        """Launch the node's process (``wait_started`` waits for it to serve)."""
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: torn down as one
            )

    async def ctl(self, *args: str) -> str:
        """``rabbitmqctl -n NODE ARGS``; its output, or an error with its output.

        The CLI is an Erlang node of its own, named ``rabbitmqcli-<n>-NODE`` with a
        small random ``n``: when that name is still taken (another CLI call, or one
        that has just ended) it fails with "Distribution failed" before reaching the
        node, and is run again.
        """
        with trio.fail_after(CTL_TIMEOUT):
            for attempt in range(CTL_ATTEMPTS):
                result = await trio.run_process(
                    [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name, *args],
                    env=self.env,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                output = (result.stdout + result.stderr).decode(errors="replace")
                if result.returncode == 0 or "Distribution failed" not in output:
                    break
                await trio.sleep(0.2 * (attempt + 1))
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {self.name} {' '.join(args)}: {output[-2000:]}")
        return output

    async def wait_started(self) -> None:
        """Wait until the node serves AMQP (its app running, its port open)."""
        with trio.fail_after(START_TIMEOUT):
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode}: "
                        f"{self.log_file.read_text(errors='replace')[-2000:]}"
                    )
                try:
                    # Fails at once while the node has not registered with epmd yet. A
                    # CLI can also hang before it reaches the node: it is given up on
                    # (killed) and run again.
                    with trio.move_on_after(AWAIT_STARTUP_TIMEOUT + 10):
                        await self.ctl("await_startup", "--timeout", str(AWAIT_STARTUP_TIMEOUT))
                        if not _port_free(self.amqp_port):
                            return
                except RuntimeError:
                    pass
                await trio.sleep(0.5)

    async def stop_app(self) -> None:
        """Stop RabbitMQ on the node (its Erlang VM stays up): clients are cut off."""
        await self.ctl("stop_app")

    async def start_app(self) -> None:
        await self.ctl("start_app")
        await self.wait_started()

    async def stop(self) -> None:
        """Stop the node, then make sure its whole process group is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                await self.ctl("stop")
            except (RuntimeError, trio.TooSlowError):
                pass
        with trio.move_on_after(15):
            while self.process.poll() is None:  # noqa: ASYNC110 (another process: no event)
                await trio.sleep(0.1)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def _node(base: Path, prefix: str, index: int, ports: tuple[int, int]) -> RabbitNode:
    home = base / f"node{index}"
    for sub in ("mnesia", "log"):
        (home / sub).mkdir(parents=True)
    (home / "enabled_plugins").write_text("[].\n")
    (home / "rabbitmq-env.conf").write_text("")  # not the system one: its NODENAME
    amqp_port, dist_port = ports
    (home / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{amqp_port}\nloopback_users.guest = true\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(base),  # the cookie, shared by the nodes and rabbitmqctl
        "RABBITMQ_NODENAME": f"{prefix}-{index}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CTL_DIST_PORT_MIN": str(dist_port + 10000),
        "RABBITMQ_CTL_DIST_PORT_MAX": str(dist_port + 10000),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
        "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    return RabbitNode(f"{prefix}-{index}@localhost", amqp_port, dist_port, home, env)


def _prepare_nodes(count: int, base: Path) -> list[RabbitNode]:
    base.mkdir(parents=True, exist_ok=True)
    cookie = base / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16).upper())
    cookie.chmod(0o400)
    prefix = f"vl-{secrets.token_hex(3)}"
    taken: set[int] = set()
    nodes = []
    for index in range(1, count + 1):
        amqp_port, dist_port = _free_ports(2, taken)
        nodes.append(_node(base, prefix, index, (amqp_port, dist_port)))
    return nodes


@asynccontextmanager
async def rabbit_nodes(
    count: int, base: Path, *, cluster: bool = True
) -> AsyncIterator[list[RabbitNode]]:
    """``count`` private nodes under ``base``, joined into a cluster unless ``cluster``
    is false; all stopped when the block ends."""
    require_rabbitmq_server()
    nodes = _prepare_nodes(count, base)
    try:
        for node in nodes:
            node.start()
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(node.wait_started)
        first = nodes[0]
        for node in nodes[1:] if cluster else []:
            await node.ctl("stop_app")
            await node.ctl("join_cluster", first.name)
            await node.start_app()
        yield nodes
    finally:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(node.stop)


# ---------------------------------------------------------------- worker processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@attrs.define
class WorkerProcess:
    """A ``vumi-like worker`` process; ``health()`` asks its ``/health``."""

    name: str
    port: int
    process: trio.Process
    log_file: Path

    async def health(self) -> str:
        """``ok`` or ``down`` as the worker says, or ``unreachable``."""
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                response = await http.get(f"http://127.0.0.1:{self.port}/health")
            health: str = response.json()["health"]
            return health
        except (httpx.HTTPError, ValueError, KeyError):
            return "unreachable"

    async def wait_health(self, wanted: str) -> float:
        """Wait until ``/health`` says ``wanted``; how long that took. The caller sets
        the deadline."""
        started = trio.current_time()
        while await self.health() != wanted:
            if self.process.returncode is not None:
                raise RuntimeError(f"{self.name} exited: {self.log()[-3000:]}")
            await trio.sleep(0.1)
        return trio.current_time() - started

    def log(self) -> str:
        """Everything the worker wrote (JSON log lines, one per line)."""
        return self.log_file.read_text(errors="replace")


@asynccontextmanager
async def worker_process(
    name: str, worker_class: str, config: Mapping[str, Any], base: Path
) -> AsyncIterator[WorkerProcess]:
    """Run ``worker_class`` with ``config`` (plus an ``http_bind`` of its own) as a
    process until the block ends; it has started when ``/health`` first says ok."""
    port = free_port()
    config_file = base / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump({**config, "http_bind": f"127.0.0.1:{port}"}))
    log_file = base / f"{name}.log"
    with log_file.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "vumi_like.cli", "worker", worker_class],
            env={**os.environ, "VUMI_CONFIG_FILE": str(config_file)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(name, port, process, log_file)
    try:
        with trio.fail_after(60):
            await worker.wait_health("ok")
        yield worker
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


# ---------------------------------------------------------------- a counted stream


ROUTER = "vumi_like.routers.ToAddressRouter"
SIMULATOR = "vumi_like.transports.simulator.SimulatorTransport"


def pipeline_configs(
    amqp_url: str, app: str, transport: str, *, queue_type: str = "classic"
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Configs of a router and a simulator transport between application ``app`` and
    transport ``transport``, reconnecting quickly: name -> (class, config)."""
    common: dict[str, Any] = {
        "amqp_url": amqp_url,
        "amqp": {
            "queue_type": queue_type,
            "reconnect_interval": 0.5,
            "max_reconnect_interval": 2,
            "publish_timeout": 60,
        },
        "worker_concurrency": 20,
        "log_level": "INFO",
    }
    router = {
        **common,
        "transport_names": [transport],
        "to_address_mappings": {app: ".*"},
    }
    simulator = {**common, "transport_name": transport, "delivery_delay": 0}
    return {"router": (ROUTER, router), "transport": (SIMULATOR, simulator)}


@attrs.define
class CountedStream:
    """Outbound messages sent as application ``app``, counted back end to end: each
    must come back as an ack and a delivery report on ``<app>.event``."""

    app: str
    transport: str
    sent: list[str] = attrs.Factory(list)
    events: dict[str, dict[str, int]] = attrs.Factory(dict)  # message id -> kind -> count
    published: trio.Event = attrs.Factory(trio.Event)  # set when publish has done

    def message(self, i: int) -> Message:
        return Message(
            to_addr=f"+2782{i:07d}",
            from_addr="12345",
            transport_name=self.transport,
            transport_type="sms",
            content=f"message {i}",
        )

    async def publish(
        self, broker: Broker, count: int, rate: float, progress: trio.Event | None = None
    ) -> None:
        """Publish ``count`` messages at about ``rate`` a second; ``progress`` is set a
        third of the way through."""
        started = trio.current_time()
        for i in range(count):
            message = self.message(i)
            await broker.publish(f"{self.app}.outbound", message.to_json())
            self.sent.append(message.message_id)
            if progress is not None and i == count // 3:
                progress.set()
            await trio.sleep_until(started + (i + 1) / rate)
        self.published.set()

    async def collect(self, broker: Broker, subscribed: trio.Event) -> None:
        """Count the events on ``<app>.event`` until cancelled."""
        async with broker.consume(f"{self.app}.event", prefetch=200) as events:
            subscribed.set()
            async for delivery in events:
                event = Event.from_json(delivery.body)
                kind = event.event_type.value
                if event.event_type is EventType.DELIVERY_REPORT:
                    kind = f"{kind}:{event.delivery_status}"
                counts = self.events.setdefault(event.user_message_id, {})
                counts[kind] = counts.get(kind, 0) + 1
                broker.ack(delivery)

    def complete(self) -> bool:
        return len(self.sent) > 0 and not self.missing()

    def missing(self) -> list[str]:
        """Ids of messages sent whose ack or delivered report has not come back."""
        return [
            message_id
            for message_id in self.sent
            if {"ack", "delivery_report:delivered"} - set(self.events.get(message_id, {}))
        ]

    def missing_kinds(self) -> dict[str, int]:
        """How many messages lack each event (``none``: no event at all)."""
        kinds: dict[str, int] = {}
        for message_id in self.missing():
            seen = set(self.events.get(message_id, {}))
            lacking = {"ack", "delivery_report:delivered"} - seen
            key = "none" if not seen else ",".join(sorted(lacking))
            kinds[key] = kinds.get(key, 0) + 1
        return kinds

    def duplicates(self) -> int:
        return sum(n - 1 for counts in self.events.values() for n in counts.values() if n > 1)

    def unexpected(self) -> list[str]:
        """Events for messages never sent, or of a kind that should not occur."""
        sent = set(self.sent)
        return [
            f"{message_id}: {kind}"
            for message_id, counts in self.events.items()
            for kind in counts
            if message_id not in sent or kind not in {"ack", "delivery_report:delivered"}
        ]

    async def wait_complete(self) -> None:
        """Wait until every message is sent and has come back; the caller sets the
        deadline."""
        await self.published.wait()
        while not self.complete():  # noqa: ASYNC110 (filled by another task, checked often)
            await trio.sleep(0.2)
