"""The sandbox carrier's config comes from the desired state: which provider, its account, the PBX."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from reconciler.asterisk import carrier
from reconciler.desired.confparse import parse_conf
from reconciler.desired.load import load_desired
from reconciler.errors import ValidationFailed
from reconciler.settings import REPO_ROOT
from tests.unit.desired_support import FAKE_SECRETS, CliResult, edit, fake_settings, use_real_provider


def _sections(text: str) -> dict[tuple[str, str | None], object]:
    return {(s.name, s.type): s for s in parse_conf(text)}


def test_the_samples_provider_is_the_carrier_with_the_account_of_its_references(
    sample: Path, tmp_path: Path
) -> None:
    plan = carrier.plan_carrier(sample, fake_settings(tmp_path))

    assert plan is not None and plan.provider.name == "pbx_provider"
    config = plan.config
    assert (config.sip_port, config.pbx_address, config.pbx_port) == (5070, "127.0.0.1", 5060)
    assert (config.username, config.password) == (
        FAKE_SECRETS["PBX_PROVIDER_USER"],
        FAKE_SECRETS["PBX_PROVIDER_PASSWORD"],
    )


def test_the_carrier_listens_where_the_provider_points_and_knows_the_pbx_by_address_and_port(
    sample: Path, tmp_path: Path
) -> None:
    plan = carrier.plan_carrier(sample, fake_settings(tmp_path))
    assert plan is not None
    by_name = _sections(carrier.render_carrier(plan.config)["pjsip.conf"])
    user = FAKE_SECRETS["PBX_PROVIDER_USER"]

    assert by_name[("transport-udp", "transport")].get("bind") == "127.0.0.1:5070"  # type: ignore[attr-defined]
    assert by_name[(f"{user}-identify", "identify")].get_all("match") == ["127.0.0.1:5060"]  # type: ignore[attr-defined]
    endpoint = by_name[(user, "endpoint")]
    # identified by address, and still challenged: its INVITEs must authenticate
    assert endpoint.get("auth") == f"{user}-auth"  # type: ignore[attr-defined]
    auth = by_name[(f"{user}-auth", "auth")]
    assert (auth.get("username"), auth.get("password")) == (user, FAKE_SECRETS["PBX_PROVIDER_PASSWORD"])  # type: ignore[attr-defined]


def test_a_desired_state_without_a_provider_on_the_carriers_address_needs_no_carrier(
    sample: Path, tmp_path: Path
) -> None:
    use_real_provider(sample)
    assert carrier.plan_carrier(sample, fake_settings(tmp_path)) is None


def test_another_carrier_port_makes_the_provider_on_that_port_the_carriers(
    sample: Path, tmp_path: Path
) -> None:
    edit(sample, "providers.yaml", "port: 5070", "port: 5080")
    assert carrier.plan_carrier(sample, fake_settings(tmp_path)) is None
    plan = carrier.plan_carrier(sample, fake_settings(tmp_path), port=5080)
    assert plan is not None and plan.config.sip_port == 5080


def test_a_pbx_that_binds_every_address_is_recognised_on_loopback_and_a_bound_one_on_its_address(
    sample: Path, tmp_path: Path
) -> None:
    (sample / "pbx.yaml").write_text("pbx:\n  bind: 0.0.0.0\n")
    plan = carrier.plan_carrier(sample, fake_settings(tmp_path))
    assert plan is not None and plan.config.pbx_address == "127.0.0.1"
    (sample / "pbx.yaml").write_text("pbx:\n  bind: 192.0.2.10\n  port: 5062\n")
    plan = carrier.plan_carrier(sample, fake_settings(tmp_path))
    assert plan is not None and (plan.config.pbx_address, plan.config.pbx_port) == ("192.0.2.10", 5062)


def test_a_carrier_provider_over_tls_is_refused_at_its_line(sample: Path, tmp_path: Path) -> None:
    edit(sample, "providers.yaml", "transport: udp", "transport: tls")
    with pytest.raises(ValidationFailed) as info:
        carrier.plan_carrier(sample, fake_settings(tmp_path))
    [problem] = [str(p) for p in info.value.problems]
    assert problem.startswith("desired/providers.yaml:6: providers[0].transport: pbx_provider points at")
    assert "udp only" in problem


def test_two_providers_on_the_carrier_are_refused_because_it_holds_one_account(
    sample: Path, tmp_path: Path
) -> None:
    text = (sample / "providers.yaml").read_text()
    block = text[text.index("  - name:") :].replace("pbx_provider", "second")
    (sample / "providers.yaml").write_text(text + block)
    with pytest.raises(ValidationFailed) as info:
        carrier.plan_carrier(sample, fake_settings(tmp_path))
    [problem] = [str(p) for p in info.value.problems]
    assert problem.startswith("desired/providers.yaml:11: providers[1].host: second and pbx_provider both")


def test_the_carrier_needs_the_providers_secrets_and_names_a_missing_one(
    sample: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in FAKE_SECRETS.items() if k != "PBX_PROVIDER_PASSWORD"}
    with pytest.raises(ValidationFailed) as info:
        carrier.plan_carrier(sample, fake_settings(tmp_path, env))
    assert [p.field for p in info.value.problems] == ["providers[0].password"]
    # `carrier show` needs none
    assert carrier.plan_carrier(sample, fake_settings(tmp_path, {}), with_secrets=False) is not None


@pytest.mark.parametrize("username", ["a]b", "has space", "x;y", "", "a" * 65, "a@b"])
def test_an_account_name_that_would_break_the_carriers_config_is_refused(username: str) -> None:
    with pytest.raises(carrier.CarrierError) as info:
        carrier.CarrierConfig(5070, 5060, username, "Strong-Pass-123")
    assert username not in info.value.message or not username


def test_a_semicolon_in_the_password_is_escaped_so_it_does_not_start_a_comment() -> None:
    config = carrier.CarrierConfig(5070, 5060, "trunk", "Pass;word-12345")
    [auth] = [s for s in parse_conf(carrier.render_carrier(config)["pjsip.conf"]) if s.type == "auth"]
    assert auth.get("password") == "Pass;word-12345"


def test_the_dialplan_answers_only_numbers_and_logs_with_file_never_a_shell() -> None:
    text = carrier.render_carrier(carrier.CarrierConfig(5070, 5060, "trunk", "Strong-Pass-123"))[
        "extensions.conf"
    ]
    [context] = [s for s in parse_conf(text) if s.name == carrier.CONTEXT]
    lines = [v for k, v in context.options if k in ("exten", "same")]
    assert not re.search(r"System|Shell|TrySystem|\$\{SHELL", text, re.IGNORECASE)
    assert lines[0].startswith("_[+0-9]!,1,")
    # the number must be digits (and +), else Hangup(1) before anything is answered or logged
    assert "?refuse)" in lines[1] and "FILTER(+0123456789,${EXTEN})" in lines[1]
    assert lines[2] == "n,Answer()"
    log = lines[3]
    assert log.startswith(f"n,Set(FILE({carrier.CALLS_LOG},,,al,u)=")
    assert "to=${EXTEN}" in log and "from=${FILTER(0-9A-Za-z+*#._,${CALLERID(num)})}" in log
    # every call is bounded
    assert f"n,Set(TIMEOUT(absolute)={carrier.DEFAULT_MAX_CALL_S})" in lines
    assert lines[-1] == "n(refuse),Hangup(1)"


def test_the_calls_log_is_parsed_into_number_and_caller() -> None:
    text = (
        "2026-12-01T20:15:02+0000 call=1764620102.3 to=1234567890 from=4001\n"
        "garbage line\n"
        "2026-12-01T20:15:09+0000 call=1764620109.4 to=911 from=\n"
    )
    assert carrier.parse_calls_log(text) == [
        carrier.CarrierCall("2026-12-01T20:15:02+0000", "1764620102.3", "1234567890", "4001"),
        carrier.CarrierCall("2026-12-01T20:15:09+0000", "1764620109.4", "911", ""),
    ]


def test_the_dial_hints_follow_the_routes_to_the_carrier_provider(sample: Path) -> None:
    state = load_desired(sample).state
    assert carrier.dial_hints(state, "pbx_provider") == (
        "9 + number: it receives the number without the 9 (route external)",
        "911, 112: it receives them as dialled (route emergency)",
    )
    assert carrier.dial_hints(state, "other") == ()


def test_carrier_show_says_as_json_whether_the_carrier_is_needed(
    sample: Path, cli: Callable[..., CliResult]
) -> None:
    result = cli("carrier", "show", "desired", "--json")
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["enabled"], info["provider"], info["address"], info["pbx"]) == (
        True,
        "pbx_provider",
        "127.0.0.1:5070",
        "127.0.0.1:5060",
    )
    use_real_provider(sample)
    result = cli("carrier", "show", "desired", "--json")
    assert (result.code, json.loads(result.stdout)["enabled"]) == (0, False)


def test_carrier_show_in_words_tells_what_to_dial(cli: Callable[..., CliResult], sample: Path) -> None:
    result = cli("carrier", "show", "desired")
    assert result.code == 0, result.stderr
    assert "plays provider pbx_provider" in result.stdout
    assert "dial 9 + number: it receives the number without the 9" in result.stdout


def test_make_carrier_log_reads_the_file_the_carriers_dialplan_writes() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    [path] = re.findall(r"^CARRIER_CALLS_LOG := (\S+)$", makefile, re.MULTILINE)
    assert path == carrier.CALLS_LOG


def test_compose_runs_the_carrier_in_its_role_with_its_own_rtp_range() -> None:
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    service = compose["services"]["carrier"]
    assert service["command"] == ["carrier"] and service["profiles"] == ["carrier"]
    assert service["container_name"] == "${CARRIER_CONTAINER:-gitops-carrier}"
    start, end = (int(service["environment"][k].split(":-")[1].rstrip("}")) for k in ("RTP_START", "RTP_END"))
    pbx = compose["services"]["asterisk"]["environment"]
    pbx_start, pbx_end = (int(pbx[k].split(":-")[1].rstrip("}")) for k in ("RTP_START", "RTP_END"))
    assert end < pbx_start or start > pbx_end
