"""Logging for every worker: one structlog setup, and secrets redacted on the way out.

Two kinds of code log here. Ours logs through structlog (``structlog.get_logger``,
key/value events); the libraries under us (aio-pika, aiormq, hypercorn, httpx) log
through the standard ``logging`` module. Rather than give each its own format, every
event ends up as a ``logging`` record handled by one root handler whose
``structlog.stdlib.ProcessorFormatter`` renders both alike: JSON lines for machines (a
pipe, a file, a log shipper) and structlog's console renderer for a person at a
terminal.

Redaction is the last step before rendering, for both kinds, so it also sees text that
was not written by us: a library's log message, an exception's traceback. It is a
safety net, not a licence to log secrets: it recognises credentials in URLs, values of
keys whose name says "secret" (``password``, ``token``, ``api_key``...), ``key=value``
pairs and ``Bearer``/``Basic`` credentials inside text, and pydantic ``SecretStr``
values. A secret in an unremarkable place (``log.info("x", note=password)``) still
leaks, so keep secrets out of events in the first place.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog
from pydantic import BaseModel, SecretBytes, SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "LOG_LEVELS",
    "MASK",
    "configure_logging",
    "is_secret_key",
    "redact",
    "redact_secrets",
    "redact_text",
]

MASK = "***"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# A key whose name contains one of these (any case) holds a secret: `password`,
# `amqp_password`, `auth_token`, `hmac_secret`, `X-Api-Key`, `Authorization`...
_SECRET_KEY = re.compile(
    r"passw(?:or)?d|secret|token|authori[sz]ation|api[_-]?key|sentry_dsn|credential"
    r"|private[_-]?key|cookie",
    re.IGNORECASE,
)

# scheme://user:password@host — only the password goes; the user name helps diagnosis.
# The password part is greedy within the authority (no / ? # or space), so a password
# containing "@" is masked up to the last "@", the one that ends the user information.
_URL_CREDENTIALS = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)(?P<password>[^/?#\s]+)@"
)

# password=xyz in DSNs, query strings and messages ("...?access_token=abc&x=1").
_KEY_VALUE = re.compile(
    r"(?P<head>\b[\w.-]*(?:passw(?:or)?d|secret|token|api[_-]?key)[\w.-]*=)(?P<value>[^\s&;,'\"]+)",
    re.IGNORECASE,
)

# "Authorization: Basic dXNlcjpwYXNz" (or "authorization=...") in header dumps and messages.
_AUTH_HEADER = re.compile(
    r"(?P<head>\bauthori[sz]ation[\"']?\s*[:=]\s*[\"']?(?:(?:Bearer|Basic|Token|Digest)\s+)?)"
    r"(?P<value>[^\s\"',;]+)",
    re.IGNORECASE,
)

# A bearer token anywhere ("sending with Bearer eyJhbGciOi..."); capitalised and 8+
# token characters, so prose ("bearer of bad news") is left alone.
_BEARER = re.compile(r"(?P<head>\bBearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")

# Deeper than this is almost certainly a cycle; logging must never crash on it.
_MAX_DEPTH = 32


def is_secret_key(name: object) -> bool:
    """True if a mapping key (or field name) with this name holds a secret."""
    return isinstance(name, str) and _SECRET_KEY.search(name) is not None


def redact_text(text: str) -> str:
    """Mask credentials that appear inside free text (URLs, key=value, Bearer ...)."""
    if "://" in text and "@" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<head>{MASK}@", text)
    if "=" in text:
        text = _KEY_VALUE.sub(rf"\g<head>{MASK}", text)
    if "uthori" in text or "UTHORI" in text:
        text = _AUTH_HEADER.sub(rf"\g<head>{MASK}", text)
    if "Bearer" in text:
        text = _BEARER.sub(rf"\g<head>{MASK}", text)
    return text


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with every secret it contains replaced by ``"***"``.

    Recurses through mappings, lists, tuples and sets; pydantic models are turned into
    dicts first; exceptions into their (redacted) repr. Values under a secret-looking
    key are masked whole (``None`` stays ``None``: there is nothing to hide, and "unset"
    is useful to know). Other objects are returned unchanged.
    """
    if _depth > _MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if isinstance(value, Mapping):
        return {
            key: MASK if is_secret_key(key) and item is not None else redact(item, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact(item, _depth + 1) for item in value]
        # Subclasses (a namedtuple) may not take an iterable: they become lists.
        return type(value)(items) if type(value) in (list, tuple, set, frozenset) else items
    if isinstance(value, BaseModel):
        return redact(value.model_dump(), _depth + 1)
    if isinstance(value, BaseException):
        return redact_text(repr(value))
    return value


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
    level_name = level.upper()
    if level_name not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
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


def configure_error_reporting(dsn: str | None) -> bool:
    """Report errors to Sentry at ``dsn``; return whether reporting is on.

    What is reported is what ``report_exception`` is given (a failed handler, an
    unhandled error in an HTTP route), with its traceback; log lines become Sentry
    breadcrumbs, not events of their own. Events are redacted like log lines before
    they leave. A process has one Sentry client: under ``vumi-like run`` the first
    worker's ``sentry_dsn`` is used.
    """
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    def scrub(event: Any, hint: Any) -> Any:
        return redact(event)

    sentry_sdk.init(
        dsn=dsn,
        before_send=scrub,
        integrations=[LoggingIntegration(event_level=None)],
    )
    return True


def report_exception(exc: BaseException) -> None:
    """Send ``exc`` to Sentry if ``configure_error_reporting`` turned reporting on."""
    import sentry_sdk

    if sentry_sdk.is_initialized():
        sentry_sdk.capture_exception(exc)
