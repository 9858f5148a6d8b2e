"""The one retry policy: backoff with jitter, Retry-After honoured and capped, a max count."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import BaseModel, ValidationError

from vumi_like.retry import (
    RetriesExhausted,
    RetryLater,
    RetryPolicy,
    RetrySettings,
    retry_after_seconds,
)


def policy(**fields: object) -> RetryPolicy:
    return RetryPolicy(random=random.Random(1), **fields)  # type: ignore[arg-type]


def test_delay_grows_exponentially_within_the_jitter():
    retry = policy(delay_base=2, delay_exponent=3, jitter=0.1)
    for attempt, nominal in enumerate([2, 6, 18]):
        delay = retry.delay(attempt)
        assert nominal * 0.9 <= delay <= nominal * 1.1


def test_a_longer_retry_after_wins_and_a_shorter_one_does_not():
    retry = policy(delay_base=2, delay_exponent=3, jitter=0.1)
    assert retry.delay(0, retry_after=30) == 30
    assert retry.delay(2, retry_after=1) >= 18 * 0.9


def test_backoff_and_retry_after_are_capped():
    retry = policy(delay_base=10, delay_exponent=10, jitter=0, delay_max=60, retry_after_max=120)
    assert retry.delay(5) == 60
    assert retry.delay(0, retry_after=86400) == 120


def test_jitter_spreads_delays():
    retry = RetryPolicy(delay_base=10, jitter=0.5)
    delays = {retry.delay(0) for _ in range(50)}
    assert len(delays) > 40
    assert all(5 <= delay <= 15 for delay in delays)


def test_retry_raises_retry_later_until_the_last_attempt_then_gives_up():
    retry = policy(max_retries=2, delay_base=1, jitter=0)
    for attempt, expected in [(0, 1), (1, 2)]:
        with pytest.raises(RetryLater) as later:
            retry.retry(attempt, "503 from upstream")
        assert later.value.delay == expected
        assert later.value.reason == "503 from upstream"
    with pytest.raises(RetriesExhausted, match=r"503 from upstream \(gave up after 3 attempts\)"):
        retry.retry(2, "503 from upstream")


def test_no_retries_gives_up_at_once():
    with pytest.raises(RetriesExhausted, match="after 1 attempts"):
        policy(max_retries=0).retry(0, "down")


class _Settings(RetrySettings):
    pass


def test_settings_keys_build_the_policy():
    settings = _Settings.model_validate(
        {
            "max_retries": 5,
            "retry_delay_base": 0.5,
            "retry_delay_exponent": 3,
            "retry_jitter": 0,
            "retry_delay_max": 90,
            "retry_after_max": 30,
        }
    )
    built = settings.retry_policy()
    assert (built.max_retries, built.delay_base, built.delay_exponent) == (5, 0.5, 3)
    assert (built.jitter, built.delay_max, built.retry_after_max) == (0, 90, 30)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_retries": -1},
        {"retry_delay_base": 0},
        {"retry_delay_exponent": 0.5},
        {"retry_jitter": 1},
        {"retry_after_max": -5},
    ],
)
def test_settings_refuse_nonsense(fields: dict[str, object]):
    with pytest.raises(ValidationError):
        _Settings.model_validate(fields)


def test_settings_defaults_are_vumi2s():
    defaults = _Settings()
    assert (defaults.max_retries, defaults.retry_delay_base, defaults.retry_delay_exponent) == (
        3,
        2,
        2,
    )
    assert isinstance(defaults, BaseModel)


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert (
        retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    )
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
