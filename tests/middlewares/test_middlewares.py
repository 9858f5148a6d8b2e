"""Middlewares: per connector, per kind of envelope, in config order, both ways.

The middlewares used here are defined in this module and loaded by their dotted path,
as a worker's config would name them. Tests that move envelopes run on the memory
broker and on RabbitMQ.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import trio

from tests.broker.test_contract import nothing_arrives, receive
from tests.test_worker import ProbeConfig, ProbeWorker, make_message, running_worker
from vumi_like.broker import Broker
from vumi_like.broker.base import HEADER_DL_ERROR, HEADER_DL_QUEUE
from vumi_like.config import ConfigError, MiddlewareConfig
from vumi_like.connectors import ReceiveInboundConnector, ReceiveOutboundConnector
from vumi_like.logs import configure_logging
from vumi_like.messages import Event, Message
from vumi_like.middlewares import (
    BaseMiddleware,
    BaseMiddlewareConfig,
    filters_for,
    load_middlewares,
)
from vumi_like.middlewares.logging import LoggingMiddleware

# -- middlewares for the tests


class AppendConfig(BaseMiddlewareConfig):
    suffix: str = "A"


class Append(BaseMiddleware):
    """Appends ``suffix`` to a message's content; adds it to an event's ``helper_metadata``."""

    config_class = AppendConfig
    config: AppendConfig

    async def handle_inbound(self, message: Message, connector_name: str) -> Message:
        return self._append(message)

    async def handle_outbound(self, message: Message, connector_name: str) -> Message:
        return self._append(message)

    async def handle_event(self, event: Event, connector_name: str) -> Event:
        seen = [*event.helper_metadata.get("seen", []), self.config.suffix]
        return event.model_copy(
            update={"helper_metadata": {**event.helper_metadata, "seen": seen}}
        )

    def _append(self, message: Message) -> Message:
        return message.model_copy(update={"content": (message.content or "") + self.config.suffix})


class Explode(BaseMiddleware):
    async def handle_inbound(self, message: Message, connector_name: str) -> Message:
        raise RuntimeError("middleware exploded")

    async def handle_outbound(self, message: Message, connector_name: str) -> Message:
        raise RuntimeError("middleware exploded")

    async def handle_event(self, event: Event, connector_name: str) -> Event:
        raise RuntimeError("middleware exploded")


class ForgetsToReturn(BaseMiddleware):
    async def handle_inbound(self, message: Message, connector_name: str) -> Message:
        message.content = "changed"
        return None  # type: ignore[return-value]


class Lifecycle(BaseMiddleware):
    """Records its setup, the envelopes it sees and its teardown, in order."""

    def __init__(self, settings: MiddlewareConfig) -> None:
        super().__init__(settings)
        self.calls: list[str] = []

    async def setup(self) -> None:
        self.calls.append("setup")

    async def teardown(self) -> None:
        self.calls.append("teardown")

    async def handle_inbound(self, message: Message, connector_name: str) -> Message:
        self.calls.append(f"inbound {connector_name}")
        return message


def settings(
    cls: type[BaseMiddleware] | str,
    connectors: list[str],
    *,
    inbound: bool = False,
    outbound: bool = False,
    event: bool = False,
    **options: Any,
) -> MiddlewareConfig:
    """A ``middlewares:`` entry, with options beside ``class_path`` as vumi2 writes them."""
    class_path = cls if isinstance(cls, str) else f"{__name__}.{cls.__name__}"
    return MiddlewareConfig.model_validate(
        {
            "class_path": class_path,
            "enable_for_connectors": connectors,
            "inbound_enabled": inbound,
            "outbound_enabled": outbound,
            "event_enabled": event,
            **options,
        }
    )


def config_error(configs: list[MiddlewareConfig]) -> str:
    with pytest.raises(ConfigError) as raised:
        load_middlewares(configs)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """JSON log lines at DEBUG go to the stream; logging is restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog_config = structlog.get_config()
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    yield stream
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.configure(**structlog_config)


def logged(stream: io.StringIO, logger: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == logger]


# -- enabling and loading


def test_enabled_for_needs_both_the_connector_and_the_kind():
    [middleware] = load_middlewares([settings(Append, ["sms"], inbound=True, event=True)])
    assert middleware.enabled_for("sms", "inbound")
    assert middleware.enabled_for("sms", "event")
    assert not middleware.enabled_for("sms", "outbound")
    assert not middleware.enabled_for("email", "inbound")


