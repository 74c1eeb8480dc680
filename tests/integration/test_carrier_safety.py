"""The sandbox carrier under hostile SIP: caller data never runs a command, only the authenticated
trunk at the PBX's address and port gets in, and anything that is not a number is refused.

SIPp plays the PBX: the carrier is configured (by the product's own `reconciler.asterisk.carrier`) to expect
the PBX at SIPp's reserved port, so SIPp's INVITEs are identified as the trunk's and challenged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness import ports, sipp
from tests.harness.containers import PROVIDER_USER, ProviderContainer, make_secrets

pytestmark = pytest.mark.integration

# Shell syntax that creates a file if anything ever hands the value to sh; valid in a SIP URI user.
PWNED = "/tmp/pwned"
EVIL = f"x$(touch$IFS{PWNED})"


@dataclass
class FakePbx:
    carrier: ProviderContainer
    port: int  # where the carrier expects the PBX: SIPp's local port
    password: str

    def call(self, dial: str, *, caller: str = "4001", authenticate: bool = True) -> sipp.SippResult:
        if not authenticate:
            return sipp.run(
                "invite_noauth.xml", self.carrier.sip_port, service=caller, keys={"dial": dial},
                local_port=self.port,
            )  # fmt: skip
        return sipp.run(
            "call.xml", self.carrier.sip_port, service=caller, keys={"dial": dial},
            credentials=(PROVIDER_USER, self.password), local_port=self.port, extra=("-d", "500"),
        )  # fmt: skip

    def pwned(self) -> bool:
        return self.carrier.exec(["ls", PWNED])[0] == 0


@pytest.fixture(scope="module")
def fake_pbx(docker_image: str) -> Iterator[FakePbx]:
    port = ports.reserve_port()
    password = make_secrets()["PROVIDER_PASSWORD"]
    try:
        with ProviderContainer(port, password) as provider:
            yield FakePbx(provider, port, password)
    finally:
        ports.release_port(port)


@pytest.fixture
def pbx(fake_pbx: FakePbx) -> FakePbx:
    fake_pbx.carrier.clear_received()
    return fake_pbx


def test_a_caller_id_with_shell_syntax_is_logged_filtered_and_runs_nothing(pbx: FakePbx) -> None:
    result = pbx.call("5550100", caller=EVIL)

    assert result.ok, result.describe()
    [call] = pbx.carrier.received_calls()
    assert (call.to, call.caller) == ("5550100", "xtouchIFStmppwned")
    assert not pbx.pwned()


def test_a_dialled_number_with_shell_syntax_is_refused_unanswered_and_unlogged(pbx: FakePbx) -> None:
    result = pbx.call(f"1{EVIL}")

    assert not result.answered, result.describe()
    assert result.final_status("INVITE") == 404, result.describe()
    # it reached the carrier's dialplan whole and was refused there (not lost in SIP parsing)
    assert f'call to 1{EVIL}")' in pbx.carrier.log_tail(40)
    assert pbx.carrier.received_calls() == []
    assert not pbx.pwned()


def test_the_trunk_at_the_pbxs_own_address_and_port_is_still_challenged(pbx: FakePbx) -> None:
    result = pbx.call("5550100", authenticate=False)

    assert result.ok, result.describe()  # the scenario succeeds when it is refused
    assert result.final_status("INVITE") == 401, result.describe()
    assert pbx.carrier.received_calls() == []


def test_a_loopback_sender_on_another_port_is_not_the_trunk_even_with_a_phones_name(pbx: FakePbx) -> None:
    result = sipp.call("4001", pbx.password, "5550100", pbx.carrier.sip_port, hold_s=0.5)

    assert not result.answered, result.describe()
    assert pbx.carrier.received_calls() == []


def test_an_answered_call_is_one_log_line_with_the_number_as_received(pbx: FakePbx) -> None:
    for number in ("+34910000000", "112"):
        assert pbx.call(number).ok

    assert [(c.to, c.caller) for c in pbx.carrier.received_calls()] == [
        ("+34910000000", "4001"),
        ("112", "4001"),
    ]
