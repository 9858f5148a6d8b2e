"""Channels: the names client systems send on, as the operator configured them.

A client sends "on channel ``sms``"; it never names a transport or a queue. Each
channel says which transport carries it (``transport_name``: the connector a
``ToAddressRouter`` routes by), what kind it is (``type``: sms, email, web, whatsapp,
mqtt...) and which sender addresses each tenant may use on it. The senders list is
what keeps tenants apart on a shared channel: a tenant can send only as its own
numbers and addresses, and an inbound message belongs to the tenant whose sender
address it was sent to.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field, field_validator, model_validator

from vumi_like.config import ConfigModel

__all__ = ["ANY_SENDER", "ChannelConfig", "Channels", "ChannelsSettings", "message_type_of"]

# In a tenant's senders list: any sender address is allowed (for trusted tenants).
ANY_SENDER = "*"


# The message type a channel's messages have in history (seed 003's names).
_MESSAGE_TYPES = {"sms": "SMS", "email": "EMAIL", "web": "WEB_MESSAGE"}


def message_type_of(channel_type: str) -> str:
    """``SMS``, ``EMAIL`` or ``WEB_MESSAGE`` for those channel types, else ``MESSAGE``."""
    return _MESSAGE_TYPES.get(channel_type, "MESSAGE")


class ChannelConfig(ConfigModel):
    """One entry of ``channels``."""

    name: str = Field(description="Channel name clients send on (unique)")
    type: str = Field(description="Kind of channel: sms, email, web, whatsapp, mqtt, ...")
    transport_name: str = Field(description="Transport connector that carries it")
    senders: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Tenant -> sender addresses it may use; the first is its default; "
        '"*" allows any',
    )

    @field_validator("name", "type", "transport_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("should not be empty")
        return value

    def allows(self, tenant: str, sender: str) -> bool:
        allowed = self.senders.get(tenant, [])
        return ANY_SENDER in allowed or sender in allowed

    def default_sender(self, tenant: str) -> str | None:
        """The tenant's first configured sender here; for a tenant with only ``*``, its
        own name (a web or MQTT channel has no sender addresses to choose from)."""
        senders = self.senders.get(tenant, [])
        concrete = next((s for s in senders if s != ANY_SENDER), None)
        if concrete is None and ANY_SENDER in senders:
            return tenant
        return concrete


class Channels:
    """The configured channels, looked up by name, by transport, by tenant."""

    def __init__(self, channels: Iterable[ChannelConfig]) -> None:
        self._by_name = {channel.name: channel for channel in channels}

    def get(self, name: str, tenant: str) -> ChannelConfig | None:
        """Channel ``name`` if ``tenant`` may use it (it has senders there), else None."""
        channel = self._by_name.get(name)
        if channel is None or tenant not in channel.senders:
            return None
        return channel

    def for_tenant(self, tenant: str) -> list[ChannelConfig]:
        return [channel for channel in self._by_name.values() if tenant in channel.senders]

    def of_type(self, channel_type: str, tenant: str) -> ChannelConfig | None:
        """The first channel of ``channel_type`` the tenant may use (for the typed endpoints)."""
        return next(
            (c for c in self._by_name.values() if c.type == channel_type and tenant in c.senders),
            None,
        )

    def inbound_owner(self, transport_name: str, to_addr: str) -> tuple[ChannelConfig, str] | None:
        """The channel an inbound on ``transport_name`` arrived on, and the tenant that owns
        ``to_addr`` there, or None when nobody (or more than one tenant) could.

        A tenant owns the addresses it lists, and, where it has ``*``, its own name (what
        it sends as there). Failing those, a ``*`` owns any address, but only when one
        tenant alone has ``*`` on the transport: with two, an inbound to an address
        neither lists belongs to neither, and is better dead-lettered than given to the
        wrong one.
        """
        channels = [c for c in self._by_name.values() if c.transport_name == transport_name]
        for channel in channels:
            for tenant, senders in channel.senders.items():
                if to_addr in senders or (to_addr == tenant and ANY_SENDER in senders):
                    return channel, tenant
        wildcards = [
            (channel, tenant)
            for channel in channels
            for tenant, senders in channel.senders.items()
            if ANY_SENDER in senders
        ]
        return wildcards[0] if len(wildcards) == 1 else None


class ChannelsSettings(ConfigModel):
    """The ``channels`` key, shared by the Messaging API and the event dispatcher."""

    channels: list[ChannelConfig] = Field(
        default_factory=list, description="Channels clients may send on (see docs)"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ChannelsSettings:
        names = [channel.name for channel in self.channels]
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"duplicate channel names: {', '.join(duplicates)}")
        return self
