"""Worker configuration: pydantic models, and a loader that merges three sources.

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
``vumi_like.logs.redact``); ``model_dump()`` does not, because callers need the values.
"""

from __future__ import annotations

import argparse
import json
import os
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import quote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from vumi_like.logs import LOG_LEVELS, MASK, is_secret_key, redact, redact_text

__all__ = [
    "ENV_CONFIG_FILE",
    "ENV_CONFIG_PREFIX",
    "AmqpConfig",
    "BaseConfig",
    "ConfigError",
    "ConfigField",
    "ConfigModel",
    "MiddlewareConfig",
    "add_config_arguments",
    "cli_overrides",
    "config_from_data",
    "describe_config",
    "load_config",
]

ENV_CONFIG_FILE = "VUMI_CONFIG_FILE"
ENV_CONFIG_PREFIX = "VUMI_CONFIG_PREFIX"

C = TypeVar("C", bound=BaseModel)
KeyPath = tuple[str, ...]


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is one line fit for an operator.

    ``problems`` holds each problem on its own (several validation errors are reported
    together, joined by ``"; "``).
    """

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        one_line = "; ".join(" ".join(problem.split()) for problem in self.problems)
        super().__init__(f"config error: {one_line}")


# -- models


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys are errors, secrets stay out of repr."""

    # Numbers become text where text is wanted: YAML reads `password: 1234` and
    # `vhost: 2` as ints, and those are legitimate values.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, _redact_for_repr(name, value)

    def redacted(self) -> dict[str, Any]:
        """The config as a dict, secrets replaced by ``"***"``: safe to log or show."""
        return redact(self.model_dump())


