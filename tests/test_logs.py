"""Logging setup: JSON lines or console, stdlib routed alike, secrets never written."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from pydantic import BaseModel, SecretStr

from vumi_like.logs import configure_logging
from vumi_like.redaction import redact

SECRET = "hunter2-Zq9"

# Created at import, before any configure_logging: must follow later configuration.
module_log = structlog.get_logger("tests.module_level")


@pytest.fixture(autouse=True)
def restore_logging():
    """Leave the process's logging as this test found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog_config = structlog.get_config()
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.configure(**structlog_config)
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- format


def test_json_lines_carry_level_event_timestamp_and_keys(stream):
    configure_logging("INFO", stream=stream)
    structlog.get_logger("vumi_like.worker").info("message handled", message_id="abc123", n=2)
    [line] = lines(stream)
    assert line["event"] == "message handled"
    assert line["level"] == "info"
    assert line["logger"] == "vumi_like.worker"
    assert line["message_id"] == "abc123"
    assert line["n"] == 2
    timestamp = datetime.fromisoformat(line["timestamp"])
    assert timestamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - timestamp).total_seconds()) < 60


def test_json_by_default_when_not_a_terminal(stream):
    configure_logging(stream=stream)
    structlog.get_logger().warning("hello")
    assert lines(stream)[0]["event"] == "hello"


def test_console_renderer_on_a_terminal_or_when_asked():
    terminal = FakeTerminal()
    configure_logging(stream=terminal)
    structlog.get_logger().warning("for people", message_id="m1")
    output = terminal.getvalue()
    assert "for people" in output and "message_id" in output and "m1" in output
    with pytest.raises(json.JSONDecodeError):
        json.loads(output.splitlines()[0])

    plain = io.StringIO()
    configure_logging(json=False, stream=plain)
    structlog.get_logger().warning("asked for console")
    assert "asked for console" in plain.getvalue()
    assert "\x1b[" not in plain.getvalue()  # no colours into a file


def test_json_even_on_a_terminal_when_asked():
    terminal = FakeTerminal()
    configure_logging(json=True, stream=terminal)
    structlog.get_logger().info("machine")
    assert lines(terminal)[0]["event"] == "machine"


def test_level_is_honoured_for_structlog_and_stdlib(stream):
    configure_logging("warning", stream=stream)
    log = structlog.get_logger("a")
    log.info("dropped")
    log.warning("kept")
    logging.getLogger("aiormq").info("dropped too")
    logging.getLogger("aiormq").error("kept too")
    assert [line["event"] for line in lines(stream)] == ["kept", "kept too"]


def test_debug_level_shows_debug(stream):
    configure_logging("DEBUG", stream=stream)
    structlog.get_logger().debug("detail")
    assert lines(stream)[0]["level"] == "debug"


def test_invalid_level_is_refused(stream):
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD", stream=stream)


def test_stdlib_logging_is_rendered_the_same_way(stream):
    configure_logging("INFO", stream=stream)
    logging.getLogger("aio_pika.robust_connection").warning(
        "reconnecting in %d seconds", 5, extra={"attempt": 3}
    )
    [line] = lines(stream)
    assert line["event"] == "reconnecting in 5 seconds"
    assert line["level"] == "warning"
    assert line["logger"] == "aio_pika.robust_connection"
    assert line["attempt"] == 3
    assert "timestamp" in line


def test_reconfiguring_replaces_the_handler(stream):
    first = io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=stream)
    structlog.get_logger().warning("once")
    logging.getLogger("x").warning("stdlib once")
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(stream)] == ["once", "stdlib once"]


def test_module_level_logger_follows_configuration(stream):
    configure_logging("ERROR", stream=io.StringIO())
    module_log.warning("not yet")
    configure_logging("INFO", stream=stream)
    module_log.info("now", message_id="m")
    assert [(line["event"], line["message_id"]) for line in lines(stream)] == [("now", "m")]


def test_context_variables_are_included(stream):
    configure_logging(stream=stream)
    structlog.contextvars.bind_contextvars(worker="sms-transport")
    structlog.get_logger().info("with context")
    assert lines(stream)[0]["worker"] == "sms-transport"


def test_exceptions_are_rendered(stream):
    configure_logging(stream=stream)
    try:
        raise RuntimeError("provider said no")
    except RuntimeError:
        structlog.get_logger().exception("send failed")
    [line] = lines(stream)
    assert line["level"] == "error"
    assert "RuntimeError: provider said no" in line["exception"]


# -- secrets in output


