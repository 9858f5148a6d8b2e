"""Request templates: text with ``{name}`` placeholders, checked when the config loads.

A provider's request is described in the config as text (the URL, query parameters,
headers, a form or JSON body) in which ``{to_addr}``, ``{content}``, ``{username}`` and
the like stand for the message's and the config's values. The syntax is
``str.format``'s, restricted to bare names: ``{to_addr}`` is a placeholder, ``{{`` and
``}}`` are literal braces, and anything else in braces (``{0}``, ``{to_addr.upper}``,
``{content[0]}``, ``{content!r}``, ``{content:>10}``) is refused. Attribute and index
access are what make ``str.format`` unsafe on outside values; with names only, a
template can do no more than put a value where it stands. Every name is checked
against the known ones at load time, so a typo stops start-up with the key it is in
instead of failing on the first message.

Other text passes through untouched: Kannel's ``%d`` in a ``dlr-url`` is for Kannel.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "CONFIG_PLACEHOLDERS",
    "MESSAGE_PLACEHOLDERS",
    "placeholders",
    "render",
    "render_value",
    "template_strings",
]

# Filled from the outbound message.
MESSAGE_PLACEHOLDERS = ("to_addr", "from_addr", "content", "message_id")

# Filled from the config; a template may only use those that are set.
CONFIG_PLACEHOLDERS = (
    "username",
    "password",
    "token",
    "account_sid",
    "callback_secret",
    "callback_base_url",
    "dlr_url",
    "inbound_url",
)

_KNOWN = frozenset(MESSAGE_PLACEHOLDERS + CONFIG_PLACEHOLDERS)
_FORMATTER = string.Formatter()


def placeholders(text: str) -> list[str]:
    """The placeholder names in ``text``, in order; ``ValueError`` saying what is wrong."""
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:  # a lone "{" or "}"
        raise ValueError(f"{exc} (write {{{{ and }}}} for literal braces)") from None
    names: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{name}...}} should be a bare name like {{to_addr}}")
        if name not in _KNOWN:
            known = ", ".join(sorted(_KNOWN))
            raise ValueError(f"unknown placeholder {{{name}}} (known: {known})")
        names.append(name)
    return names


def render(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each placeholder replaced by its value (checked by ``placeholders``)."""
    return text.format_map(values)


def render_value(value: Any, values: Mapping[str, str]) -> Any:
    """A JSON-like template (strings, numbers, lists, mappings) with its strings rendered."""
    if isinstance(value, str):
        return render(value, values)
    if isinstance(value, Mapping):
        return {key: render_value(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, values) for item in value]
    return value


def template_strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON-like template, with its dotted place (``body.To``)."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from template_strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from template_strings(item, f"{where}.{index}")