def _redact_for_repr(name: str | None, value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value  # a ConfigModel's own repr is safe; other models are not nested here
    if isinstance(value, list | tuple):
        return type(value)(_redact_for_repr(name, item) for item in value)
    return redact({name: value})[name] if name is not None else redact(value)


class AmqpConfig(ConfigModel):
    """Where RabbitMQ is, as separate parts (``BaseConfig.amqp_url`` wins when set)."""

    hostname: str = Field(default="127.0.0.1", description="Host name or IP address of RabbitMQ.")
    port: int = Field(default=5672, ge=1, le=65535, description="AMQP port of RabbitMQ.")
    username: str = Field(default="guest", description="User to log in to RabbitMQ as.")
    password: SecretStr = Field(default=SecretStr("guest"), description="Password of that user.")
    vhost: str = Field(default="/", description="RabbitMQ virtual host.")

    def url(self) -> str:
        """``amqp://user:password@host:port/vhost``, each part URL-quoted (``/`` is ``%2F``)."""
        username = quote(self.username, safe="")
        password = quote(self.password.get_secret_value(), safe="")
        host = self.hostname
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # a bare IPv6 address
        return f"amqp://{username}:{password}@{host}:{self.port}/{quote(self.vhost, safe='')}"


class MiddlewareConfig(ConfigModel):
    """One entry of ``middlewares``: which class, for which connectors and directions.

    vumi2 puts a middleware's own options beside ``class_path`` (``log_level: debug``);
    those keys are collected into ``config``, where the middleware's own config model
    validates them when the worker builds it. They may also be written under
    ``config:`` directly; a key in both places is an error.
    """

    class_path: str = Field(description="Import path of the middleware class.")
    enable_for_connectors: list[str] = Field(
        description="Connectors the middleware applies to; it does nothing on others."
    )
    inbound_enabled: bool = Field(default=False, description="Apply to inbound messages.")
    outbound_enabled: bool = Field(default=False, description="Apply to outbound messages.")
    event_enabled: bool = Field(default=False, description="Apply to events.")
    config: dict[str, Any] = Field(
        default_factory=dict, description="The middleware's own options."
    )

    @model_validator(mode="before")
    @classmethod
    def _collect_middleware_options(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        own = {key: value for key, value in data.items() if key in cls.model_fields}
        options = {key: value for key, value in data.items() if key not in cls.model_fields}
        if not options:
            return data
        config = own.get("config", {})
        if not isinstance(config, Mapping):
            return data  # the `config` field itself reports the wrong type
        if clash := sorted(str(key) for key in options.keys() & config.keys()):
            raise ValueError(f"{', '.join(clash)} set both beside class_path and under config")
        return {**own, "config": {**config, **options}}


class BaseConfig(ConfigModel):
    """Settings every worker has. A worker's config subclasses this."""

    amqp: AmqpConfig = Field(default=AmqpConfig(), description="RabbitMQ, as parts.")
    amqp_url: str = Field(
        default="",
        description="Broker URL (amqp://user:pass@host:port/vhost, or memory://); "
        "when set it is used instead of `amqp`.",
    )
    worker_concurrency: int = Field(
        default=20, ge=1, description="Deliveries prefetched and handled at once, per connector."
    )
    sentry_dsn: str | None = Field(
        default=None, description="Sentry DSN; errors logged with a traceback are reported there."
    )
    http_bind: str | None = Field(
        default=None,
        description="host:port (or unix:/path) for the HTTP server (/health, /metrics, "
        "APIs); no server when unset.",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    middlewares: list[MiddlewareConfig] = Field(
        default_factory=list, description="Middlewares, applied in order."
    )
    shutdown_timeout: float = Field(
        default=10.0, ge=0, description="Seconds in-flight handlers get to finish when stopping."
    )

    def broker_url(self) -> str:
        """``amqp_url`` when set, else the URL built from ``amqp``. Holds the password."""
        return self.amqp_url or self.amqp.url()

    @field_validator("amqp_url")
    @classmethod
    def _check_amqp_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in {"amqp", "amqps", "memory"}:
            raise ValueError("should be an amqp://, amqps:// or memory:// URL")
        return value

    @field_validator("http_bind")
    @classmethod
    def _check_http_bind(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("unix:"):
            if len(value) > len("unix:"):
                return value
        else:
            host, _, port = value.rpartition(":")
            bracketed = host.startswith("[") and host.endswith("]")
            if host and (bracketed or ":" not in host) and port.isdigit() and int(port) <= 65535:
                return value
        raise ValueError("should be host:port (like 0.0.0.0:8000), [ipv6]:port or unix:/path")

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"should be one of {', '.join(LOG_LEVELS)}")
        return level


# -- the model's leaves: what env, CLI and docs can set


@dataclass(frozen=True)
class _Leaf:
    """A field that takes a value (not a nested model), with its path from the root."""

    path: KeyPath
    info: FieldInfo

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def annotation(self) -> Any:
        return self.info.annotation

    @property
    def flag(self) -> str:
        return "--" + "-".join(self.path).replace("_", "-")

    @property
    def is_json(self) -> bool:
        return _is_json_type(self.annotation)

    @property
    def is_bool(self) -> bool:
        return _non_none(self.annotation) == [bool]

    @property
    def is_optional(self) -> bool:
        return type(None) in _union_members(self.annotation)

    @property
    def is_secret(self) -> bool:
        return SecretStr in _non_none(self.annotation) or any(map(is_secret_key, self.path))


def _leaves(cls: type[BaseModel], prefix: KeyPath = ()) -> list[_Leaf]:
    leaves: list[_Leaf] = []
    for name, info in cls.model_fields.items():
        path = (*prefix, name)
        nested = _nested_model(info.annotation)
        if nested is not None:
            leaves.extend(_leaves(nested, path))
        else:
            leaves.append(_Leaf(path, info))
    return leaves


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _non_none(annotation: Any) -> list[Any]:
    return [member for member in _union_members(annotation) if member is not type(None)]


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model class if the field holds one model (possibly optional), else None."""
    members = _non_none(annotation)
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return None


def _is_json_type(annotation: Any) -> bool:
    """Values of this type are written as JSON in the environment and on the command line."""
    members = _non_none(annotation)
    if str in members or SecretStr in members:
        return False
    for member in members:
        origin = get_origin(member) or member
        if isinstance(origin, type) and (
            issubclass(origin, list | tuple | set | frozenset | dict | BaseModel)
            or origin is Mapping
        ):
            return True
    return False


def _leaf_for(leaves: list[_Leaf], loc: KeyPath) -> _Leaf | None:
    """The leaf a validation error location falls under (``middlewares.0.x`` -> middlewares)."""
    for leaf in leaves:
        if loc[: len(leaf.path)] == leaf.path:
            return leaf
    return None


def _env_name(prefix: str, path: KeyPath) -> str:
    # vumi2 joins prefix and key with "_"; a prefix given with its own trailing "_" works too.
    parts = [prefix.rstrip("_"), *path] if prefix else list(path)
    return "_".join(parts).upper()


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


def _decode_text(leaf: _Leaf, raw: str, source: _Source) -> Any:
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
    by_name: dict[str, list[_Leaf]] = {}
    for leaf in _leaves(cls):
        by_name.setdefault(_env_name(prefix, leaf.path), []).append(leaf)
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
    leaves = {leaf.path: leaf for leaf in _leaves(cls)}
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
        nested = _nested_model(info.annotation) if info is not None else None
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
        leaves = _leaves(config_cls)
        problems = [_describe_error(error, origins, leaves, env_prefix) for error in exc.errors()]
        raise ConfigError(problems) from None


def _describe_error(
    error: Any, origins: dict[KeyPath, _Source], leaves: list[_Leaf], env_prefix: str | None
) -> str:
    loc: KeyPath = tuple(str(part) for part in error["loc"])
    dotted = ".".join(loc) or "(top level)"
    source = next((origins[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in origins), None)
    leaf = _leaf_for(leaves, loc)

    if error["type"] == "extra_forbidden":
        return f"unknown key {dotted!r}" + (f" {source.where()}" if source else "")
    if error["type"] == "missing":
        if leaf is not None and leaf.path == loc and env_prefix is not None:
            hint = (
                f"set it in the config file, as {_env_name(env_prefix, loc)} or with {leaf.flag}"
            )
            return f"{dotted}: is required ({hint})"
        return f"{dotted}: is required" + (f" {source.suffix()}" if source else "")

    message = _tidy_message(error["msg"])
    secret = (leaf is not None and leaf.is_secret) or any(map(is_secret_key, loc))
    value = error.get("input")
    if not secret and isinstance(value, str | int | float | bool):
        shown = redact_text(value) if isinstance(value, str) else value
        if len(repr(shown)) <= 80:
            message += f", got {shown!r}"
    if source is not None:
        message += f" {source.suffix()}"
    return f"{dotted}: {message}"


def _tidy_message(message: str) -> str:
    """pydantic's "Input should be a valid integer, unable to parse string as an integer"
    becomes "should be a valid integer": the input is quoted separately, when not secret."""
    for lead in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(lead)
    message = message.removeprefix("Input ")
    for tail in (", unable to parse", ", unable to interpret", ", invalid character"):
        message = message.split(tail)[0]
    return message[:1].lower() + message[1:]


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
    for leaf in _leaves(config_cls):
        help_text = (leaf.info.description or "").replace("%", "%%")
        if (
            not leaf.info.is_required()
            and leaf.info.get_default(call_default_factory=True) is not None
        ):
            help_text += f" (default: {_default_text(leaf)})".replace("%", "%%")
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
    for leaf in _leaves(config_cls):
        dest = _cli_dest(leaf.path)
        if dest in given:
            layer.set(leaf.path, given[dest], _Source("command line", leaf.flag))
    return layer.data


# -- documentation


@dataclass(frozen=True)
class ConfigField:
    """One settable field of a config model, described for documentation."""

    name: str  # dotted path, "amqp.hostname"
    type: str  # "str", "int", "str | None", "list[MiddlewareConfig]", "secret str"
    default: str  # JSON text ("\"127.0.0.1\"", "5672", "null"), "***" if secret, "" if required
    required: bool
    description: str
    env: str  # environment variable without prefix, "AMQP_HOSTNAME"
    flag: str  # command-line flag, "--amqp-hostname"


def describe_config(config_cls: type[BaseModel]) -> list[ConfigField]:
    """Every settable field of ``config_cls`` (nested models flattened), in model order."""
    return [
        ConfigField(
            name=leaf.dotted,
            type=_type_text(leaf.annotation),
            default="" if leaf.info.is_required() else _default_text(leaf),
            required=leaf.info.is_required(),
            description=leaf.info.description or "",
            env=_env_name("", leaf.path),
            flag=leaf.flag,
        )
        for leaf in _leaves(config_cls)
    ]


def _default_text(leaf: _Leaf) -> str:
    default = leaf.info.get_default(call_default_factory=True)
    if leaf.is_secret and default not in (None, ""):
        return MASK
    if isinstance(default, BaseModel):
        default = default.model_dump(mode="json")
    return json.dumps(default, default=str)


def _type_text(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if annotation is SecretStr:
        return "secret str"
    if annotation is Any:
        return "Any"
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_text(member) for member in get_args(annotation))
    if origin is Literal:
        return " | ".join(json.dumps(value) for value in get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_text(arg) for arg in get_args(annotation))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{args}]" if args else name
    return getattr(annotation, "__name__", str(annotation))
