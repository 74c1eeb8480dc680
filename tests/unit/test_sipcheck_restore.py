"""check-provider's restore step: make the PBX register again after the test REGISTER (fake Asterisk)."""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.errors import AsteriskUnavailable
from reconciler.observe.sipcheck import (
    Step,
    Verdict,
    all_passed,
    register_was_sent,
    restore_pbx_registration,
)


def registrations(status: str, detail: str = "", name: str = "pbx_provider-reg") -> str:
    """`pjsip show registrations` output with one row (or none when `status` is empty)."""
    head = (
        " <Registration/ServerURI.....................>  <Auth.............>  <Status.......>\n"
        "==========================================================================================\n\n"
    )
    if not status:
        return head + "No objects found.\n"
    row = f" {name}/sip:127.0.0.1:5060   pbx_provider-auth   {status:<16}  {detail}\n"
    return head + row + "\nObjects found: 1\n"


class FakeAsterisk:
    """Answers `run(...)` from a script of `pjsip show registrations` outputs; records the commands."""

    container_name = "test-pbx"

    def __init__(self, shows: list[str], unreachable: bool = False) -> None:
        self._shows: Iterator[str] = iter(shows)
        self._last = ""
        self.unreachable = unreachable
        self.commands: list[str] = []

    def run(self, *commands: str) -> list[str]:
        if self.unreachable:
            raise AsteriskUnavailable("the Asterisk container 'test-pbx' does not exist", "start it")
        outputs = []
        for command in commands:
            self.commands.append(command)
            if command == "pjsip show registrations":
                self._last = next(self._shows, self._last)
                outputs.append(self._last)
            else:
                outputs.append("")
        return outputs


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def restore(client: FakeAsterisk, clock: FakeClock | None = None) -> Step:
    clock = clock or FakeClock()
    return restore_pbx_registration(
        client, "pbx_provider", timeout_s=15.0, poll_s=0.5, clock=clock, sleep=clock.sleep
    )


def test_a_registration_that_goes_through_unregistered_to_registered_passes() -> None:
    client = FakeAsterisk(
        [
            registrations("Registered", "(exp. 3588s)"),
            registrations("Unregistered", "(exp. 1s)"),
            registrations("Unregistered", "(exp. 1s)"),
            registrations("Registered", "(exp. 3589s)"),
        ]
    )
    clock = FakeClock()
    step = restore(client, clock)
    assert step.verdict is Verdict.PASS, step
    assert step.detail == "the PBX re-registered to pbx_provider (1.0 s)"
    assert "pjsip send register pbx_provider-reg" in client.commands


def test_a_restarted_expiry_counts_as_a_new_registration_even_when_unregistered_was_missed() -> None:
    client = FakeAsterisk(
        [registrations("Registered", "(exp. 3500s)"), registrations("Registered", "(exp. 3599s)")]
    )
    assert restore(client).verdict is Verdict.PASS


def test_the_old_registered_state_alone_is_not_taken_for_a_new_registration() -> None:
    client = FakeAsterisk([registrations("Registered", "(exp. 3588s)")])  # never changes
    step = restore(client)
    assert step.verdict is Verdict.FAIL
    assert "still the old Registered" in step.detail and "after 15.0 s" in step.detail
    assert 'asterisk -rx "pjsip send register pbx_provider-reg"' in (step.fix or "")
    assert "reconciler status" in (step.fix or "")


def test_a_rejected_re_registration_fails_at_once_with_the_manual_command() -> None:
    client = FakeAsterisk(
        [
            registrations("Registered", "(exp. 3588s)"),
            registrations("Unregistered", "(exp. 1s)"),
            registrations("Rejected", ""),
        ]
    )
    clock = FakeClock()
    step = restore(client, clock)
    assert step.verdict is Verdict.FAIL and "is Rejected" in step.detail
    assert clock.now < 102, "a finished attempt is not waited out"
    assert "docker exec test-pbx" in (step.fix or "")


def test_a_pbx_without_a_registration_for_the_provider_is_skipped_without_sending_anything() -> None:
    client = FakeAsterisk([registrations("Registered", "(exp. 3588s)", name="other_provider-reg")])
    step = restore(client)
    assert step.verdict is Verdict.SKIP and "keeps no registration pbx_provider-reg" in step.detail
    assert client.commands == ["pjsip show registrations"]


def test_an_unreachable_pbx_is_a_warning_that_names_the_command_and_does_not_fail_the_check() -> None:
    step = restore(FakeAsterisk([], unreachable=True))
    assert step.verdict is Verdict.WARN
    assert "does not exist" in step.detail and "one binding per account" in step.detail
    assert "pjsip send register pbx_provider-reg" in (step.fix or "")
    assert all_passed([Step("REGISTER", Verdict.PASS, "200 OK"), step])


def test_a_failed_restore_fails_the_check() -> None:
    failed = Step("restore", Verdict.FAIL, "the PBX's registration with pbx_provider is Rejected")
    assert not all_passed([Step("REGISTER", Verdict.PASS, "200 OK"), failed])


def test_restore_is_needed_only_when_a_register_was_sent() -> None:
    sent = [Step("REGISTER", Verdict.FAIL, "401 Unauthorized after authentication")]
    not_sent = [
        Step("OPTIONS", Verdict.FAIL, "503"),
        Step("REGISTER", Verdict.SKIP, "not run: an earlier step failed"),
    ]
    assert register_was_sent(sent)
    assert not register_was_sent(not_sent)


def test_a_pbx_rejected_before_and_rejected_again_fails_once_the_retry_timer_restarted() -> None:
    client = FakeAsterisk(
        [registrations("Rejected", "(exp. 290s)"), registrations("Rejected", "(exp. 300s)")]
    )
    clock = FakeClock()
    step = restore(client, clock)
    assert step.verdict is Verdict.FAIL and "is Rejected (exp. 300s)" in step.detail, step
    assert clock.now < 101


def test_a_pbx_rejected_before_that_now_registers_passes() -> None:
    client = FakeAsterisk(
        [registrations("Rejected", "(exp. 290s)"), registrations("Registered", "(exp. 3599s)")]
    )
    assert restore(client).verdict is Verdict.PASS


def test_a_registration_first_seen_unregistered_is_not_cut_short_by_its_old_expiry() -> None:
    client = FakeAsterisk(
        [
            registrations("Registered", "(exp. 3000s)"),
            registrations("Unregistered", "(exp. 1s)"),
            registrations("Registered", "(exp. 2999s)"),  # a provider granting less than before
        ]
    )
    assert restore(client).verdict is Verdict.PASS
