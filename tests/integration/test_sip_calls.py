"""Calls go where the routes say: to another phone, to the provider without the 9, 911 as dialled,
and nowhere for a caller without credentials."""

from __future__ import annotations

import pytest

from tests.harness import sipp
from tests.harness.containers import PbxStack, poll

pytestmark = pytest.mark.integration


def test_extension_calls_another_extension_and_that_phone_itself_answers(live_pbx: PbxStack) -> None:
    port = live_pbx.pbx.sip_port
    with sipp.answering_phone("4002", live_pbx.password("4002"), port) as phone:
        result = sipp.call("4001", live_pbx.password("4001"), "4002", port, hold_s=1)

        # 4002's own phone answered (a 200 from voicemail would leave answered_calls() empty)
        assert result.answered, result.describe()
        assert result.ok, result.describe()
        assert len(phone.answered_calls()) == 1
        # the PBX forwards the caller's BYE to 4002 after answering the caller: wait for it
        assert poll(lambda: phone.hung_up_calls() == phone.answered_calls(), timeout_s=10)


def test_nine_plus_a_number_reaches_the_provider_without_the_nine(provider_inbox: PbxStack) -> None:
    stack = provider_inbox

    result = sipp.call("4001", stack.password("4001"), "91234567890", stack.pbx.sip_port, hold_s=0.5)

    assert result.ok, result.describe()
    assert stack.provider.received_numbers() == ["1234567890"]


@pytest.mark.parametrize("number", ["911", "112"])
def test_an_emergency_number_reaches_the_provider_as_dialled(provider_inbox: PbxStack, number: str) -> None:
    stack = provider_inbox

    result = sipp.call("4001", stack.password("4001"), number, stack.pbx.sip_port, hold_s=0.5)

    assert result.ok, result.describe()
    assert stack.provider.received_numbers() == [number]


@pytest.mark.parametrize("user", ["hacker", "4001"])
def test_an_unauthenticated_call_out_is_refused_and_never_reaches_the_provider(
    provider_inbox: PbxStack, user: str
) -> None:
    stack = provider_inbox

    result = sipp.invite_without_auth("91234567890", stack.pbx.sip_port, user=user)

    assert result.final_status("INVITE") in (401, 403, 404, 407), result.describe()
    assert 200 not in result.final_statuses("INVITE"), result.describe()
    # a call let through would reach the provider within milliseconds; allow it 2 s to show up
    assert stack.provider.wait_received(1, timeout_s=2) == []


def test_a_number_without_a_route_is_not_sent_to_the_provider(provider_inbox: PbxStack) -> None:
    stack = provider_inbox

    result = sipp.call("4001", stack.password("4001"), "5551234", stack.pbx.sip_port, hold_s=0.5)

    assert not result.answered, result.describe()
    assert stack.provider.wait_received(1, timeout_s=1) == []


def test_a_call_from_the_provider_to_the_did_rings_the_extension_of_the_inbound_route(
    live_pbx: PbxStack,
) -> None:
    port = live_pbx.pbx.sip_port
    assert live_pbx.pbx.wait_registered("fake_provider", timeout_s=20)
    with sipp.answering_phone("4000", live_pbx.password("4000"), port) as phone:
        # the provider calls the DID on the PBX's registered contact, as a real provider would
        live_pbx.provider.cli("channel originate PJSIP/+34910000000@pbxtrunk application Wait 2")

        assert phone.wait_answered(1, timeout_s=15), live_pbx.pbx.log_tail(30)
        assert poll(lambda: phone.hung_up_calls() == phone.answered_calls(), timeout_s=15)