async def test_base_middleware_returns_envelopes_unchanged():
    [middleware] = load_middlewares([settings(BaseMiddleware, ["sms"], inbound=True)])
    message, event = make_message(), Event.ack("abc", sent_message_id="p1")
    assert await middleware.handle_inbound(message, "sms") is message
    assert await middleware.handle_outbound(message, "sms") is message
    assert await middleware.handle_event(event, "sms") is event


def test_middlewares_load_in_config_order_with_their_own_options():
    loaded = load_middlewares(
        [
            settings(Append, ["sms"], inbound=True, suffix="B"),
            MiddlewareConfig(
                class_path=f"{__name__}.Append",
                enable_for_connectors=["sms"],
                config={"suffix": "C"},
            ),
            settings(Append, ["sms"]),
        ]
    )
    assert [type(m) for m in loaded] == [Append, Append, Append]
    assert [m.config.suffix for m in loaded] == ["B", "C", "A"]
    assert loaded[0].settings.enable_for_connectors == ["sms"]


def test_vumi2_logging_middleware_class_path_and_options_load_ours():
    [middleware] = load_middlewares(
        [
            settings(
                "vumi2.middlewares.logging.LoggingMiddleware",
                ["sms"],
                inbound=True,
                log_level="debug",
                logger_name="vumi2.middlewares.logging",
            )
        ]
    )
    assert isinstance(middleware, LoggingMiddleware)
    assert middleware.config.log_level == "DEBUG"
    assert middleware.config.logger_name == "vumi2.middlewares.logging"


@pytest.mark.parametrize(
    ("class_path", "problem"),
    [
        (
            "no_such_package.middlewares.Thing",
            "cannot import module 'no_such_package.middlewares' for middleware "
            "'no_such_package.middlewares.Thing'",
        ),
        (f"{__name__}.NoSuchMiddleware", "has no 'NoSuchMiddleware'"),
        ("vumi_like.messages.Message", "is not a middleware"),
        ("LoggingMiddleware", "is not a dotted path"),
        (
            "vumi2.middlewares.unidecoder.Unidecoder",
            "(read as 'vumi_like.middlewares.unidecoder.Unidecoder')",
        ),
    ],
)
def test_bad_class_path_is_a_one_line_config_error(class_path: str, problem: str):
    message = config_error([settings(class_path, ["sms"], inbound=True)])
    assert message.startswith("config error: middlewares.0.class_path: ")
    assert problem in message


def test_unknown_or_bad_option_is_a_one_line_config_error_naming_it():
    unknown = config_error([settings(Append, ["sms"], sufix="B")])
    assert unknown.startswith("config error: middlewares.0: unknown key 'sufix'")
    assert f"{__name__}.Append" in unknown

    bad = config_error(
        [settings(LoggingMiddleware.__module__ + ".LoggingMiddleware", [], log_level="loud")]
    )
    assert bad.startswith("config error: middlewares.0: log_level: should be one of DEBUG")


def test_every_bad_middleware_is_named_in_the_one_error():
    message = config_error(
        [
            settings(Append, ["sms"]),
            settings("no_such_package.Thing", ["sms"]),
            settings(Append, ["sms"], colour="red"),
        ]
    )
    assert "middlewares.1.class_path: cannot import" in message
    assert "middlewares.2: unknown key 'colour'" in message
    assert "middlewares.0" not in message


# -- on connectors: consuming


async def test_consumed_envelopes_pass_the_enabled_middlewares_in_config_order(
    broker: Broker, unique: str
):
    middlewares = load_middlewares(
        [
            settings(Append, [unique], inbound=True, suffix="A"),
            settings(Append, ["elsewhere"], inbound=True, event=True, suffix="X"),
            settings(Append, [unique], outbound=True, suffix="O"),
            settings(Append, [unique], inbound=True, event=True, suffix="B"),
        ]
    )
    inbound: list[Message] = []
    events: list[Event] = []
    got_both = trio.Event()

    def record(envelope: Message | Event) -> None:
        (events if isinstance(envelope, Event) else inbound).append(envelope)  # type: ignore[arg-type]
        if inbound and events:
            got_both.set()

    sent = make_message("hi")
    async with trio.open_nursery() as nursery:
        app = ReceiveInboundConnector(broker, unique, filters=filters_for(middlewares, unique))
        await app.setup(nursery, inbound_handler=record, event_handler=record)
        await broker.publish(f"{unique}.inbound", sent.to_json())
        await broker.publish(f"{unique}.event", Event.ack(sent, "p1").to_json())
        with trio.fail_after(10):
            await got_both.wait()
        await app.close()

    [message] = inbound
    assert message.content == "hiAB"
    assert message.message_id == sent.message_id
    [event] = events
    assert event.helper_metadata == {"seen": ["B"]}


