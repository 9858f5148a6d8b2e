"""``SmppTransport`` end to end: the broker on one side, the fake SMSC speaking real PDUs
on a socket on the other."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import trio

from tests.broker.test_contract import nothing_arrives, receive
from tests.conftest import require_service
from tests.dispatch.conftest import poll
from tests.test_worker import running_worker
from tests.transports.helpers import events
from tests.transports.smpp.smsc import FakeSmsc, SubmitAction, receipt
from vumi_like.broker import BrokerInspector
from vumi_like.class_paths import resolve_class
from vumi_like.config import config_from_data
from vumi_like.messages import DeliveryStatus, EventType, Message
from vumi_like.transports.smpp import DeliverSm, SmppTransport, SmppTransportConfig
from vumi_like.transports.smpp.framing import encode_pdu
from vumi_like.worker import BaseWorker

REDIS_URL = os.environ.get("VUMI_LIKE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ESME_RINVDSTADR = 0x0B


def vumi2_config(smsc: FakeSmsc, unique: str, **extra: Any) -> dict[str, Any]:
    """A config as vumi2's docs write one, plus the quick retries a test wants."""
    return {
        "transport_name": unique,
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": smsc.system_id,
        "password": smsc.password,
        "smpp_enquire_link_interval": 30,
        "submit_sm_processor_config": {
            "data_coding": 0,
            "multipart_handling": "multipart_udh",
            "source_addr_ton": 5,
            "dest_addr_ton": 1,
            "registered_delivery": {"delivery_receipt": 1},
        },
        "retry_delay_base": 0.05,
        "retry_jitter": 0,
        "rebind_delay_base": 0.05,
        "rebind_delay_max": 0.2,
        "unmatched_report_retries": 3,
        **extra,
    }


def config(smsc: FakeSmsc, unique: str, **extra: Any) -> SmppTransportConfig:
    return config_from_data(
        SmppTransportConfig, vumi2_config(smsc, unique, **extra), source="test"
    )


def outbound(unique: str, content: str = "hello", to_addr: str = "27820000001") -> Message:
    return Message(
        to_addr=to_addr,
        from_addr="1234",
        transport_name=unique,
        transport_type="sms",
        content=content,
    )


async def send(broker: BrokerInspector, unique: str, message: Message) -> None:
    await broker.publish(f"{unique}.outbound", message.to_json())


async def test_a_vumi2_config_and_class_path_run_unchanged(
    broker: BrokerInspector, unique: str, smsc: FakeSmsc
):
    transport_class = resolve_class(
        "vumi2.transports.SmppTransceiverTransport", BaseWorker, what="worker"
    )
    assert transport_class is SmppTransport
    message = outbound(unique)
    with trio.fail_after(10):
        async with running_worker(transport_class, config(smsc, unique), broker):
            await send(broker, unique, message)
            (ack,) = await events(broker, unique, 1)
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id == smsc.message_ids[0]
    (submitted,) = smsc.submitted
    assert (submitted.source_addr, submitted.destination_addr) == ("1234", "27820000001")
    assert (submitted.source_addr_ton, submitted.dest_addr_ton) == (5, 1)
    assert submitted.registered_delivery == 1
    assert submitted.data_coding == 0
    assert submitted.short_message == b"hello"
    assert smsc.binds == ["transceiver"]


async def test_receipts_match_their_message_whatever_the_base_of_the_id(
    broker: BrokerInspector, unique: str, nursery: trio.Nursery
):
    # The SMSC answers ids in hex, with leading zeros, and receipts them in decimal.
    smsc = FakeSmsc(id_format="hex", id_width=10)
    await nursery.start(smsc.serve)
    messages = [outbound(unique), outbound(unique, to_addr="27820000002")]
    with trio.fail_after(10):
        async with running_worker(SmppTransport, config(smsc, unique), broker):
            for message in messages:
                await send(broker, unique, message)
            acks = await events(broker, unique, 2)
            by_id = {a.user_message_id: a.sent_message_id for a in acks}
            first_id = by_id[messages[0].message_id]
            second_id = by_id[messages[1].message_id]
            assert first_id is not None and second_id is not None
            await smsc.deliver(receipt(str(int(first_id, 16)), "DELIVRD", tlvs=False))
            await smsc.deliver(receipt(second_id.lstrip("0").upper(), "UNDELIV", err="011"))
            reports = await events(broker, unique, 2)
    statuses = {r.user_message_id: r.delivery_status for r in reports}
    assert statuses == {
        messages[0].message_id: DeliveryStatus.DELIVERED,
        messages[1].message_id: DeliveryStatus.FAILED,
    }
    failed = next(r for r in reports if r.delivery_status == DeliveryStatus.FAILED)
    assert failed.transport_metadata == {"smpp": {"stat": "UNDELIV", "err": "011"}}


