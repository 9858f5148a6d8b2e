"""Slow and failing webhook receivers and providers: retries follow the backoff
schedule, and the others are not held up.

``tests/dispatch/test_webhook_delivery.py`` covers one failing receiver's retries,
``Retry-After``, giving up, and a timing-out receiver beside a healthy one, on a
dispatcher in the test's process. Here the same promises are checked end to end, every
worker its own process, three receivers at once (a healthy one, one taking 10 s per
answer, one answering 500), and on the provider side a transport whose provider hangs,
fails or rate-limits some messages. ``bench/receivers.py`` measures how much a slow or
failing receiver delays a healthy one.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from typing import Any

import httpx
import pytest
import trio

from tests.faults.harness import (
    POSTGRES_URL,
    Attempt,
    Tally,
    WebhookReceiver,
    api_pipeline,
    api_queues,
    consume_events,
    drop_schema,
    fleet_in_tmp,
    free_port,
    letter_error,
    own_broker,
    post_all,
    subscribe,
    take_dead_letters,
    wait_for_letters,
)
from tests.transports.http_sms.fakes import Answer, Recorded, fake_provider, kannel_accepts
from vumi_like.broker.base import delay_bucket_ms
from vumi_like.messages import DeliveryStatus, Event, EventType, Message

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(240)]

MESSAGES = int(os.environ.get("FAULTS_RECEIVER_MESSAGES", "40"))
SLOW = 10.0  # seconds the slow receiver takes to answer
RETRIES = {"max_retries": 2, "retry_delay_base": 1, "retry_delay_exponent": 2, "retry_jitter": 0.2}
# Seconds a retry may come after its backoff, on a loaded machine. Webhooks have no
# such bound: the dispatcher's per-receiver limits put off (without counting an
# attempt) the jobs for a receiver that is busy or resting after a failure, and with
# 40 jobs for one failing receiver, 4 at a time, some wait their turn for half a
# minute. That they all end, tried as often as allowed, is checked instead.
PROVIDER_SLACK = 5.0


def check_schedule(
    times: list[float], slack: float | None = None, extra: float = 0.0
) -> list[str]:
    """What is wrong with one job's attempt ``times`` under ``RETRIES``: each retry comes
    no sooner than its backoff allows (jitter and the broker's delay rounding
    included), nor more than ``slack`` later (if given). ``extra``: seconds each try
    itself takes before it fails (a request's timeout)."""
    base, exponent, jitter = (
        RETRIES["retry_delay_base"],
        RETRIES["retry_delay_exponent"],
        RETRIES["retry_jitter"],
    )
    problems = []
    if len(times) != RETRIES["max_retries"] + 1:
        problems.append(f"{len(times)} attempts, not {RETRIES['max_retries'] + 1}")
    for attempt, (before, after) in enumerate(itertools.pairwise(times)):
        delay = base * exponent**attempt
        low = delay_bucket_ms(delay * (1 - jitter)) / 1000 * 0.95 + extra
        high = math.inf if slack is None else delay * (1 + jitter) + extra + slack
        if not low <= after - before <= high:
            problems.append(
                f"retry {attempt + 1} after {after - before:.2f} s, not in [{low:.2f}, {high:.2f}]"
            )
    return problems


async def test_slow_and_failing_receivers_do_not_hold_up_a_healthy_one(
    services: None, unique: str
) -> None:
    schema = unique.replace("-", "_")
    store = {"store_url": POSTGRES_URL, "store_schema": schema}
    dispatcher = {
        **RETRIES,
        "webhook_timeout": SLOW + 5,  # slow, not failing
        "per_receiver_concurrency": 4,
        "receiver_rest": 0.05,
        "receiver_max_rest": 0.1,
    }
    healthy, slow, failing = WebhookReceiver(), WebhookReceiver(), WebhookReceiver()

    async def take_ten_seconds(attempt: Attempt) -> int:
        await trio.sleep(SLOW)
        return 204

    async def fail(attempt: Attempt) -> int:
        return 500

    slow.answers["/hook"] = take_ten_seconds
    failing.answers["/hook"] = fail
    accepted: set[str] = set()
    try:
        async with own_broker(api_queues(f"{unique}-")) as broker:
            with fleet_in_tmp() as fleet:
                api_pipeline(fleet, f"{unique}-", store, dispatcher=dispatcher)
                async with trio.open_nursery() as nursery:
                    for receiver in (healthy, slow, failing):
                        await nursery.start(receiver.serve)
                    await fleet.wait_healthy()
                    headers = await subscribe(fleet.url("api0"), healthy)
                    await subscribe(fleet.url("api0"), slow, "DELIVERED")
                    await subscribe(fleet.url("api0"), failing, "DELIVERED")
                    async with httpx.AsyncClient(
                        base_url=fleet.url("api0"), headers=headers, timeout=30
                    ) as client:
                        await post_all([client], MESSAGES, accepted)
                    posted = trio.current_time()
                    for receiver in (healthy, slow, failing):
                        receiver.tally("DELIVERED").sent = set(accepted)
                    with trio.move_on_after(60):
                        await healthy.tally("DELIVERED").wait_all()
                    healthy_done = trio.current_time() - posted
                    slow_by_then = len(slow.tally("DELIVERED").arrived)
                    # Each failing webhook: every attempt, then the dead-letter queue.
                    letters = await wait_for_letters(broker, unique, MESSAGES, within=90)
                    nursery.cancel_scope.cancel()
            letters += await take_dead_letters(broker, unique)
    finally:
        drop_schema(POSTGRES_URL, schema)

    print(
        f"healthy receiver: all {MESSAGES} DELIVERED {healthy_done:.1f} s after the last "
        f"POST, when the slow one had {slow_by_then}; failing one: "
        f"{len(failing.attempts)} attempts, {len(letters)} dead letters"
    )
    assert not healthy.tally("DELIVERED").missing, healthy.tally("DELIVERED").report("healthy")
    # The slow receiver was still working through its backlog (4 at a time, 10 s each)
    # when the healthy one had everything.
    assert slow_by_then < MESSAGES
    assert healthy_done < 2 * SLOW  # the slow backlog takes SLOW * MESSAGES / 4
    # The failing receiver: each webhook tried on the backoff schedule, then given up.
    by_id: dict[str, list[float]] = defaultdict(list)
    for attempt in failing.attempts:
        by_id[attempt.webhook_id].append(attempt.at)
    assert len(by_id) == MESSAGES
    problems = {i: p for i, times in by_id.items() if (p := check_schedule(sorted(times)))}
    assert not problems, problems
    assert len(letters) == MESSAGES
    for letter in letters:
        assert letter.source_queue == f"{unique}-messaging.webhooks"
        assert "answered 500" in letter_error(letter) and "gave up after 3" in letter_error(letter)


# -- providers

HANGS, FAILS, LIMITS = "+27830", "+27840", "+27850"  # receiver prefixes the provider treats badly
PROVIDER_TIMEOUT = 3.0
RETRY_AFTER = 2


def provider_answer(request: Recorded) -> Answer:
    to = request.query.get("to", "")
    if to.startswith(HANGS):
        return Answer(200, hang=True)  # slower than any timeout
    if to.startswith(FAILS):
        return Answer(500, "internal error")
    if to.startswith(LIMITS):
        return Answer(429, "slow down", {"Retry-After": str(RETRY_AFTER)})
    return kannel_accepts(request)


async def test_a_hanging_failing_or_limiting_provider_is_retried_and_others_flow(
    services: None, unique: str
) -> None:
    transport = f"{unique}-sms"
    queues = [f"{transport}.{kind}" for kind in ("outbound", "inbound", "event")]
    queues.append(f"{transport}.unmatched_reports")
    healthy = [message(transport, f"+27820{i:06d}") for i in range(200)]
    troubled = {
        prefix: [message(transport, f"{prefix}{i:06d}") for i in range(5)]
        for prefix in (HANGS, FAILS, LIMITS)
    }
    acks = Tally(sent={m.message_id for m in healthy})
    gave_up = Tally(sent={m.message_id for ms in troubled.values() for m in ms})
    outcomes: dict[str, list[Event]] = defaultdict(list)

    def on_event(event: Event) -> None:
        outcomes[event.user_message_id].append(event)
        if event.event_type == EventType.ACK:
            acks.arrive(event.user_message_id)
        elif event.event_type == EventType.NACK:
            gave_up.arrive(event.user_message_id)

    async with (
        fake_provider("provider", provider_answer) as provider,
        own_broker(queues) as broker,
    ):
        with fleet_in_tmp() as fleet:
            port = free_port()
            config: dict[str, Any] = {
                "transport_name": transport,
                "preset": "kannel",
                "url": f"{provider.url}/cgi-bin/sendsms",
                "username": "user",
                "password": "password",
                "callback_secret": "callback-secret",
                "http_bind": f"127.0.0.1:{port}",
                "callback_base_url": f"http://127.0.0.1:{port}",
                "timeout": PROVIDER_TIMEOUT,
                "worker_concurrency": 20,
                **RETRIES,
            }
            fleet.add("sms", "vumi_like.transports.http_sms.HttpSmsTransport", config)
            await fleet.wait_healthy()
            async with trio.open_nursery() as nursery:
                await nursery.start(consume_events, broker, f"{transport}.event", on_event)
                started = trio.current_time()
                # The troubled ones first, so they hold their slots while the rest go.
                for m in [*(m for ms in troubled.values() for m in ms), *healthy]:
                    await broker.publish(f"{transport}.outbound", m.to_json())
                with trio.move_on_after(30):
                    await acks.wait_all()
                healthy_done = trio.current_time() - started
                with trio.move_on_after(60):
                    await gave_up.wait_all()
                nursery.cancel_scope.cancel()
    sent_at: dict[str, list[float]] = defaultdict(list)
    for request in provider.requests:
        sent_at[request.query.get("to", "")].append(request.at)

    print(f"200 healthy messages acked within {healthy_done:.1f} s beside 15 troubled ones")
    assert not acks.missing, acks.report("acks of healthy messages")
    # 5 hanging sends hold 5 of 20 slots for 3 s each try: the rest flow meanwhile.
    assert healthy_done < 3 * PROVIDER_TIMEOUT
    assert not gave_up.missing, gave_up.report("given up")
    extra = {HANGS: PROVIDER_TIMEOUT, FAILS: 0.0, LIMITS: 0.0}
    for prefix, messages in troubled.items():
        for m in messages:
            times = sorted(sent_at[m.to_addr])
            problems = check_schedule(times, PROVIDER_SLACK, extra[prefix])
            if prefix == LIMITS:  # Retry-After: 2 outweighs the first backoff (1 s)
                gaps = [after - before for before, after in itertools.pairwise(times)]
                assert min(gaps) >= RETRY_AFTER * 0.95, (prefix, gaps)
            assert not problems, (prefix, problems)
            pending = [
                e for e in outcomes[m.message_id] if e.delivery_status == DeliveryStatus.PENDING
            ]
            assert len(pending) == RETRIES["max_retries"], (prefix, outcomes[m.message_id])


def message(transport: str, to_addr: str) -> Message:
    return Message(
        to_addr=to_addr,
        from_addr="1234",
        transport_name=transport,
        transport_type="sms",
        content="hello",
    )
