"""``vumi-like``, run as a user runs it: the real console script in a subprocess.

The contract a user sees: every error they can cause (a bad class path, a bad config,
an unreachable broker or Redis, malformed YAML, a wrong flag) prints ONE line on stderr
starting ``vumi-like:`` and exits 2, never a traceback; a running worker stops
gracefully on SIGTERM and exits 0.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml

from vumi_like.applications.echo import EchoApplicationConfig
from vumi_like.broker import open_broker, open_inspector
from vumi_like.broker.bridge import LOOP_ENV
from vumi_like.cli import (
    GC_YOUNG_THRESHOLD,
    ForcedStop,
    _gc_for_workers,
    _run_trio,
    _until_signalled,
)
from vumi_like.config import describe_config
from vumi_like.messages import Message

ECHO = "vumi_like.applications.echo.EchoApplication"
ECHO_PIPELINE = Path(__file__).resolve().parent.parent / "config" / "echo_pipeline.yaml"
SECRET = "s3cr3t-pw"


def cli_environment() -> dict[str, str]:
    """This environment without what would configure a worker behind the test's back."""
    configured = {field.env for field in describe_config(EchoApplicationConfig)}
    return {
        key: value
        for key, value in os.environ.items()
        if key not in configured and not key.startswith("VUMI_")
    }


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "vumi_like.cli", *args]


async def vumi_like(*args: str, within: float = 30) -> subprocess.CompletedProcess[bytes]:
    """Run ``vumi-like ARGS`` to its end; its output captured."""
    with trio.fail_after(within):
        return await trio.run_process(
            command(*args),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=cli_environment(),
        )


def is_log_line(line: str) -> bool:
    return line.startswith("{")


