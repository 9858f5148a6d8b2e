"""A config model's leaves: the fields that take a value, with their paths from the root.

The loader reads the environment and the command line by walking these, and the
reference documentation lists them; both must agree on what a key is called.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from vumi_like.redaction import MASK, is_secret_key

KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class Leaf:
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
        return is_json_type(self.annotation)

    @property
    def is_bool(self) -> bool:
        return non_none(self.annotation) == [bool]

    @property
    def is_optional(self) -> bool:
        return type(None) in union_members(self.annotation)

    @property
    def is_secret(self) -> bool:
        return SecretStr in non_none(self.annotation) or any(map(is_secret_key, self.path))


def model_leaves(cls: type[BaseModel], prefix: KeyPath = ()) -> list[Leaf]:
    leaves: list[Leaf] = []
    for name, info in cls.model_fields.items():
        path = (*prefix, name)
        nested = nested_model(info.annotation)
        if nested is not None:
            leaves.extend(model_leaves(nested, path))
        else:
            leaves.append(Leaf(path, info))
    return leaves


def union_members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def non_none(annotation: Any) -> list[Any]:
    return [member for member in union_members(annotation) if member is not type(None)]


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model class if the field holds one model (possibly optional), else None."""
    members = non_none(annotation)
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return None


def is_json_type(annotation: Any) -> bool:
    """Values of this type are written as JSON in the environment and on the command line."""
    members = non_none(annotation)
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


def leaf_for(leaves: list[Leaf], loc: KeyPath) -> Leaf | None:
    """The leaf a validation error location falls under (``middlewares.0.x`` -> middlewares)."""
    for leaf in leaves:
        if loc[: len(leaf.path)] == leaf.path:
            return leaf
    return None


def env_name(prefix: str, path: KeyPath) -> str:
    # vumi2 joins prefix and key with "_"; a prefix given with its own trailing "_" works too.
    parts = [prefix.rstrip("_"), *path] if prefix else list(path)
    return "_".join(parts).upper()


def default_text(leaf: Leaf) -> str:
    default = leaf.info.get_default(call_default_factory=True)
    if leaf.is_secret and default not in (None, ""):
        return MASK
    if isinstance(default, BaseModel):
        default = default.model_dump(mode="json")
    return json.dumps(default, default=str)
