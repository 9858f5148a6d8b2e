"""Middlewares: code a worker's config puts between its connectors and its handlers.

See ``vumi_like.middlewares.base`` for what a middleware is and when it runs.
"""

from vumi_like.middlewares.base import (
    BaseMiddleware,
    BaseMiddlewareConfig,
    filters_for,
    load_middlewares,
)

__all__ = ["BaseMiddleware", "BaseMiddlewareConfig", "filters_for", "load_middlewares"]