async def test_a_receipt_before_the_submit_response_is_still_matched(
    broker: BrokerInspector, unique: str, smsc: FakeSmsc
):
    smsc.submit_actions.append(SubmitAction.RECEIPT_FIRST)
    message = outbound(unique)
    with trio.fail_after(10):
        async with running_worker(SmppTransport, config(smsc, unique), broker):
            await send(broker, unique, message)
            got = await events(broker, unique, 2)
    assert {e.event_type for e in got} == {EventType.ACK, EventType.DELIVERY_REPORT}
    assert all(e.user_message_id == message.message_id for e in got)


async def test_texts_gsm_cannot_encode_go_as_ucs2_and_long_ones_are_split(
    broker: BrokerInspector, unique: str, smsc: FakeSmsc
):
    russian = outbound(unique, "Привет, мир")
    long_text = outbound(unique, "x" * 200)
    with trio.fail_after(10):
        async with running_worker(SmppTransport, config(smsc, unique), broker):
            await send(broker, unique, russian)
            await events(broker, unique, 1)
            await send(broker, unique, long_text)
            (ack,) = await events(broker, unique, 1)
    ucs2, first, second = smsc.submitted
    assert ucs2.data_coding == 8
    assert ucs2.short_message == "Привет, мир".encode("utf-16-be")
    # Two parts with a concatenation header (esm_class UDHI), 153 + 47 characters.
    assert first.esm_class & 0x40 and second.esm_class & 0x40
    assert first.short_message[6:] + second.short_message[6:] == b"x" * 200
    assert ack.transport_metadata == {"provider_ids": smsc.message_ids[1:]}


async def test_throttling_is_retried_and_a_refusal_is_a_nack(
    broker: BrokerInspector, unique: str, smsc: FakeSmsc
):
    smsc.submit_actions.extend([SubmitAction.THROTTLE, ESME_RINVDSTADR])
    throttled, refused = outbound(unique), outbound(unique, to_addr="bad")
    with trio.fail_after(10):
        async with running_worker(SmppTransport, config(smsc, unique), broker):
            await send(broker, unique, throttled)
            (pending,) = await events(broker, unique, 1)
            await send(broker, unique, refused)
            got = await events(broker, unique, 2)
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert "THROTTLED" in pending.transport_metadata["retry"]["reason"]
    by_message = {e.user_message_id: e for e in got}
    assert by_message[throttled.message_id].event_type == EventType.ACK
    nack = by_message[refused.message_id]
    assert nack.event_type == EventType.NACK
    assert nack.nack_reason is not None and "INVDSTADR" in nack.nack_reason


async def test_mo_messages_become_inbound_long_ones_joined(
    broker: BrokerInspector, unique: str, smsc: FakeSmsc
):
    udh = bytes([5, 0, 3, 0x42, 2])
    parts = [
        DeliverSm("27820000001", "1234", udh + b"\x01" + "Hello ".encode("utf-16-be"), 8, 0x40),
        DeliverSm("27820000001", "1234", udh + b"\x02" + "there 👋".encode("utf-16-be"), 8, 0x40),
    ]
    with trio.fail_after(10):
        async with running_worker(SmppTransport, config(smsc, unique), broker):
            await smsc.wait_until(lambda: bool(smsc.bound))
            await smsc.deliver(DeliverSm("27820000001", "1234", b"STOP"))
            for part in reversed(parts):
                await smsc.deliver(part)
            deliveries = await receive(broker, f"{unique}.inbound", 2)
            assert await nothing_arrives(broker, f"{unique}.inbound", within=0.2)
    stop, joined = (Message.from_json(d.body) for d in deliveries)
    assert (stop.from_addr, stop.to_addr, stop.content) == ("27820000001", "1234", "STOP")
    assert stop.transport_type == "sms"
    assert joined.content == "Hello there 👋"


