"""`reconciler route NUMBER --from EXT` explains a dial from the desired state alone, choosing the
dialplan entry the way Asterisk does (exact before patterns, then the most specific pattern)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.desired.load import load_desired
from reconciler.desired.model import DesiredState
from reconciler.desired.render import EXTENSION_RING_S, MAX_HOPS, OUTBOUND_DIAL_S
from reconciler.desired.route import PHONE_STATE_NOTE, explain
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


def changed(state: DesiredState, **lists: Any) -> DesiredState:
    """`state` with whole lists replaced (`ring_groups=[...]`), or items changed by a function."""
    data = state.model_dump(mode="json", by_alias=True)
    for key, value in lists.items():
        data[key] = value(data[key]) if callable(value) else value
    return DesiredState.model_validate(data)


def ext_with(number: str, **fields: Any) -> Any:
    def edit(extensions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**e, **fields} if e["number"] == number else e for e in extensions]

    return edit


OFFICE = (
    "+34910000001"  # the sample's office line: schedule office, open → menu:main, closed → voicemail:4000
)


def test_nine_plus_a_number_leaves_through_the_trunk_without_the_nine(sample: DesiredState) -> None:
    result = explain(sample, "91234567890", "4001")
    assert (result.kind, result.entry, result.route) == ("outbound", "_9X.", "external")
    assert (result.provider, result.sent, result.seconds) == ("pbx_provider", "1234567890", OUTBOUND_DIAL_S)
    assert result.caller_id == "4001" and result.registers is True
    assert result.target == "route:external" and result.steps == ()


def test_911_goes_out_as_dialled_although_the_nine_prefix_route_matches_it(sample: DesiredState) -> None:
    result = explain(sample, "911", "4001")
    assert (result.kind, result.entry, result.sent, result.route) == ("emergency", "911", "911", "emergency")
    assert (result.provider, result.target) == ("pbx_provider", "route:emergency")


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


def test_a_ringall_group_rings_every_member_together_then_its_fallback(sample: DesiredState) -> None:
    result = explain(sample, "600", "4002")
    assert (result.kind, result.entry, result.target) == ("ring_group", "600", "ring_group:600")
    first = result.steps[0]
    assert first.strategy == "ringall" and "together for 20 s" in first.does
    assert [(r.extension, r.devices, r.seconds) for r in first.rings] == [("4001", 1, 20), ("4005", 2, 20)]
    assert result.chain == ("ring_group:600", "voicemail:4001")
    assert [(s.action, s.mailbox, s.when) for s in result.then] == [
        ("voicemail", "4001@default", "no answer")
    ]


def test_a_hunt_group_rings_members_in_order_skips_one_on_dnd_and_falls_back(sample: DesiredState) -> None:
    group = {
        "number": "610",
        "name": "Hunt",
        "members": ["4003", "4002", "4004"],
        "strategy": "hunt",
        "ring_seconds": 15,
        "fallback": "queue:700",
    }
    state = changed(sample, ring_groups=[group], extensions=ext_with("4002", dnd=True))
    result = explain(state, "610", "4001")
    first = result.steps[0]
    assert first.strategy == "hunt" and "one after another, 15 s each" in first.does
    assert [r.extension for r in first.rings] == ["4003", "4004"]
    assert [(s.extension, s.why) for s in first.skipped] == [("4002", "dnd: true in desired/")]
    assert "skips 4002 (dnd: true in desired/)" in result.summary
    assert result.chain == ("ring_group:610", "queue:700", "voicemail:4002")


def test_a_menu_answers_plays_its_prompt_and_lists_what_each_key_does(sample: DesiredState) -> None:
    menu = explain(sample, OFFICE, "provider:pbx_provider", datetime.datetime(2026, 12, 2, 10, 30)).steps
    assert [s.target for s in menu] == ["menu:main"]  # the caller chooses: the chain stops here
    assert "answers, plays demo-congrats and waits 5 s" in menu[0].does
    options = {o.key: (o.target, o.does) for o in menu[0].options}
    assert list(options) == ["0", "1", "2", "timeout", "invalid"]
    assert options["1"][0] == "ring_group:600" and "4001, 4005 together for 20 s" in options["1"][1]
    assert options["2"][0] == "queue:700" and "music on hold" in options["2"][1]
    assert options["timeout"][0] == "extension:4000" and "rings extension 4000" in options["timeout"][1]


def test_a_queue_plays_music_while_its_members_ring_then_goes_to_its_fallback(sample: DesiredState) -> None:
    result = explain(sample, "700", "4001")
    assert (result.kind, result.entry, result.target) == ("queue", "700", "queue:700")
    queue = result.steps[0]
    assert "music on hold (class default) for up to 120 s" in queue.does
    assert queue.strategy == "ringall" and [r.extension for r in queue.rings] == ["4002", "4003"]
    assert [r.seconds for r in queue.rings] == [15, 15]
    assert result.chain == ("queue:700", "voicemail:4002")


def test_a_did_with_a_schedule_goes_to_the_open_target_in_office_hours(sample: DesiredState) -> None:
    result = explain(sample, OFFICE, "provider:pbx_provider", datetime.datetime(2026, 12, 2, 10, 30))
    assert result.schedule is not None
    assert (result.schedule.name, result.schedule.timezone) == ("office", "Europe/Madrid")
    assert (result.schedule.state, result.schedule.reason) == ("open", "open: mon-fri 09:00-18:00")
    assert result.schedule.local_time == "2026-12-02T10:30+01:00"
    assert (result.kind, result.target, result.entry, result.did) == ("menu", "menu:main", OFFICE, OFFICE)


def test_a_did_with_a_schedule_is_closed_after_hours_and_at_the_end_minute(sample: DesiredState) -> None:
    for at in (
        datetime.datetime(2026, 12, 2, 18, 0),
        datetime.datetime(2026, 12, 5, 11, 0),
    ):  # wed 18:00, sat
        result = explain(sample, OFFICE, "provider:pbx_provider", at)
        assert result.schedule is not None and result.schedule.state == "closed"
        assert "outside the open hours (mon-fri 09:00-18:00)" in result.schedule.reason
        assert (result.kind, result.target) == ("voicemail", "voicemail:4000")


def test_a_did_with_a_schedule_is_closed_on_a_closed_date_even_in_office_hours(sample: DesiredState) -> None:
    result = explain(
        sample, OFFICE, "provider:pbx_provider", datetime.datetime(2026, 12, 25, 10, 30)
    )  # a fri
    assert result.schedule is not None
    assert (result.schedule.state, result.schedule.reason) == (
        "closed",
        "closed: 2026-12-25 is a closed date",
    )
    assert result.chain == ("voicemail:4000",)


def test_a_time_with_an_offset_is_read_in_the_schedules_own_timezone(sample: DesiredState) -> None:
    new_york = datetime.timezone(datetime.timedelta(hours=-5))
    # 10:30 in New York is 16:30 in Madrid (open); 13:30 there is 19:30 here (closed).
    open_ = explain(
        sample, OFFICE, "provider:pbx_provider", datetime.datetime(2026, 12, 2, 10, 30, tzinfo=new_york)
    )
    assert open_.schedule is not None
    assert (open_.schedule.state, open_.schedule.local_time) == ("open", "2026-12-02T16:30+01:00")
    late = explain(
        sample, OFFICE, "provider:pbx_provider", datetime.datetime(2026, 12, 2, 13, 30, tzinfo=new_york)
    )
    assert late.schedule is not None and late.schedule.state == "closed"
    # A UTC time just before midnight is already the closed date in Madrid.
    eve = explain(
        sample, OFFICE, "provider:pbx_provider", datetime.datetime(2026, 12, 24, 23, 30, tzinfo=datetime.UTC)
    )
    assert eve.schedule is not None and eve.schedule.reason == "closed: 2026-12-25 is a closed date"


def test_forward_always_replaces_the_ringing_and_the_chain_follows_the_forward(sample: DesiredState) -> None:
    state = changed(sample, extensions=ext_with("4003", forward={"always": "ring_group:600"}))
    result = explain(state, "4003", "4001")
    assert result.chain == ("extension:4003", "ring_group:600", "voicemail:4001")
    assert "its phone does not ring" in result.steps[0].does and result.steps[0].rings == ()
    assert [r.extension for r in result.rings] == ["4001", "4005"]  # what rings first: the group
    busy = changed(
        sample, extensions=ext_with("4003", forward={"busy": "extension:4000", "no_answer": "queue:700"})
    )
    after = explain(busy, "4003", "4001")
    assert [(s.when, s.target) for s in after.then] == [
        ("no answer", "queue:700"),
        ("busy", "extension:4000"),
    ]
    assert after.chain == ("extension:4003", "queue:700", "voicemail:4002")  # nobody answers: no answer path


def test_a_fallback_chain_without_a_cycle_ends_at_voicemail(sample: DesiredState) -> None:
    groups = [
        {"number": "601", "name": "First", "members": ["4001"], "fallback": "ring_group:602"},
        {"number": "602", "name": "Second", "members": ["4002"], "fallback": "extension:4003"},
    ]
    state = changed(
        sample, ring_groups=groups, extensions=ext_with("4003", forward={"no_answer": "voicemail:4000"})
    )
    result = explain(state, "601", "4001")
    assert result.chain == ("ring_group:601", "ring_group:602", "extension:4003", "voicemail:4000")
    assert result.steps[-1].next is None and result.kind == "ring_group"


def test_a_chain_longer_than_max_hops_is_cut_where_asterisk_hangs_up(sample: DesiredState) -> None:
    # The loader refuses a circle (cross_check); the model alone can still hold one.
    groups = [
        {"number": "601", "name": "A", "members": ["4001"], "fallback": "ring_group:602"},
        {"number": "602", "name": "B", "members": ["4002"], "fallback": "ring_group:601"},
    ]
    result = explain(changed(sample, ring_groups=groups), "601", "4001")
    assert len(result.steps) == MAX_HOPS + 1
    assert result.steps[-1].kind == "hangup" and "cause 25" in result.steps[-1].does


def test_a_feature_code_says_what_it_sets_and_picks_the_entry_asterisk_picks(sample: DesiredState) -> None:
    forward = explain(sample, "*724002", "4001")
    assert (forward.kind, forward.entry, forward.feature) == ("feature", "_*72X.", "fwd_always")
    assert forward.astdb == "gitops-fwd-always/4001 = 4002" and "every call to 4001 goes" in forward.summary
    assert explain(sample, "*73", "4001").astdb == "gitops-fwd-always/4001 = off"
    assert explain(sample, "*78", "4001").astdb == "gitops-dnd/4001 = on"
    assert explain(sample, "*525", "4001").kind == "no-route"  # `_*52X.` needs two characters after *52
    pickup = explain(sample, "**4002", "4001")
    assert (pickup.entry, pickup.feature, pickup.sent) == ("_**X.", "pickup_direct", "4002")
    state = changed(
        sample,
        extensions=lambda es: [
            {**e, "pickup_group": "sales"} if e["number"] in ("4001", "4005") else e for e in es
        ],
    )
    group = explain(state, "*8", "4001")
    assert (group.entry, group.feature) == (
        "*8",
        "pickup_group",
    ) and "pickup group sales (4005)" in group.summary
    assert "no pickup_group" in explain(state, "*8", "4002").summary


def test_the_text_names_the_schedule_the_members_and_what_desired_cannot_know() -> None:
    runner = CliRunner()
    args = ["route", OFFICE, "--from", "provider:pbx_provider", "--dir", str(SAMPLE)]
    done = runner.invoke(app, [*args, "--at", "2026-12-25T10:30"])
    assert done.exit_code == 0, done.output
    assert (
        "office (Europe/Madrid), local time 2026-12-25T10:30+01:00: closed: 2026-12-25 is a closed date"
        in done.output
    )
    group = runner.invoke(app, ["route", "600", "--from", "4002", "--dir", str(SAMPLE)])
    assert "4005 Management (2 device(s), 20 s)" in group.output
    assert PHONE_STATE_NOTE in group.output and "reconciler status" in group.output
    data = json.loads(runner.invoke(app, [*args, "--at", "2026-12-02T10:30+01:00", "--json"]).output)
    assert data["target"] == "menu:main" and data["kind"] == "menu"
    assert data["schedule"]["state"] == "open" and data["chain"] == ["menu:main"]
    assert {"entry", "route", "provider", "sent", "rings", "then", "steps"} <= set(data)
    bad = runner.invoke(app, [*args, "--at", "tomorrow"])
    assert isinstance(bad.exception, ReconcilerError) and "not an ISO 8601 time" in str(bad.exception)
