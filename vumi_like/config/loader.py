"""The config loader: a worker's settings from three sources, merged.

Every worker's settings are a ``BaseConfig`` subclass. Values come from, lowest
precedence first:

1. a YAML file, named by ``load_config(config_file=...)`` or ``VUMI_CONFIG_FILE``
   (no file at all when neither is set);
2. environment variables: the key path upper-cased and joined by ``_``
   (``amqp.hostname`` -> ``AMQP_HOSTNAME``), behind ``VUMI_CONFIG_PREFIX`` and ``_``
   when that is set (``MYAPP`` -> ``MYAPP_AMQP_HOSTNAME``);
3. command-line flags, the key path joined by ``-`` (``--amqp-hostname``).

Key names, defaults and the environment and flag spellings are vumi2's, so a vumi2
worker's config file and environment work unchanged.

Why the environment is read by walking the model rather than by splitting variable
names: a flat name cannot say where nesting starts. ``WORKER_CONCURRENCY`` could be
``worker.concurrency`` or ``worker_concurrency``; ``AMQP_URL`` could be ``amqp.url`` or
``amqp_url``. Generating each field's one variable name from the model answers that
without guessing, and means an unrelated variable (``PATH``, ``HOME``) is never read,
let alone rejected. Two fields that would share a variable name are reported as such
if that variable is set.

Values from the environment and the command line are text. Scalars are handed to
pydantic as text, so its lax parsing applies (``"false"``, ``"0"``, ``"no"``, ``"off"``
are False; ``"20"`` is an int). Lists, dicts and lists of models are given as JSON. An
empty value for an optional field (``HTTP_BIND=``) means None: there is no other way to
unset one from the environment.

Every failure is one ``ConfigError`` whose message is one line naming the key path,
the problem and, when known, where the value came from; start-up stops on it. Values
are quoted in messages only when they are not secret, and URLs in them lose their
passwords. ``repr()``/``str()`` of a config mask secrets the same way (see
``vumi_like.redaction.redact``); ``model_dump()`` does not, because callers need the values.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from vumi_like.config.fields import (
    KeyPath,
    Leaf,
    default_text,
    env_name,
    leaf_for,
    model_leaves,
    nested_model,
)
from vumi_like.config.models import ConfigError
from vumi_like.redaction import is_secret_key, redact_text
from vumi_like.validation import tidy_message

__all__ = [
    "ENV_CONFIG_FILE",
    "ENV_CONFIG_PREFIX",
    "add_config_arguments",
    "cli_overrides",
    "config_from_data",
    "config_from_file",
    "load_config",
]

ENV_CONFIG_FILE = "VUMI_CONFIG_FILE"
ENV_CONFIG_PREFIX = "VUMI_CONFIG_PREFIX"

C = TypeVar("C", bound=BaseModel)


# -- sources


@dataclass(frozen=True)
class _Source:
    """Where a value came from, for error messages."""

    kind: Literal["file", "environment", "command line"]
    detail: str = ""

    def where(self) -> str:
        if self.kind == "file":
            return f"in {self.detail}"
        return f"from {self.kind} {self.detail}".rstrip()

    def suffix(self) -> str:
        return f"({self.where()})"


class _Layer:
    """One source's values as a nested dict, and the origin of each path it sets."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.origins: dict[KeyPath, _Source] = {}

    def set(self, path: KeyPath, value: Any, source: _Source) -> None:
        node = self.data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        self.origins[path] = source


def _walk_paths(data: Mapping[str, Any], prefix: KeyPath = ()) -> Iterator[KeyPath]:
    for key, value in data.items():
        path = (*prefix, str(key))
        yield path
        if isinstance(value, Mapping):
            yield from _walk_paths(value, path)


def _file_layer(path: str, named_by_env: bool) -> _Layer:
    named = f" (named by {ENV_CONFIG_FILE})" if named_by_env else ""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist{named}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory{named}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}{named}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc.reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:  # an empty file, or only comments
        data = {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise ConfigError(f"{path} should hold a mapping of keys at the top level, not {kind}")
    layer = _Layer()
    layer.data = data
    source = _Source("file", path)
    layer.origins = {key_path: source for key_path in _walk_paths(data)}
    return layer


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # Built from the parts, not str(exc): that quotes the offending line, which may
    # hold a password.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def _decode_text(leaf: Leaf, raw: str, source: _Source) -> Any:
    """A text value from the environment or command line, as the model wants it."""
    if raw == "" and leaf.is_optional:
        return None
    if not leaf.is_json:
        return raw  # pydantic parses scalars from text
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{leaf.dotted}: should be JSON ({exc.msg} at column {exc.colno}) {source.suffix()}"
        ) from None


