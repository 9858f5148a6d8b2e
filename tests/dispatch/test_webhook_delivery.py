"""Webhook jobs end to end: retries under one id, Retry-After, giving up into the
dead-letter queue, subscriptions' filters and deletion, slow receivers, tenants."""

from __future__ import annotations

import pytest
import trio

from tests.applications.messaging_api.harness import (
    Posted,
    running_pipeline,
    webhook_receiver,
)
from tests.broker.test_contract import receive
from tests.dispatch.conftest import (
    SMS,
    delivery_done,
    poll,
    publish_inbound,
    published,
    send_sms,
    subscribe,
    wait_handled,
    wait_settled,
)
from tests.stores.conftest import StoreTarget
from vumi_like import dlq
from vumi_like.broker import BrokerInspector
from vumi_like.broker.base import HEADER_DL_ERROR, HEADER_DL_QUEUE
from vumi_like.messages import Message
from vumi_like.messaging import webhooks
from vumi_like.messaging.webhooks import WebhookJob
from vumi_like.stores import DeliveryState


async def has_letter(broker: BrokerInspector, queue: str) -> bool:
    return bool(await dlq.list_letters(broker, queue))


async def test_a_failing_webhook_is_retried_under_the_same_webhook_id_until_delivered(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            await subscribe(p, receiver.hook, "DELIVERED")
            receiver.answer_next(2, 500)
            message_id = await send_sms(p)
            posts = await receiver.wait_for(lambda posts: len(posts) == 3)
            await wait_settled(f"{p.connector}.webhooks")
            delivery_id = posts[0].headers["webhook-id"]
            delivery = await p.store.get_delivery(delivery_id)

    assert [post.headers["webhook-id"] for post in posts] == [delivery_id] * 3
    assert {post.raw for post in posts} == {posts[0].raw}
    assert delivery is not None
    assert (delivery.message_id, delivery.status_code) == (message_id, "DELIVERED")
    assert (delivery.state, delivery.attempts) == (DeliveryState.DELIVERED, 3)


async def test_a_healthy_receivers_webhooks_are_posted_at_once_without_a_job(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            # SENT and DELIVERED come from the dispatcher (QUEUED from the API, as a job).
            await subscribe(p, receiver.hook, "SENT", "DELIVERED")
            message_id = await send_sms(p)
            posts = await receiver.wait_for(lambda posts: len(posts) == 2)

            async def recorded() -> bool:
                for post in posts:
                    delivery = await p.store.get_delivery(post.headers["webhook-id"])
                    if delivery is None or delivery.state != DeliveryState.DELIVERED:
                        return False
                    assert delivery.attempts == 1
                return True

            await poll(recorded)
            queued = published(f"{p.connector}.webhooks")

    assert queued == 0
    # Each is posted as soon as its event is handled, so they may arrive in either
    # order (docs/messaging_api.md), but their timestamps say which came first.
    in_time = sorted(posts, key=lambda post: post.body["timestamp"])
    assert [post.body["statusCode"] for post in in_time] == ["SENT", "DELIVERED"]
    assert all(post.body["messageId"] == message_id for post in posts)


async def test_a_failed_first_attempt_becomes_a_job_due_after_the_policys_delay(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            await subscribe(p, receiver.hook, "DELIVERED")
            receiver.answer_next(1, 500)
            await send_sms(p)
            first, second = await receiver.wait_for(lambda posts: len(posts) == 2)
            await wait_settled(f"{p.connector}.webhooks")
            queued = published(f"{p.connector}.webhooks")
            delivery = await p.store.get_delivery(first.headers["webhook-id"])

    assert queued == 1  # the retry, and only it
    assert first.raw == second.raw
    # The harness's first retry delay: 50 ms, give or take its jitter.
    assert second.at - first.at >= 0.04
    assert delivery is not None
    assert (delivery.state, delivery.attempts) == (DeliveryState.DELIVERED, 2)


async def test_a_receivers_retry_after_is_honoured(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    # Without the Retry-After the retry would come 50 ms later (the harness's backoff).
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            await subscribe(p, receiver.hook, "DELIVERED")
            receiver.answer_next(1, 503, {"Retry-After": "1"})
            await send_sms(p)
            first, second = await receiver.wait_for(lambda posts: len(posts) == 2)

    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert 0.95 <= second.at - first.at < 3.0


async def test_a_webhook_failing_every_attempt_is_recorded_failed_and_dead_lettered(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            await subscribe(p, receiver.hook, "DELIVERED")
            receiver.answer_next(10, 500)
            await send_sms(p)
            [dead] = await receive(pipeline_broker, pipeline_broker.dead_letter_queue, 1)
            posts = list(receiver.posts)
            job = WebhookJob.model_validate_json(dead.body)
            delivery = await p.store.get_delivery(job.delivery_id)

    # The harness allows 3 retries: 4 attempts, all of the same delivery.
    assert [post.headers["webhook-id"] for post in posts] == [job.delivery_id] * 4
    assert dead.headers[HEADER_DL_QUEUE] == f"{unique}-api.webhooks"
    error = dead.headers[HEADER_DL_ERROR]
    assert "RetriesExhausted" in error
    assert "answered 500" in error and "gave up after 4 attempts" in error
    assert delivery is not None
    assert (delivery.state, delivery.attempts) == (DeliveryState.FAILED, 4)
    assert delivery.last_error is not None and "answered 500" in delivery.last_error


async def test_a_dead_lettered_webhook_replayed_is_delivered_under_its_id(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            await subscribe(p, receiver.hook, "DELIVERED")
            receiver.answer_next(4, 500)
            await send_sms(p)
            await receiver.wait_for(lambda posts: len(posts) == 4)
            queue = pipeline_broker.dead_letter_queue
            await poll(lambda: has_letter(pipeline_broker, queue))
            [replayed] = await dlq.replay(pipeline_broker, queue, None)
            posts = await receiver.wait_for(lambda posts: len(posts) == 5)
            delivery_id = posts[0].headers["webhook-id"]

            async def recorded_delivered() -> bool:
                delivery = await p.store.get_delivery(delivery_id)
                return delivery is not None and delivery.state == DeliveryState.DELIVERED

            await poll(recorded_delivered)

    assert replayed.source_queue == f"{unique}-api.webhooks"
    assert [post.headers["webhook-id"] for post in posts] == [delivery_id] * 5


# Subscriptions the dispatcher read are kept a minute: a job's first try looks there.
KEEPS_SUBSCRIPTIONS = {"subscriptions_max_age": 60}


async def test_a_jobs_first_try_reaches_a_subscription_newer_than_the_dispatchers_read(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique, dispatcher=KEEPS_SUBSCRIPTIONS) as p,
        ):
            await subscribe(p, receiver.hook, "DELIVERED")
            await send_sms(p)
            # The dispatcher has read the tenant's subscriptions: this one only.
            await receiver.wait_for(lambda posts: len(posts) == 1)
            await subscribe(p, receiver.hook, "QUEUED")
            # The API queues a QUEUED job for the new subscription, which the
            # dispatcher's read does not have: the store does.
            second = await send_sms(p)
            await receiver.wait_for(lambda _: len(receiver.of("QUEUED", second)) == 1)
            [queued] = receiver.of("QUEUED", second)
            await poll(lambda: delivery_done(p, queued.headers["webhook-id"]))

    assert queued.body["statusCode"] == "QUEUED"
    # Its first message went before the new subscription was made: no QUEUED for it.
    assert len(receiver.of("QUEUED")) == 1


async def test_a_job_the_broker_redelivers_is_not_posted_again_once_delivered(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique, dispatcher=KEEPS_SUBSCRIPTIONS) as p,
        ):
            webhook_id = await subscribe(p, receiver.hook, "QUEUED")
            message_id = await send_sms(p)
            [post] = await receiver.wait_for(lambda posts: len(posts) == 1)
            await poll(lambda: delivery_done(p, post.headers["webhook-id"]))
            job = WebhookJob(
                delivery_id=post.headers["webhook-id"],
                webhook_id=webhook_id,
                tenant="acme",
                message_id=message_id,
                status_code="QUEUED",
                url=receiver.hook,
                body=post.body,
            )
            # What a dispatcher that died after posting it, before its ack, leaves: the
            # same job again, flagged by the broker as redelivered.
            await p.dispatchers[0].deliver(job, attempt=0, redelivered=True)

    assert receiver.posts == [post]


async def test_a_subscription_gets_only_the_event_types_it_asked_for(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as delivered_only,
            webhook_receiver() as everything,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            await subscribe(p, delivered_only.hook, "DELIVERED")
            await subscribe(p, everything.hook)
            message_id = await send_sms(p)
            await everything.wait_for(lambda _: len(everything.of("DELIVERED")) == 1)
            await wait_settled(f"{p.connector}.webhooks")

    assert [post.body["statusCode"] for post in delivered_only.posts] == ["DELIVERED"]
    assert delivered_only.posts[0].body["messageId"] == message_id
    # SENT too, unless the ack was applied after the report (they race): no news then.
    assert {post.body["statusCode"] for post in everything.posts} in (
        {"QUEUED", "SENT", "DELIVERED"},
        {"QUEUED", "DELIVERED"},
    )
    assert len(everything.posts) == len({post.body["statusCode"] for post in everything.posts})


async def test_a_deleted_subscription_gets_nothing_more_not_even_jobs_queued_before(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    with trio.fail_after(20):
        async with (
            webhook_receiver() as receiver,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            webhook_id = await subscribe(p, receiver.hook, "DELIVERED")
            # The first attempt fails, so the job waits a second on the broker...
            receiver.answer_next(1, 503, {"Retry-After": "1"})
            await send_sms(p)
            [failed] = await receiver.wait_for(lambda posts: len(posts) == 1)
            # ... during which the client unsubscribes, then sends another message.
            deleted = await p.http.delete(f"/v1/webhooks/{webhook_id}", headers=await p.auth())
            after = await send_sms(p)
            await p.wait_for_status(after, "DELIVERED")
            await wait_handled(f"{p.connector}.event", 4)  # both messages' ack and report
            await wait_settled(f"{p.connector}.webhooks")
            delivery = await p.store.get_delivery(failed.headers["webhook-id"])

    assert deleted.status_code == 204
    assert receiver.posts == [failed]
    assert delivery is not None
    assert delivery.state == DeliveryState.FAILED
    assert delivery.last_error == "the subscription was deleted"


@pytest.mark.timing
async def test_a_receiver_that_times_out_does_not_delay_another_receivers_webhooks(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    timeout, concurrency = 0.5, 2
    dispatcher = {
        "webhook_timeout": timeout,
        "per_receiver_concurrency": concurrency,
        "worker_concurrency": 2 * concurrency,
        # Resting longer than the test runs: a loaded machine that takes a while to
        # deliver the healthy receiver's webhooks must not see a second round.
        "receiver_rest": 60,
        "receiver_max_rest": 60,
    }
    with trio.fail_after(30):
        async with (
            webhook_receiver() as dead,
            webhook_receiver() as healthy,
            running_pipeline(pipeline_broker, target, unique, dispatcher=dispatcher) as p,
        ):
            dead.answer_next(100, 204, delay=2 * timeout)
            dead_id = await subscribe(p, dead.hook)
            await subscribe(p, healthy.hook)
            started = trio.current_time()
            batch = [{**SMS, "receiver": f"+2782{i:07}"} for i in range(20)]
            response = await p.post("/v1/messages/batch", {"messages": batch})
            assert response.status_code == 202, response.text
            ids = [m["messageId"] for m in response.json()["messages"]]
            # 60 jobs for each receiver (QUEUED, SENT, DELIVERED). Were the dead one's
            # jobs let into every slot, each holding it for the timeout, the healthy
            # one's would wait for seconds (8 s, measured with the limits disabled).
            await healthy.wait_for(lambda _: len(healthy.of("DELIVERED")) == 20, within=10)
            took = trio.current_time() - started

            async def posts_to_dead() -> int:
                deliveries = [
                    await p.store.get_delivery(webhooks.delivery_id(dead_id, message_id, status))
                    for message_id in ids
                    for status in ("QUEUED", "SENT", "DELIVERED")
                ]
                return sum(d.attempts for d in deliveries if d is not None)

            async def first_round_timed_out() -> bool:
                return await posts_to_dead() >= concurrency

            await poll(first_round_timed_out)
            posted = await posts_to_dead()

    assert took < 6 * timeout
    # The first posts to the dead receiver, as many as it may have in flight, timed out
    # together; it then rests, so it costs one round of timeouts, not one per job.
    assert posted == concurrency


async def test_a_tenants_subscription_never_gets_another_tenants_webhooks(
    pipeline_broker: BrokerInspector, target: StoreTarget, unique: str
):
    def inbound(to_addr: str) -> Message:
        return Message(
            to_addr=to_addr,
            from_addr="+27820000002",
            transport_name=f"{unique}-sms",
            transport_type="sms",
            content="hi",
        )

    to_acme, to_globex = inbound("1234"), inbound("5678")
    with trio.fail_after(20):
        async with (
            webhook_receiver() as acme,
            webhook_receiver() as globex,
            running_pipeline(pipeline_broker, target, unique) as p,
        ):
            await subscribe(p, acme.hook)
            await subscribe(p, globex.hook, tenant="globex")
            acme_sent = await send_sms(p)
            globex_sent = await send_sms(p, "globex")
            await publish_inbound(p, to_acme)
            await publish_inbound(p, to_globex)
            await p.wait_for_status(acme_sent, "DELIVERED")
            await p.wait_for_status(globex_sent, "DELIVERED", "globex")
            await wait_handled(f"{p.connector}.event", 4)
            await wait_handled(f"{p.connector}.inbound", 2)
            await wait_settled(f"{p.connector}.webhooks")

    def seen(posts: list[Posted]) -> set[tuple[str, str]]:
        return {(post.body["messageId"], post.body["statusCode"]) for post in posts}

    # SENT is posted only if the ack was applied before the report (they race).
    for receiver, sent, received in ((acme, acme_sent, to_acme), (globex, globex_sent, to_globex)):
        expected = {
            (sent, "QUEUED"),
            (sent, "DELIVERED"),
            (received.message_id, "MESSAGE_RECEIVED"),
        }
        assert expected <= seen(receiver.posts) <= expected | {(sent, "SENT")}
