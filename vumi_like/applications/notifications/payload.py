"""What a notification looks like on the wire: the seed's MQTT payload, and the API's
representation of a stored notification.

The payload (seed 004)::

    {"payload": {"message": ..., "context": {"type": "user" | "xform" | "project",
                                            "metadata": {"id", "name", ["form_id"]}},
                 "author": {"username", "real_name"}},
     "id": <the notification's id>, "time": "<ISO 8601 with offset>"}

Target ids are strings here; one made only of digits is written as a number, as the
seed's examples show ids (``"id": 1337``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vumi_like.stores import Notification, NotificationTarget, NotificationUser

__all__ = ["TARGET_TYPES", "notification_body", "seed_payload"]

TARGET_TYPES = ("user", "xform", "project")


def _id(target_id: str) -> int | str:
    return int(target_id) if target_id.isdigit() else target_id


def seed_payload(
    *,
    message: str,
    target_type: str,
    target_id: str,
    target_user: NotificationUser | None,
    target: NotificationTarget | None,
    author: NotificationUser,
    at: datetime,
) -> dict[str, Any]:
    """The payload without its ``id``, which the store adds once it has one."""
    metadata: dict[str, Any] = {"id": _id(target_id)}
    if target_type == "user":
        assert target_user is not None
        metadata["name"] = target_user.real_name
    else:
        assert target is not None
        metadata["name"] = target.name
        if target_type == "xform":
            metadata["form_id"] = target.form_id
    return {
        "payload": {
            "message": message,
            "context": {"type": target_type, "metadata": metadata},
            "author": {"username": author.username, "real_name": author.real_name},
        },
        "time": at.isoformat(),
    }


def notification_body(notification: Notification) -> dict[str, Any]:
    """The API's answer for one stored notification."""
    return {
        "id": notification.id,
        "target_type": notification.target_type,
        "target_id": notification.target_id,
        "message": notification.message,
        "author": notification.author,
        "time": notification.created_at.isoformat(),
        "payload": dict(notification.payload),
        "deliveries": dict(notification.deliveries),
    }
