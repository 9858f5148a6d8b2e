"""Dead letters for operators: ``vumi_like.dlq`` on both brokers, ``vumi-like dlq`` on RabbitMQ.

The library tests park a few deliveries with ``Broker.dead_letter`` exactly as a
connector does, then list, find and replay them. The CLI tests run the real console
script against RabbitMQ, each with a dead-letter queue of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import trio

from vumi_like import dlq
from vumi_like.broker import Broker, BrokerInspector, Delivery, open_inspector
from vumi_like.broker.base import (
    HEADER_ATTEMPT,
    HEADER_DL_ERROR,
    HEADER_DL_ID,
    HEADER_DL_QUEUE,
    HEADER_DL_WORKER,
)

BODIES = [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


async def park_dead_letters(broker: Broker, source: str, bodies: list[bytes]) -> None:
    """Publish ``bodies`` to ``source``, consume them and dead-letter each, as a handler's
    failure would. The error and worker name say which body it was."""
    await broker.declare_queue(source)
    for body in bodies:
        await broker.publish(source, body, headers={"x-test": "kept", HEADER_ATTEMPT: 2})
    done = 0
    with trio.fail_after(10):
        async with broker.consume(source, prefetch=len(bodies)) as subscription:
            async for delivery in subscription:
                n = json.loads(delivery.body)["n"]
                await broker.dead_letter(delivery, error=f"boom {n}", worker=f"worker-{n}")
                done += 1
                if done == len(bodies):
                    break


async def take(broker: BrokerInspector, queue: str) -> list[Delivery]:
    """Everything ready in ``queue``, acked."""
    got = []
    with trio.fail_after(10):
        while (delivery := await broker.get(queue)) is not None:
            broker.ack(delivery)
            got.append(delivery)
    return got


def dl_headers(delivery: Delivery) -> list[str]:
    return [key for key in delivery.headers if key.startswith("x-vumi-")]


# ---------------------------------------------------------------- library, both brokers


async def test_list_letters_shows_each_letter_in_order_with_where_and_why(
    broker: BrokerInspector, unique: str
):
    source = f"{unique}.inbound"
    await park_dead_letters(broker, source, BODIES)

    with trio.fail_after(10):
        letters = await dlq.list_letters(broker, broker.dead_letter_queue)

    assert [letter.delivery.body for letter in letters] == BODIES
    assert [letter.source_queue for letter in letters] == [source] * 3
    for n, letter in enumerate(letters):
        assert letter.id == letter.delivery.headers[HEADER_DL_ID]
        assert letter.delivery.headers[HEADER_DL_WORKER] == f"worker-{n}"
        assert letter.delivery.headers[HEADER_DL_ERROR] == f"boom {n}"
        fields = letter.summary().split("\t")
        assert fields[0] == letter.id
        assert fields[1:3] == [source, f"worker-{n}"]
        assert fields[4] == f"boom {n}"
    assert len({letter.id for letter in letters}) == 3


async def test_listing_twice_loses_and_reorders_nothing(broker: BrokerInspector, unique: str):
    await park_dead_letters(broker, f"{unique}.inbound", BODIES)

    with trio.fail_after(10):
        first = await dlq.list_letters(broker, broker.dead_letter_queue)
        second = await dlq.list_letters(broker, broker.dead_letter_queue)

    assert [letter.id for letter in second] == [letter.id for letter in first]
    assert [letter.delivery.body for letter in second] == BODIES


async def test_list_letters_of_an_empty_queue_is_empty(broker: BrokerInspector):
    with trio.fail_after(10):
        assert await dlq.list_letters(broker, broker.dead_letter_queue) == []


async def test_find_letter_by_id(broker: BrokerInspector, unique: str):
    await park_dead_letters(broker, f"{unique}.inbound", BODIES)
    with trio.fail_after(10):
        letters = await dlq.list_letters(broker, broker.dead_letter_queue)
        found = await dlq.find_letter(broker, broker.dead_letter_queue, letters[1].id)
        missing = await dlq.find_letter(broker, broker.dead_letter_queue, "nosuch")

    assert found is not None
    assert found.id == letters[1].id
    assert found.delivery.body == BODIES[1]
    assert missing is None


async def test_replay_one_puts_its_body_back_on_its_queue_and_leaves_the_others(
    broker: BrokerInspector, unique: str
):
    source = f"{unique}.inbound"
    await park_dead_letters(broker, source, BODIES)
    with trio.fail_after(10):
        letters = await dlq.list_letters(broker, broker.dead_letter_queue)
        replayed = await dlq.replay(broker, broker.dead_letter_queue, {letters[1].id})
        left = await dlq.list_letters(broker, broker.dead_letter_queue)

    assert [letter.id for letter in replayed] == [letters[1].id]
    [back] = await take(broker, source)
    assert back.body == BODIES[1]
    # The letter starts afresh: no dead-letter headers, no retry count; its own kept.
    assert dl_headers(back) == []
    assert back.headers.get("x-test") == "kept"
    assert [letter.id for letter in left] == [letters[0].id, letters[2].id]


async def test_replay_all_empties_the_dead_letter_queue(broker: BrokerInspector, unique: str):
    source = f"{unique}.inbound"
    await park_dead_letters(broker, source, BODIES)
    with trio.fail_after(10):
        replayed = await dlq.replay(broker, broker.dead_letter_queue, None)
        left = await dlq.list_letters(broker, broker.dead_letter_queue)

    assert [letter.delivery.body for letter in replayed] == BODIES
    assert left == []
    back = await take(broker, source)
    assert [delivery.body for delivery in back] == BODIES
    assert all(dl_headers(delivery) == [] for delivery in back)


async def test_replay_of_an_unknown_id_changes_nothing(broker: BrokerInspector, unique: str):
    source = f"{unique}.inbound"
    await park_dead_letters(broker, source, BODIES)
    with trio.fail_after(10):
        replayed = await dlq.replay(broker, broker.dead_letter_queue, {"nosuch"})
        left = await dlq.list_letters(broker, broker.dead_letter_queue)

    assert replayed == []
    assert [letter.delivery.body for letter in left] == BODIES
    assert await take(broker, source) == []


async def test_a_letter_without_a_source_queue_is_listed_but_not_replayed(
    broker: BrokerInspector, unique: str
):
    # Parked by another tool: no headers of ours, so it is named by its content.
    await broker.publish(broker.dead_letter_queue, b"foreign")
    with trio.fail_after(10):
        [letter] = await dlq.list_letters(broker, broker.dead_letter_queue)
        replayed = await dlq.replay(broker, broker.dead_letter_queue, None)
        [still] = await dlq.list_letters(broker, broker.dead_letter_queue)

    assert letter.source_queue == ""
    assert letter.summary().split("\t")[1] == "?"
    assert replayed == []
    assert still.id == letter.id


# ---------------------------------------------------------------- vumi-like dlq, RabbitMQ


@pytest.fixture
async def rabbit(amqp_url: str, unique: str) -> AsyncIterator[BrokerInspector]:
    """A RabbitMQ broker with dead-letter queue ``<unique>.dead_letter``; its queues and
    ``<unique>.inbound`` are deleted afterwards."""
    async with open_inspector(amqp_url, dead_letter_queue=f"{unique}.dead_letter") as broker:
        try:
            yield broker
        finally:
            with trio.move_on_after(10) as cleanup:
                cleanup.shield = True
                for queue in (broker.dead_letter_queue, f"{unique}.inbound"):
                    await broker.delete_queue(queue)


async def vumi_like_dlq(
    amqp_url: str, queue: str, *args: str
) -> subprocess.CompletedProcess[bytes]:
    cli = [sys.executable, "-m", "vumi_like.cli", "dlq"]
    with trio.fail_after(30):
        return await trio.run_process(
            [*cli, "--amqp-url", amqp_url, "--queue", queue, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def stdout_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


def error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The one line a user error prints (JSON log lines aside), checking exit code 2."""
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vumi-like: ")
    return lines[0]