def user_error(result: subprocess.CompletedProcess[bytes], *, logs: bool = False) -> str:
    """The one line a user error printed, after checking exit code 2 and no traceback.

    With ``logs``, JSON log lines (libraries logging a failed connection attempt) may
    come before it; without, stderr must be that one line and nothing else.
    """
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    if logs:
        lines = [line for line in lines if not is_log_line(line)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vumi-like: "), stderr
    assert result.stdout == b""
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningCli:
    """A ``vumi-like`` process still running, its output read as it comes."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._output = trio.Event()
        self._closed = {"stdout": trio.Event(), "stderr": trio.Event()}

    async def _read(self, name: str) -> None:
        stream = getattr(self.process, name)
        buffer: bytearray = getattr(self, name)
        while chunk := await stream.receive_some():
            buffer.extend(chunk)
            self._wake()
        self._closed[name].set()
        self._wake()

    def _wake(self) -> None:
        self._output.set()
        self._output = trio.Event()

    @property
    def output_closed(self) -> bool:
        """Both pipes at EOF: the process has exited, and all it wrote has been read."""
        return all(closed.is_set() for closed in self._closed.values())

    def logs(self) -> list[dict[str, Any]]:
        """The complete JSON log lines written so far (stdout and stderr alike)."""
        logs = []
        for buffer in (self.stdout, self.stderr):
            *complete, _partial = buffer.decode(errors="replace").split("\n")
            logs.extend(json.loads(line) for line in complete if is_log_line(line))
        return logs

    def find_log(self, **fields: Any) -> dict[str, Any] | None:
        return next(
            (log for log in self.logs() if all(log.get(k) == v for k, v in fields.items())),
            None,
        )

    async def wait_for_log(self, *, within: float = 15, **fields: Any) -> dict[str, Any]:
        with trio.fail_after(within):
            while (log := self.find_log(**fields)) is None:
                if self.output_closed:
                    pytest.fail(
                        f"vumi-like exited ({self.process.returncode}) before logging "
                        f"{fields}:\n{self.stderr.decode()}"
                    )
                await self._output.wait()
        return log

    async def wait_for_stdout(self, text: str, *, within: float = 15) -> None:
        with trio.fail_after(within):
            while text.encode() not in self.stdout:
                if self.output_closed:
                    pytest.fail(f"vumi-like exited before printing {text!r}")
                await self._output.wait()

    async def terminate(self, *, within: float = 10) -> int:
        """SIGTERM; the exit code, once the process is gone and its output read."""
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(within):
            code = await self.process.wait()
            for closed in self._closed.values():
                await closed.wait()
        return code


@asynccontextmanager
async def running(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[RunningCli]:
    """Start ``vumi-like ARGS`` (with ``env`` added); it is killed on leaving if still running."""
    process = await trio.lowlevel.open_process(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**cli_environment(), **(env or {})},
    )
    cli = RunningCli(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cli._read, "stdout")
        nursery.start_soon(cli._read, "stderr")
        try:
            yield cli
        finally:
            if process.poll() is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize("args", [[], ["--help"], ["-h"]])
async def test_no_arguments_or_help_prints_usage_and_exits_0(args: list[str]):
    result = await vumi_like(*args)
    assert result.returncode == 0
    out = result.stdout.decode()
    for usage in ("vumi-like worker", "vumi-like run", "vumi-like dlq"):
        assert usage in out
    assert result.stderr == b""


async def test_unknown_command_is_one_line_and_exit_2():
    line = user_error(await vumi_like("frobnicate"))
    assert "frobnicate" in line
    assert "worker, run, dlq" in line


async def test_worker_help_lists_the_config_flags_of_the_class():
    result = await vumi_like("worker", ECHO, "--help")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    for flag in ("--config", "--connector-name", "--amqp-hostname", "--http-bind"):
        assert flag in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["worker"], "give the worker class"),
        (["worker", "--config", "x.yaml"], "give the worker class"),
        (["worker", ECHO, "--no-such-flag"], "--no-such-flag"),
        (["run"], "pipeline"),
        (["run", "a.yaml", "b.yaml"], "b.yaml"),
        (["dlq"], "action"),
        (["dlq", "frob"], "frob"),
        (["dlq", "replay"], "--all"),
    ],
)
async def test_a_wrong_command_line_is_one_line_and_exit_2(args: list[str], expected: str):
    assert expected in user_error(await vumi_like(*args))


# ---------------------------------------------------------------- vumi-like worker: errors


@pytest.mark.parametrize(
    ("class_path", "expected"),
    [
        ("no.such.Class", "cannot import module 'no.such'"),
        ("nodots", "not a dotted path"),
        ("os.path", "'os.path' is not a worker class"),
        ("os.no_such_attribute", "has no 'no_such_attribute'"),
        ("vumi_like.messages.Message", "is not a worker class"),
    ],
)
async def test_worker_with_a_bad_class_path_is_one_line_and_exit_2(class_path: str, expected: str):
    assert expected in user_error(await vumi_like("worker", class_path))


async def test_worker_without_a_required_key_names_it():
    line = user_error(await vumi_like("worker", ECHO))
    assert "connector_name" in line
    assert "--connector-name" in line


async def test_worker_with_malformed_yaml_names_the_file_and_line(tmp_path: Path):
    config = tmp_path / "echo.yaml"
    config.write_text("connector_name: echo\nprefix: [unclosed\n", encoding="utf-8")

    line = user_error(await vumi_like("worker", ECHO, "--config", str(config)))

    assert str(config) in line
    assert "line 3" in line


async def test_worker_with_an_unknown_key_in_the_file_names_it(tmp_path: Path):
    config = write_yaml(tmp_path / "echo.yaml", {"connector_name": "echo", "colour": "blue"})

    line = user_error(await vumi_like("worker", ECHO, "--config", str(config)))

    assert "'colour'" in line
    assert str(config) in line


async def test_worker_with_a_missing_config_file_names_it(tmp_path: Path):
    config = tmp_path / "nowhere.yaml"
    line = user_error(await vumi_like("worker", ECHO, "--config", str(config)))
    assert str(config) in line


async def test_worker_with_a_bad_flag_value_names_the_key():
    line = user_error(
        await vumi_like("worker", ECHO, "--connector-name", "x", "--amqp-port", "notanumber")
    )
    assert "amqp.port" in line
    assert "--amqp-port" in line


@pytest.mark.parametrize(
    "broker_args",
    [
        ["--amqp-port", "1", "--amqp-password", SECRET],
        ["--amqp-url", f"amqp://guest:{SECRET}@127.0.0.1:1/"],
    ],
    ids=["amqp-port", "amqp-url"],
)
async def test_worker_with_unreachable_rabbitmq_is_one_line_without_the_password(
    broker_args: list[str],
):
    # A refused connection fails at once; a silent one takes amqp.connect_timeout.
    started = trio.current_time()
    result = await vumi_like("worker", ECHO, "--connector-name", "x", *broker_args, within=20)

    line = user_error(result, logs=True)
    assert "cannot connect" in line
    assert "127.0.0.1:1" in line
    assert SECRET not in result.stderr.decode() + result.stdout.decode()
    assert trio.current_time() - started < 15


async def test_an_unknown_broker_io_loop_is_one_line_and_exit_2():
    with trio.fail_after(30):
        result = await trio.run_process(
            command("worker", ECHO, "--connector-name", "x"),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=cli_environment() | {LOOP_ENV: "tokio"},
        )

    assert user_error(result) == (
        "vumi-like: broker: VUMI_LIKE_ASYNCIO_LOOP must be uvloop or asyncio, not 'tokio'"
    )


async def test_amqp_connect_timeout_from_the_config_bounds_a_silent_broker():
    # Accepts the TCP connection and never speaks AMQP.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, _silently_hold, listeners)
        started = trio.current_time()
        result = await vumi_like(
            "worker",
            ECHO,
            "--connector-name",
            "x",
            "--amqp-url",
            f"amqp://guest:guest@127.0.0.1:{port}/",
            "--amqp-connect-timeout",
            "1.5",
            within=20,
        )
        took = trio.current_time() - started
        nursery.cancel_scope.cancel()
    line = user_error(result, logs=True)
    assert "cannot connect" in line
    assert f"127.0.0.1:{port}" in line
    assert took < 8  # 1.5 s, plus starting Python; the default would be 10 s


async def _silently_hold(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


async def test_worker_with_unreachable_redis_is_one_line_naming_the_cache():
    result = await vumi_like(
        "worker",
        "vumi_like.routers.ToAddressRouter",
        "--amqp-url",
        "memory://",
        "--message-cache-class",
        "redis",
        "--message-cache-config",
        json.dumps({"redis_url": f"redis://:{SECRET}@127.0.0.1:1/0"}),
    )

    line = user_error(result, logs=True)
    assert "cache" in line
    assert "redis" in line.lower()
    assert SECRET not in result.stderr.decode()


async def test_worker_with_its_http_port_taken_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        host, port = taken.getsockname()
        result = await vumi_like(
            "worker",
            ECHO,
            "--amqp-url",
            "memory://",
            "--connector-name",
            "x",
            "--http-bind",
            f"{host}:{port}",
        )

    assert "Address already in use" in user_error(result, logs=True)


# ---------------------------------------------------------------- vumi-like worker: running


async def test_worker_serves_health_and_stops_gracefully_on_sigterm(amqp_url: str, unique: str):
    port = free_port()
    try:
        with trio.fail_after(60):
            async with running(
                "worker",
                ECHO,
                "--amqp-url",
                amqp_url,
                "--connector-name",
                unique,
                "--http-bind",
                f"127.0.0.1:{port}",
                "--prefix",
                "back: ",
            ) as cli:
                await cli.wait_for_log(event="worker started")
                async with httpx.AsyncClient(timeout=5) as http:
                    response = await http.get(f"http://127.0.0.1:{port}/health")
                assert response.status_code == 200
                assert response.json()["health"] == "ok"

                # It really is at work on the queues its connector name gives.
                async with open_broker(
                    amqp_url, dead_letter_queue=f"{unique}.dead_letter"
                ) as broker:
                    await broker.declare_queue(f"{unique}.outbound")
                    inbound = Message(
                        to_addr="1234",
                        from_addr="+27820000001",
                        transport_name="sim",
                        transport_type="sms",
                        content="ping",
                    )
                    await broker.publish(f"{unique}.inbound", inbound.to_json())
                    async with broker.consume(f"{unique}.outbound", prefetch=1) as replies:
                        async for delivery in replies:
                            broker.ack(delivery)
                            break
                reply = Message.from_json(delivery.body)
                assert reply.in_reply_to == inbound.message_id
                assert reply.content == "back: ping"

                started = trio.current_time()
                assert await cli.terminate() == 0, cli.stderr.decode()
                assert trio.current_time() - started < 5
                assert cli.find_log(event="worker stopped") is not None
                assert "Traceback" not in cli.stderr.decode()
    finally:
        with trio.move_on_after(15) as cleanup:
            cleanup.shield = True
            async with open_inspector(amqp_url, dead_letter_queue=f"{unique}.dead_letter") as b:
                for suffix in ("inbound", "outbound", "event", "dead_letter"):
                    await b.delete_queue(f"{unique}.{suffix}")


async def signalled_twice(first: signal.Signals, second: signal.Signals) -> None:
    """The CLI's signal receiver, sent ``second`` once it has acted on ``first``."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_until_signalled, stop)
        os.kill(os.getpid(), first)
        await stop.wait()
        os.kill(os.getpid(), second)
        await trio.sleep_forever()


async def test_first_signal_asks_for_a_graceful_stop_and_a_second_forces_it():
    with trio.fail_after(5), pytest.RaisesGroup(pytest.RaisesExc(ForcedStop, match="SIGINT")):
        await signalled_twice(signal.SIGTERM, signal.SIGINT)


def test_workers_freeze_what_they_imported_and_collect_the_young_less_often():
    threshold = gc.get_threshold()
    try:
        _gc_for_workers()
        frozen = gc.get_freeze_count()
        tuned = gc.get_threshold()
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    # The libraries imported by now: pydantic, trio, the broker clients...
    assert frozen > 10_000
    assert tuned == (GC_YOUNG_THRESHOLD, *threshold[1:])


def test_a_forced_stop_is_one_line_and_exit_130(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        _run_trio(functools.partial(signalled_twice, signal.SIGINT, signal.SIGINT))
    assert exited.value.code == 130
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        "vumi-like: stopped at once on a second SIGINT; what was not acked goes back to its queue"
    )


def test_ctrl_c_outside_the_signal_receiver_is_one_line_and_exit_130(
    capsys: pytest.CaptureFixture[str],
):
    async def main() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # trio's own handler: KeyboardInterrupt
        await trio.sleep_forever()

    with pytest.raises(SystemExit) as exited:
        _run_trio(main)
    assert exited.value.code == 130
    assert capsys.readouterr().err.splitlines() == [
        "vumi-like: interrupted; what was not acked goes back to its queue"
    ]


# ---------------------------------------------------------------- vumi-like run


def echo_pipeline_copy(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """config/echo_pipeline.yaml with every http_bind on a free port: (path, {worker: port})."""
    pipeline = yaml.safe_load(ECHO_PIPELINE.read_text(encoding="utf-8"))
    ports = {}
    for worker in pipeline["workers"]:
        if "http_bind" in worker.get("config", {}):
            ports[worker["name"]] = free_port()
            worker["config"]["http_bind"] = f"127.0.0.1:{ports[worker['name']]}"
    return write_yaml(tmp_path / "echo_pipeline.yaml", pipeline), ports


async def test_echo_pipeline_echoes_and_reports_delivery(tmp_path: Path):
    path, ports = echo_pipeline_copy(tmp_path)
    with trio.fail_after(60):
        async with running("run", str(path)) as cli:
            for name in ("echo", "router", "sim"):
                await cli.wait_for_log(event="worker started", worker=name)
            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.post(
                    f"http://127.0.0.1:{ports['sim']}/inbound",
                    json={"from_addr": "+27820000001", "to_addr": "1234", "content": "ping"},
                )
                assert response.status_code == 200, response.text
                message_id = response.json()["message_id"]

                await cli.wait_for_log(
                    event="inbound", worker="echo", message_id=message_id, content="ping"
                )
                ack = await cli.wait_for_log(event="event", worker="echo", event_type="ack")
                report = await cli.wait_for_log(
                    event="event", worker="echo", delivery_status="delivered"
                )
                assert report["message_id"] == ack["message_id"]  # both about the reply

                metrics = await http.get(f"http://127.0.0.1:{ports['echo']}/metrics")
            assert (
                'vumi_like_consumed_total{connector="echo",queue="echo.event",worker="echo"} 2.0'
                in metrics.text
            )

            assert await cli.terminate() == 0, cli.stderr.decode()
            for name in ("echo", "router", "sim"):
                assert cli.find_log(event="worker stopped", worker=name) is not None
            assert "Traceback" not in cli.stderr.decode()


ECHO_WORKER = {"name": "echo", "class": ECHO, "config": {"connector_name": "echo"}}


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ("workers:\n  - name: echo\n   class: x\n", ["line 3"]),
        ("- just\n- a list\n", ["must be a mapping"]),
        ({"amqp_url": "memory://"}, ["workers: is required"]),
        ({"workers": [ECHO_WORKER], "colour": "blue"}, ["colour"]),
        ({"workers": [ECHO_WORKER, ECHO_WORKER]}, ["duplicate worker names", "'echo'"]),
        (
            {"workers": [{**ECHO_WORKER, "config": {"connector_name": "e", "colour": "blue"}}]},
            ["'colour'", "worker 'echo'"],
        ),
        (
            {"workers": [{**ECHO_WORKER, "config": {}}]},
            ["connector_name", "worker 'echo'"],
        ),
        (
            {"workers": [{"name": "x", "class": "no.such.Worker"}]},
            ["cannot import module 'no.such'"],
        ),
        (
            {"workers": [{"name": "x", "class": "vumi_like.messages.Message"}]},
            ["is not a worker class"],
        ),
    ],
    ids=[
        "malformed-yaml",
        "not-a-mapping",
        "no-workers",
        "unknown-pipeline-key",
        "duplicate-names",
        "unknown-worker-key",
        "missing-worker-key",
        "unknown-class",
        "not-a-worker",
    ],
)
async def test_run_with_a_bad_pipeline_is_one_line_and_exit_2(
    tmp_path: Path, pipeline: str | dict[str, Any], expected: list[str]
):
    path = tmp_path / "pipeline.yaml"
    if isinstance(pipeline, str):
        path.write_text(pipeline, encoding="utf-8")
    else:
        write_yaml(path, pipeline)

    line = user_error(await vumi_like("run", str(path)))

    for text in expected:
        assert text in line
    if not expected[0].startswith(("cannot import", "is not a worker")):
        assert str(path) in line  # a class path names itself; the rest name the file