def _env_layer(cls: type[BaseModel], environ: Mapping[str, str], prefix: str) -> _Layer:
    by_name: dict[str, list[Leaf]] = {}
    for leaf in model_leaves(cls):
        by_name.setdefault(env_name(prefix, leaf.path), []).append(leaf)
    layer = _Layer()
    for name, leaves in by_name.items():
        if name not in environ:
            continue
        if len(leaves) > 1:
            candidates = " or ".join(leaf.dotted for leaf in leaves)
            raise ConfigError(f"environment variable {name} is ambiguous: it names {candidates}")
        source = _Source("environment", name)
        layer.set(leaves[0].path, _decode_text(leaves[0], environ[name], source), source)
    return layer


def _cli_layer(cls: type[BaseModel], cli: Mapping[str, Any]) -> _Layer:
    layer = _Layer()
    layer.data = _copy_dicts(cli)
    leaves = {leaf.path: leaf for leaf in model_leaves(cls)}
    for path in list(_walk_paths(cli)):
        leaf = leaves.get(path)
        source = _Source("command line", leaf.flag if leaf else "")
        layer.origins[path] = source
        if leaf is not None:
            value = _get(layer.data, path)
            if isinstance(value, str) and (leaf.is_json or (value == "" and leaf.is_optional)):
                layer.set(path, _decode_text(leaf, value, source), source)
    return layer


def _copy_dicts(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _copy_dicts(value) if isinstance(value, Mapping) else value
        for key, value in data.items()
    }


def _get(data: Mapping[str, Any], path: KeyPath) -> Any:
    for key in path:
        data = data[key]
    return data


def _merge(
    base: dict[str, Any], override: Mapping[str, Any], cls: type[BaseModel] | None
) -> dict[str, Any]:
    """``override`` on top of ``base``: nested models merge key by key, other values replace.

    A dict-valued field (not a model) is replaced whole, so the environment's JSON for
    it is the value, not a patch of the file's.
    """
    merged = dict(base)
    for key, value in override.items():
        info = cls.model_fields.get(key) if cls is not None else None
        nested = nested_model(info.annotation) if info is not None else None
        if nested is not None and isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value, nested)
        else:
            merged[key] = value
    return merged


# -- loading


def load_config(
    config_cls: type[C],
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
) -> C:
    """Build ``config_cls`` from its defaults, a YAML file, the environment and ``cli``.

    ``config_file`` defaults to ``$VUMI_CONFIG_FILE`` (no file when unset or empty);
    ``environ`` defaults to ``os.environ``; ``cli`` is a nested dict of overrides, as
    ``cli_overrides`` makes from parsed arguments. Precedence: cli > environment > file
    > defaults. Raises ``ConfigError`` naming every problem found.
    """
    environ = os.environ if environ is None else environ
    named_by_env = config_file is None
    if config_file is None:
        config_file = environ.get(ENV_CONFIG_FILE) or None
    prefix = environ.get(ENV_CONFIG_PREFIX, "")

    layers = []
    if config_file is not None:
        layers.append(_file_layer(str(config_file), named_by_env))
    layers.append(_env_layer(config_cls, environ, prefix))
    if cli:
        layers.append(_cli_layer(config_cls, cli))

    data: dict[str, Any] = {}
    origins: dict[KeyPath, _Source] = {}
    for layer in layers:
        data = _merge(data, layer.data, config_cls)
        for path, source in layer.origins.items():
            # What a higher layer sets hides what lower layers said beneath it.
            origins = {p: s for p, s in origins.items() if p[: len(path)] != path}
            origins[path] = source
    return _validate(config_cls, data, origins, env_prefix=prefix)


def config_from_data(config_cls: type[C], data: Mapping[str, Any], *, source: str) -> C:
    """Validate ``data``, already read from somewhere else, as ``config_cls``.

    For config that does not come from the usual three sources, such as one worker's
    section of a ``vumi-like run`` pipeline file. ``source`` names where ``data`` came
    from in error messages (``"pipeline.yaml (worker 'router')"``).
    """
    origins = {key_path: _Source("file", source) for key_path in _walk_paths(data)}
    origins[()] = _Source("file", source)
    return _validate(config_cls, _copy_dicts(data), origins, env_prefix=None)


