"""The API's bodies: what it reads (validated here) and what it answers (documented in
its OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vumi_like.stores import Permission

__all__ = [
    "ListQuery",
    "MemberBody",
    "NewNotification",
    "NotificationOut",
    "TargetBody",
    "TargetOut",
]


def _string_or_integer(schema: dict[str, Any]) -> None:
    """Document a string field that takes a whole number too."""
    text = {key: schema.pop(key) for key in ("type", "minLength", "maxLength") if key in schema}
    schema["anyOf"] = [text, {"type": "integer"}]


class NewNotification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_type: Literal["user", "xform", "project"]
    # The seed sends a form's id as a string ("1337"); a whole number is taken as its
    # digits.
    target_id: str = Field(
        min_length=1,
        max_length=255,
        json_schema_extra=_string_or_integer,
    )
    message: str = Field(min_length=1)

    @field_validator("target_id", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if type(value) is int else value


class TargetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    form_id: str | None = Field(default=None, max_length=255, description="Forms only")


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    permission: Permission


class ListQuery(BaseModel):
    target_type: Literal["user", "xform", "project"] | None = Field(
        default=None, description="With target_id; without either, the list is empty"
    )
    target_id: str | None = None
    limit: int | None = Field(default=None, ge=1, description="Most messages on a page")
    cursor: str | None = Field(
        default=None, description="From the Link header's rel=next URL of the previous page"
    )


class NotificationOut(BaseModel):
    id: int
    target_type: str
    target_id: str
    message: str
    author: str = Field(description="The username of the registry user who wrote it")
    time: str = Field(description="ISO 8601, with its offset")
    payload: dict[str, Any] = Field(description="The seed's MQTT payload, as published")
    deliveries: dict[str, Any] = Field(
        description="Each backend's outcome: mqtt {state, at, reason}; channels {state, "
        "at, reason, recipients: {username: {message_id, channel, status}}}"
    )


class TargetOut(BaseModel):
    target_type: Literal["xform", "project"]
    target_id: str
    name: str
    form_id: str | None
    members: dict[str, Permission]
