"""The ESME session against the fake SMSC over real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
import trio
import trustme

from tests.transports.smpp.conftest import Inbox, esme_settings
from tests.transports.smpp.smsc import (
    GARBAGE,
    FakeSmsc,
    SmscConnection,
    SubmitAction,
    start_fake_smsc,
)
from vumi_like.transports.outcomes import PermanentFailure, ProviderUnavailable, TemporaryFailure
from vumi_like.transports.smpp.encoding import encode_text
from vumi_like.transports.smpp.esme import (
    BadCredentials,
    BindFailed,
    BindMode,
    BindRefused,
    EsmeSettings,
    ResponseTimeout,
    SessionClosed,
    open_session,
)
from vumi_like.transports.smpp.framing import Frame, encode_pdu
from vumi_like.transports.smpp.pdus import DeliverSm, SubmitSm
from vumi_like.transports.smpp.receipts import parse_receipt
from vumi_like.transports.smpp.statuses import submit_sm_outcome

HELLO = SubmitSm("1234", "27820000001", b"hello", registered_delivery=1, dest_addr_ton=1)


def lost_sessions(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "smpp session lost"]


# -- binding -------------------------------------------------------------------------------


async def test_submit_sm_is_answered_with_the_smsc_message_id(smsc: FakeSmsc, inbox: Inbox):
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), inbox) as session:
            resp = await session.submit_sm(HELLO)
    assert submit_sm_outcome(resp) == smsc.message_ids[0]
    assert smsc.binds == ["transceiver"]
    assert smsc.submitted == [HELLO]


async def test_long_text_goes_as_one_submit_sm_per_part(smsc: FakeSmsc, inbox: Inbox):
    parts = encode_text("a" * 200, reference=5)
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), inbox) as session:
            for part in parts:
                await session.submit_sm(part.submit_sm(source_addr="1", destination_addr="2"))
    assert [submit.short_message for submit in smsc.submitted] == [
        part.short_message for part in parts
    ]
    assert {submit.esm_class for submit in smsc.submitted} == {0x40}


async def test_transmitter_and_receiver_bind_two_connections(smsc: FakeSmsc, inbox: Inbox):
    settings = esme_settings(smsc, bind_mode=BindMode.TRANSMITTER_RECEIVER)
    with trio.fail_after(5):
        async with open_session(settings, inbox) as session:
            assert smsc.binds == ["transmitter", "receiver"]
            resp = await session.submit_sm(HELLO)
            answer = await smsc.deliver(DeliverSm("27820000001", "1234", b"hi"))
            delivered = await inbox.get()
    assert resp.command_status == 0
    assert answer.command_name == "deliver_sm_resp"
    assert delivered.short_message == b"hi"


async def test_a_wrong_password_is_bad_credentials(smsc: FakeSmsc, inbox: Inbox):
    with trio.fail_after(5), pytest.raises(BadCredentials, match="ESME_RINVPASWD"):
        async with open_session(esme_settings(smsc, password="wrong"), inbox):
            pass
    assert smsc.binds == []


async def test_a_bind_refused_for_another_reason_is_not_bad_credentials(
    smsc: FakeSmsc, inbox: Inbox
):
    smsc.bind_status = 0x05  # ESME_RALYBND: the account's binds are all taken
    with trio.fail_after(5), pytest.raises(BindRefused) as caught:
        async with open_session(esme_settings(smsc), inbox):
            pass
    assert not isinstance(caught.value, BadCredentials)
    assert caught.value.status == 0x05


async def test_the_second_bind_of_transmitter_and_receiver_refused_closes_the_first(
    smsc: FakeSmsc, inbox: Inbox
):
    settings = esme_settings(smsc, bind_mode=BindMode.TRANSMITTER_RECEIVER)
    original = smsc._bind

    async def refuse_receivers(connection: SmscConnection, frame: Frame) -> None:
        if frame.command_name == "bind_receiver":
            smsc.bind_status = 0x0D
        await original(connection, frame)

    smsc._bind = refuse_receivers  # type: ignore[method-assign]
    with trio.fail_after(5):
        with pytest.raises(BindRefused, match="bind_receiver refused"):
            async with open_session(settings, inbox):
                pass
        await smsc.wait_until(lambda: not smsc.connections)


async def test_nothing_listening_is_bind_failed(inbox: Inbox):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings = esme_settings(FakeSmsc(), port=port)
    with trio.fail_after(5), pytest.raises(BindFailed, match="cannot connect"):
        async with open_session(settings, inbox):
            pass


async def test_a_bind_never_answered_times_out(nursery: trio.Nursery, inbox: Inbox):
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def say_nothing(stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    nursery.start_soon(trio.serve_listeners, say_nothing, listeners)
    settings = esme_settings(FakeSmsc(), port=port, response_timeout=0.2)
    with trio.fail_after(5), pytest.raises(BindFailed, match="no answer to bind_transceiver"):
        async with open_session(settings, inbox):
            pass


async def test_binds_over_tls(nursery: trio.Nursery, inbox: Inbox):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    smsc = await start_fake_smsc(nursery, ssl_context=server_context)
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc, ssl_context=client_context), inbox) as session:
            resp = await session.submit_sm(HELLO)
    assert resp.command_status == 0
    assert smsc.submitted == [HELLO]


async def test_tls_with_an_untrusted_certificate_is_bind_failed(
    nursery: trio.Nursery, inbox: Inbox
):
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)
    smsc = await start_fake_smsc(nursery, ssl_context=server_context)
    settings = esme_settings(smsc, ssl_context=ssl.create_default_context())
    with trio.fail_after(5), pytest.raises(BindFailed, match="CERTIFICATE_VERIFY_FAILED"):
        async with open_session(settings, inbox):
            pass


# -- keeping the link alive ----------------------------------------------------------------


async def test_enquire_link_is_sent_every_interval(smsc: FakeSmsc, inbox: Inbox):
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc, enquire_link_interval=0.05), inbox) as s:
            await smsc.wait_until(lambda: smsc.enquire_links >= 3)
            assert s.bound


async def test_an_unanswered_enquire_link_ends_the_session(smsc: FakeSmsc, inbox: Inbox):
    smsc.answer_enquire_link = False
    settings = esme_settings(smsc, enquire_link_interval=0.05, response_timeout=0.2)
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with open_session(settings, inbox) as session:
            reason = await session.wait_closed()
            with pytest.raises(SessionClosed):
                await session.submit_sm(HELLO)
    assert "no response to enquire_link within 0.2 s" in reason
    assert len(lost_sessions(logs)) == 1


async def test_the_smsc_enquire_link_is_answered(smsc: FakeSmsc, inbox: Inbox):
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), inbox):
            resp = await smsc.send_enquire_link()
    assert (resp.command_name, resp.command_status) == ("enquire_link_resp", 0)


# -- the window and responses --------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 10])
async def test_no_more_than_window_submits_wait_at_the_smsc(
    nursery: trio.Nursery, inbox: Inbox, window: int
):
    smsc = await start_fake_smsc(nursery, response_delay=0.01)
    results = []
    with trio.fail_after(10):
        async with open_session(esme_settings(smsc, window=window), inbox) as session:

            async def submit() -> None:
                results.append(submit_sm_outcome(await session.submit_sm(HELLO)))
                assert session.outstanding <= window

            async with trio.open_nursery() as submitters:
                for _ in range(4 * window + 5):
                    submitters.start_soon(submit)
    assert smsc.max_outstanding == window
    assert sorted(results) == sorted(smsc.message_ids)
    assert len(results) == 4 * window + 5


async def test_an_unanswered_submit_times_out_and_frees_its_slot(smsc: FakeSmsc, inbox: Inbox):
    smsc.submit_actions.append(SubmitAction.HANG)
    settings = esme_settings(smsc, window=1, response_timeout=0.2)
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with open_session(settings, inbox) as session:
            with pytest.raises(ResponseTimeout, match="no response to submit_sm") as caught:
                await session.submit_sm(HELLO)
            assert isinstance(caught.value, TemporaryFailure)
            resp = await session.submit_sm(HELLO)
            assert session.bound
    assert resp.message_id == smsc.message_ids[0]
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "smpp submit_sm unanswered"
    ]


async def test_throttling_is_a_temporary_failure(smsc: FakeSmsc, inbox: Inbox):
    smsc.submit_actions.append(SubmitAction.THROTTLE)
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), inbox) as session:
            resp = await session.submit_sm(HELLO)
    assert (resp.command_status, resp.message_id) == (0x58, None)
    with pytest.raises(TemporaryFailure, match="ESME_RTHROTTLED"):
        submit_sm_outcome(resp)


async def test_an_invalid_destination_is_a_permanent_failure(smsc: FakeSmsc, inbox: Inbox):
    smsc.submit_actions.append(0x0B)
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), inbox) as session:
            resp = await session.submit_sm(HELLO)
    with pytest.raises(PermanentFailure, match="ESME_RINVDSTADR"):
        submit_sm_outcome(resp)


async def test_a_submit_that_cannot_be_encoded_is_a_permanent_failure(
    smsc: FakeSmsc, inbox: Inbox
):
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), inbox) as session:
            with pytest.raises(PermanentFailure, match="cannot encode submit_sm"):
                await session.submit_sm(SubmitSm("1234", "2" * 40, b"hi"))
            assert session.outstanding == 0
            assert session.bound
    assert smsc.submitted == []


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (SubmitAction.CLOSE_MID_PDU, "connection closed after"),
        (SubmitAction.GARBAGE, "command_length 1195725856 outside"),
    ],
)
async def test_a_broken_stream_while_a_submit_waits_is_provider_unavailable(
    smsc: FakeSmsc, inbox: Inbox, action: SubmitAction, reason: str
):
    smsc.submit_actions.append(action)
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with open_session(esme_settings(smsc), inbox) as session:
            with pytest.raises(SessionClosed, match=reason) as caught:
                await session.submit_sm(HELLO)
            assert isinstance(caught.value, ProviderUnavailable)
            assert not session.bound
    [lost] = lost_sessions(logs)
    assert reason in str(lost["reason"])


async def test_the_connection_dropped_while_a_submit_waits_is_provider_unavailable(
    smsc: FakeSmsc, inbox: Inbox
):
    smsc.submit_actions.append(SubmitAction.HANG)

    async def drop_once_submitted() -> None:
        await smsc.wait_until(lambda: len(smsc.submitted) == 1)
        await smsc.drop_connections()

    with trio.fail_after(5):
        async with (
            open_session(esme_settings(smsc), inbox) as session,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(drop_once_submitted)
            with pytest.raises(SessionClosed, match="closed the transceiver connection"):
                await session.submit_sm(HELLO)


async def test_submits_waiting_for_the_window_fail_when_the_session_ends(
    smsc: FakeSmsc, inbox: Inbox
):
    smsc.submit_actions.extend([SubmitAction.HANG, SubmitAction.HANG])
    failures: list[Exception] = []
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc, window=1), inbox) as session:

            async def submit() -> None:
                try:
                    await session.submit_sm(HELLO)
                except SessionClosed as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(submit)
                await smsc.wait_until(lambda: len(smsc.submitted) == 1)
                await smsc.drop_connections()
    assert len(failures) == 3
    assert len(smsc.submitted) == 1


async def test_a_receipt_before_the_submit_sm_resp_reaches_the_callback(
    smsc: FakeSmsc, inbox: Inbox
):
    smsc.submit_actions.append(SubmitAction.RECEIPT_FIRST)
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), inbox) as session:
            resp = await session.submit_sm(HELLO)
            delivered = await inbox.get()
    parsed = parse_receipt(delivered)
    assert parsed is not None
    assert parsed.message_id == resp.message_id == smsc.message_ids[0]


# -- inbound --------------------------------------------------------------------------------


async def test_inbound_is_answered_only_after_the_callback_returns(smsc: FakeSmsc):
    entered, release = trio.Event(), trio.Event()
    order: list[str] = []

    async def slow(deliver: DeliverSm) -> None:
        entered.set()
        await release.wait()
        order.append("handled")

    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), slow), trio.open_nursery() as nursery:

            async def deliver() -> None:
                answer = await smsc.deliver(DeliverSm("27820000001", "1234", b"hi"))
                order.append(f"answered {answer.command_status}")

            nursery.start_soon(deliver)
            await entered.wait()
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert order == []
            release.set()
    assert order == ["handled", "answered 0"]


async def test_a_failing_callback_asks_the_smsc_to_redeliver(smsc: FakeSmsc):
    calls: list[bytes] = []

    async def fail_first(deliver: DeliverSm) -> None:
        calls.append(deliver.short_message)
        if len(calls) == 1:
            raise RuntimeError("store unavailable")

    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with open_session(esme_settings(smsc), fail_first) as session:
            first = await smsc.deliver(DeliverSm("27820000001", "1234", b"one"))
            second = await smsc.deliver(DeliverSm("27820000001", "1234", b"one"))
            assert session.bound
    assert (first.command_name, first.command_status) == ("deliver_sm_resp", 0x64)
    assert second.command_status == 0
    assert calls == [b"one", b"one"]
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "smpp inbound handler failed; the SMSC will deliver it again"
    ]


async def test_data_sm_is_delivered_and_answered_with_data_sm_resp(smsc: FakeSmsc, inbox: Inbox):
    data_sm = DeliverSm("27820000001", "1234", command="data_sm", message_payload=b"hi")
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), inbox):
            answer = await smsc.deliver(data_sm)
            delivered = await inbox.get()
    assert (answer.command_name, answer.command_status) == ("data_sm_resp", 0)
    assert delivered == data_sm


async def test_an_unknown_command_gets_generic_nack_and_the_session_goes_on(
    smsc: FakeSmsc, inbox: Inbox
):
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with open_session(esme_settings(smsc), inbox) as session:
            answer = await smsc.send_unknown_command()
            assert (await session.submit_sm(HELLO)).command_status == 0
    assert (answer.command_name, answer.command_status) == ("generic_nack", 0x03)
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "smpp unsupported command answered with generic_nack"
    ]


async def test_an_undecodable_deliver_sm_is_refused_and_the_session_goes_on(
    smsc: FakeSmsc, inbox: Inbox
):
    def with_unexpected_tlv(sequence: int) -> bytes:
        pdu = encode_pdu(DeliverSm("27820000001", "1234", b"hi").to_pdu(sequence))
        pdu += struct.pack("!HHB", 0x0501, 1, 0)  # ussd_service_op: not in a deliver_sm
        return struct.pack("!I", len(pdu)) + pdu[4:]

    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with open_session(esme_settings(smsc), inbox) as session:
            answer = await smsc.request(with_unexpected_tlv)
            fine = await smsc.deliver(DeliverSm("27820000001", "1234", b"fine"))
            assert (await inbox.get()).short_message == b"fine"
            assert session.bound
    assert (answer.command_name, answer.command_status) == ("deliver_sm_resp", 0xC1)
    assert fine.command_status == 0
    assert inbox.empty()
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "smpp undecodable pdu refused"
    ]


async def test_garbage_from_the_smsc_ends_the_session_with_one_log_line(
    smsc: FakeSmsc, inbox: Inbox
):
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with open_session(esme_settings(smsc), inbox) as session:
            await smsc.send_raw(GARBAGE)
            reason = await session.wait_closed()
    assert "command_length" in reason
    assert len([entry for entry in logs if entry["log_level"] != "info"]) == 1


# -- ending ---------------------------------------------------------------------------------


async def test_an_unbind_from_the_smsc_is_answered_and_ends_the_session(
    smsc: FakeSmsc, inbox: Inbox
):
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with open_session(esme_settings(smsc), inbox) as session:
            await smsc.unbind()
            assert await session.wait_closed() == "the SMSC unbound"
            with pytest.raises(SessionClosed):
                await session.submit_sm(HELLO)
        await smsc.wait_until(lambda: not smsc.connections)
    assert lost_sessions(logs) == []


async def test_leaving_the_block_unbinds(smsc: FakeSmsc, inbox: Inbox):
    with trio.fail_after(5):
        async with open_session(esme_settings(smsc), inbox) as session:
            pass
        assert smsc.unbinds == 1
        assert await session.wait_closed() == "unbound"
        await smsc.wait_until(lambda: not smsc.connections)


async def test_a_cancelled_block_still_unbinds_promptly(smsc: FakeSmsc, inbox: Inbox):
    settings = esme_settings(smsc, unbind_timeout=10)
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with open_session(settings, inbox):
                scope.cancel()
                await trio.sleep_forever()
        assert smsc.unbinds == 1


async def test_an_exception_in_the_block_comes_out_as_it_was_raised(smsc: FakeSmsc, inbox: Inbox):
    with trio.fail_after(5), pytest.raises(KeyError, match="mine"):
        async with open_session(esme_settings(smsc), inbox):
            raise KeyError("mine")
    assert smsc.unbinds == 1


async def test_a_cancellation_at_any_point_of_binding_leaves_nothing_running(
    smsc: FakeSmsc, inbox: Inbox
):
    # Cancelled a little later each time, from just after the SMSC accepted the bind:
    # whichever step of open_session it lands in must end promptly, its socket closed.
    for ticks in range(30):
        with trio.fail_after(3):
            async with trio.open_nursery() as nursery:

                async def open_and_wait() -> None:
                    async with open_session(esme_settings(smsc, unbind_timeout=10), inbox):
                        await trio.sleep_forever()

                binds = len(smsc.binds)
                nursery.start_soon(open_and_wait)
                await smsc.wait_until(lambda: len(smsc.binds) > binds)  # noqa: B023
                for _ in range(ticks):
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
            await smsc.wait_until(lambda: not smsc.connections)


def test_settings_refuse_values_smpp_cannot_carry():
    with pytest.raises(ValueError, match="password is longer than 8"):
        EsmeSettings("127.0.0.1", 2775, system_id="esme", password="much too long")
    with pytest.raises(ValueError, match="addr_ton 0x9 is not defined"):
        EsmeSettings("127.0.0.1", 2775, system_id="esme", password="x", addr_ton=9)
    with pytest.raises(ValueError, match="window"):
        EsmeSettings("127.0.0.1", 2775, system_id="esme", password="x", window=0)
    assert "secret" not in repr(EsmeSettings("h", 1, system_id="esme", password="secret"))
