"""RFC 7807 problem details: every HTTP error this project returns has this shape.

``{"type", "title", "status", "detail", "code"}`` as ``application/problem+json``.
``code`` is a short machine-readable name (``invalid_body``, ``not_found``...);
``type`` is a URI naming the problem kind, here a ``urn:`` so it needs no web page.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from quart import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"


class ProblemError(Exception):
    """Raise in a route to answer with a problem document.

    ``retry_after`` (seconds) sets the ``Retry-After`` header, for 503 and 429 answers (a
    503 without one says ``SERVICE_RETRY_AFTER``);
    ``headers`` adds others (``WWW-Authenticate``); ``extra`` adds members to the document.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or _default_code(status)
        self.retry_after = retry_after
        self.headers = headers
        self.extra = extra


def _default_code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def problem_body(
    status: int, detail: str, *, code: str | None = None, **extra: Any
) -> dict[str, Any]:
    code = code or _default_code(status)
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {
        "type": f"urn:vumi-like:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


# Seconds a caller is told to wait (Retry-After) for a 503 that names no wait of its
# own: a route met a store, a cache or a broker it cannot reach.
SERVICE_RETRY_AFTER = 5


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = json.dumps(problem_body(status, detail, code=code, **extra))
    headers = dict(headers or {})
    # A 413's body was refused unread, so the connection cannot carry another request:
    # say so, or a keep-alive client would wait on it for an answer.
    if status == 413:
        headers["Connection"] = "close"
    if retry_after is None and status == 503:
        retry_after = SERVICE_RETRY_AFTER  # every 503 says when to try again
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response(body, status=status, content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def store_unavailable_response() -> Response:
    """The answer of an API whose message store cannot be reached: 503, try again."""
    return problem_response(
        503,
        "the message store is unavailable; try again",
        code="STORE_UNAVAILABLE",
    )
