"""The event dispatcher: message statuses from events, and webhooks to subscribers."""

from vumi_like.dispatch.event_dispatcher import EventDispatcher, EventDispatcherConfig

__all__ = ["EventDispatcher", "EventDispatcherConfig"]
