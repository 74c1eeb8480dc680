"""`reconciler route NUMBER --from EXT` explains a dial from the desired state alone, choosing the
dialplan entry the way Asterisk does (exact before patterns, then the most specific pattern)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.desired.load import load_desired
from reconciler.desired.model import DesiredState
from reconciler.desired.render import EXTENSION_RING_S, OUTBOUND_DIAL_S
from reconciler.desired.route import explain
from reconciler.errors import ReconcilerError
from reconciler.settings import REPO_ROOT

SAMPLE = REPO_ROOT / "desired"


@pytest.fixture(scope="module")
def sample() -> DesiredState:
    return load_desired(SAMPLE).state


def with_routes(state: DesiredState, *routes: dict[str, object], **ext: object) -> DesiredState:
    data = state.model_dump(mode="json")
    data["outbound"] += list(routes)
    if ext:
        data["extensions"].append({"password": "${EXT_X_PASSWORD}", **ext})
    return DesiredState.model_validate(data)


def test_nine_plus_a_number_leaves_through_the_trunk_without_the_nine(sample: DesiredState) -> None:
    result = explain(sample, "91234567890", "4001")
    assert (result.kind, result.entry, result.route) == ("outbound", "_9X.", "external")
    assert (result.provider, result.sent, result.seconds) == ("pbx_provider", "1234567890", OUTBOUND_DIAL_S)
    assert result.caller_id == "4001" and result.registers is True


def test_911_goes_out_as_dialled_although_the_nine_prefix_route_matches_it(sample: DesiredState) -> None:
    result = explain(sample, "911", "4001")
    assert (result.kind, result.entry, result.sent, result.route) == ("emergency", "911", "911", "emergency")


def test_an_extension_rings_then_goes_to_its_voicemail(sample: DesiredState) -> None:
    result = explain(sample, "4002", "4001")
    assert (result.kind, result.entry) == ("extension", "_4XXX")
    assert [(r.extension, r.seconds) for r in result.rings] == [("4002", EXTENSION_RING_S)]
    assert [(s.action, s.mailbox) for s in result.then] == [("voicemail", "4002@default")]


def test_an_extension_without_voicemail_hangs_up_after_ringing(sample: DesiredState) -> None:
    state = with_routes(sample, number="4100", name="Lobby")
    assert [s.action for s in explain(state, "4100", "4001").then] == ["hangup"]


def test_a_number_shaped_like_an_extension_that_does_not_exist_is_unallocated(sample: DesiredState) -> None:
    result = explain(sample, "4999", "4001")
    assert (result.kind, result.entry) == ("no-such-extension", "_4XXX")


def test_a_number_no_entry_matches_is_refused_and_the_mailbox_code_is_known(sample: DesiredState) -> None:
    assert explain(sample, "12", "4001").kind == "no-route"
    assert explain(sample, "*97", "4001").kind == "mailbox"


def test_the_most_specific_pattern_wins_position_by_position(sample: DesiredState) -> None:
    state = with_routes(
        sample,
        {"name": "national", "prefix": "91", "strip": 2, "provider": "pbx_provider"},
        number="9300",
        name="Nine hundreds",
    )
    # 9123: `_91X.` (literal 1 at the second position) beats `_9XXX` (X) and `_9X.`.
    assert (explain(state, "9123", "4001").entry, explain(state, "9123", "4001").sent) == ("_91X.", "23")
    # 9300: `_9XXX` (X at the third position) beats `_9X.` (`.`): the extension rings.
    assert explain(state, "9300", "4001").kind == "extension"
    # 95550100: only `_9X.` takes 8 digits.
    assert explain(state, "95550100", "4001").route == "external"


def test_an_inbound_did_rings_the_extension_it_names_and_an_unknown_did_is_refused(
    sample: DesiredState,
) -> None:
    result = explain(sample, "+34910000000", "provider:pbx_provider")
    assert (result.kind, result.did, result.rings[0].extension) == ("extension", "+34910000000", "4000")
    assert explain(sample, "+34999", "provider:pbx_provider").kind == "no-route"


def test_an_unknown_caller_is_a_clear_error(sample: DesiredState) -> None:
    with pytest.raises(ReconcilerError, match="no extension '4999'"):
        explain(sample, "4001", "4999")
    with pytest.raises(ReconcilerError, match="no provider 'nobody'"):
        explain(sample, "4001", "provider:nobody")


def test_the_command_prints_text_and_json_and_refuses_a_number_with_other_characters() -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["route", "91234567890", "--from", "4001", "--dir", str(SAMPLE)])
    assert text.exit_code == 0, text.output
    assert "sends 1234567890 via pbx_provider" in text.output
    data = json.loads(
        runner.invoke(app, ["route", "911", "--from", "4001", "--dir", str(SAMPLE), "--json"]).output
    )
    assert data["kind"] == "emergency" and data["sent"] == "911"
    bad = runner.invoke(app, ["route", "9;reboot", "--from", "4001", "--dir", str(SAMPLE)])
    assert bad.exit_code != 0


def test_a_fleet_site_is_explained_with_its_bases() -> None:
    runner = CliRunner()
    fleet = REPO_ROOT / "examples" / "fleet"
    done = runner.invoke(
        app, ["route", "95550100", "--from", "5000", "--dir", str(fleet), "--site", "branch", "--json"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["provider_address"] == "127.0.0.1:5270/udp"  # branch's own override
