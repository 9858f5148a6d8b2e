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
    """Raise in a route to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or _default_code(status)
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


def problem_response(
    status: int, detail: str, *, code: str | None = None, **extra: Any
) -> Response:
    body = json.dumps(problem_body(status, detail, code=code, **extra))
    # A 413's body was refused unread, so the connection cannot carry another request:
    # say so, or a keep-alive client would wait on it for an answer.
    headers = {"Connection": "close"} if status == 413 else None
    return Response(body, status=status, content_type=PROBLEM_CONTENT_TYPE, headers=headers)
