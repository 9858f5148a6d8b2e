"""Connector delivery promises, each on the memory broker and on real RabbitMQ."""

from __future__ import annotations

import json

import pytest
import structlog.testing
import trio
from pydantic import BaseModel

from vumi_like.broker import Broker, BrokerError
from vumi_like.broker.base import HEADER_DL_ERROR, HEADER_DL_QUEUE, HEADER_DL_WORKER
from vumi_like.connectors import (
    JobConnector,
    PublishFailed,
    ReceiveInboundConnector,
    ReceiveOutboundConnector,
)
from vumi_like.messages import Event, Message
from vumi_like.retry import RetryLater, Unprocessable
from vumi_like.stores import StoreUnavailable

from .broker.test_contract import nothing_arrives, receive


def make_message(content: str = "hello", **fields: object) -> Message:
    return Message(
        to_addr="+27820000001",
        from_addr="12345",
        transport_name="sim",
        transport_type="sms",
        content=content,
        **fields,
    )


async def test_outbound_reaches_transport_and_inbound_and_events_come_back(
    broker: Broker, unique: str
):
    inbound_seen: list[Message] = []
    events_seen: list[Event] = []
    outbound_seen: list[Message] = []
    done = trio.Event()

    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique, worker_name="transport")

        async def on_outbound(msg: Message) -> None:
            outbound_seen.append(msg)
            await transport.publish_event(Event.ack(msg, sent_message_id="provider-1"))
            await transport.publish_inbound(msg.reply("pong"))

        app = ReceiveInboundConnector(broker, unique, worker_name="app")

        def on_inbound(msg: Message) -> None:  # sync handlers work too
            inbound_seen.append(msg)
            if events_seen:
                done.set()

        async def on_event(event: Event) -> None:
            events_seen.append(event)
            if inbound_seen:
                done.set()

        await transport.setup(nursery, outbound_handler=on_outbound)
        await app.setup(nursery, inbound_handler=on_inbound, event_handler=on_event)
        sent = make_message("ping")
        await app.publish_outbound(sent)
        with trio.fail_after(10):
            await done.wait()
        await app.close()
        await transport.close()

    assert [m.message_id for m in outbound_seen] == [sent.message_id]
    assert inbound_seen[0].content == "pong"
    assert inbound_seen[0].in_reply_to == sent.message_id
    assert events_seen[0].user_message_id == sent.message_id
    assert events_seen[0].sent_message_id == "provider-1"


async def test_handler_exception_dead_letters_raw_body_and_consuming_continues(
    broker: Broker, unique: str
):
    handled: list[str] = []
    second_done = trio.Event()

    async def on_outbound(msg: Message) -> None:
        if msg.content == "boom":
            raise RuntimeError("provider exploded")
        handled.append(msg.content or "")
        second_done.set()

    first = make_message("boom")
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            transport = ReceiveOutboundConnector(broker, unique, worker_name="sms-transport")
            await transport.setup(nursery, outbound_handler=on_outbound)
            await broker.publish(f"{unique}.outbound", first.to_json())
            await broker.publish(f"{unique}.outbound", make_message("fine").to_json())
            with trio.fail_after(10):
                await second_done.wait()
            await transport.close()

    [dead] = await receive(broker, broker.dead_letter_queue, 1)
    assert dead.body == first.to_json()
    assert dead.headers[HEADER_DL_QUEUE] == f"{unique}.outbound"
    assert dead.headers[HEADER_DL_ERROR] == "RuntimeError: provider exploded"
    assert dead.headers[HEADER_DL_WORKER] == "sms-transport"
    assert handled == ["fine"]
    assert await nothing_arrives(broker, f"{unique}.outbound", 0.3)
    [line] = [entry for entry in logs if entry["event"] == "dead-lettering"]
    assert line["message_id"] == first.message_id
    assert line["queue"] == f"{unique}.outbound"
    assert line["connector"] == unique


class NoRoute(Unprocessable):
    pass


