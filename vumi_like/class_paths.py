"""Dotted class paths in configs and on the command line, resolved in one place.

Workers (``vumi-like worker CLASS``, ``class:`` in a pipeline), middlewares
(``class_path``) and message caches (``message_cache_class``) are all named by a
dotted path. They are resolved here, so that every one accepts the same spellings
(``package.module.Class`` or ``package.module:Class``), fails with the same kind of
one-line message, and understands vumi2's names: a vumi2 deployment names vumi2's
classes, and switching it over must not mean editing every config.

``VUMI2_CLASS_PATHS`` maps each vumi2 class path that has a counterpart here to ours. A
key ending in ``.`` maps a whole package (vumi2's middlewares live in the same module
names under ``vumi_like.middlewares``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["VUMI2_CLASS_PATHS", "ClassPathError", "canonical_path", "resolve_class"]

T = TypeVar("T")

_TURN = "vumi_like.applications.turn_channels_api.TurnChannelsApi"
_SMPP = "vumi_like.transports.smpp.SmppTransport"

VUMI2_CLASS_PATHS: Mapping[str, str] = {
    "vumi2.routers.ToAddressRouter": "vumi_like.routers.ToAddressRouter",
    # vumi2 exports its Turn app from the package, the subpackage and the module.
    "vumi2.applications.TurnChannelsApi": _TURN,
    "vumi2.applications.turn_channels_api.TurnChannelsApi": _TURN,
    "vumi2.applications.turn_channels_api.turn_channels_api.TurnChannelsApi": _TURN,
    "vumi2.message_caches.MemoryMessageCache": "vumi_like.caches.MemoryMessageCache",
    # vumi2's SMPP transport, from the package, the subpackage and the module.
    "vumi2.transports.SmppTransceiverTransport": _SMPP,
    "vumi2.transports.smpp.SmppTransceiverTransport": _SMPP,
    "vumi2.transports.smpp.smpp.SmppTransceiverTransport": _SMPP,
    "vumi2.middlewares.": "vumi_like.middlewares.",
}

_DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


class ClassPathError(ValueError):
    """A class path that does not name a usable class; ``str()`` is one line."""


def canonical_path(path: str, aliases: Mapping[str, str] = VUMI2_CLASS_PATHS) -> str:
    """``path`` with ``:`` read as ``.`` and an alias (exact, or a package prefix) applied."""
    path = path.strip().replace(":", ".")
    if path in aliases:
        return aliases[path]
    for prefix, ours in aliases.items():
        if prefix.endswith(".") and path.startswith(prefix):
            return ours + path.removeprefix(prefix)
    return path


def resolve_class(
    path: str,
    base: type[T],
    *,
    what: str,
    aliases: Mapping[str, str] = VUMI2_CLASS_PATHS,
) -> type[T]:
    """The concrete subclass of ``base`` that ``path`` names, imported.

    ``what`` names the kind of class in messages ("worker class", "middleware").
    Raises ``ClassPathError``: not a dotted path, the module cannot be imported, it has
    no such name, or the name is not a concrete ``base`` subclass.
    """
    resolved = canonical_path(path, aliases)
    named = repr(path) + (f" (read as {resolved!r})" if resolved != path.strip() else "")
    if not _DOTTED_PATH.fullmatch(resolved):
        raise ClassPathError(f"{what} {path!r} is not a dotted path like package.module.Class")
    module_name, _, class_name = resolved.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ClassPathError(
            f"cannot import module {module_name!r} for {what} {named}: {exc}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ClassPathError(f"module {module_name!r} has no {class_name!r} ({what} {named})")
    if not (isinstance(cls, type) and issubclass(cls, base)) or inspect.isabstract(cls):
        raise ClassPathError(
            f"{named} is not a {what} (a concrete subclass of "
            f"{base.__module__}.{base.__qualname__})"
        )
    return cls
