"""``Rebinder``: bound again after every end, with a growing wait between failures."""

from __future__ import annotations

import itertools

import pytest
import structlog
import trio

from tests.transports.smpp.conftest import Inbox, esme_settings
from tests.transports.smpp.smsc import FakeSmsc
from vumi_like.transports.outcomes import ProviderUnavailable
from vumi_like.transports.smpp.pdus import SubmitSm
from vumi_like.transports.smpp.rebind import Rebinder

HELLO = SubmitSm("1234", "27820000001", b"hello")


async def test_binds_again_after_the_smsc_drops_the_connection(smsc: FakeSmsc, inbox: Inbox):
    states: list[bool] = []
    rebinder = Rebinder(
        esme_settings(smsc), inbox, backoff_base=0.01, on_state_change=states.append
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(rebinder.run)
            first = await rebinder.wait_bound()
            assert rebinder.bound
            await smsc.drop_connections()
            await smsc.wait_until(lambda: len(smsc.binds) == 2)
            second = await rebinder.wait_bound()
            assert second is not first
            assert not first.bound
            resp = await rebinder.submit_sm(HELLO)
            nursery.cancel_scope.cancel()
    assert resp.message_id == smsc.message_ids[0]
    assert states == [True, False, True, False]
    assert smsc.unbinds == 1  # cancelling run unbound the session it had
    assert not rebinder.bound


async def test_binds_again_after_the_smsc_unbinds(smsc: FakeSmsc, inbox: Inbox):
    rebinder = Rebinder(esme_settings(smsc), inbox, backoff_base=0.01)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(rebinder.run)
            await rebinder.wait_bound()
            await smsc.unbind()
            await smsc.wait_until(lambda: len(smsc.binds) == 2)
            await rebinder.wait_bound()
            assert rebinder.last_error == "the SMSC unbound"
            nursery.cancel_scope.cancel()


async def test_without_a_session_submits_are_provider_unavailable_until_it_binds(
    smsc: FakeSmsc, inbox: Inbox
):
    smsc.bind_status = 0x0D  # ESME_RBINDFAIL
    rebinder = Rebinder(esme_settings(smsc), inbox, backoff_base=0.01, backoff_max=0.02)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(rebinder.run)
            await smsc.wait_until(lambda: len(smsc.bind_times) >= 2)
            with pytest.raises(ProviderUnavailable, match="ESME_RBINDFAIL"):
                await rebinder.submit_sm(HELLO)
            smsc.bind_status = None
            await rebinder.wait_bound()
            assert (await rebinder.submit_sm(HELLO)).command_status == 0
            nursery.cancel_scope.cancel()


async def test_failed_binds_are_spaced_by_a_growing_capped_delay(smsc: FakeSmsc, inbox: Inbox):
    smsc.bind_status = 0x0D
    rebinder = Rebinder(esme_settings(smsc), inbox, backoff_base=0.02, backoff_max=0.04)
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(rebinder.run)
            await smsc.wait_until(lambda: len(smsc.bind_times) == 7)
            nursery.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in itertools.pairwise(smsc.bind_times)]
    assert len(gaps) == 6
    least = [0.02, 0.04, 0.04, 0.04, 0.04, 0.04]
    assert all(gap >= wait - 0.002 for gap, wait in zip(gaps, least, strict=True)), gaps
    assert gaps[-1] < 0.4, gaps  # uncapped, the sixth wait would be 0.64 s
    assert [entry["event"] for entry in logs].count("smpp bind failed") >= 6


async def test_a_bind_resets_the_delay(smsc: FakeSmsc, inbox: Inbox):
    smsc.bind_status = 0x0D
    rebinder = Rebinder(esme_settings(smsc), inbox, backoff_base=0.01, backoff_max=10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(rebinder.run)
            await smsc.wait_until(lambda: len(smsc.bind_times) == 5)  # waits 0.01 .. 0.08
            smsc.bind_status = None
            await rebinder.wait_bound()
            dropped_at = trio.current_time()
            await smsc.drop_connections()
            await smsc.wait_until(lambda: len(smsc.binds) == 2)
            # Not reset, this wait would be 0.01 * 2**6 = 0.64 s.
            assert smsc.bind_times[-1] - dropped_at < 0.4
            nursery.cancel_scope.cancel()


async def test_bad_credentials_are_logged_as_an_error(smsc: FakeSmsc, inbox: Inbox):
    settings = esme_settings(smsc, password="wrong")
    rebinder = Rebinder(settings, inbox, backoff_base=0.01)
    with trio.fail_after(5), structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(rebinder.run)
            await smsc.wait_until(lambda: len(smsc.bind_times) >= 2)
            nursery.cancel_scope.cancel()
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert errors[0]["event"] == "smpp bind refused: check system_id and password"
    assert "ESME_RINVPASWD" in str(errors[0]["reason"])
    assert "ESME_RINVPASWD" in (rebinder.last_error or "")
