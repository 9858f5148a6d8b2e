"""Routers: move envelopes between application and transport connectors."""

from vumi_like.routers.to_address import ToAddressRouter, ToAddressRouterConfig

__all__ = ["ToAddressRouter", "ToAddressRouterConfig"]
