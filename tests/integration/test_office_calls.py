"""Office features on a real Asterisk, driven by SIPp phones: ring groups (ring all, hunt), several
devices of one extension, group and directed pickup, busy lamps, and forwards and do-not-disturb
set in desired/ or from the phone with feature codes.

One PBX per module; each test applies the desired state it needs (an unchanged state is a no-op)
and starts with no phone-set forwards or DND (AstDB wiped) and no call up. Calls come from 4000.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from reconciler.observe.status import collect_status
from tests.harness import blf, calls, office, sipp
from tests.harness.calls import Pause
from tests.harness.containers import PbxStack, poll

pytestmark = pytest.mark.integration

CALLER = "4000"
RING_ALL = {"number": "600", "name": "Sales", "members": ["4001", "4002"], "strategy": "ringall"}
HUNT = {
    "number": "601",
    "name": "Support",
    "members": ["4001", "4002"],
    "strategy": "hunt",
    "ring_seconds": 5,
    "fallback": "hangup",
}
PICKUP = {"4001": {"pickup_group": "sales"}, "4002": {"pickup_group": "sales"}}
YAML_FORWARDS = {
    "4001": {"forward": {"always": "extension:4002"}},
    "4003": {"dnd": True, "forward": {"busy": "extension:4002"}},
}


def apply(
    stack: PbxStack,
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
    ring_groups: tuple[Mapping[str, Any], ...] = (),
) -> None:
    """Make `extensions`' fields and `ring_groups` the live desired state (the rest as usual)."""
    office.write_office_desired(stack, extensions=extensions, ring_groups=ring_groups)
    stack.apply()


@pytest.fixture(scope="module")
def office_pbx(pbx_stack: PbxStack) -> PbxStack:
    """The module's PBX with every feature of this module applied once."""
    office.write_office_desired(
        pbx_stack, extensions={**PICKUP, "4003": {"devices": 2}}, ring_groups=(RING_ALL, HUNT)
    )
    result = pbx_stack.apply()
    assert not result.unchanged, "the first apply to an empty PBX must change something"
    pbx_stack.pbx.verify_owns_sip_port()
    return pbx_stack


@pytest.fixture
def pbx(office_pbx: PbxStack) -> Iterator[PbxStack]:
    """The module's PBX with no phone-set forward or DND and no call left from an earlier test."""
    office.forget_phone_settings(office_pbx)
    assert poll(lambda: office_pbx.pbx.channel_count() == 0, timeout_s=15), office_pbx.pbx.cli(
        "core show channels"
    )
    yield office_pbx


def dial(stack: PbxStack, ext: str, number: str) -> sipp.SippResult:
    """A feature code dialled from `ext`: answered, a beep, and the PBX hangs up."""
    return calls.scripted_call(
        ext, stack.password(ext), number, stack.pbx.sip_port, (), hangup="pbx", timeout_s=10
    )


def call_from_caller(stack: PbxStack, number: str) -> sipp.SippResult:
    """4000 calls `number`, holds 1 s after the answer and hangs up."""
    return sipp.call(CALLER, stack.password(CALLER), number, stack.pbx.sip_port, hold_s=1)


def state_index(watcher: blf.Watcher, state: str, start: int, timeout_s: float = 10.0) -> int | None:
    """Index of the first NOTIFY at or after `start` whose dialog state is `state` (None: none came)."""

    def find() -> int | None:
        states = watcher.dialog_states()
        return next((i for i in range(start, len(states)) if states[i] == state), None)

    found = poll(lambda: find() is not None, timeout_s)
    return find() if found else None


# --- ring groups --------------------------------------------------------------------------------


def test_a_call_to_a_ring_all_group_is_answered_by_one_member_and_the_other_members_phone_is_cancelled(
    pbx: PbxStack,
) -> None:
    apply(pbx, {**PICKUP, "4003": {"devices": 2}}, (RING_ALL, HUNT))
    port = pbx.pbx.sip_port
    with (
        sipp.answering_phone("4001", pbx.password("4001"), port) as answering,
        calls.ringing_phone("4002", pbx.password("4002"), port) as ringing,
    ):
        result = call_from_caller(pbx, "600")

        assert result.ok, result.describe()
        assert len(answering.answered_calls()) == 1, pbx.pbx.log_tail(40)
        assert len(ringing.invited_calls()) == 1, pbx.pbx.log_tail(40)
        assert poll(lambda: len(ringing.cancelled_calls()) == 1, timeout_s=10), ringing.events_file
        assert ringing.cancelled_calls() == ringing.invited_calls()


