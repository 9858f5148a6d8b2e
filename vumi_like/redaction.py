"""Secret redaction: what must never leave a process in a log line, an error or a report.

Used on the way out by logging (``vumi_like.logs``), by Sentry reports
(``vumi_like.sentry``) and by anything that quotes a config value or a URL in a message
(config errors, the broker's connection errors).

It recognises credentials in URLs, values of keys whose name says "secret"
(``password``, ``token``, ``api_key``...), ``key=value`` pairs and ``Bearer``/``Basic``
credentials inside text, and pydantic ``SecretStr`` values. It is a safety net, not a
licence to log secrets: a secret in an unremarkable place (``log.info("x",
note=password)``) still leaks, so keep secrets out of events in the first place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

__all__ = ["MASK", "is_secret_key", "redact", "redact_text"]

MASK = "***"

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