def config_from_file(
    config_cls: type[C], path: str, *, overrides: Mapping[str, Any] | None = None
) -> C:
    """Validate the YAML file at ``path`` as ``config_cls``, with ``overrides`` on top.

    For a config file named somewhere other than the usual places, such as a worker's
    ``config_file`` in a ``vumi-like run`` pipeline; the environment plays no part.
    """
    layer = _file_layer(path, named_by_env=False)
    data = _merge(layer.data, overrides or {}, config_cls)
    return _validate(config_cls, data, layer.origins, env_prefix=None)


def _validate(
    config_cls: type[C],
    data: dict[str, Any],
    origins: dict[KeyPath, _Source],
    env_prefix: str | None,
) -> C:
    """Validate, or raise ``ConfigError``; ``env_prefix`` None: the environment played no part."""
    try:
        return config_cls.model_validate(data)
    except ValidationError as exc:
        # `from None`: the ValidationError's text quotes every input, secrets included.
        leaves = model_leaves(config_cls)
        problems = [_describe_error(error, origins, leaves, env_prefix) for error in exc.errors()]
        raise ConfigError(problems) from None


def _describe_error(
    error: Any, origins: dict[KeyPath, _Source], leaves: list[Leaf], env_prefix: str | None
) -> str:
    loc: KeyPath = tuple(str(part) for part in error["loc"])
    dotted = ".".join(loc) or "(top level)"
    source = next((origins[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in origins), None)
    leaf = leaf_for(leaves, loc)

    if error["type"] == "extra_forbidden":
        return f"unknown key {dotted!r}" + (f" {source.where()}" if source else "")
    if error["type"] == "missing":
        if leaf is not None and leaf.path == loc and env_prefix is not None:
            hint = f"set it in the config file, as {env_name(env_prefix, loc)} or with {leaf.flag}"
            return f"{dotted}: is required ({hint})"
        return f"{dotted}: is required" + (f" {source.suffix()}" if source else "")

    message = tidy_message(error["msg"])
    secret = (leaf is not None and leaf.is_secret) or any(map(is_secret_key, loc))
    value = error.get("input")
    if not secret and isinstance(value, str | int | float | bool):
        shown = redact_text(value) if isinstance(value, str) else value
        if len(repr(shown)) <= 80:
            message += f", got {shown!r}"
    if source is not None:
        message += f" {source.suffix()}"
    return f"{dotted}: {message}"


# -- command line


def _cli_dest(path: KeyPath) -> str:
    # A dest no other argument of the parser is likely to use.
    return "config:" + ".".join(path)


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type[BaseModel]) -> None:
    """Add a flag for every field of ``config_cls``, nested ones included.

    ``amqp.hostname`` becomes ``--amqp-hostname VALUE``; lists and dicts take JSON
    (``--middlewares '[...]'``). Booleans are a pair, ``--flag`` / ``--no-flag``. Flags
    default to "not given" (``argparse.SUPPRESS``), so ``cli_overrides`` can tell what
    the command line actually set.
    """
    group = parser.add_argument_group(
        "configuration", "Each overrides the config file and the environment."
    )
    for leaf in model_leaves(config_cls):
        help_text = (leaf.info.description or "").replace("%", "%%")
        if (
            not leaf.info.is_required()
            and leaf.info.get_default(call_default_factory=True) is not None
        ):
            help_text += f" (default: {default_text(leaf)})".replace("%", "%%")
        if leaf.is_bool:
            group.add_argument(
                leaf.flag,
                dest=_cli_dest(leaf.path),
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text.strip(),
            )
        else:
            group.add_argument(
                leaf.flag,
                dest=_cli_dest(leaf.path),
                default=argparse.SUPPRESS,
                metavar="JSON" if leaf.is_json else leaf.path[-1].upper(),
                help=help_text.strip(),
            )


def cli_overrides(namespace: argparse.Namespace, config_cls: type[BaseModel]) -> dict[str, Any]:
    """The config flags given on the command line, as a nested dict for ``load_config``."""
    given = vars(namespace)
    layer = _Layer()
    for leaf in model_leaves(config_cls):
        dest = _cli_dest(leaf.path)
        if dest in given:
            layer.set(leaf.path, given[dest], _Source("command line", leaf.flag))
    return layer.data