def test_a_hunt_group_rings_its_first_member_and_then_its_second(pbx: PbxStack) -> None:
    apply(pbx, {**PICKUP, "4003": {"devices": 2}}, (RING_ALL, HUNT))
    port = pbx.pbx.sip_port
    with (
        calls.ringing_phone("4001", pbx.password("4001"), port) as first,
        office.slow_answering_phone("4002", pbx.password("4002"), port, answer_after_s=0.5) as second,
        calls.background_call(CALLER, pbx.password(CALLER), "601", port, (Pause(1),), timeout_s=30) as caller,
    ):
        assert first.wait_invited(1, timeout_s=5), pbx.pbx.log_tail(40)
        # the first member rings alone for its 5 s
        assert second.invited_calls() == []
        assert second.wait_invited(1, timeout_s=10), pbx.pbx.log_tail(40)
        assert poll(lambda: first.cancelled_calls() == first.invited_calls(), timeout_s=5)
        result = caller.result()

        assert result.ok, result.describe()
        assert len(second.answered_calls()) == 1
        assert len(first.invited_calls()) == 1


# --- several devices of one extension -----------------------------------------------------------


def test_both_devices_of_an_extension_with_two_devices_ring_on_one_call(pbx: PbxStack) -> None:
    apply(pbx, {**PICKUP, "4003": {"devices": 2}}, (RING_ALL, HUNT))
    port = pbx.pbx.sip_port
    with (
        calls.ringing_phone("4003", pbx.password("4003"), port) as desk,
        sipp.answering_phone("4003", pbx.password("4003"), port) as soft,
    ):
        assert poll(lambda: len([c for c in pbx.pbx.contacts() if c.startswith("4003/")]) == 2, 10), (
            pbx.pbx.cli("pjsip show contacts")
        )

        result = call_from_caller(pbx, "4003")

        assert result.ok, result.describe()
        assert len(soft.answered_calls()) == 1
        assert len(desk.invited_calls()) == 1, pbx.pbx.log_tail(40)
        assert poll(lambda: desk.cancelled_calls() == desk.invited_calls(), timeout_s=10)


# --- pickup --------------------------------------------------------------------------------------


def picked_up_call(pbx: PbxStack, picker: str, code: str) -> tuple[sipp.SippResult, sipp.SippResult]:
    """4000 calls 4001 (a phone that only rings); once it rings, `picker` dials `code`.
    Returns (the caller's result, the picker's result); asserts 4001's phone was cancelled."""
    port = pbx.pbx.sip_port
    with (
        calls.ringing_phone("4001", pbx.password("4001"), port) as ringing,
        calls.background_call(
            CALLER, pbx.password(CALLER), "4001", port, (), hangup="pbx", timeout_s=20
        ) as caller,
    ):
        assert ringing.wait_invited(1, timeout_s=10), pbx.pbx.log_tail(40)
        picking = sipp.call(picker, pbx.password(picker), code, port, hold_s=1)
        result = caller.result()
        assert poll(lambda: ringing.cancelled_calls() == ringing.invited_calls(), timeout_s=10)
    return result, picking


def test_a_phone_of_the_pickup_group_answers_a_call_ringing_at_another_with_star_8(pbx: PbxStack) -> None:
    apply(pbx, {**PICKUP, "4003": {"devices": 2}}, (RING_ALL, HUNT))

    caller, picker = picked_up_call(pbx, "4002", "*8")

    assert picker.ok, f"{picker.describe()}\n{pbx.pbx.log_tail(40)}"
    # the caller was answered (by 4002) and hung up when 4002 did
    assert caller.answered, caller.describe()
    assert caller.requests_received("BYE") == 1, caller.describe()


def test_a_phone_outside_the_group_answers_the_call_ringing_at_an_extension_with_star_star_and_its_number(
    pbx: PbxStack,
) -> None:
    apply(pbx, {**PICKUP, "4003": {"devices": 2}}, (RING_ALL, HUNT))

    caller, picker = picked_up_call(pbx, "4004", "**4001")

    assert picker.ok, f"{picker.describe()}\n{pbx.pbx.log_tail(40)}"
    assert caller.answered, caller.describe()
    assert caller.requests_received("BYE") == 1, caller.describe()


# --- busy lamps ----------------------------------------------------------------------------------


