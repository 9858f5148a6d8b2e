"""Notifications to users, forms and projects (seed 004), delivered over MQTT."""

from vumi_like.applications.notifications.config import NotificationsApiConfig
from vumi_like.applications.notifications.worker import NotificationsApi

__all__ = ["NotificationsApi", "NotificationsApiConfig"]
