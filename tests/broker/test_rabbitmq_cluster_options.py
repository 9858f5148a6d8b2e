"""Options for a RabbitMQ cluster: several node URLs (failover), quorum queues.

These run against the shared broker; failing over when a connected node stops is
shown on private nodes (tests/faults/test_cluster.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
import trio

from tests.broker.test_contract import receive
from vumi_like.broker import (
    BrokerError,
    BrokerInspector,
    Delivery,
    PublishError,
    open_broker,
    open_inspector,
)
from vumi_like.broker.base import DELAY_PREFIX, HEADER_DL_QUEUE
from vumi_like.broker.rabbitmq import RabbitMQBroker
from vumi_like.config import BaseConfig, ConfigError, load_config, split_amqp_urls
from vumi_like.redaction import redact_text

SECRET = "s3cret-pw"


def dead_url(port: int = 1) -> str:
    """A URL where nothing listens (port 1 refuses at once), with a password."""
    return f"amqp://guest:{SECRET}@127.0.0.1:{port}/"


async def test_connects_to_the_first_node_that_answers(amqp_url: str) -> None:
    with structlog.testing.capture_logs():
        async with open_broker(f"{dead_url()},{amqp_url}", connect_timeout=5) as broker:
            assert isinstance(broker, RabbitMQBroker)
            assert broker.connected
            assert broker._connection is not None
            assert broker._connection.url.port == 5672
            # The failover order starts from the node that answered.
            assert [url.port for url in broker._connection.urls] == [5672, 1]


async def test_no_node_answering_is_one_line_naming_each_without_passwords() -> None:
    with pytest.raises(BrokerError) as raised:
        async with open_broker(f"{dead_url(1)}, {dead_url(2)}", connect_timeout=5):
            pass
    message = str(raised.value)
    assert message.startswith("cannot connect to any node: amqp://guest:***@127.0.0.1:1/: ")
    assert "amqp://guest:***@127.0.0.1:2/: " in message
    assert SECRET not in message and "\n" not in message


async def test_quorum_queues_carry_messages_dead_letters_and_retries(
    amqp_url: str, unique: str
) -> None:
    queue = f"{unique}.outbound"
    dead_letters = f"{unique}.dead_letter"
    async with open_broker(
        amqp_url, dead_letter_queue=dead_letters, queue_type="quorum"
    ) as broker:
        assert isinstance(broker, RabbitMQBroker)
        try:
            await broker.declare_queue(queue)
            await broker.publish(queue, b'{"n": 1}')
            [first] = await receive(broker, queue, 1)
            assert first.body == b'{"n": 1}'

            # Broker-held retry: a quorum delay bucket, named apart from classic ones.
            with trio.fail_after(10):
                await broker.retry_later(queue, b'{"n": 2}', delay=0.2)
            assert f"{DELAY_PREFIX}quorum.200" in broker._declared
            [retried] = await receive(broker, queue, 1)
            assert retried.body == b'{"n": 2}'

            await broker.publish(queue, b"not json")
            with trio.fail_after(10):
                async with broker.consume(queue, prefetch=1) as subscription:
                    async for delivery in subscription:
                        await broker.dead_letter(delivery, error="bad body", worker="test")
                        break
            [letter] = await receive(broker, dead_letters, 1)
            assert letter.body == b"not json"
            assert letter.headers[HEADER_DL_QUEUE] == queue
        finally:
            await broker.delete_queue(queue)
            await broker.delete_queue(dead_letters)
            await broker.delete_queue(f"{DELAY_PREFIX}quorum.200")


async def test_redeclaring_a_quorum_queue_as_classic_names_the_queue_and_the_option(
    amqp_url: str, unique: str
) -> None:
    queue = f"{unique}.inbound"
    async with open_inspector(
        amqp_url, dead_letter_queue=f"{unique}.dead_letter", queue_type="quorum"
    ) as quorum:
        try:
            await quorum.declare_queue(queue)
            try:
                async with open_broker(amqp_url, dead_letter_queue=f"{unique}.dl2") as classic:
                    with pytest.raises(BrokerError) as raised:
                        await classic.declare_queue(queue)
            finally:
                # Once the classic broker is closed: its channel, reopened after the
                # refusal, would declare its dead-letter queue again.
                await quorum.delete_queue(f"{unique}.dl2")
            message = str(raised.value)
            assert f"queue {queue!r} exists with other arguments" in message
            assert "amqp.queue_type: classic" in message
            assert "x-queue-type" in message  # RabbitMQ's own words, for the record
            assert "\n" not in message

            # The inspector reads a quorum queue whatever its own queue type.
            await quorum.publish(queue, json.dumps({"k": 1}).encode())
            async with open_inspector(amqp_url, dead_letter_queue=f"{unique}.dl3") as tool:
                try:
                    with trio.fail_after(10):
                        delivery = None
                        while delivery is None:
                            delivery = await tool.get(queue)
                    assert delivery.body == b'{"k": 1}'
                    tool.ack(delivery)
                finally:
                    await tool.delete_queue(f"{unique}.dl3")
        finally:
            await quorum.delete_queue(queue)
            await quorum.delete_queue(quorum.dead_letter_queue)


async def test_the_memory_broker_ignores_the_queue_type() -> None:
    async with open_broker("memory://", queue_type="quorum") as broker:
        assert broker.connected


def test_an_unknown_queue_type_is_refused() -> None:
    with pytest.raises(ValueError, match="classic or quorum"):
        RabbitMQBroker("amqp://127.0.0.1/", queue_type="mirrored")  # type: ignore[arg-type]


# -- configuration


def test_amqp_url_takes_a_yaml_list_of_nodes(tmp_path: Path) -> None:
    config_file = tmp_path / "worker.yaml"
    config_file.write_text(
        "amqp_url:\n  - amqp://u:p@node1:5672/\n  - amqp://u:p@node2:5673/\n"
        "amqp:\n  queue_type: quorum\n",
        encoding="utf-8",
    )
    config = load_config(BaseConfig, config_file=str(config_file), environ={})
    assert config.broker_url() == "amqp://u:p@node1:5672/,amqp://u:p@node2:5673/"
    assert config.broker_options()["queue_type"] == "quorum"


def test_amqp_url_takes_nodes_separated_by_commas_from_env_and_flags() -> None:
    from_env = load_config(
        BaseConfig,
        environ={"AMQP_URL": "amqp://u:p,w@node1/ , amqp://node2/", "AMQP_QUEUE_TYPE": "quorum"},
    )
    # A comma inside a URL (here a password) does not split it.
    assert split_amqp_urls(from_env.broker_url()) == ["amqp://u:p,w@node1/", "amqp://node2/"]
    assert from_env.amqp.queue_type == "quorum"
    from_cli = load_config(BaseConfig, environ={}, cli={"amqp_url": "amqp://node1/,amqp://node2/"})
    assert split_amqp_urls(from_cli.broker_url()) == ["amqp://node1/", "amqp://node2/"]


def test_a_single_amqp_url_and_classic_queues_stay_the_default() -> None:
    config = load_config(BaseConfig, environ={"AMQP_URL": "amqp://u:p@broker:5673/v"})
    assert config.broker_url() == "amqp://u:p@broker:5673/v"
    assert config.amqp.queue_type == "classic"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("amqp://node1/,http://node2/", "amqp_url: should be an amqp://"),
        ("memory://,amqp://node2/", "amqp_url: memory:// stands alone"),
    ],
)
def test_a_bad_node_list_is_one_line_naming_the_key(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(BaseConfig, environ={"AMQP_URL": value})
    assert problem in str(raised.value)


def test_an_unknown_queue_type_names_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(BaseConfig, environ={"AMQP_QUEUE_TYPE": "mirrored"})
    assert "amqp.queue_type" in str(raised.value)


def test_the_passwords_of_every_node_are_masked() -> None:
    config = BaseConfig(amqp_url=[f"amqp://u:{SECRET}@node1/", f"amqp://u:{SECRET}@node2:1/"])
    assert SECRET not in json.dumps(config.redacted())
    assert SECRET not in redact_text(config.broker_url())
    assert SECRET not in repr(config)


async def test_dlq_cli_reads_a_quorum_dead_letter_queue(amqp_url: str, unique: str) -> None:
    dead_letters = f"{unique}.dead_letter"
    async with open_inspector(
        amqp_url, dead_letter_queue=dead_letters, queue_type="quorum"
    ) as broker:
        try:
            await broker.declare_queue(f"{unique}.inbound")
            await broker.publish(f"{unique}.inbound", b"{}")
            [delivery] = await receive_unacked(broker, f"{unique}.inbound")
            await broker.dead_letter(delivery, error="boom", worker="test")
            command = [sys.executable, "-m", "vumi_like.cli", "dlq", "--amqp-url"]
            command += [f"{dead_url()},{amqp_url}", "--queue", dead_letters]
            with trio.fail_after(30):
                result = await trio.run_process(
                    [*command, "--amqp-queue-type", "quorum", "list"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            assert result.returncode == 0, result.stderr.decode()
            assert "boom" in result.stdout.decode()
        finally:
            await broker.delete_queue(f"{unique}.inbound")
            await broker.delete_queue(dead_letters)


async def receive_unacked(broker: BrokerInspector, queue: str) -> list[Delivery]:
    with trio.fail_after(10):
        async with broker.consume(queue, prefetch=1) as subscription:
            async for delivery in subscription:
                return [delivery]
    raise AssertionError("unreachable")


@asynccontextmanager
async def full_queue(amqp_url: str, queue: str) -> AsyncIterator[None]:
    """``queue`` bound to ``vumi``, holding one message at most and nacking any more
    (``x-overflow: reject-publish``): a broker that cannot take a message just now."""
    async with open_inspector(amqp_url, dead_letter_queue=f"{queue}.dl") as tool:
        await tool._call(_declare_bounded, tool, queue)  # type: ignore[attr-defined]
        try:
            yield
        finally:
            await tool.delete_queue(queue)
            await tool.delete_queue(f"{queue}.dl")


async def _declare_bounded(broker: RabbitMQBroker, queue: str) -> None:
    assert broker._channel is not None and broker._exchange is not None
    declared = await broker._channel.declare_queue(
        queue, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await declared.bind(broker._exchange, routing_key=queue)


async def test_a_nacked_publish_is_made_again_until_the_broker_takes_it(
    amqp_url: str, unique: str
) -> None:
    queue = f"{unique}.bounded"
    async with (
        full_queue(amqp_url, queue),
        open_broker(amqp_url, dead_letter_queue=f"{unique}.dead_letter") as broker,
    ):
        try:
            await broker.publish(queue, b"first")  # the queue is now full
            assert isinstance(broker, RabbitMQBroker)
            first_channel = broker._publish_channel
            async with trio.open_nursery() as nursery:
                second_in = trio.Event()

                async def publish_second() -> None:
                    await broker.publish(queue, b"second")  # nacked until there is room
                    second_in.set()

                nursery.start_soon(publish_second)
                await trio.sleep(0.5)
                assert not second_in.is_set()
                [first] = await receive(broker, queue, 1)
                assert first.body == b"first"
                with trio.fail_after(10):
                    await second_in.wait()
            [second] = await receive(broker, queue, 1)
            assert second.body == b"second"
            # the nack moved publishing to a new channel (see _io_replace_publisher)
            assert broker._publish_channel not in (None, first_channel)
        finally:
            await broker.delete_queue(broker.dead_letter_queue)


async def test_a_publish_nacked_until_publish_timeout_is_refused(
    amqp_url: str, unique: str
) -> None:
    queue = f"{unique}.bounded"
    async with (
        full_queue(amqp_url, queue),
        open_broker(
            amqp_url, dead_letter_queue=f"{unique}.dead_letter", publish_timeout=1.0
        ) as broker,
    ):
        try:
            await broker.publish(queue, b"first")
            started = trio.current_time()
            with trio.fail_after(10), pytest.raises(PublishError, match="nacked"):
                await broker.publish(queue, b"second")
            assert 0.9 <= trio.current_time() - started < 5
        finally:
            await broker.delete_queue(broker.dead_letter_queue)
