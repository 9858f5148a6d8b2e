"""``BaseTransport``'s shared behaviour, through a scripted provider, on both brokers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
import trio

from tests.broker.test_contract import nothing_arrives, receive
from tests.test_worker import running_worker
from tests.transports.helpers import events
from vumi_like.broker import BrokerInspector
from vumi_like.caches import CacheError, CacheUnavailable
from vumi_like.messages import DeliveryStatus, EventType, Message
from vumi_like.transports.base import BaseTransport, TransportConfig, normalise_provider_id
from vumi_like.transports.outcomes import (
    PermanentFailure,
    ProviderUnavailable,
    TemporaryFailure,
)


class ScriptedTransport(BaseTransport):
    """Each outbound's ``content`` names what the provider does: ``ok:ID[,ID]``,
    ``refuse``, ``later`` (temporary, once), ``down`` (unavailable, once)."""

    async def setup_provider(self) -> None:
        self.sent: list[str] = []
        self.failed_once: set[str] = set()
        self.send_times: list[float] = []

    async def send(self, message: Message) -> Sequence[str]:
        self.send_times.append(trio.current_time())
        content = message.content or ""
        if content.startswith("ok:"):
            self.sent.append(message.message_id)
            return content[3:].split(",")
        if content == "refuse":
            raise PermanentFailure("invalid destination address")
        if content in ("later", "always-later") and (
            content == "always-later" or message.message_id not in self.failed_once
        ):
            self.failed_once.add(message.message_id)
            raise TemporaryFailure("HTTP 503: busy", retry_after=0.05)
        if content == "down" and message.message_id not in self.failed_once:
            self.failed_once.add(message.message_id)
            raise ProviderUnavailable("connection refused")
        return [f"id-{message.message_id}"]


def config(unique: str, **fields: Any) -> TransportConfig:
    defaults: dict[str, Any] = {"retry_delay_base": 0.05, "retry_jitter": 0}
    return TransportConfig(transport_name=unique, **{**defaults, **fields})


def outbound(unique: str, content: str) -> Message:
    return Message(
        to_addr="+27820000001",
        from_addr="1234",
        transport_name=unique,
        transport_type="sms",
        content=content,
    )


async def test_provider_ids_ack_and_are_matched_by_delivery_reports(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique, "ok:0001A2B,0001A2C")
    async with running_worker(ScriptedTransport, config(unique), broker) as transport:
        await broker.publish(f"{unique}.outbound", message.to_json())
        (ack,) = await events(broker, unique, 1)
        assert ack.event_type == EventType.ACK
        assert ack.sent_message_id == "0001A2B"
        assert ack.transport_metadata == {"provider_ids": ["0001A2B", "0001A2C"]}

        # Reported in another case and without the leading zeros: still matched.
        assert await transport.delivery_report(
            "1a2c", DeliveryStatus.DELIVERED, {"stat": "DELIVRD"}
        )
        (report,) = await events(broker, unique, 1)
    assert report.event_type == EventType.DELIVERY_REPORT
    assert report.user_message_id == message.message_id
    assert report.delivery_status == DeliveryStatus.DELIVERED
    assert report.transport_metadata == {"stat": "DELIVRD"}


async def test_permanent_failure_is_a_nack_with_the_providers_reason(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique, "refuse")
    async with running_worker(ScriptedTransport, config(unique), broker):
        await broker.publish(f"{unique}.outbound", message.to_json())
        (nack,) = await events(broker, unique, 1)
    assert nack.event_type == EventType.NACK
    assert nack.user_message_id == message.message_id
    assert nack.nack_reason == "invalid destination address"


async def test_temporary_failure_reports_pending_then_the_retry_is_acked(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique, "later")
    async with running_worker(ScriptedTransport, config(unique), broker):
        await broker.publish(f"{unique}.outbound", message.to_json())
        pending, ack = await events(broker, unique, 2)
    assert pending.event_type == EventType.DELIVERY_REPORT
    assert pending.delivery_status == DeliveryStatus.PENDING
    assert pending.transport_metadata == {"retry": {"attempt": 1, "reason": "HTTP 503: busy"}}
    assert ack.event_type == EventType.ACK
    assert ack.sent_message_id == f"id-{message.message_id}"


async def test_temporary_failures_end_in_a_nack_after_the_last_retry(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique, "always-later")
    async with running_worker(ScriptedTransport, config(unique, max_retries=2), broker):
        await broker.publish(f"{unique}.outbound", message.to_json())
        got = await events(broker, unique, 3)
        assert await nothing_arrives(broker, f"{unique}.event", within=0.3)
    assert [e.delivery_status for e in got[:2]] == [DeliveryStatus.PENDING] * 2
    assert got[2].event_type == EventType.NACK
    assert got[2].nack_reason == "HTTP 503: busy (gave up after 3 attempts)"


async def test_provider_down_pauses_outbound_until_it_is_up(broker: BrokerInspector, unique: str):
    async with running_worker(ScriptedTransport, config(unique), broker) as transport:
        await broker.publish(f"{unique}.outbound", outbound(unique, "down").to_json())
        (pending,) = await events(broker, unique, 1)
        assert pending.delivery_status == DeliveryStatus.PENDING
        body, status = transport.health()
        assert status == 500
        assert body["components"]["provider"] == {
            "ok": False,
            "state": "down",
            "reason": "connection refused",
        }
        # While down, nothing is taken: neither the retry nor a new message.
        await broker.publish(f"{unique}.outbound", outbound(unique, "ok:42").to_json())
        assert await nothing_arrives(broker, f"{unique}.event", within=0.3)
        assert transport.sent == []

        transport.provider_up()
        got = await events(broker, unique, 2)
        assert sorted(e.event_type for e in got) == [EventType.ACK, EventType.ACK]
        assert transport.health()[1] == 200


async def test_a_report_before_its_provider_id_is_known_is_matched_later(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique, "ok:77")
    async with running_worker(ScriptedTransport, config(unique), broker) as transport:
        assert not await transport.delivery_report("77", DeliveryStatus.DELIVERED)
        await broker.publish(f"{unique}.outbound", message.to_json())
        ack, report = await events(broker, unique, 2)
    assert ack.event_type == EventType.ACK
    assert report.event_type == EventType.DELIVERY_REPORT
    assert report.user_message_id == message.message_id


async def test_a_report_never_matched_is_dead_lettered_with_the_reason(
    broker: BrokerInspector, unique: str
):
    cfg = config(unique, unmatched_report_retries=0)
    async with running_worker(ScriptedTransport, cfg, broker) as transport:
        assert not await transport.delivery_report("0099", DeliveryStatus.FAILED)
        (dead,) = await receive(broker, f"{unique}.dead_letter", 1)
    assert b'"provider_ids":["99"]' in dead.body
    assert "no message sent as provider id '99' after 1 attempts" in str(dead.headers)


class FlakyCache:
    """Wraps a transport's cache: its next stores raise the ``failures`` given."""

    def __init__(self, transport: BaseTransport, *failures: CacheError) -> None:
        self.store = transport.cache.store_provider_ids
        self.failures = list(failures)
        self.tries = 0
        transport.cache.store_provider_ids = self  # type: ignore[method-assign]

    async def __call__(self, *args: Any) -> None:
        self.tries += 1
        if self.failures:
            raise self.failures.pop(0)
        await self.store(*args)


