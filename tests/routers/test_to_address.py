"""``ToAddressRouter`` on the memory broker and on RabbitMQ.

The tests play the applications and the transport by publishing to and consuming
from the router's queues directly: ``<app>.outbound`` / ``<app>.inbound`` /
``<app>.event`` on the application side, ``<transport>.outbound`` / ``.inbound`` /
``.event`` on the transport side.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from tests.broker.test_contract import nothing_arrives, receive
from tests.caches.test_message_caches import REDIS_URL, delete_redis_keys
from tests.conftest import require_service
from tests.test_worker import running_worker
from vumi_like.broker import Broker
from vumi_like.broker.base import HEADER_DL_ERROR, HEADER_DL_QUEUE
from vumi_like.config import ConfigError, config_from_data
from vumi_like.messages import Event, Message
from vumi_like.routers import ToAddressRouter, ToAddressRouterConfig


class Names:
    """Connector names of one test: two applications and a transport, all unique."""

    def __init__(self, unique: str) -> None:
        self.app_a = f"{unique}-app-a"
        self.app_b = f"{unique}-app-b"
        self.fallback = f"{unique}-fallback"
        self.transport = f"{unique}-sms"
        self.dead_letter = f"{unique}.dead_letter"


@pytest.fixture
def names(unique: str) -> Names:
    return Names(unique)


def router_config(names: Names, **fields: Any) -> ToAddressRouterConfig:
    data: dict[str, Any] = {
        "transport_names": [names.transport],
        # vumi2's documented form: a list of {name, pattern}, tried in order.
        "to_address_mappings": [
            {"name": names.app_a, "pattern": r"^1234"},
            {"name": names.app_b, "pattern": r"^12"},
        ],
        **fields,
    }
    return config_from_data(ToAddressRouterConfig, data, source="test")


def outbound(names: Names, *, transport_name: str | None = None) -> Message:
    """An outbound from short code 1234, which app B's pattern (``^12``) also matches."""
    return Message(
        to_addr="+27820000001",
        from_addr="1234",
        transport_name=transport_name or names.transport,
        transport_type="sms",
        content="hello",
    )


def inbound(names: Names, to_addr: str) -> Message:
    return Message(
        to_addr=to_addr,
        from_addr="+27820000001",
        transport_name=names.transport,
        transport_type="sms",
        content="hi",
    )


async def test_outbound_reaches_its_transport_and_its_event_returns_to_the_sender_app(
    broker: Broker, names: Names
):
    message = outbound(names)
    with trio.fail_after(10):
        async with running_worker(ToAddressRouter, router_config(names), broker):
            # B's pattern would match the outbound's from_addr: events must not follow it.
            await broker.publish(f"{names.app_a}.outbound", message.to_json())
            [routed] = await receive(broker, f"{names.transport}.outbound", 1)
            assert Message.from_json(routed.body).message_id == message.message_id

            ack = Event.ack(message, sent_message_id="provider-1")
            await broker.publish(f"{names.transport}.event", ack.to_json())
            [event] = await receive(broker, f"{names.app_a}.event", 1)
            assert Event.from_json(event.body).event_id == ack.event_id
            assert await nothing_arrives(broker, f"{names.app_b}.event", within=0.2)


async def test_inbound_goes_to_first_matching_pattern_in_config_order_else_default_app(
    broker: Broker, names: Names
):
    config = router_config(names, default_app=names.fallback)
    with trio.fail_after(10):
        async with running_worker(ToAddressRouter, config, broker):
            # "1234" matches both patterns: A comes first in the config.
            to_a, to_b = inbound(names, "1234"), inbound(names, "1299")
            to_default = inbound(names, "5555")
            for message in (to_a, to_b, to_default):
                await broker.publish(f"{names.transport}.inbound", message.to_json())
            [at_a] = await receive(broker, f"{names.app_a}.inbound", 1)
            [at_b] = await receive(broker, f"{names.app_b}.inbound", 1)
            [at_default] = await receive(broker, f"{names.fallback}.inbound", 1)
            assert await nothing_arrives(broker, f"{names.app_a}.inbound", within=0.2)
    assert Message.from_json(at_a.body).message_id == to_a.message_id
    assert Message.from_json(at_b.body).message_id == to_b.message_id
    assert Message.from_json(at_default.body).message_id == to_default.message_id


async def test_list_order_decides_which_of_two_matching_apps_gets_the_inbound(
    broker: Broker, names: Names
):
    config = router_config(
        names,
        to_address_mappings=[
            {"name": names.app_b, "pattern": r"^12"},
            {"name": names.app_a, "pattern": r"^1234"},
        ],
    )
    message = inbound(names, "1234")
    with trio.fail_after(10):
        async with running_worker(ToAddressRouter, config, broker):
            await broker.publish(f"{names.transport}.inbound", message.to_json())
            [at_b] = await receive(broker, f"{names.app_b}.inbound", 1)
            assert await nothing_arrives(broker, f"{names.app_a}.inbound", within=0.2)
    assert Message.from_json(at_b.body).message_id == message.message_id


