"""Config models described for the reference documentation (``python -m vumi_like.reference``)."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

from vumi_like.config.fields import default_text, env_name, model_leaves

__all__ = ["ConfigField", "describe_config"]


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
            default="" if leaf.info.is_required() else default_text(leaf),
            required=leaf.info.is_required(),
            description=leaf.info.description or "",
            env=env_name("", leaf.path),
            flag=leaf.flag,
        )
        for leaf in model_leaves(config_cls)
    ]


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