def test_secrets_never_written(stream):
    configure_logging("DEBUG", stream=stream)
    log = structlog.get_logger("vumi_like.test")
    log.info(
        f"connecting to amqp://guest:{SECRET}@rabbit:5672/%2F",
        broker=f"amqp://guest:{SECRET}@rabbit:5672/",
        password=SECRET,
        headers={"Authorization": f"Bearer {SECRET}", "Accept": "application/json"},
        nested={"level": {"api_key": SECRET, "urls": [f"redis://:{SECRET}@redis:6379/0"]}},
        secret_value=SecretStr(SECRET),
        message_id="keep-me",
    )
    logging.getLogger("aiormq.connection").warning(
        "connection to %s failed", f"amqp://user:{SECRET}@host/"
    )
    logging.getLogger("hypercorn.error").info("token received", extra={"auth_token": SECRET})
    try:
        raise ConnectionError(f"cannot reach postgresql://app:{SECRET}@db/app")
    except ConnectionError:
        log.exception("store down")
        logging.getLogger("sqlalchemy").exception("store down (stdlib)")

    output = stream.getvalue()
    assert SECRET not in output
    parsed = lines(stream)
    assert len(parsed) == 5
    first = parsed[0]
    assert first["event"] == "connecting to amqp://guest:***@rabbit:5672/%2F"
    assert first["broker"] == "amqp://guest:***@rabbit:5672/"
    assert first["password"] == "***"
    assert first["headers"] == {"Authorization": "***", "Accept": "application/json"}
    assert first["nested"] == {"level": {"api_key": "***", "urls": ["redis://:***@redis:6379/0"]}}
    assert first["secret_value"] == "***"
    assert first["message_id"] == "keep-me"
    assert parsed[1]["event"] == "connection to amqp://user:***@host/ failed"
    assert parsed[2]["auth_token"] == "***"
    assert "postgresql://app:***@db/app" in parsed[3]["exception"]
    assert "postgresql://app:***@db/app" in parsed[4]["exception"]


def test_secrets_never_written_by_console_renderer():
    plain = io.StringIO()
    configure_logging(json=False, stream=plain)
    structlog.get_logger().warning(
        "login", url=f"https://bot:{SECRET}@api.example.com/x", hmac_secret=SECRET
    )
    assert SECRET not in plain.getvalue()
    assert "https://bot:***@api.example.com/x" in plain.getvalue()


# -- redact()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"amqp://user:{SECRET}@host", "amqp://user:***@host"),
        (f"amqps://user:{SECRET}@host:5671/vh", "amqps://user:***@host:5671/vh"),
        (f"redis://:{SECRET}@localhost:6379/0", "redis://:***@localhost:6379/0"),
        (f"postgresql://app:{SECRET}@db:5432/app", "postgresql://app:***@db:5432/app"),
        (f"postgresql+psycopg://app:{SECRET}@db/app", "postgresql+psycopg://app:***@db/app"),
        (f"http://u:{SECRET}@h/p", "http://u:***@h/p"),
        (f"https://u:{SECRET}@h:8443/p?q=1", "https://u:***@h:8443/p?q=1"),
        (f"amqp://user:p@ss{SECRET}@host/", "amqp://user:***@host/"),
        (
            f"see amqp://a:{SECRET}@h and redis://:{SECRET}@r",
            "see amqp://a:***@h and redis://:***@r",
        ),
        ("amqp://guest@host/", "amqp://guest@host/"),
        ("https://example.com/a@b", "https://example.com/a@b"),
        ("user@example.com: hello", "user@example.com: hello"),
    ],
)
def test_redact_credentials_in_urls(url: str, expected: str):
    assert redact(url) == expected


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "amqp_password",
        "secret",
        "client_secret",
        "token",
        "auth_token",
        "hmac_secret",
        "Authorization",
        "api_key",
        "X-Api-Key",
        "sentry_dsn",
    ],
)
def test_redact_values_of_secret_keys(key: str):
    assert redact({key: SECRET, "message_id": "m"}) == {key: "***", "message_id": "m"}


def test_redact_text_patterns():
    assert redact(f"GET /cb?access_token={SECRET}&x=1") == "GET /cb?access_token=***&x=1"
    assert redact(f"host=db password={SECRET} dbname=app") == "host=db password=*** dbname=app"
    assert redact(f"Authorization: Bearer {SECRET}") == "Authorization: Bearer ***"
    assert redact(f"{{'authorization': 'Basic {SECRET}'}}") == "{'authorization': 'Basic ***'}"
    assert redact(f"retrying with Bearer {SECRET}") == "retrying with Bearer ***"
    prose = "Basic authentication failed; the bearer of this token=  is unknown"
    assert redact(prose) == prose


def test_redact_recurses_and_leaves_the_rest():
    class Creds(BaseModel):
        user: str
        password: str

    value = {
        "a": [{"token": SECRET}, (f"amqp://u:{SECRET}@h", 1)],
        "creds": Creds(user="u", password=SECRET),
        "secret": None,
        "count": 3,
        "flag": True,
        "when": None,
    }
    redacted = redact(value)
    assert redacted == {
        "a": [{"token": "***"}, ("amqp://u:***@h", 1)],
        "creds": {"user": "u", "password": "***"},
        "secret": None,
        "count": 3,
        "flag": True,
        "when": None,
    }
    assert value["a"][0] == {"token": SECRET}  # the original is untouched


def test_redact_keeps_odd_sequences_loggable():
    from collections import namedtuple

    Pair = namedtuple("Pair", "url count")
    assert redact(Pair(f"amqp://u:{SECRET}@h", 2)) == ["amqp://u:***@h", 2]


def test_redact_exceptions_and_cycles():
    assert SECRET not in redact(ValueError(f"bad url amqp://u:{SECRET}@h"))
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    redact(cyclic)  # does not recurse forever


def test_http_clients_do_not_log_every_request_but_do_log_their_warnings():
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    logging.getLogger("httpx").info('HTTP Request: POST http://hook/ "HTTP/1.1 204"')
    logging.getLogger("httpcore.http11").debug("send_request_headers.started")
    logging.getLogger("httpx").warning("something odd")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["something odd"]
