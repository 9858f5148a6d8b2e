"""What a submit_sm_resp's command_status means for the message."""

from __future__ import annotations

import pytest

from vumi_like.transports.outcomes import PermanentFailure, TemporaryFailure
from vumi_like.transports.smpp.pdus import SubmitSmResp
from vumi_like.transports.smpp.statuses import describe_status, submit_sm_outcome


def test_esme_rok_gives_the_message_id():
    assert submit_sm_outcome(SubmitSmResp(0, "abc")) == "abc"
    assert submit_sm_outcome(SubmitSmResp(0, None)) == ""


@pytest.mark.parametrize("status", [0x58, 0x14, 0x08, 0x45, 0x64, 0xFE, 0xFF, 0x04])
def test_transient_statuses_are_temporary_failures(status: int):
    with pytest.raises(TemporaryFailure) as caught:
        submit_sm_outcome(SubmitSmResp(status, None))
    assert not isinstance(caught.value, PermanentFailure)
    assert f"0x{status:08X}" in caught.value.reason


@pytest.mark.parametrize("status", [0x0A, 0x0B, 0x43, 0x48, 0x50, 0x51, 0x65, 0x66, 0x401])
def test_other_statuses_are_permanent_failures(status: int):
    with pytest.raises(PermanentFailure):
        submit_sm_outcome(SubmitSmResp(status, None))


def test_a_vendor_status_can_be_declared_temporary():
    with pytest.raises(TemporaryFailure):
        submit_sm_outcome(SubmitSmResp(0x401, None), temporary={0x401})


def test_statuses_are_described_by_name_or_by_number():
    assert describe_status(0x58).startswith("ESME_RTHROTTLED (0x00000058): Throttling error")
    assert describe_status(0x0B) == "ESME_RINVDSTADR (0x0000000B): Invalid Dest Addr"
    assert describe_status(0x401) == "command_status 0x00000401"
