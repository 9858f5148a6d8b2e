"""Logging for every worker: one structlog setup, and secrets redacted on the way out.

Two kinds of code log here. Ours logs through structlog (``structlog.get_logger``,
key/value events); the libraries under us (aio-pika, aiormq, hypercorn, httpx) log
through the standard ``logging`` module. Rather than give each its own format, every
event ends up as a ``logging`` record handled by one root handler whose
``structlog.stdlib.ProcessorFormatter`` renders both alike: JSON lines for machines (a
pipe, a file, a log shipper) and structlog's console renderer for a person at a
terminal.

Redaction (``vumi_like.redaction``) is the last step before rendering, for both kinds,
so it also sees text that was not written by us: a library's log message, an
exception's traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Annotated

import structlog
from pydantic import AfterValidator
from structlog.typing import EventDict, Processor, WrappedLogger

from vumi_like.redaction import redact

__all__ = ["LOG_LEVELS", "LogLevel", "configure_logging", "redact_secrets"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_CHATTY_LIBRARIES = ("httpx", "httpcore")


def _log_level(value: str) -> str:
    level = value.strip().upper()  # vumi2 configs write it in lower case
    if level not in LOG_LEVELS:
        raise ValueError(f"should be one of {', '.join(LOG_LEVELS)}")
    return level


# A config field holding a log level: any case in, upper case out, one clear error.
LogLevel = Annotated[str, AfterValidator(_log_level)]


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: ``redact`` the whole event dict."""
    return redact(event_dict)


def configure_logging(
    level: str = "INFO",
    *,
    json: bool | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Send structlog and stdlib ``logging`` events, rendered alike, to ``stream``.

    ``level`` is one of DEBUG/INFO/WARNING/ERROR/CRITICAL (any case). ``json`` picks
    JSON lines (True) or the console renderer (False); by default JSON unless
    ``stream`` is a terminal. ``stream`` defaults to ``sys.stderr`` as it is at call
    time. Safe to call again (tests, ``vumi-like run``): the handler installed by the
    previous call is replaced, other handlers on the root logger are left alone.

    Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``logger`` and
    ``event``, plus the event's own keys, after ``redact``.
    """
    try:
        level_name = _log_level(level)
    except ValueError:
        raise ValueError(
            f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}"
        ) from None
    level_no = logging.getLevelNamesMapping()[level_name]
    stream = sys.stderr if stream is None else stream
    if json is None:
        json = not _isatty(stream)

    # Run for structlog events at the call, and for stdlib records in the formatter.
    shared: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=_isatty(stream))
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before redaction, so their secrets are masked too
            # (at the cost of the console renderer's pretty tracebacks).
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler._vumi_like = True  # type: ignore[attr-defined]

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_vumi_like", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    # httpx and httpcore log every request at INFO (DEBUG for httpcore's steps): at a
    # webhook per status per message, that is most of a busy worker's log and a
    # noticeable share of its CPU. Their warnings and errors still come through.
    for chatty in _CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(level_no, logging.WARNING))

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Drops events below the level before any processor runs.
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        # Not cached: module-level loggers are created at import, before this runs,
        # and must follow a later reconfiguration (a new level, a test's stream).
        cache_logger_on_first_use=False,
    )


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