async def test_run_with_a_missing_file_names_it(tmp_path: Path):
    path = tmp_path / "nowhere.yaml"
    line = user_error(await vumi_like("run", str(path)))
    assert str(path) in line
    assert "No such file" in line


async def test_run_with_unreachable_redis_is_one_line_naming_the_cache(tmp_path: Path):
    pipeline = yaml.safe_load(ECHO_PIPELINE.read_text(encoding="utf-8"))
    router = next(w for w in pipeline["workers"] if w["name"] == "router")
    router["config"]["message_cache_class"] = "redis"
    router["config"]["message_cache_config"] = {"redis_url": "redis://127.0.0.1:1/0"}
    for worker in pipeline["workers"]:
        worker["config"].pop("http_bind", None)
    path = write_yaml(tmp_path / "pipeline.yaml", pipeline)

    line = user_error(await vumi_like("run", str(path)), logs=True)

    assert line.startswith("vumi-like: cache: ")
    assert "redis://127.0.0.1:1/0" in line
    assert "unavailable" in line


async def test_run_with_unreachable_rabbitmq_is_one_line_without_the_password(tmp_path: Path):
    path = write_yaml(
        tmp_path / "pipeline.yaml",
        {"amqp_url": f"amqp://guest:{SECRET}@127.0.0.1:1/", "workers": [ECHO_WORKER]},
    )

    result = await vumi_like("run", str(path), within=20)

    assert "cannot connect" in user_error(result, logs=True)
    assert SECRET not in result.stderr.decode()