async def test_cli_list_prints_one_tab_separated_line_per_letter(
    rabbit: BrokerInspector, amqp_url: str, unique: str
):
    await park_dead_letters(rabbit, f"{unique}.inbound", BODIES)
    letters = await dlq.list_letters(rabbit, rabbit.dead_letter_queue)

    result = await vumi_like_dlq(amqp_url, rabbit.dead_letter_queue, "list")

    lines = stdout_lines(result)
    assert lines == [letter.summary() for letter in letters]
    assert [line.split("\t")[:3] for line in lines] == [
        [letter.id, f"{unique}.inbound", f"worker-{n}"] for n, letter in enumerate(letters)
    ]
    assert f"3 dead letter(s) in {rabbit.dead_letter_queue}" in result.stderr.decode()
    # Listing took nothing away.
    assert [x.id for x in await dlq.list_letters(rabbit, rabbit.dead_letter_queue)] == [
        letter.id for letter in letters
    ]


async def test_cli_show_prints_body_and_headers(
    rabbit: BrokerInspector, amqp_url: str, unique: str
):
    await park_dead_letters(rabbit, f"{unique}.inbound", BODIES)
    letters = await dlq.list_letters(rabbit, rabbit.dead_letter_queue)

    result = await vumi_like_dlq(amqp_url, rabbit.dead_letter_queue, "show", letters[2].id)

    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert out.startswith(f"id: {letters[2].id}\n")
    headers_text, _, body_text = out.partition("\nbody: ")
    headers = json.loads(headers_text.split("headers: ", 1)[1])
    assert headers[HEADER_DL_QUEUE] == f"{unique}.inbound"
    assert headers[HEADER_DL_WORKER] == "worker-2"
    assert headers[HEADER_DL_ERROR] == "boom 2"
    assert json.loads(body_text) == {"n": 2}