async def test_an_unprocessable_envelope_is_dead_lettered_with_one_warning_and_no_traceback(
    broker: Broker, unique: str
):
    async def on_outbound(msg: Message) -> None:
        raise NoRoute(f"nowhere to send {msg.to_addr}")

    message = make_message("lost")
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            transport = ReceiveOutboundConnector(broker, unique, worker_name="router")
            await transport.setup(nursery, outbound_handler=on_outbound)
            await broker.publish(f"{unique}.outbound", message.to_json())
            [dead] = await receive(broker, broker.dead_letter_queue, 1)
            await transport.close()

    assert dead.body == message.to_json()
    assert dead.headers[HEADER_DL_ERROR] == "NoRoute: nowhere to send +27820000001"
    # The dead-lettering's warning names the reason; nothing logs a traceback.
    assert [(e["event"], e["log_level"]) for e in logs] == [("dead-lettering", "warning")]
    assert logs[0]["error"] == "NoRoute: nowhere to send +27820000001"
    assert logs[0]["message_id"] == message.message_id
    assert not any("exc_info" in entry for entry in logs)


async def test_undecodable_bodies_are_dead_lettered_with_the_reason(broker: Broker, unique: str):
    valid = make_message().serialise()
    missing_field = {k: v for k, v in valid.items() if k != "to_addr"}
    wrong_type = {**valid, "to_addr": 42}
    bodies = [
        b"not json at all",
        json.dumps(missing_field).encode(),
        json.dumps(wrong_type).encode(),
    ]
    handled: list[Message] = []
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            transport = ReceiveOutboundConnector(broker, unique, worker_name="t")
            await transport.setup(nursery, outbound_handler=handled.append)
            for body in bodies:
                await broker.publish(f"{unique}.outbound", body)
            dead = await receive(broker, broker.dead_letter_queue, 3)
            await transport.close()

    assert handled == []
    assert sorted(d.body for d in dead) == sorted(bodies)
    reasons = {d.body: d.headers[HEADER_DL_ERROR] for d in dead}
    assert all(r.startswith("invalid envelope") for r in reasons.values())
    assert "to_addr" in reasons[bodies[1]]
    assert "to_addr" in reasons[bodies[2]]
    # Each log line names the message where the body still says which one it was.
    logged = [entry.get("message_id") for entry in logs if entry["event"] == "dead-lettering"]
    assert sorted(logged, key=str) == sorted(
        [None, valid["message_id"], valid["message_id"]], key=str
    )


async def test_delivery_is_not_acked_before_its_handler_returns(broker: Broker, unique: str):
    started = trio.Event()

    async def stuck(msg: Message) -> None:
        started.set()
        await trio.sleep_forever()

    msg = make_message("slow")
    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique, shutdown_timeout=0.2)
        await transport.setup(nursery, outbound_handler=stuck)
        await broker.publish(f"{unique}.outbound", msg.to_json())
        with trio.fail_after(10):
            await started.wait()
        # The worker stops while the handler is still running: it gets
        # shutdown_timeout, is cancelled, and its delivery must come back.
        await transport.close()

    [again] = await receive(broker, f"{unique}.outbound", 1)
    assert again.body == msg.to_json()
    assert again.redelivered


async def test_a_handler_asking_is_told_whether_the_broker_redelivered_its_envelope(
    broker: Broker, unique: str
):
    seen: list[tuple[int, bool]] = []
    started = trio.Event()
    again = trio.Event()

    async def handle(msg: Message, redelivered: bool, attempt: int) -> None:
        seen.append((attempt, redelivered))
        if not redelivered:
            started.set()
            await trio.sleep_forever()
        again.set()

    async with trio.open_nursery() as nursery:
        first = ReceiveOutboundConnector(broker, unique, shutdown_timeout=0.1)
        await first.setup(nursery, outbound_handler=handle)
        await broker.publish(f"{unique}.outbound", make_message().to_json())
        with trio.fail_after(10):
            await started.wait()
        # Stopped mid-handler, as a worker that dies is: the broker hands it out again.
        await first.close()
        second = ReceiveOutboundConnector(broker, unique)
        await second.setup(nursery, outbound_handler=handle)
        with trio.fail_after(10):
            await again.wait()
        await second.close()

    assert seen == [(0, False), (0, True)]


async def test_close_waits_for_in_flight_handlers_that_finish_in_time(broker: Broker, unique: str):
    started = trio.Event()
    finished: list[str] = []

    async def slowish(msg: Message) -> None:
        started.set()
        await trio.sleep(0.3)
        finished.append(msg.message_id)

    msg = make_message()
    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique, shutdown_timeout=5)
        await transport.setup(nursery, outbound_handler=slowish)
        await broker.publish(f"{unique}.outbound", msg.to_json())
        with trio.fail_after(10):
            await started.wait()
        await transport.close()
        # After close, a new message is not consumed.
        await broker.publish(f"{unique}.outbound", make_message("late").to_json())

    assert finished == [msg.message_id]
    [late] = await receive(broker, f"{unique}.outbound", 1)
    assert Message.from_json(late.body).content == "late"


