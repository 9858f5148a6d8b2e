"""``SimulatorTransport`` on the memory broker and on RabbitMQ, its HTTP API over localhost."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from tests.broker.test_contract import nothing_arrives, receive
from tests.test_worker import free_port, running_worker
from vumi_like.broker import Broker
from vumi_like.errors import PROBLEM_CONTENT_TYPE
from vumi_like.messages import DeliveryStatus, Event, EventType, Message, SessionEvent
from vumi_like.transports.simulator import SimulatorTransport, SimulatorTransportConfig

DELIVERY_DELAY = 0.05


def simulator_config(unique: str, **fields: Any) -> SimulatorTransportConfig:
    return SimulatorTransportConfig(transport_name=unique, **fields)


def outbound(unique: str) -> Message:
    return Message(
        to_addr="+27820000001",
        from_addr="1234",
        transport_name=unique,
        transport_type="sms",
        content="hello",
    )


async def send_and_collect_events(broker: Broker, unique: str, message: Message) -> list[Event]:
    """Publish ``message`` to the simulator; return the events it gets, in order."""
    sent_at = trio.current_time()
    await broker.publish(f"{unique}.outbound", message.to_json())
    deliveries = await receive(broker, f"{unique}.event", 2)
    # The report cannot have been published before the delay had passed since the send.
    assert trio.current_time() - sent_at >= DELIVERY_DELAY
    assert await nothing_arrives(broker, f"{unique}.event", within=0.1)
    return [Event.from_json(delivery.body) for delivery in deliveries]


async def test_outbound_is_acked_then_reported_delivered_after_the_delay(
    broker: Broker, unique: str
):
    message = outbound(unique)
    config = simulator_config(unique, delivery_delay=DELIVERY_DELAY)
    with trio.fail_after(5):
        async with running_worker(SimulatorTransport, config, broker):
            ack, report = await send_and_collect_events(broker, unique, message)
    assert ack.event_type == EventType.ACK
    assert ack.user_message_id == message.message_id
    assert ack.sent_message_id == message.message_id
    assert report.event_type == EventType.DELIVERY_REPORT
    assert report.user_message_id == message.message_id
    assert report.delivery_status == DeliveryStatus.DELIVERED


async def test_with_failure_rate_one_the_delivery_report_is_failed(broker: Broker, unique: str):
    message = outbound(unique)
    config = simulator_config(unique, delivery_delay=DELIVERY_DELAY, failure_rate=1.0)
    with trio.fail_after(5):
        async with running_worker(SimulatorTransport, config, broker):
            ack, report = await send_and_collect_events(broker, unique, message)
    assert ack.event_type == EventType.ACK
    assert report.event_type == EventType.DELIVERY_REPORT
    assert report.user_message_id == message.message_id
    assert report.delivery_status == DeliveryStatus.FAILED


async def test_stopping_forgets_pending_delivery_reports_and_returns_promptly(
    broker: Broker, unique: str
):
    message = outbound(unique)
    config = simulator_config(unique, delivery_delay=30, shutdown_timeout=0.5)
    with trio.fail_after(5):
        async with running_worker(SimulatorTransport, config, broker):
            await broker.publish(f"{unique}.outbound", message.to_json())
            [ack] = await receive(broker, f"{unique}.event", 1)
            stopping_at = trio.current_time()
        assert trio.current_time() - stopping_at < 1.5
        assert await nothing_arrives(broker, f"{unique}.event", within=0.1)
    assert Event.from_json(ack.body).event_type == EventType.ACK


async def test_post_inbound_publishes_an_inbound_message(broker: Broker, unique: str):
    port = free_port()
    config = simulator_config(unique, http_bind=f"127.0.0.1:{port}", transport_type="ussd")
    body = {
        "from_addr": "+27820000001",
        "to_addr": "*120*1234#",
        "content": "ping",
        "session_event": "new",
        "in_reply_to": "earlier-message",
    }
    with trio.fail_after(5):
        async with (
            running_worker(SimulatorTransport, config, broker),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            response = await client.post("/inbound", json=body)
            [delivery] = await receive(broker, f"{unique}.inbound", 1)
    assert response.status_code == 200
    message = Message.from_json(delivery.body)
    assert response.json() == {"message_id": message.message_id}
    assert message.from_addr == "+27820000001"
    assert message.to_addr == "*120*1234#"
    assert message.content == "ping"
    assert message.session_event == SessionEvent.NEW
    assert message.in_reply_to == "earlier-message"
    assert message.transport_name == unique
    assert message.transport_type == "ussd"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param(b'{"from_addr": "+27820000001", "to_addr": ', "JSON", id="invalid-json"),
        pytest.param(json.dumps({"to_addr": "1234"}).encode(), "from_addr", id="no-from_addr"),
        pytest.param(
            json.dumps({"from_addr": "+27820000001", "to_addr": "1234", "colour": "red"}).encode(),
            "colour",
            id="unknown-key",
        ),
    ],
)
async def test_post_inbound_with_a_bad_body_is_a_400_problem_naming_the_field(
    broker: Broker, unique: str, body: bytes, named: str
):
    port = free_port()
    config = simulator_config(unique, http_bind=f"127.0.0.1:{port}")
    with trio.fail_after(5):
        async with (
            running_worker(SimulatorTransport, config, broker),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            response = await client.post(
                "/inbound", content=body, headers={"content-type": "application/json"}
            )
            assert await nothing_arrives(broker, f"{unique}.inbound", within=0.1)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    problem = response.json()
    assert problem["status"] == 400
    assert problem["code"] == "invalid_body"
    assert named in problem["detail"]
