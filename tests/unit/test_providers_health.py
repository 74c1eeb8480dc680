"""Provider health on real Asterisk 22.10 log lines (tests/fixtures/cli/, capture_provider_health.sh):
which reload problems only mean "this provider's host does not resolve", and which fail an apply."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from reconciler.asterisk import providers_health as health
from reconciler.asterisk.client import ExecResult, ReloadResult
from reconciler.asterisk.parsers import (
    parse_registration_events,
    parse_reload_log,
    parse_resolution_failures,
    retained_objects,
)
from reconciler.desired.model import DesiredState

CLI = Path(__file__).resolve().parents[1] / "fixtures" / "cli"


def log(name: str) -> list[str]:
    return (CLI / name).read_text().splitlines()


def conf(name: str) -> dict[str, str]:
    return {"pjsip.conf": (CLI / "config" / name).read_text()}


def state(provider: str = "pbx_provider", host: str = "does-not-exist.invalid", **extra: Any) -> DesiredState:
    return DesiredState.model_validate(
        {
            "providers": [
                {
                    "name": provider,
                    "host": host,
                    "port": 5061,
                    "transport": "tls",
                    "username": "pbxtrunk",
                    "password": "${PROVIDER_PASSWORD}",
                    "register": True,
                    **extra,
                }
            ],
            "extensions": [
                {"number": n, "name": f"Extension {n}", "password": f"${{EXT_{n}_PASSWORD}}"}
                for n in ("4001", "4002")
            ],
        }
    )


def judge(log_name: str, conf_name: str, desired: DesiredState | None = None) -> health.ReloadJudgement:
    lines = log(log_name)
    return health.judge_reload(parse_reload_log(lines), lines, desired or state(), conf(conf_name))


# --- the log lines themselves -----------------------------------------------------------------


def test_a_resolution_failure_names_the_identify_the_host_the_port_and_the_resolvers_words() -> None:
    (failure,) = parse_resolution_failures(log("provider_identify_unresolvable_new.messages.log"))
    assert (failure.identify, failure.host, failure.port, failure.reason) == (
        "pbx_provider-identify",
        "does-not-exist.invalid",
        "5061",
        "Temporary failure in name resolution",
    )


def test_a_retained_identify_is_recognised_and_a_new_one_is_not() -> None:
    assert retained_objects(log("provider_identify_unresolvable_retained.messages.log")) == {
        ("identify", "pbx_provider-identify")
    }
    assert retained_objects(log("provider_identify_unresolvable_new.messages.log")) == set()


def test_an_object_failure_and_an_option_error_name_their_object() -> None:
    problems = parse_reload_log(log("provider_identify_bad_option.messages.log"))
    assert [p.category for p in problems] == ["pbx_provider-identify", None]
    assert [p.failed_object for p in problems] == [None, ("identify", "pbx_provider-identify")]


def test_registration_failures_say_whether_asterisk_retries_or_gave_up() -> None:
    no_answer, refused = parse_registration_events(
        [
            "[2026-12-01 20:46:47.849] WARNING[52] res_pjsip_outbound_registration.c: No response received "
            "from 'sip:does-not-exist.invalid:5061;transport=tls' on registration attempt to "
            "'sip:pbxtrunk@does-not-exist.invalid:5061;transport=tls', retrying in '20'",
            "[2026-11-26 15:18:42.519] WARNING[34] res_pjsip_outbound_registration.c: Fatal response '401' "
            "received from 'sip:127.0.0.1:5070' on registration attempt to 'sip:pbxtrunk@127.0.0.1:5070', "
            "stopping outbound registration",
        ]
    )
    assert (
        no_answer.describe()
        == "no response from sip:does-not-exist.invalid:5061;transport=tls, retrying in 20 s"
    )
    assert not no_answer.stopped
    assert refused.describe() == "rejected with 401 by sip:127.0.0.1:5070; Asterisk stopped retrying"
    assert refused.stopped and refused.timestamp == "2026-11-26 15:18:42.519"


# --- the classifier -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log_name", "detail"),
    [
        ("provider_identify_unresolvable_new.messages.log", "inbound calls from it are not recognised"),
        ("provider_identify_unresolvable_retained.messages.log", "keeps matching inbound calls"),
        ("boot_identify_unresolvable.messages.log", "inbound calls from it are not recognised"),
    ],
)
def test_an_identify_of_a_desired_provider_that_did_not_resolve_is_a_warning_not_a_failure(
    log_name: str, detail: str
) -> None:
    judged = judge(log_name, "health_invalid_pjsip.conf")
    assert judged.fatal == ()
    (issue,) = judged.issues
    assert str(issue) == "pbx_provider: host does-not-exist.invalid does not resolve"
    assert issue.host == "does-not-exist.invalid"
    assert detail in (issue.detail or "")
    assert [p.failed_object for p in judged.excused] == [("identify", "pbx_provider-identify")]


def test_an_identify_with_an_unknown_option_is_still_a_failed_apply() -> None:
    judged = judge("provider_identify_bad_option.messages.log", "health_ip_bogus_identify_pjsip.conf")
    assert judged.issues == ()
    assert [p.failed_object for p in judged.fatal] == [None, ("identify", "pbx_provider-identify")]


def test_an_unresolvable_identify_that_also_has_an_unknown_option_is_still_a_failed_apply() -> None:
    judged = judge(
        "provider_identify_unresolvable_bad_option.messages.log", "health_invalid_bogus_identify_pjsip.conf"
    )
    assert judged.issues == ()
    assert len(judged.fatal) == 2


def test_a_resolution_failure_does_not_excuse_another_error_located_by_line_in_the_same_identify() -> None:
    lines = log("provider_identify_unresolvable_new.messages.log")
    pjsip = conf("health_invalid_pjsip.conf")
    identify_line = pjsip["pjsip.conf"].splitlines().index("[pbx_provider-identify]") + 2
    lines.insert(
        1,
        f"[2026-12-01 20:50:34.773] ERROR[46] config_options.c: Error parsing endpoint=?? at line "
        f"{identify_line} of ",
    )
    judged = health.judge_reload(parse_reload_log(lines), lines, state(), pjsip)
    assert judged.issues == ()
    assert len(judged.fatal) == 2


def test_an_unresolvable_identify_that_belongs_to_no_desired_provider_is_a_failed_apply() -> None:
    judged = judge(
        "provider_identify_unresolvable_new.messages.log", "health_invalid_pjsip.conf", state("other")
    )
    assert judged.issues == ()
    assert [p.failed_object for p in judged.fatal] == [("identify", "pbx_provider-identify")]


def test_other_problems_of_the_same_reload_stay_failures() -> None:
    lines = log("provider_identify_unresolvable_new.messages.log") + log(
        "boot_endpoint_unknown_option.messages.log"
    )
    judged = health.judge_reload(parse_reload_log(lines), lines, state(), conf("health_invalid_pjsip.conf"))
    assert [str(i) for i in judged.issues] == ["pbx_provider: host does-not-exist.invalid does not resolve"]
    assert {p.failed_object for p in judged.fatal} >= {("endpoint", "4001"), ("endpoint", "4002")}


# --- looking hosts up ---------------------------------------------------------------------------


def test_only_host_names_are_looked_up_with_match_host_names_included() -> None:
    desired = state(
        host="sip.example.test", match=["192.0.2.0/24", "in.example.test:5060", "[2001:db8::1]:5060"]
    )
    assert health.provider_hosts(desired.providers[0]) == ["in.example.test", "sip.example.test"]
    assert health.dns_names(state(host="127.0.0.1")) == []


def test_the_lookup_step_runs_every_lookup_at_once_and_bounded() -> None:
    step = health.lookup_step(["b.example.test", "a.example.test", "a.example.test"])
    assert step.count("getent ahosts") == 2
    assert step.count(f"timeout {health.LOOKUP_TIMEOUT_S} ") == 2
    assert step.rstrip().endswith("wait")
    assert health.lookup_step([]) == "true"


def test_lookup_answers_are_read_as_resolved_not_found_or_timed_out() -> None:
    out = (
        "gitops-lookup a.example.test 0\n"
        "gitops-lookup does-not-exist.invalid 2\n"
        "gitops-lookup slow.test 124\n"
    )
    lookups = health.parse_lookups(out)
    assert lookups["a.example.test"].resolved
    assert not lookups["does-not-exist.invalid"].resolved
    assert lookups["slow.test"].timed_out
    issues = health.dns_issues(state(host="does-not-exist.invalid"), lookups)
    assert [str(i) for i in issues] == ["pbx_provider: host does-not-exist.invalid does not resolve"]
    slow = health.dns_issues(state(host="slow.test"), lookups)
    assert "timed out" in str(slow[0])


def test_the_degraded_record_keeps_one_line_per_provider_and_the_warnings_name_it() -> None:
    issues = [
        health.ProviderIssue("b", "host x.test does not resolve", "x.test"),
        health.ProviderIssue("a", "host y.test does not resolve", "y.test"),
        health.ProviderIssue("b", "host z.test does not resolve", "z.test"),
        health.ProviderIssue("b", "host x.test does not resolve", "x.test"),
    ]
    record = health.degraded_record(health.merge(issues))
    assert record == {
        "a": "host y.test does not resolve",
        "b": "host x.test does not resolve; host z.test does not resolve",
    }
    assert health.warnings_of(record)[0] == "a: host y.test does not resolve"


# --- healing: the bookkeeping around the two execs (the behaviour itself is an integration test) ---


class ScriptedClient:
    """Answers the lookup exec and the reload with canned text, and records what was asked."""

    def __init__(self, lookup_rc: int, identify_output: str, reload_log: Sequence[str] = ()) -> None:
        self.lookup_rc = lookup_rc
        self.identify_output = identify_output
        self.reload_log = tuple(reload_log)
        self.steps: list[str] = []
        self.reloads: list[tuple[str, ...]] = []

    def run_steps(self, steps: Sequence[str]) -> ExecResult:
        self.steps += steps
        return ExecResult((f"gitops-lookup does-not-exist.invalid {self.lookup_rc}\n",), 0)

    def reload(self, commands: Sequence[str], *, queries: Sequence[str] = (), **_: Any) -> ReloadResult:
        self.reloads.append(tuple(commands))
        return ReloadResult((), self.reload_log, tuple(self.identify_output for _ in queries))


FOUND = (
    "\n Identify:  <Identify/Endpoint...>\n      Match:  <criteria...>\n" + "=" * 90 + "\n\n"
    " Identify:  pbx_provider-identify/pbx_provider\n      Match: 127.0.0.1:5061/32\n"
)
DEGRADED = {"pbx_provider": "host does-not-exist.invalid does not resolve"}


def test_a_provider_whose_host_still_does_not_resolve_is_not_reloaded_for() -> None:
    client = ScriptedClient(lookup_rc=2, identify_output=FOUND)
    result = health.heal(client, state(), DEGRADED)  # type: ignore[arg-type]
    assert result.still == DEGRADED and result.healed == () and not result.reloaded
    assert client.reloads == []


def test_a_provider_whose_host_resolves_again_is_healed_by_one_reload_when_its_identify_exists() -> None:
    client = ScriptedClient(lookup_rc=0, identify_output=FOUND)
    result = health.heal(client, state(), DEGRADED)  # type: ignore[arg-type]
    assert result.healed == ("pbx_provider",) and result.still == {}
    assert client.reloads == [(health.PJSIP_RELOAD,)]


def test_a_provider_stays_degraded_when_its_identify_is_still_missing_after_the_reload() -> None:
    client = ScriptedClient(
        lookup_rc=0,
        identify_output="Unable to find object pbx_provider-identify.",
        reload_log=log("provider_identify_unresolvable_new.messages.log"),
    )
    result = health.heal(client, state(), DEGRADED)  # type: ignore[arg-type]
    assert result.healed == () and result.still == DEGRADED and result.reloaded


def test_settle_forgets_providers_that_left_the_desired_state_and_credits_a_pjsip_reload() -> None:
    client = ScriptedClient(lookup_rc=2, identify_output="")
    gone = health.settle(client, state("other", host="127.0.0.1"), DEGRADED, [], pjsip_reloaded=False)  # type: ignore[arg-type]
    assert gone.still == {} and client.steps == []
    credited = health.settle(client, state(), DEGRADED, [], pjsip_reloaded=True)  # type: ignore[arg-type]
    assert credited.healed == ("pbx_provider",) and credited.still == {} and client.steps == []
