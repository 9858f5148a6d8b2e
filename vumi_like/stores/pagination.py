"""Keyset pagination, and the opaque cursors that carry a page's position.

Listings are paged by key, not by offset: a page asks for the rows after the last key
of the previous one (``WHERE (created_at, id) > (:t, :id) ORDER BY created_at, id``),
which an index answers directly however deep the page, and which neither skips nor
repeats a row when rows are added meanwhile (an offset shifts under inserts).

The cursor is that last key, as JSON in urlsafe base64, tagged with the listing it
belongs to. It is opaque to clients (they pass it back as they got it) and not signed:
it only says where to resume within the caller's own rows, since every listing also
filters by tenant, so a forged cursor can reach nothing it could not page to anyway.
Anything that does not decode to a key of the right listing is ``InvalidCursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from vumi_like.stores.errors import InvalidCursor, StoreError
from vumi_like.stores.models import Page

__all__ = ["MAX_PAGE_SIZE", "decode_cursor", "encode_cursor", "keyset_page", "page_size"]

T = TypeVar("T")

MAX_PAGE_SIZE = 100

_VERSION = 1


def page_size(limit: int) -> int:
    """``limit`` capped at ``MAX_PAGE_SIZE``; ``StoreError`` below 1."""
    if limit < 1:
        raise StoreError(f"page limit must be at least 1, got {limit}")
    return min(limit, MAX_PAGE_SIZE)


def encode_cursor(listing: str, key: Sequence[str]) -> str:
    """The cursor that resumes ``listing`` after the row with this ``key``."""
    document = {"v": _VERSION, "l": listing, "k": list(key)}
    raw = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(listing: str, cursor: str, length: int) -> list[str]:
    """The key ``encode_cursor(listing, key)`` put in ``cursor``, of ``length`` strings."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError):  # bad base64, bad UTF-8 or bad JSON
        raise InvalidCursor("malformed page cursor") from None
    if not (
        isinstance(document, dict)
        and document.get("v") == _VERSION
        and document.get("l") == listing
        and isinstance(key := document.get("k"), list)
        and len(key) == length
        and all(isinstance(part, str) for part in key)
    ):
        raise InvalidCursor("page cursor does not belong to this listing")
    return key


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidCursor("malformed page cursor") from None
    if value.tzinfo is not None:
        raise InvalidCursor("malformed page cursor")
    return value


def keyset_page(
    conn: sa.Connection,
    listing: str,
    query: sa.Select[Any],
    key: Sequence[sa.Column[Any]],
    cursor: str | None,
    limit: int,
    item: Callable[[sa.Row[Any]], T],
) -> Page[T]:
    """One page of ``query``'s rows in ``key`` order, after ``cursor``'s position.

    ``key`` must be unique per row (end it with the primary key), or rows sharing a
    key across a page boundary would be skipped. ``item`` makes a value of each row.
    """
    size = page_size(limit)
    if cursor is not None:
        parts = decode_cursor(listing, cursor, len(key))
        after = [
            _parse_time(part) if isinstance(column.type, sa.DateTime) else part
            for column, part in zip(key, parts, strict=True)
        ]
        if len(key) == 1:
            query = query.where(key[0] > after[0])
        else:  # a row comparison, which both databases answer from a matching index
            query = query.where(sa.tuple_(*key) > tuple(after))
    rows = conn.execute(query.order_by(*key).limit(size + 1)).all()
    next_cursor = None
    if len(rows) > size:
        last = rows[size - 1]
        values = [getattr(last, column.name) for column in key]
        next_cursor = encode_cursor(
            listing, [v.isoformat() if isinstance(v, datetime) else str(v) for v in values]
        )
    return Page(tuple(item(row) for row in rows[:size]), next_cursor)
