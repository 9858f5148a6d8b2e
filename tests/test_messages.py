"""Envelopes on the wire: vumi2's format read and written exactly, bad input refused clearly.

The golden files in ``fixtures/vumi2/`` were written by hand in the format vumi2 puts on
RabbitMQ (its ``serialise()`` dumped with ``json``), key order included.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from vumi_like.messages import (
    AddressType,
    DeliveryStatus,
    Event,
    EventType,
    InvalidEnvelope,
    Message,
    SessionEvent,
    format_timestamp,
    parse_envelope,
    parse_timestamp,
)

FIXTURES = Path(__file__).parent / "fixtures" / "vumi2"

MESSAGE_KEYS = {
    "to_addr",
    "from_addr",
    "transport_name",
    "transport_type",
    "message_version",
    "message_type",
    "timestamp",
    "routing_metadata",
    "helper_metadata",
    "message_id",
    "in_reply_to",
    "provider",
    "session_event",
    "content",
    "transport_metadata",
    "group",
    "to_addr_type",
    "from_addr_type",
}
EVENT_KEYS = {
    "user_message_id",
    "event_type",
    "message_version",
    "message_type",
    "timestamp",
    "routing_metadata",
    "helper_metadata",
    "transport_metadata",
    "event_id",
    "sent_message_id",
    "nack_reason",
    "delivery_status",
}
GOLDEN: dict[str, tuple[type[Message] | type[Event], set[str]]] = {
    "user_message.json": (Message, MESSAGE_KEYS),
    "reply.json": (Message, MESSAGE_KEYS),
    "ack.json": (Event, EVENT_KEYS),
    "nack.json": (Event, EVENT_KEYS),
    "delivery_report.json": (Event, EVENT_KEYS),
}


def golden_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def golden(name: str) -> dict[str, Any]:
    return json.loads(golden_bytes(name))


def make_message(**fields: Any) -> Message:
    defaults: dict[str, Any] = {
        "to_addr": "+27820000001",
        "from_addr": "12345",
        "transport_name": "sms_transport",
        "transport_type": "sms",
        "content": "hello",
    }
    return Message(**{**defaults, **fields})


def raises_naming(field: str) -> Any:
    """pytest.raises(InvalidEnvelope) whose message names ``field``; check .errors after."""
    return pytest.raises(InvalidEnvelope, match=rf"\b{re.escape(field)}: ")


def error_fields(exc: pytest.ExceptionInfo[InvalidEnvelope]) -> list[str]:
    return [field for field, _problem in exc.value.errors]


# ---------------------------------------------------------------------------------------
# Golden vumi2 envelopes


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vumi2_envelope_round_trips_to_identical_keys_and_values(name: str):
    cls, keys = GOLDEN[name]
    original = golden(name)

    envelope = cls.from_json(golden_bytes(name))

    assert type(envelope) is cls
    assert envelope.serialise() == original
    assert json.loads(envelope.to_json()) == original
    assert set(json.loads(envelope.to_json())) == keys


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vumi2_envelope_is_written_in_vumi2_key_order(name: str):
    cls, _keys = GOLDEN[name]
    envelope = cls.deserialise(golden(name))

    assert list(envelope.serialise()) == list(golden(name))
    assert list(json.loads(envelope.to_json())) == list(golden(name))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_parse_envelope_dispatches_golden_envelopes_on_message_type(name: str):
    cls, _keys = GOLDEN[name]

    envelope = parse_envelope(golden_bytes(name))

    assert type(envelope) is cls
    assert envelope.serialise() == golden(name)


def test_golden_user_message_reads_into_typed_values():
    msg = Message.from_json(golden_bytes("user_message.json"))

    assert msg.session_event is SessionEvent.NEW
    assert msg.from_addr_type is AddressType.MSISDN
    assert msg.to_addr_type is None
    assert msg.timestamp == datetime(2024, 3, 5, 14, 7, 9, 512300)
    assert msg.timestamp.tzinfo is None
    assert msg.content == "Hellö 👋"
    assert msg.transport_metadata["network"] == {"code": 1, "ok": True, "rate": 0.5}
    assert msg.in_reply_to is None


def test_golden_events_read_into_typed_values():
    ack = Event.from_json(golden_bytes("ack.json"))
    nack = Event.from_json(golden_bytes("nack.json"))
    report = Event.from_json(golden_bytes("delivery_report.json"))

    assert (ack.event_type, ack.sent_message_id) == (EventType.ACK, "smsc-7f3a91")
    assert (nack.event_type, nack.nack_reason) == (
        EventType.NACK,
        "Provider unavailable (HTTP 503)",
    )
    assert report.event_type is EventType.DELIVERY_REPORT
    assert report.delivery_status is DeliveryStatus.DELIVERED
    assert report.transport_metadata is None  # vumi2 allows a null here


def test_reply_to_golden_user_message_routes_like_golden_reply():
    user = Message.from_json(golden_bytes("user_message.json"))
    expected = golden("reply.json")

    made = user.reply(expected["content"]).serialise()

    for key in (
        "to_addr",
        "from_addr",
        "transport_name",
        "transport_type",
        "in_reply_to",
        "provider",
        "group",
        "transport_metadata",
        "session_event",
        "content",
    ):
        assert made[key] == expected[key], key


# ---------------------------------------------------------------------------------------
# Writing


def test_serialise_writes_enums_and_timestamp_as_plain_strings():
    msg = make_message(
        session_event=SessionEvent.CLOSE,
        to_addr_type=AddressType.MSISDN,
        timestamp=datetime(2024, 1, 31, 12, 0, 0),
    )

    data = msg.serialise()

    assert data["session_event"] == "close"
    assert type(data["session_event"]) is str
    assert type(data["to_addr_type"]) is str
    assert data["timestamp"] == "2024-01-31 12:00:00.000000"
    json.dumps(data)  # JSON-ready as it is


def test_serialise_writes_every_key_with_none_as_null():
    assert set(make_message().serialise()) == MESSAGE_KEYS
    assert set(json.loads(make_message().to_json())) == MESSAGE_KEYS
    event = Event.ack("abc", sent_message_id="s1")
    assert set(event.serialise()) == EVENT_KEYS
    assert json.loads(event.to_json())["nack_reason"] is None


def test_event_serialise_writes_event_type_and_status_as_plain_strings():
    data = Event.delivery_report("abc", DeliveryStatus.FAILED).serialise()

    assert data["event_type"] == "delivery_report"
    assert data["delivery_status"] == "failed"
    assert type(data["event_type"]) is str
    assert type(data["delivery_status"]) is str


def test_new_message_gets_vumi2_defaults():
    before = datetime.now(UTC).replace(tzinfo=None)
    msg = Message(to_addr="a", from_addr="b", transport_name="t", transport_type="sms")

    assert re.fullmatch(r"[0-9a-f]{32}", msg.message_id)
    assert msg.message_version == "20110921"
    assert msg.message_type == "user_message"
    assert msg.timestamp.tzinfo is None
    assert before <= msg.timestamp <= datetime.now(UTC).replace(tzinfo=None)
    assert msg.routing_metadata == msg.helper_metadata == msg.transport_metadata == {}
    for key in ("in_reply_to", "provider", "session_event", "content", "group"):
        assert getattr(msg, key) is None, key


def test_new_messages_get_distinct_ids_and_metadata_dicts():
    first, second = make_message(), make_message()

    assert first.message_id != second.message_id
    first.helper_metadata["x"] = 1
    assert second.helper_metadata == {}


def test_message_survives_a_json_round_trip_unchanged():
    msg = make_message(
        session_event="new",
        helper_metadata={"nested": {"list": [1, 2.5, None, "ü"]}},
        group="#chat",
    )

    assert Message.from_json(msg.to_json()) == msg
    assert Message.deserialise(msg.serialise()) == msg


def test_transport_type_accepts_channels_vumi2_does_not_list():
    msg = make_message(transport_type="whatsapp")

    assert Message.from_json(msg.to_json()).transport_type == "whatsapp"


# ---------------------------------------------------------------------------------------
# Timestamps

WITH_FRACTION = datetime(2024, 3, 5, 14, 7, 9, 512300)
WITHOUT_FRACTION = datetime(2024, 3, 5, 14, 7, 9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05 14:07:09.512300", WITH_FRACTION),
        ("2024-03-05 14:07:09.512300Z", WITH_FRACTION),
        ("2024-03-05T14:07:09.512300", WITH_FRACTION),
        ("2024-03-05T14:07:09.512300Z", WITH_FRACTION),
        ("2024-03-05T14:07:09.512300+00:00", WITH_FRACTION),
        ("2024-03-05 14:07:09.5123", WITH_FRACTION),
        ("2024-03-05 14:07:09", WITHOUT_FRACTION),
        ("2024-03-05 14:07:09Z", WITHOUT_FRACTION),
        ("2024-03-05T14:07:09", WITHOUT_FRACTION),
        ("2024-03-05T14:07:09Z", WITHOUT_FRACTION),
        ("2024-03-05T14:07:09+00:00", WITHOUT_FRACTION),
        ("2024-03-05 14:07:09+00:00", WITHOUT_FRACTION),
        ("2024-03-05T16:07:09+02:00", WITHOUT_FRACTION),
    ],
)
def test_timestamp_variants_read_as_the_same_naive_utc_datetime(text: str, expected: datetime):
    data = {**golden("user_message.json"), "timestamp": text}

    msg = Message.deserialise(data)

    assert msg.timestamp == expected
    assert msg.timestamp.tzinfo is None
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text", ["2024-03-05T14:07:09Z", "2024-03-05 14:07:09.000000", "2024-03-05T14:07:09+00:00"]
)
def test_timestamp_is_written_in_the_canonical_format_whatever_was_read(text: str):
    data = {**golden("ack.json"), "timestamp": text}

    event = Event.deserialise(data)

    assert event.serialise()["timestamp"] == "2024-03-05 14:07:09.000000"
    assert json.loads(event.to_json())["timestamp"] == "2024-03-05 14:07:09.000000"


def test_format_timestamp_matches_vumi_strftime_format():
    value = datetime(2024, 3, 5, 4, 7, 9, 12)

    assert format_timestamp(value) == value.strftime("%Y-%m-%d %H:%M:%S.%f")
    assert format_timestamp(value) == "2024-03-05 04:07:09.000012"


def test_aware_timestamp_given_in_code_is_stored_as_naive_utc():
    local = datetime(2024, 3, 5, 16, 7, 9, tzinfo=timezone(timedelta(hours=2)))

    msg = make_message(timestamp=local)

    assert msg.timestamp == WITHOUT_FRACTION
    assert msg.serialise()["timestamp"] == "2024-03-05 14:07:09.000000"


@pytest.mark.parametrize(
    "bad",
    [
        "2024-03-05",
        "yesterday",
        "2024-13-05 14:07:09.000000",
        "2024-03-05 25:07:09",
        "05/03/2024 14:07:09",
        "2024-03-05 14:07:09 +0000",
        "",
        1709647629,
        None,
    ],
)
def test_bad_timestamp_is_rejected_naming_the_field(bad: object):
    data = {**golden("user_message.json"), "timestamp": bad}

    with raises_naming("timestamp") as exc:
        Message.from_json(json.dumps(data).encode())

    assert error_fields(exc) == ["timestamp"]


# ---------------------------------------------------------------------------------------
# Reading tolerantly


def test_unknown_message_keys_are_ignored_on_read_and_not_written_back():
    data = {**golden("user_message.json"), "vumi_v1_extra": {"x": 1}, "priority": 5}

    msg = Message.from_json(json.dumps(data).encode())

    assert "vumi_v1_extra" not in msg.serialise()
    assert set(json.loads(msg.to_json())) == MESSAGE_KEYS
    assert msg.serialise() == golden("user_message.json")


def test_unknown_event_keys_are_ignored_on_read_and_not_written_back():
    data = {**golden("nack.json"), "retry_after": 30}

    event = parse_envelope(json.dumps(data).encode())

    assert set(event.serialise()) == EVENT_KEYS
    assert event.serialise() == golden("nack.json")


def test_missing_optional_keys_take_vumi2_defaults():
    minimal = {"to_addr": "a", "from_addr": "b", "transport_name": "t", "transport_type": "sms"}

    msg = Message.deserialise(minimal)

    assert msg.message_type == "user_message"
    assert msg.helper_metadata == {}
    assert set(msg.serialise()) == MESSAGE_KEYS


def test_event_without_transport_metadata_key_reads_as_empty():
    data = golden("ack.json")
    del data["transport_metadata"]  # older vumi2 releases did not write it

    assert Event.deserialise(data).transport_metadata == {}


# ---------------------------------------------------------------------------------------
# Bad envelopes: always InvalidEnvelope, always naming the field


@pytest.mark.parametrize("body", [b"not json", b"{", b"", b'{"to_addr": "\xff"}'])
def test_non_json_body_is_rejected(body: bytes):
    for read in (Message.from_json, Event.from_json, parse_envelope):
        with raises_naming("body"):
            read(body)


@pytest.mark.parametrize("body", [b"[]", b'"user_message"', b"3", b"null", b"true"])
def test_json_that_is_not_an_object_is_rejected(body: bytes):
    for read in (Message.from_json, Event.from_json, parse_envelope):
        with raises_naming("envelope") as exc:
            read(body)
        assert "JSON object" in str(exc.value)


@pytest.mark.parametrize("field", ["to_addr", "from_addr", "transport_name", "transport_type"])
def test_message_without_required_field_is_rejected(field: str):
    data = golden("user_message.json")
    del data[field]

    with raises_naming(field) as exc:
        Message.from_json(json.dumps(data).encode())

    assert exc.value.errors == [(field, "required field is missing")]
    with raises_naming(field):
        parse_envelope(json.dumps(data).encode())


@pytest.mark.parametrize("field", ["user_message_id", "event_type"])
def test_event_without_required_field_is_rejected(field: str):
    data = golden("ack.json")
    del data[field]

    with raises_naming(field) as exc:
        Event.from_json(json.dumps(data).encode())

    assert error_fields(exc) == [field]


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("to_addr", 27820000001),
        ("from_addr", None),
        ("transport_type", ["sms"]),
        ("content", 5),
        ("message_id", None),
        ("in_reply_to", {"id": "x"}),
        ("helper_metadata", "x"),
        ("routing_metadata", None),
        ("transport_metadata", []),
        ("message_version", 20110921),
    ],
)
def test_message_field_of_wrong_type_is_rejected(field: str, bad: object):
    data = {**golden("user_message.json"), field: bad}

    with raises_naming(field) as exc:
        Message.from_json(json.dumps(data).encode())

    assert error_fields(exc) == [field]
    with raises_naming(field):
        Message.deserialise(data)


@pytest.mark.parametrize(
    ("field", "bad"),
    [("user_message_id", 42), ("sent_message_id", 42), ("event_id", None), ("helper_metadata", 1)],
)
def test_event_field_of_wrong_type_is_rejected(field: str, bad: object):
    data = {**golden("ack.json"), field: bad}

    with raises_naming(field) as exc:
        Event.from_json(json.dumps(data).encode())

    assert error_fields(exc) == [field]


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("session_event", "open"),
        ("session_event", 1),
        ("to_addr_type", "email"),
        ("from_addr_type", "MSISDN"),
    ],
)
def test_message_with_bad_enum_value_is_rejected(field: str, bad: object):
    data = {**golden("user_message.json"), field: bad}

    with raises_naming(field) as exc:
        Message.from_json(json.dumps(data).encode())

    assert repr(bad) in str(exc.value)


@pytest.mark.parametrize(
    ("fixture", "field", "bad"),
    [("ack.json", "event_type", "read"), ("delivery_report.json", "delivery_status", "lost")],
)
def test_event_with_bad_enum_value_is_rejected(fixture: str, field: str, bad: str):
    data = {**golden(fixture), field: bad}

    with raises_naming(field) as exc:
        Event.from_json(json.dumps(data).encode())

    assert repr(bad) in str(exc.value)


def test_event_without_sent_message_id_for_ack_is_rejected():
    data = {**golden("ack.json"), "sent_message_id": None}

    with raises_naming("sent_message_id") as exc:
        Event.from_json(json.dumps(data).encode())

    assert exc.value.errors == [("sent_message_id", "required when event_type is 'ack'")]


def test_event_without_nack_reason_for_nack_is_rejected():
    data = golden("nack.json")
    del data["nack_reason"]

    with raises_naming("nack_reason"):
        Event.from_json(json.dumps(data).encode())
    with raises_naming("nack_reason"):
        parse_envelope(json.dumps(data).encode())


def test_event_without_delivery_status_for_delivery_report_is_rejected():
    data = {**golden("delivery_report.json"), "delivery_status": None}

    with raises_naming("delivery_status"):
        Event.deserialise(data)


def test_message_reader_rejects_an_event_by_its_message_type():
    with raises_naming("message_type") as exc:
        Message.from_json(golden_bytes("ack.json"))

    assert "'event'" in str(exc.value)


def test_event_reader_rejects_a_user_message_by_its_message_type():
    with raises_naming("message_type"):
        Event.from_json(golden_bytes("user_message.json"))


@pytest.mark.parametrize("bad", ["delivery", "", None, 1])
def test_parse_envelope_rejects_unknown_message_type(bad: object):
    data = {**golden("user_message.json"), "message_type": bad}

    with raises_naming("message_type") as exc:
        parse_envelope(json.dumps(data).encode())

    assert exc.value.errors == [
        ("message_type", f"should be 'user_message' or 'event', got {bad!r}")
    ]


def test_parse_envelope_rejects_missing_message_type():
    data = golden("user_message.json")
    del data["message_type"]

    with raises_naming("message_type"):
        parse_envelope(json.dumps(data).encode())


def test_invalid_envelope_says_which_kind_of_envelope_was_bad():
    data = {**golden("ack.json"), "event_type": "read"}

    with pytest.raises(InvalidEnvelope, match=r"^invalid event: event_type: "):
        parse_envelope(json.dumps(data).encode())


def test_invalid_envelope_lists_every_problem():
    data = {**golden("user_message.json"), "to_addr": 1, "session_event": "open"}
    del data["from_addr"]

    with pytest.raises(InvalidEnvelope) as exc:
        Message.deserialise(data)

    assert sorted(error_fields(exc)) == ["from_addr", "session_event", "to_addr"]


def test_bad_values_given_in_code_raise_invalid_envelope_too():
    with raises_naming("session_event"):
        make_message(session_event="open")
    with raises_naming("transport_name"):
        Message(to_addr="a", from_addr="b", transport_type="sms")  # type: ignore[call-arg]
    with raises_naming("sent_message_id"):
        Event(user_message_id="abc", event_type=EventType.ACK)


# ---------------------------------------------------------------------------------------
# Event constructors


def test_ack_is_built_from_a_message_or_its_id():
    msg = make_message()

    from_message = Event.ack(msg, sent_message_id="provider-1")
    from_id = Event.ack(msg.message_id, sent_message_id="provider-1")

    for event in (from_message, from_id):
        assert event.user_message_id == msg.message_id
        assert event.event_type is EventType.ACK
        assert event.sent_message_id == "provider-1"
        assert re.fullmatch(r"[0-9a-f]{32}", event.event_id)
    assert from_message.event_id != from_id.event_id


def test_nack_carries_its_reason():
    event = Event.nack(make_message(), reason="no route", transport_metadata={"code": 404})

    assert (event.event_type, event.nack_reason) == (EventType.NACK, "no route")
    assert event.transport_metadata == {"code": 404}


def test_delivery_report_takes_status_as_enum_or_string():
    assert Event.delivery_report("abc", "delivered").delivery_status is DeliveryStatus.DELIVERED
    assert Event.delivery_report("abc", DeliveryStatus.PENDING).serialise()["delivery_status"] == (
        "pending"
    )
    with raises_naming("delivery_status"):
        Event.delivery_report("abc", "lost")


def test_built_events_round_trip_through_parse_envelope():
    msg = make_message()
    for event in (
        Event.ack(msg, "s1"),
        Event.nack(msg, "busy"),
        Event.delivery_report(msg, DeliveryStatus.FAILED),
    ):
        assert parse_envelope(event.to_json()) == event


# ---------------------------------------------------------------------------------------
# Replies


def test_reply_swaps_addresses_and_points_at_the_original():
    msg = make_message(
        to_addr_type="msisdn",
        provider="MTN",
        group="#help",
        session_event="new",
    )

    reply = msg.reply("hi back")

    assert (reply.to_addr, reply.from_addr) == (msg.from_addr, msg.to_addr)
    assert (reply.to_addr_type, reply.from_addr_type) == (None, AddressType.MSISDN)
    assert reply.in_reply_to == msg.message_id
    assert reply.message_id != msg.message_id
    assert reply.content == "hi back"
    assert (reply.transport_name, reply.transport_type) == (msg.transport_name, "sms")
    assert (reply.provider, reply.group) == ("MTN", "#help")


def test_reply_resumes_the_session_by_default_and_can_close_it():
    msg = make_message(session_event="new")

    assert msg.reply("more?").session_event is SessionEvent.RESUME
    assert msg.reply("bye", session_event=SessionEvent.CLOSE).session_event is SessionEvent.CLOSE
    assert msg.reply("bye", session_event="close").session_event is SessionEvent.CLOSE
    assert msg.reply("sms", session_event=None).session_event is None


def test_reply_copies_metadata_without_sharing_it():
    msg = make_message(
        transport_metadata={"session_id": "s-1", "nested": {"a": 1}},
        helper_metadata={"tags": ["x"]},
        routing_metadata={"endpoint_name": "default"},
    )

    reply = msg.reply("ok")
    reply.transport_metadata["nested"]["a"] = 2
    reply.helper_metadata["tags"].append("y")

    assert msg.transport_metadata == {"session_id": "s-1", "nested": {"a": 1}}
    assert msg.helper_metadata == {"tags": ["x"]}
    assert reply.routing_metadata == {}


def test_reply_accepts_overrides_of_other_fields():
    reply = make_message().reply(
        content="ok", helper_metadata={"h": 1}, routing_metadata={"r": 2}, message_id="fixed"
    )

    assert (reply.helper_metadata, reply.routing_metadata) == ({"h": 1}, {"r": 2})
    assert reply.message_id == "fixed"


@pytest.mark.parametrize(
    "field",
    [
        "to_addr",
        "from_addr",
        "transport_name",
        "transport_type",
        "in_reply_to",
        "provider",
        "group",
        "transport_metadata",
    ],
)
def test_reply_refuses_to_override_what_makes_it_a_reply(field: str):
    with pytest.raises(TypeError, match=rf"may not override {field}\b"):
        make_message().reply("x", **{field: "other"})


def test_reply_refuses_unknown_keywords():
    with pytest.raises(TypeError, match="unexpected keyword arguments: colour"):
        make_message().reply("x", colour="blue")


def test_reply_with_a_bad_value_raises_invalid_envelope():
    with raises_naming("content"):
        make_message().reply(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[" + b"1," * 50_000 + b"0]", "an array"),
        (b'  "' + b"x" * 100_000 + b'"', "a string"),
        ("[" + "1," * 50_000 + "0]", "an array"),
    ],
)
def test_a_long_body_that_is_no_object_is_refused_unread(body: bytes | str, kind: str):
    # Poison of a megabyte is refused by its first bytes, not parsed whole.
    for read in (Message.from_json, Event.from_json, parse_envelope):
        with raises_naming("envelope") as raised:
            read(body)
        assert f"got what opens as {kind} ({len(body)} bytes)" in str(raised.value)
    # A long object is still read, and judged on what it holds.
    with raises_naming("to_addr"):
        Message.from_json(json.dumps({"content": "x" * 100_000}).encode())
