"""Webhook bodies and signatures: verifiable by the Standard Webhooks reference library."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from vumi_like.messaging.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_ID_HEADER,
    delivery_id,
    inbound_body,
    new_secret,
    sign,
    signature_headers,
    status_body,
    verify,
)

BODY = json.dumps({"statusCode": "SENT", "messageId": "m1"}).encode()


def test_our_signature_verifies_with_the_reference_library():
    secret = new_secret()
    headers = signature_headers(secret, "wh_1", BODY)
    payload = Webhook(secret).verify(BODY, headers)
    assert payload == {"statusCode": "SENT", "messageId": "m1"}


def test_the_reference_library_refuses_a_changed_body_or_another_secret():
    secret = new_secret()
    headers = signature_headers(secret, "wh_1", BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_verify_accepts_our_headers_and_refuses_tampering_and_old_timestamps():
    secret = "a client's own secret"
    now = time.time()
    headers = signature_headers(secret, "wh_2", BODY, now=now)
    assert verify(secret, headers, BODY, now=now)
    assert verify(secret, {k.upper(): v for k, v in headers.items()}, BODY, now=now)
    assert not verify(secret, headers, BODY.replace(b"SENT", b"DELIVERED"), now=now)
    assert not verify("another secret", headers, BODY, now=now)
    assert not verify(secret, {**headers, WEBHOOK_ID_HEADER: "wh_3"}, BODY, now=now)
    assert not verify(secret, headers, BODY, now=now + 301)
    assert not verify(secret, {}, BODY, now=now)


def test_a_rotation_may_carry_several_signatures():
    old, new = new_secret(), new_secret()
    now = int(time.time())
    both = f"{sign(old, 'wh_4', now, BODY)} {sign(new, 'wh_4', now, BODY)}"
    headers = {WEBHOOK_ID_HEADER: "wh_4", TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: both}
    assert verify(old, headers, BODY)
    assert verify(new, headers, BODY)


def test_generated_secrets_are_fresh_and_prefixed():
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    assert all(secret.startswith("whsec_") for secret in secrets)


def test_delivery_ids_are_stable_for_one_status_and_differ_otherwise():
    assert delivery_id("w1", "m1", "SENT") == delivery_id("w1", "m1", "SENT")
    assert (
        len(
            {
                delivery_id(*parts)
                for parts in [
                    ("w1", "m1", "SENT"),
                    ("w1", "m1", "DELIVERED"),
                    ("w2", "m1", "SENT"),
                    ("w1", "m2", "SENT"),
                ]
            }
        )
        == 4
    )


def test_bodies_have_seed_000s_fields():
    at = datetime(2026, 1, 2, 3, 4, 5, 678000)
    body = status_body(
        "DELIVERED",
        delivery="wh_x",
        message_id="m1",
        channel="sms",
        context={"order": 7},
        at=at,
    )
    assert body == {
        "id": "wh_x",
        "statusCode": "DELIVERED",
        "messageId": "m1",
        "channelName": "sms",
        "context": {"order": 7},
        "timestamp": "2026-01-02T03:04:05.678000Z",
    }
    failed = status_body(
        "DELIVERY_FAILED",
        delivery="d",
        message_id="m",
        channel="c",
        context=None,
        at=at,
        reason="unknown subscriber",
    )
    assert failed["reason"] == "unknown subscriber"
    assert failed["context"] == {}
    inbound = inbound_body(
        delivery="d",
        message_id="m2",
        channel="sms",
        sender="+27820000001",
        receiver="1234",
        content="hi",
        in_reply_to=None,
        at=at,
    )
    assert inbound["statusCode"] == "MESSAGE_RECEIVED"
    assert (inbound["sender"], inbound["receiver"], inbound["content"]) == (
        "+27820000001",
        "1234",
        "hi",
    )
