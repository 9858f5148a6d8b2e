"""HTTP pieces the API's route modules share: the problem document, paging."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from quart_schema import document_response

from vumi_like.stores import MAX_PAGE_SIZE

__all__ = ["DEFAULT_PAGE_SIZE", "Problem", "page_limit", "problems"]

F = TypeVar("F", bound=Callable[..., Any])

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


def page_limit(limit: int | None) -> int:
    return min(limit or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