def test_a_phone_watching_an_extension_sees_it_ringing_then_in_a_call_then_idle(pbx: PbxStack) -> None:
    apply(pbx, {**PICKUP, "4003": {"devices": 2}}, (RING_ALL, HUNT))
    port = pbx.pbx.sip_port
    with (
        office.slow_answering_phone("4001", pbx.password("4001"), port, answer_after_s=2) as phone,
        blf.watching("4002", pbx.password("4002"), "4001", port) as watcher,
    ):
        start = len(watcher.notifies())
        assert watcher.dialog_states()[-1] == "terminated", watcher.notifies()  # idle before the call

        with calls.background_call(
            CALLER, pbx.password(CALLER), "4001", port, (Pause(1),), timeout_s=20
        ) as caller:
            early = state_index(watcher, "early", start, timeout_s=5)
            assert early is not None, watcher.notifies()
            assert phone.answered_calls() == [], "the lamp must show the ringing before the answer"
            confirmed = state_index(watcher, "confirmed", early + 1)
            assert confirmed is not None, watcher.notifies()
            result = caller.result()

        assert result.ok, result.describe()
        assert state_index(watcher, "terminated", confirmed + 1) is not None, watcher.notifies()
        assert watcher.alive


# --- forward and do-not-disturb -----------------------------------------------------------------


def _call_rings_4002_and_never(pbx: PbxStack, ext: str) -> None:
    """With YAML_FORWARDS live, a call to `ext` is answered at 4002 and `ext`'s phone gets no INVITE."""
    apply(pbx, YAML_FORWARDS)
    port = pbx.pbx.sip_port
    with (
        calls.ringing_phone(ext, pbx.password(ext), port) as skipped,
        sipp.answering_phone("4002", pbx.password("4002"), port) as target,
    ):
        result = call_from_caller(pbx, ext)

        assert result.ok, result.describe()
        assert len(target.answered_calls()) == 1, pbx.pbx.log_tail(40)
        assert skipped.invited_calls() == []


def test_a_forward_always_in_desired_rings_its_target_instead_of_the_extension(pbx: PbxStack) -> None:
    _call_rings_4002_and_never(pbx, "4001")  # 4001: forward always → 4002


def test_an_extension_on_dnd_in_desired_sends_its_calls_to_its_busy_forward(pbx: PbxStack) -> None:
    _call_rings_4002_and_never(pbx, "4003")  # 4003: dnd, forward busy → 4002


def forward_always(stack: PbxStack, ext: str) -> dict[str, Any]:
    """`status`'s view of `ext`'s forward always (value, source, desired)."""
    status = collect_status(stack.settings(), stack.client())
    entry = next(e for e in status["extensions"] if e["number"] == ext)
    return entry["calls"]["forward_always"]


def test_star_72_from_a_phone_forwards_its_calls_and_status_shows_it_until_star_73(pbx: PbxStack) -> None:
    apply(pbx)
    port = pbx.pbx.sip_port
    with (
        sipp.answering_phone("4001", pbx.password("4001"), port) as own,
        sipp.answering_phone("4002", pbx.password("4002"), port) as target,
    ):
        code = dial(pbx, "4001", "*724002")
        assert code.ok, f"{code.describe()}\n{pbx.pbx.log_tail(40)}"
        assert forward_always(pbx, "4001") == {"value": "4002", "source": "phone", "desired": None}, (
            office.phone_settings(pbx)
        )

        forwarded = call_from_caller(pbx, "4001")

        assert forwarded.ok, forwarded.describe()
        assert len(target.answered_calls()) == 1, pbx.pbx.log_tail(40)
        assert own.answered_calls() == []

        code = dial(pbx, "4001", "*73")
        assert code.ok, f"{code.describe()}\n{pbx.pbx.log_tail(40)}"
        assert forward_always(pbx, "4001") == {"value": None, "source": "phone", "desired": None}

        again = call_from_caller(pbx, "4001")

        assert again.ok, again.describe()
        assert len(own.answered_calls()) == 1, pbx.pbx.log_tail(40)
        assert len(target.answered_calls()) == 1


def test_star_78_from_a_phone_sends_its_calls_to_voicemail_until_star_79(pbx: PbxStack) -> None:
    apply(pbx)
    port = pbx.pbx.sip_port
    with sipp.answering_phone("4005", pbx.password("4005"), port) as phone:
        code = dial(pbx, "4005", "*78")
        assert code.ok, f"{code.describe()}\n{pbx.pbx.log_tail(40)}"
        assert "gitops-dnd/4005" in office.phone_settings(pbx)

        resting = call_from_caller(pbx, "4005")

        # voicemail answered; the phone (which answers every INVITE it gets) got none
        assert resting.ok, resting.describe()
        assert phone.answered_calls() == [], pbx.pbx.log_tail(40)

        code = dial(pbx, "4005", "*79")
        assert code.ok, f"{code.describe()}\n{pbx.pbx.log_tail(40)}"

        ringing = call_from_caller(pbx, "4005")

        assert ringing.ok, ringing.describe()
        assert len(phone.answered_calls()) == 1, pbx.pbx.log_tail(40)