async def test_failed_publish_inside_handler_dead_letters_instead_of_acking(
    broker: Broker, unique: str
):
    async def forward(msg: Message) -> None:
        await broker.publish(f"{unique}.nowhere", msg.to_json())

    msg = make_message()
    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique)
        await transport.setup(nursery, outbound_handler=forward)
        await broker.publish(f"{unique}.outbound", msg.to_json())
        [dead] = await receive(broker, broker.dead_letter_queue, 1)
        await transport.close()
    assert dead.body == msg.to_json()
    assert "PublishError" in dead.headers[HEADER_DL_ERROR]


async def test_handler_raising_retry_later_is_redelivered_with_its_attempt_number(
    broker: Broker, unique: str
):
    attempts: list[int] = []
    done = trio.Event()

    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique)

        async def flaky(msg: Message, attempt: int) -> None:
            attempts.append(attempt)
            if attempt < 2:
                raise RetryLater(0.05, "not yet")
            done.set()

        await transport.setup(nursery, outbound_handler=flaky)
        await transport.publish_inbound(make_message())  # declared, unused here
        await broker.publish(f"{unique}.outbound", make_message().to_json())
        with trio.fail_after(10):
            await done.wait()
        await transport.close()
    assert attempts == [0, 1, 2]


async def test_handler_meeting_an_unavailable_store_is_retried_not_dead_lettered(
    broker: Broker, unique: str
):
    # The store is down for the first three tries: not the message's fault, so it comes
    # back (with the same attempt number, none used up) until the store is back.
    attempts: list[int] = []
    done = trio.Event()

    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique)

        async def needs_the_store(msg: Message, attempt: int) -> None:
            attempts.append(attempt)
            if len(attempts) <= 3:
                raise StoreUnavailable("message store at db unavailable: connection refused")
            done.set()

        await transport.setup(nursery, outbound_handler=needs_the_store)
        await broker.publish(f"{unique}.outbound", make_message().to_json())
        with trio.fail_after(10):
            await done.wait()
        await transport.close()
    assert attempts == [0, 0, 0, 0]
    assert await nothing_arrives(broker, broker.dead_letter_queue, within=0.2)


async def test_event_handler_raising_retry_later_gets_the_event_back_on_the_event_queue(
    broker: Broker, unique: str
):
    got: list[tuple[str, int]] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        app = ReceiveInboundConnector(broker, unique)

        async def on_event(event: Event, attempt: int) -> None:
            got.append((event.event_id, attempt))
            if attempt == 0:
                raise RetryLater(0.05)
            done.set()

        await app.setup(nursery, inbound_handler=lambda m: None, event_handler=on_event)
        event = Event.ack(make_message(), sent_message_id="s1")
        await broker.publish(f"{unique}.event", event.to_json())
        with trio.fail_after(10):
            await done.wait()
        await app.close()
    assert got == [(event.event_id, 0), (event.event_id, 1)]


async def test_a_retry_sends_back_the_raw_body_and_acks_the_original(broker: Broker, unique: str):
    seen: list[tuple[int, bytes]] = []
    done = trio.Event()
    # Not what Message.to_json writes: proves the raw body goes back, not a re-encoding.
    raw = json.dumps(json.loads(make_message("raw").to_json()), indent=1).encode()
    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique)
        original_retry = broker.retry_later

        async def recording_retry(queue: str, body: bytes, **kwargs: object) -> None:
            seen.append((kwargs["headers"]["x-vumi-attempt"], body))  # type: ignore[index]
            await original_retry(queue, body, **kwargs)  # type: ignore[arg-type]

        broker.retry_later = recording_retry  # type: ignore[method-assign]

        async def flaky(msg: Message, attempt: int) -> None:
            if attempt < 2:
                raise RetryLater(0.01)
            done.set()

        await transport.setup(nursery, outbound_handler=flaky)
        await broker.publish(f"{unique}.outbound", raw)
        with trio.fail_after(10):
            await done.wait()
        await transport.close()
    assert seen == [(1, raw), (2, raw)]
    # Every delivery was acked: nothing is left to redeliver.
    assert await nothing_arrives(broker, f"{unique}.outbound", within=0.3)