async def test_parts_received_by_two_replicas_are_joined_once_through_redis(
    broker: BrokerInspector, unique: str, smsc: FakeSmsc
):
    require_service(REDIS_URL, 6379, "Redis")
    cache = {
        "message_cache_class": "redis",
        "message_cache_config": {"redis_url": REDIS_URL, "key_prefix": f"{uuid.uuid4().hex}:"},
    }
    udh = bytes([5, 0, 3, 0x17, 2])
    parts = [
        DeliverSm("27820000001", "1234", udh + b"\x01" + b"part one, ", 0, 0x40),
        DeliverSm("27820000001", "1234", udh + b"\x02" + b"part two", 0, 0x40),
    ]
    with trio.fail_after(10):
        async with (
            running_worker(SmppTransport, config(smsc, unique, **cache), broker, name="a"),
            running_worker(SmppTransport, config(smsc, unique, **cache), broker, name="b"),
        ):
            await smsc.wait_until(lambda: len(smsc.bound) == 2)
            for connection, part in zip(smsc.bound, parts, strict=True):
                await connection.send(encode_pdu(part.to_pdu(1000 + part.short_message[5])))
            (delivery,) = await receive(broker, f"{unique}.inbound", 1)
            assert await nothing_arrives(broker, f"{unique}.inbound", within=0.2)
    assert Message.from_json(delivery.body).content == "part one, part two"


async def test_while_unbound_outbound_waits_and_health_says_why(
    broker: BrokerInspector, unique: str, smsc: FakeSmsc
):
    smsc.bind_status = 0x0D  # ESME_RBINDFAIL
    with trio.fail_after(10):
        async with running_worker(SmppTransport, config(smsc, unique), broker) as transport:
            await smsc.wait_until(lambda: len(smsc.bind_times) >= 2)
            body, status = transport.health()
            assert status == 500
            assert body["components"]["provider"]["state"] == "down"
            await send(broker, unique, outbound(unique))
            assert await nothing_arrives(broker, f"{unique}.event", within=0.3)
            assert smsc.submitted == []

            smsc.bind_status = None
            (ack,) = await events(broker, unique, 1)
            assert transport.health()[1] == 200
    assert ack.event_type == EventType.ACK


async def test_max_tps_counts_pdus_not_messages(
    broker: BrokerInspector, unique: str, smsc: FakeSmsc
):
    with trio.fail_after(10):
        async with running_worker(SmppTransport, config(smsc, unique, max_tps=20), broker):
            await smsc.wait_until(lambda: bool(smsc.bound))
            started = trio.current_time()
            await send(broker, unique, outbound(unique, "y" * 400))  # three parts
            await send(broker, unique, outbound(unique))
            await events(broker, unique, 2)
            took = trio.current_time() - started
    assert len(smsc.submitted) == 4
    assert took >= 3 / 20 - 0.01  # four PDUs at 20/s: three intervals at least


async def test_the_window_bounds_submits_awaiting_their_response(
    broker: BrokerInspector, unique: str, nursery: trio.Nursery
):
    smsc = FakeSmsc(response_delay=0.05)
    await nursery.start(smsc.serve)
    cfg = config(smsc, unique, window=3, worker_concurrency=20)
    with trio.fail_after(10):
        async with running_worker(SmppTransport, cfg, broker):
            for n in range(12):
                await send(broker, unique, outbound(unique, f"message {n}"))
            await events(broker, unique, 12)
    assert smsc.max_outstanding == 3


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("submit_sm_processor_config", {"data_coding": 1}, "data_coding"),
        ("sequencer_class", "my.Sequencer", "sequencer_class"),
        ("dr_processor_config", {"regex": "(?P<id>\\w+)"}, "named groups"),
        ("password", "much-too-long", "password"),
    ],
)
def test_config_the_transport_cannot_honour_is_refused_naming_the_key(
    key: str, value: Any, error: str
):
    data = {"transport_name": "smpp", key: value}
    with pytest.raises(Exception, match=error):
        config_from_data(SmppTransportConfig, data, source="test")


async def test_a_custom_receipt_regex_and_status_mapping_apply(
    broker: BrokerInspector, unique: str, smsc: FakeSmsc
):
    dr = {"regex": r"ref=(?P<id>\w+) state=(?P<stat>\w+)", "status_mapping": {"OK": "delivered"}}
    message = outbound(unique)
    with trio.fail_after(10):
        async with running_worker(
            SmppTransport, config(smsc, unique, dr_processor_config=dr), broker
        ):
            await send(broker, unique, message)
            (ack,) = await events(broker, unique, 1)
            text = f"ref={ack.sent_message_id} state=OK".encode()
            await smsc.deliver(DeliverSm("27820000001", "1234", text, esm_class=0x04))
            (report,) = await events(broker, unique, 1)

            async def nothing_inbound() -> bool:
                return await nothing_arrives(broker, f"{unique}.inbound", within=0.05)

            await poll(nothing_inbound)
    assert report.delivery_status == DeliveryStatus.DELIVERED
    assert report.user_message_id == message.message_id