async def test_middleware_that_raises_while_consuming_dead_letters_the_envelope(
    broker: Broker, unique: str
):
    middlewares = load_middlewares([settings(Explode, [unique], outbound=True)])
    handled: list[Message] = []
    sent = make_message("boom")
    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(
            broker, unique, worker_name="sms", filters=filters_for(middlewares, unique)
        )
        await transport.setup(nursery, outbound_handler=handled.append)
        await broker.publish(f"{unique}.outbound", sent.to_json())
        [dead] = await receive(broker, broker.dead_letter_queue, 1)
        await transport.close()

    assert handled == []
    assert dead.body == sent.to_json()
    assert dead.headers[HEADER_DL_QUEUE] == f"{unique}.outbound"
    assert dead.headers[HEADER_DL_ERROR] == "RuntimeError: middleware exploded"
    assert await nothing_arrives(broker, f"{unique}.outbound", 0.3)


async def test_middleware_that_returns_nothing_dead_letters_the_envelope_saying_so(
    broker: Broker, unique: str
):
    middlewares = load_middlewares([settings(ForgetsToReturn, [unique], inbound=True)])
    handled: list[Message] = []
    async with trio.open_nursery() as nursery:
        app = ReceiveInboundConnector(broker, unique, filters=filters_for(middlewares, unique))
        await app.setup(nursery, inbound_handler=handled.append, event_handler=print)
        await broker.publish(f"{unique}.inbound", make_message().to_json())
        [dead] = await receive(broker, broker.dead_letter_queue, 1)
        await app.close()

    assert handled == []
    assert dead.headers[HEADER_DL_ERROR] == (
        "TypeError: middleware ForgetsToReturn.handle_inbound returned NoneType, not Message"
    )


# -- on connectors: publishing


async def test_published_envelopes_pass_the_enabled_middlewares_in_config_order(
    broker: Broker, unique: str
):
    middlewares = load_middlewares(
        [
            settings(Append, [unique], inbound=True, event=True, suffix="B"),
            settings(Append, [unique], outbound=True, suffix="O"),
            settings(Append, ["elsewhere"], inbound=True, event=True, suffix="X"),
            settings(Append, [unique], inbound=True, suffix="A"),
        ]
    )
    message = make_message("hi")
    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(
            broker, unique, filters=filters_for(middlewares, unique)
        )
        await transport.setup(nursery, outbound_handler=print)
        await transport.publish_inbound(message)
        await transport.publish_event(Event.ack(message, "p1"))
        [inbound] = await receive(broker, f"{unique}.inbound", 1)
        [event] = await receive(broker, f"{unique}.event", 1)
        await transport.close()

    assert Message.from_json(inbound.body).content == "hiBA"
    assert Event.from_json(event.body).helper_metadata == {"seen": ["B"]}
    assert message.content == "hi"  # these middlewares return copies


async def test_outbound_published_by_an_application_passes_its_outbound_middlewares(
    broker: Broker, unique: str
):
    middlewares = load_middlewares(
        [
            settings(Append, [unique], inbound=True, suffix="I"),
            settings(Append, [unique], outbound=True, suffix="O"),
        ]
    )
    async with trio.open_nursery() as nursery:
        app = ReceiveInboundConnector(broker, unique, filters=filters_for(middlewares, unique))
        await app.setup(nursery, inbound_handler=print, event_handler=print)
        await app.publish_outbound(make_message("hi"))
        [outbound] = await receive(broker, f"{unique}.outbound", 1)
        await app.close()

    assert Message.from_json(outbound.body).content == "hiO"


async def test_middleware_that_raises_while_publishing_raises_and_nothing_is_published(
    broker: Broker, unique: str
):
    middlewares = load_middlewares([settings(Explode, [unique], inbound=True)])
    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(
            broker, unique, filters=filters_for(middlewares, unique)
        )
        await transport.setup(nursery, outbound_handler=print)
        with pytest.raises(RuntimeError, match="middleware exploded"):
            await transport.publish_inbound(make_message())
        await transport.close()

    assert await nothing_arrives(broker, f"{unique}.inbound", 0.3)


