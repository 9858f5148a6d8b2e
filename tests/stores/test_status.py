"""The status state machine on its own: no store, no I/O."""

from __future__ import annotations

import itertools

import pytest

from vumi_like.messages import DeliveryStatus, EventType
from vumi_like.stores.status import (
    TERMINAL_STATUSES,
    LegacyStatus,
    MessageStatus,
    is_terminal,
    legacy_status,
    next_status,
    status_for_event,
)

S = MessageStatus
Ev = tuple[EventType, DeliveryStatus | None]
ACK: Ev = (EventType.ACK, None)
NACK: Ev = (EventType.NACK, None)
DR_DELIVERED: Ev = (EventType.DELIVERY_REPORT, DeliveryStatus.DELIVERED)
DR_PENDING: Ev = (EventType.DELIVERY_REPORT, DeliveryStatus.PENDING)
DR_FAILED: Ev = (EventType.DELIVERY_REPORT, DeliveryStatus.FAILED)


def run(events: tuple[Ev, ...]) -> MessageStatus:
    status = S.QUEUED
    for event_type, delivery_status in events:
        status = next_status(status, status_for_event(event_type, delivery_status))
    return status


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (ACK, S.SENT),
        (NACK, S.DELIVERY_FAILED),
        (DR_DELIVERED, S.DELIVERED),
        (DR_FAILED, S.DELIVERY_FAILED),
        (DR_PENDING, S.DELIVERY_RETRIED),
        (("delivery_report", "delivered"), S.DELIVERED),  # plain strings too
    ],
)
def test_each_event_proposes_its_status(event: tuple[str, str | None], status: S) -> None:
    assert status_for_event(*event) is status


def test_a_delivery_report_without_a_delivery_status_is_refused() -> None:
    with pytest.raises(ValueError, match="delivery_status"):
        status_for_event(EventType.DELIVERY_REPORT)


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValueError):
        status_for_event("read_receipt")


@pytest.mark.parametrize("order", list(itertools.permutations([ACK, DR_PENDING, DR_DELIVERED])))
def test_ack_pending_and_delivered_end_delivered_in_any_order(order: tuple[Ev, ...]) -> None:
    assert run(order) is S.DELIVERED


@pytest.mark.parametrize("order", list(itertools.permutations([ACK, DR_PENDING, NACK])))
def test_a_nack_ends_failed_in_any_order(order: tuple[Ev, ...]) -> None:
    assert run(order) is S.DELIVERY_FAILED


def test_the_first_terminal_status_wins() -> None:
    assert run((ACK, DR_DELIVERED, DR_FAILED)) is S.DELIVERED
    assert run((ACK, DR_FAILED, DR_DELIVERED)) is S.DELIVERY_FAILED


def test_a_late_ack_never_moves_delivered_back_to_sent() -> None:
    assert next_status(S.DELIVERED, S.SENT) is S.DELIVERED
    assert next_status(S.DELIVERY_RETRIED, S.SENT) is S.DELIVERY_RETRIED


def test_a_status_only_moves_forwards() -> None:
    assert next_status(S.QUEUED, S.SENT) is S.SENT
    assert next_status(S.SENT, S.DELIVERY_RETRIED) is S.DELIVERY_RETRIED
    assert next_status(S.DELIVERY_RETRIED, S.DELIVERED) is S.DELIVERED
    assert next_status(S.SENT, S.SENT) is S.SENT


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_a_terminal_status_never_changes(terminal: S) -> None:
    assert is_terminal(terminal)
    for proposed in S:
        assert next_status(terminal, proposed) is terminal


def test_received_and_no_feedback_settings_found_are_terminal() -> None:
    assert {s for s in S if is_terminal(s)} == {
        S.DELIVERED,
        S.DELIVERY_FAILED,
        S.RECEIVED,
        S.NO_FEEDBACK_SETTINGS_FOUND,
    }


def test_every_sequence_of_events_ends_in_the_same_status_as_its_first_terminal() -> None:
    # Exhaustively, over sequences of up to four events: the status reached is the
    # first terminal event's status if there is one, else the highest ranked.
    events = [ACK, NACK, DR_DELIVERED, DR_PENDING, DR_FAILED]
    order = [S.QUEUED, S.SENT, S.DELIVERY_RETRIED]
    for length in range(1, 5):
        for sequence in itertools.product(events, repeat=length):
            proposed = [status_for_event(*event) for event in sequence]
            terminal = [s for s in proposed if is_terminal(s)]
            expected = terminal[0] if terminal else max(proposed, key=order.index)
            assert run(sequence) is expected, sequence


@pytest.mark.parametrize(
    ("status", "legacy"),
    [
        (S.QUEUED, LegacyStatus.PENDING),
        (S.DELIVERY_RETRIED, LegacyStatus.PENDING),
        (S.SENT, LegacyStatus.SENT),
        (S.DELIVERED, LegacyStatus.SENT),
        (S.DELIVERY_FAILED, LegacyStatus.FAILED),
        (S.NO_FEEDBACK_SETTINGS_FOUND, LegacyStatus.NO_FEEDBACK_SETTINGS_FOUND),
        (S.RECEIVED, LegacyStatus.SENT),
    ],
)
def test_legacy_codes_follow_seed_003(status: S, legacy: LegacyStatus) -> None:
    assert legacy_status(status) is legacy
