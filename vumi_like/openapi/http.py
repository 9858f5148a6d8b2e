"""HTTP pieces the API's route modules share: the problem document, paging, JSON
answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from quart import Response
from quart_schema import document_response

from vumi_like.errors import ProblemError
from vumi_like.stores import MAX_PAGE_SIZE, InvalidCursor, Page

__all__ = ["DEFAULT_PAGE_SIZE", "Problem", "json_response", "paged", "problems"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50


class Problem(BaseModel):
    """RFC 7807 problem details, as every error of this API is answered."""

    type: str
    title: str
    status: int
    detail: str
    code: str


def problems(*statuses: int) -> Callable[[F], F]:
    """Document that a route may answer with a problem of each of ``statuses``."""

    def decorate(route: F) -> F:
        for status in statuses:
            route = document_response(Problem, status)(route)
        return route

    return decorate


class PageQuery(Protocol):
    cursor: str | None
    limit: int | None


async def paged(
    list_page: Callable[..., Awaitable[Page[T]]], *args: Any, query: PageQuery, **kwargs: Any
) -> Page[T]:
    """``list_page(*args, **kwargs)`` for the page ``query`` asks for (its ``cursor`` and
    ``limit``, capped); a cursor that is not one of ours is a 400."""
    limit = min(query.limit or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    try:
        return await list_page(*args, cursor=query.cursor, limit=limit, **kwargs)
    except InvalidCursor as exc:
        raise ProblemError(400, f"cursor: {exc}", code="VALIDATION_FAILED") from None


def json_response(body: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """``body`` as a compact JSON answer: a finished ``Response``, which quart-schema
    passes through (handed a dict, it would build a pydantic ``TypeAdapter``, a schema
    generation, to dump it)."""
    return Response(
        json.dumps(body, separators=(",", ":")),
        status,
        dict(headers or {}),
        content_type="application/json",
    )
