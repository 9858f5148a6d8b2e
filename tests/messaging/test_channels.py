"""Channels: which tenant may send as whom, and whose an inbound message is."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vumi_like.messaging.channels import ChannelConfig, Channels, ChannelsSettings

CHANNELS = [
    ChannelConfig(
        name="sms",
        type="sms",
        transport_name="smpp",
        senders={"acme": ["1234", "ACME"], "globex": ["5678"]},
    ),
    ChannelConfig(name="email", type="email", transport_name="smtp", senders={"acme": ["*"]}),
    ChannelConfig(name="sms-2", type="sms", transport_name="smpp", senders={"initech": ["*"]}),
]


def test_a_tenant_sees_only_the_channels_it_has_senders_on():
    channels = Channels(CHANNELS)
    assert [c.name for c in channels.for_tenant("acme")] == ["sms", "email"]
    assert channels.get("email", "globex") is None
    assert channels.get("nope", "acme") is None
    assert channels.of_type("sms", "initech").name == "sms-2"  # type: ignore[union-attr]


def test_senders_are_checked_per_tenant_and_the_first_is_the_default():
    sms, email, _ = CHANNELS
    assert sms.allows("acme", "ACME")
    assert not sms.allows("acme", "5678")
    assert not sms.allows("globex", "1234")
    assert email.allows("acme", "anyone@example.org")
    assert sms.default_sender("acme") == "1234"
    assert email.default_sender("acme") == "acme"  # only "*": the tenant itself
    assert email.default_sender("globex") is None


def test_an_inbound_belongs_to_the_tenant_owning_its_to_addr_before_a_wildcard():
    channels = Channels(CHANNELS)
    assert channels.inbound_owner("smpp", "5678") == (CHANNELS[0], "globex")
    assert channels.inbound_owner("smpp", "9999") == (CHANNELS[2], "initech")
    assert channels.inbound_owner("smtp", "x@example.org") == (CHANNELS[1], "acme")
    assert channels.inbound_owner("mqtt", "5678") is None


def test_on_a_shared_wildcard_channel_a_tenant_owns_its_own_name_and_nobody_the_rest():
    shared = ChannelConfig(
        name="web", type="web", transport_name="web", senders={"acme": ["*"], "globex": ["*"]}
    )
    channels = Channels([shared])
    assert channels.inbound_owner("web", "globex") == (shared, "globex")
    assert channels.inbound_owner("web", "acme") == (shared, "acme")
    assert channels.inbound_owner("web", "visitor-7") is None


def test_channel_names_are_unique_and_not_blank():
    with pytest.raises(ValidationError, match="duplicate channel names: sms"):
        ChannelsSettings(channels=[CHANNELS[0], CHANNELS[0]])
    with pytest.raises(ValidationError, match="should not be empty"):
        ChannelConfig(name=" ", type="sms", transport_name="t")