def test_mapping_shorthand_is_the_list_in_the_order_written(names: Names):
    shorthand = router_config(
        names, to_address_mappings={names.app_b: r"^12", names.app_a: r"^1234"}
    )
    listed = router_config(
        names,
        to_address_mappings=[
            {"name": names.app_b, "pattern": r"^12"},
            {"name": names.app_a, "pattern": r"^1234"},
        ],
    )
    assert shorthand.to_address_mappings == listed.to_address_mappings
    assert shorthand.app_names() == [names.app_b, names.app_a]


@pytest.mark.parametrize(
    ("mappings", "expected"),
    [
        ([{"name": "a"}], "to_address_mappings.0.pattern: is required"),
        ([{"name": "a", "pattern": "x", "colour": "red"}], "unknown key"),
        ("app: .*", "to_address_mappings"),
    ],
)
def test_malformed_mapping_entry_is_a_clear_config_error(
    names: Names, mappings: Any, expected: str
):
    with pytest.raises(ConfigError, match=expected):
        router_config(names, to_address_mappings=mappings)


async def test_inbound_no_pattern_matches_without_default_app_goes_to_dead_letter(
    broker: Broker, names: Names
):
    message = inbound(names, "5555")
    with trio.fail_after(10):
        async with running_worker(ToAddressRouter, router_config(names), broker):
            await broker.publish(f"{names.transport}.inbound", message.to_json())
            [letter] = await receive(broker, names.dead_letter, 1)
    assert Message.from_json(letter.body).message_id == message.message_id
    assert letter.headers[HEADER_DL_QUEUE] == f"{names.transport}.inbound"
    assert "'5555'" in letter.headers[HEADER_DL_ERROR]


async def test_outbound_for_a_transport_the_router_does_not_serve_goes_to_dead_letter(
    broker: Broker, names: Names
):
    message = outbound(names, transport_name=f"{names.transport}-elsewhere")
    with trio.fail_after(10):
        async with running_worker(ToAddressRouter, router_config(names), broker):
            await broker.publish(f"{names.app_a}.outbound", message.to_json())
            [letter] = await receive(broker, names.dead_letter, 1)
    assert Message.from_json(letter.body).message_id == message.message_id
    assert letter.headers[HEADER_DL_QUEUE] == f"{names.app_a}.outbound"
    assert f"{names.transport}-elsewhere" in letter.headers[HEADER_DL_ERROR]


async def test_event_for_unknown_message_goes_to_dead_letter(broker: Broker, names: Names):
    event = Event.ack("never-routed-here", sent_message_id="provider-1")
    with trio.fail_after(10):
        async with running_worker(ToAddressRouter, router_config(names), broker):
            await broker.publish(f"{names.transport}.event", event.to_json())
            [letter] = await receive(broker, names.dead_letter, 1)
            assert await nothing_arrives(broker, f"{names.app_a}.event", within=0.1)
    assert Event.from_json(letter.body).event_id == event.event_id
    assert letter.headers[HEADER_DL_QUEUE] == f"{names.transport}.event"
    assert "never-routed-here" in letter.headers[HEADER_DL_ERROR]


@pytest.fixture
def redis_key_prefix(unique: str) -> Iterator[str]:
    require_service(REDIS_URL, 6379, "Redis")
    prefix = f"vumi_like_test:{unique}:"
    yield prefix
    delete_redis_keys(prefix)


async def test_replicas_sharing_a_redis_cache_route_each_others_events(
    broker: Broker, names: Names, redis_key_prefix: str
):
    config = router_config(
        names,
        message_cache_class="redis",
        message_cache_config={"redis_url": REDIS_URL, "key_prefix": redis_key_prefix},
    )
    message = outbound(names)
    with trio.fail_after(10):
        async with running_worker(ToAddressRouter, config, broker, name="router-1"):
            await broker.publish(f"{names.app_a}.outbound", message.to_json())
            await receive(broker, f"{names.transport}.outbound", 1)
        # Replica 1 is gone; replica 2 has never seen the outbound itself.
        async with running_worker(ToAddressRouter, config, broker, name="router-2"):
            ack = Event.ack(message, sent_message_id="provider-1")
            await broker.publish(f"{names.transport}.event", ack.to_json())
            [event] = await receive(broker, f"{names.app_a}.event", 1)
    assert Event.from_json(event.body).event_id == ack.event_id


def test_bad_regex_in_to_address_mappings_is_a_clear_config_error(names: Names):
    with pytest.raises(ConfigError) as raised:
        router_config(names, to_address_mappings=[{"name": names.app_a, "pattern": "^(1234"}])
    message = str(raised.value)
    assert "to_address_mappings" in message
    assert names.app_a in message
    assert "not a regular expression" in message


def test_unknown_message_cache_class_is_a_clear_config_error(names: Names):
    with pytest.raises(ConfigError) as raised:
        router_config(names, message_cache_class="nonesuch")
    message = str(raised.value)
    assert "message_cache_class" in message
    assert "nonesuch" in message


def test_bad_message_cache_config_is_a_clear_config_error(names: Names):
    with pytest.raises(ConfigError) as raised:
        router_config(names, message_cache_class="redis", message_cache_config={"redis_host": "x"})
    message = str(raised.value)
    assert "message_cache_config" in message
    assert "redis_host" in message