async def test_refused_publish_raises_publish_failed(broker: Broker, unique: str):
    async with trio.open_nursery() as nursery:
        app = ReceiveInboundConnector(broker, unique)
        await app.setup(nursery, inbound_handler=lambda m: None, event_handler=lambda e: None)
        await broker.delete_queue(f"{unique}.outbound")
        try:
            await app.publish_outbound(make_message())
        except PublishFailed as exc:
            assert f"{unique}.outbound" in str(exc)
        else:
            raise AssertionError("a publish to a deleted queue was not refused")
        finally:
            await broker.declare_queue(f"{unique}.outbound")
            await app.close()


async def test_concurrency_bounds_handlers_in_flight(broker: Broker, unique: str):
    in_flight = 0
    peak = 0
    handled = 0
    all_done = trio.Event()

    async def handler(msg: Message) -> None:
        nonlocal in_flight, peak, handled
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(0.02)
        in_flight -= 1
        handled += 1
        if handled == 30:
            all_done.set()

    async with trio.open_nursery() as nursery:
        transport = ReceiveOutboundConnector(broker, unique, concurrency=4)
        await transport.setup(nursery, outbound_handler=handler)
        for _ in range(30):
            await broker.publish(f"{unique}.outbound", make_message().to_json())
        with trio.fail_after(20):
            await all_done.wait()
        await transport.close()
    assert 1 < peak <= 4


async def test_publish_without_a_running_broker_fails_clearly(unique: str):
    from vumi_like.broker import open_broker

    try:
        async with open_broker("amqp://guest:hunter2@127.0.0.1:1/", connect_timeout=2):
            raise AssertionError("connected to a closed port")
    except BrokerError as exc:
        assert "127.0.0.1:1" in str(exc)
        assert "hunter2" not in str(exc)


class _Job(BaseModel):
    job_id: str
    url: str

    def log_ids(self) -> dict[str, str]:
        return {"job_id": self.job_id}


async def test_job_connector_hands_typed_jobs_to_its_handler_with_the_attempt(
    broker: Broker, unique: str
):
    queue = f"{unique}.jobs"
    seen: list[tuple[_Job, int]] = []
    done = trio.Event()

    async def handle(job: _Job, attempt: int) -> None:
        seen.append((job, attempt))
        if attempt == 0:
            raise RetryLater(0.05, "receiver busy")
        done.set()

    async with trio.open_nursery() as nursery:
        jobs = JobConnector(broker, queue, _Job)
        await jobs.setup(nursery, handler=handle)
        await jobs.publish(_Job(job_id="j1", url="http://x/"))
        with trio.fail_after(10):
            await done.wait()
        await jobs.close()
    assert seen == [
        (_Job(job_id="j1", url="http://x/"), 0),
        (_Job(job_id="j1", url="http://x/"), 1),
    ]
    assert await nothing_arrives(broker, queue, within=0.2)


async def test_job_that_does_not_validate_goes_to_dead_letter_with_the_reason(
    broker: Broker, unique: str
):
    queue = f"{unique}.jobs"
    handled: list[_Job] = []
    async with trio.open_nursery() as nursery:
        jobs = JobConnector(broker, queue, _Job, worker_name="dispatcher")
        await jobs.setup(nursery, handler=handled.append)
        await broker.publish(queue, b'{"job_id": "j2"}')
        [dead] = await receive(broker, broker.dead_letter_queue, 1)
        await jobs.close()
    assert handled == []
    assert dead.body == b'{"job_id": "j2"}'
    assert dead.headers[HEADER_DL_QUEUE] == queue
    assert "invalid job" in dead.headers[HEADER_DL_ERROR]
    assert "url: is required" in dead.headers[HEADER_DL_ERROR]


async def test_publish_only_job_connector_declares_its_queue_and_consumes_nothing(
    broker: Broker, unique: str
):
    queue = f"{unique}.jobs"
    async with trio.open_nursery() as nursery:
        jobs = JobConnector(broker, queue, _Job)
        await jobs.setup(nursery)
        await jobs.publish(_Job(job_id="j3", url="http://x/"))
        with pytest.raises(TypeError):
            await jobs.publish(make_message())  # type: ignore[arg-type]
        await jobs.close()
    [delivery] = await receive(broker, queue, 1)
    assert _Job.model_validate_json(delivery.body).job_id == "j3"
