"""Routers: move envelopes between application and transport connectors."""

from vumi_like.routers.to_address import (
    ToAddressMapping,
    ToAddressRouter,
    ToAddressRouterConfig,
)

__all__ = ["ToAddressMapping", "ToAddressRouter", "ToAddressRouterConfig"]