# -- LoggingMiddleware


async def test_logging_middleware_logs_ids_and_addresses_and_leaves_envelopes_unchanged(
    log_stream: io.StringIO,
):
    [middleware] = load_middlewares(
        [
            settings(
                LoggingMiddleware,
                ["sms"],
                inbound=True,
                outbound=True,
                event=True,
                log_level="debug",
            )
        ]
    )
    message = make_message("secret-ish content")
    reply = message.reply("answer")
    event = Event.delivery_report(message, "delivered")
    before = (message.to_json(), reply.to_json(), event.to_json())

    assert await middleware.handle_inbound(message, "sms") is message
    assert await middleware.handle_outbound(reply, "sms") is reply
    assert await middleware.handle_event(event, "sms") is event
    assert (message.to_json(), reply.to_json(), event.to_json()) == before

    inbound_line, outbound_line, event_line = logged(log_stream, "vumi_like.middlewares.logging")
    assert inbound_line["level"] == "debug"
    assert inbound_line["event"] == "processed inbound message"
    assert inbound_line["direction"] == "inbound"
    assert inbound_line["connector"] == "sms"
    assert inbound_line["message_id"] == message.message_id
    assert inbound_line["to_addr"] == message.to_addr
    assert inbound_line["from_addr"] == message.from_addr
    assert "content" not in inbound_line
    assert outbound_line["direction"] == "outbound"
    assert outbound_line["message_id"] == reply.message_id
    assert outbound_line["in_reply_to"] == message.message_id
    assert event_line["direction"] == "event"
    assert event_line["event_id"] == event.event_id
    assert event_line["user_message_id"] == message.message_id
    assert event_line["event_type"] == "delivery_report"
    assert event_line["delivery_status"] == "delivered"


async def test_logging_middleware_logs_to_the_configured_logger_at_info_by_default(
    log_stream: io.StringIO,
):
    [middleware] = load_middlewares(
        [settings(LoggingMiddleware, ["sms"], inbound=True, logger_name="audit")]
    )
    message = make_message()
    await middleware.handle_inbound(message, "sms")
    [line] = logged(log_stream, "audit")
    assert line["level"] == "info"
    assert line["message_id"] == message.message_id


# -- in a worker


async def test_worker_run_by_run_worker_applies_the_middlewares_in_its_config(
    broker: Broker, unique: str, log_stream: io.StringIO
):
    config = ProbeConfig(
        connector_name=unique,
        middlewares=[
            settings(Lifecycle, [unique], inbound=True),
            settings(LoggingMiddleware, [unique], inbound=True),
            settings(Append, [unique], inbound=True, suffix="!"),
            settings(Append, [f"{unique}-other"], inbound=True, suffix="?"),
        ],
    )
    sent = make_message("hello")
    with trio.fail_after(10):
        async with running_worker(ProbeWorker, config, broker) as worker:
            lifecycle = worker.middlewares[0]
            assert lifecycle.calls == ["setup"]
            await broker.publish(f"{unique}.inbound", sent.to_json())
            await worker.handled_one.wait()

    [handled] = worker.handled
    assert handled.content == "hello!"
    assert lifecycle.calls == ["setup", f"inbound {unique}", "teardown"]
    [line] = logged(log_stream, "vumi_like.middlewares.logging")
    assert line["message_id"] == sent.message_id
    assert line["connector"] == unique


async def test_worker_with_a_bad_middleware_stops_at_start_up_before_consuming(
    broker: Broker, unique: str
):
    await broker.declare_queue(f"{unique}.inbound")
    waiting = make_message()
    await broker.publish(f"{unique}.inbound", waiting.to_json())
    config = ProbeConfig(
        connector_name=unique, middlewares=[settings("no_such_package.Thing", [unique])]
    )
    with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as raised:
        async with running_worker(ProbeWorker, config, broker):
            pass
    assert raised.group_contains(ConfigError, match=r"middlewares\.0\.class_path", depth=None)
    [delivery] = await receive(broker, f"{unique}.inbound", 1)
    assert Message.from_json(delivery.body).message_id == waiting.message_id
    assert delivery.redelivered is False