async def test_a_cache_that_cannot_be_reached_is_waited_for_before_the_ack(
    broker: BrokerInspector, unique: str
):
    """A sent message's provider id is stored once the cache answers again, so its
    report still finds it; the ack waits until then."""
    message = outbound(unique, "ok:0042")
    async with running_worker(ScriptedTransport, config(unique), broker) as transport:
        down = CacheUnavailable("redis://127.0.0.1:1: connection refused")
        cache = FlakyCache(transport, down, down)
        with structlog.testing.capture_logs() as logs:
            await broker.publish(f"{unique}.outbound", message.to_json())
            (ack,) = await events(broker, unique, 1)
        assert await transport.delivery_report("42", DeliveryStatus.DELIVERED)
        (report,) = await events(broker, unique, 1)
    assert ack.event_type == EventType.ACK
    assert cache.tries == 3
    waits = [e for e in logs if e["event"] == "provider id not stored yet: waiting for the cache"]
    assert [e["retry_in"] for e in waits] == [0.25, 0.5]
    assert all("connection refused" in e["error"] for e in waits)
    assert report.user_message_id == message.message_id


async def test_a_cache_that_refuses_a_store_is_not_tried_again(
    broker: BrokerInspector, unique: str
):
    message = outbound(unique, "ok:0043")
    async with running_worker(ScriptedTransport, config(unique), broker) as transport:
        cache = FlakyCache(transport, CacheError("WRONGTYPE"))
        await broker.publish(f"{unique}.outbound", message.to_json())
        (ack,) = await events(broker, unique, 1)
        assert not await transport.delivery_report("43", DeliveryStatus.DELIVERED)
    assert ack.event_type == EventType.ACK
    assert cache.tries == 1


async def test_sends_keep_to_max_tps(broker: BrokerInspector, unique: str):
    cfg = config(unique, max_tps=50, worker_concurrency=10)
    async with running_worker(ScriptedTransport, cfg, broker) as transport:
        for n in range(10):
            await broker.publish(f"{unique}.outbound", outbound(unique, f"ok:{n}").to_json())
        await events(broker, unique, 10)
    times = transport.send_times
    # Ten sends at 50/s: the last goes at least nine intervals after the first.
    assert times[-1] - times[0] >= 9 / 50 - 0.005


def test_provider_ids_are_normalised():
    assert normalise_provider_id(" 0001A2B ") == "1a2b"
    assert normalise_provider_id("000") == "0"
    assert normalise_provider_id("abc-123") == "abc-123"
