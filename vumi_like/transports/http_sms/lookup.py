"""Finding a value in what a provider sent: a dotted path into JSON, or a flat field.

Providers put the same things in different places: Twilio's ``sid`` at the top of its
answer, others under ``messages.0.id``; callbacks as query parameters, a form, or a
JSON document. One rule serves them all: a name that is a key of the mapping as it
stands (``dlr-type``, ``message.id`` in a flat form) is that key; otherwise it is a
dotted path, where a number picks an item of a list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["find", "find_text"]


def find(data: Any, path: str) -> Any:
    """The value at ``path`` in ``data``; ``LookupError`` when there is none."""
    if isinstance(data, Mapping) and path in data:
        return data[path]
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise LookupError(path)
    return node


def find_text(data: Any, path: str) -> str | None:
    """The value at ``path`` as text (numbers as JSON writes them), or None when there is
    none, or it is null, empty, or not a scalar (an object is not an id or a status)."""
    try:
        value = find(data, path)
    except LookupError:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None