async def test_cli_show_of_an_unknown_id_is_one_line_and_exit_2(
    rabbit: BrokerInspector, amqp_url: str, unique: str
):
    await park_dead_letters(rabbit, f"{unique}.inbound", BODIES[:1])

    result = await vumi_like_dlq(amqp_url, rabbit.dead_letter_queue, "show", "nosuch")

    line = error_line(result)
    assert "nosuch" in line
    assert rabbit.dead_letter_queue in line


async def test_cli_replay_one_puts_it_back_on_its_queue(
    rabbit: BrokerInspector, amqp_url: str, unique: str
):
    source = f"{unique}.inbound"
    await park_dead_letters(rabbit, source, BODIES)
    letters = await dlq.list_letters(rabbit, rabbit.dead_letter_queue)

    result = await vumi_like_dlq(amqp_url, rabbit.dead_letter_queue, "replay", letters[0].id)

    assert stdout_lines(result) == [f"replayed {letters[0].id} -> {source}"]
    [back] = await take(rabbit, source)
    assert back.body == BODIES[0]
    assert dl_headers(back) == []
    left = await dlq.list_letters(rabbit, rabbit.dead_letter_queue)
    assert [letter.id for letter in left] == [letters[1].id, letters[2].id]


async def test_cli_replay_of_an_unknown_id_is_one_line_and_exit_2(
    rabbit: BrokerInspector, amqp_url: str, unique: str
):
    await park_dead_letters(rabbit, f"{unique}.inbound", BODIES[:1])

    result = await vumi_like_dlq(amqp_url, rabbit.dead_letter_queue, "replay", "nosuch")

    assert "nosuch" in error_line(result)
    assert len(await dlq.list_letters(rabbit, rabbit.dead_letter_queue)) == 1


async def test_cli_replay_all(rabbit: BrokerInspector, amqp_url: str, unique: str):
    source = f"{unique}.inbound"
    await park_dead_letters(rabbit, source, BODIES)
    letters = await dlq.list_letters(rabbit, rabbit.dead_letter_queue)

    result = await vumi_like_dlq(amqp_url, rabbit.dead_letter_queue, "replay", "--all")

    assert stdout_lines(result) == [f"replayed {letter.id} -> {source}" for letter in letters]
    assert [delivery.body for delivery in await take(rabbit, source)] == BODIES
    assert await dlq.list_letters(rabbit, rabbit.dead_letter_queue) == []


async def test_cli_replay_needs_an_id_or_all(amqp_url: str, unique: str):
    result = await vumi_like_dlq(amqp_url, f"{unique}.dead_letter", "replay")
    assert "--all" in error_line(result)


async def test_cli_with_unreachable_broker_is_one_line_without_the_password(unique: str):
    url = "amqp://guest:s3cr3t-pw@127.0.0.1:1/"
    result = await vumi_like_dlq(url, f"{unique}.dead_letter", "list")

    assert "cannot connect" in error_line(result)
    assert "s3cr3t-pw" not in result.stderr.decode() + result.stdout.decode()
