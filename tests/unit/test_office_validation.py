"""The office features' rules (issue 11: targets, ring groups, queues, menus, schedules, forwards),
each with the exact `FILE:LINE: field: message` a user sees for the sample with one mistake in it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.load import load_desired
from reconciler.desired.model import SPAN_HELP, TARGET_HELP, TargetRef, parse_span, parse_target
from tests.unit.desired_support import CliResult, edit, problems

Cli = Callable[..., CliResult]

# --- targets --------------------------------------------------------------------------------------


def test_a_target_of_an_unknown_kind_is_refused_with_the_kinds_there_are(sample: Path) -> None:
    edit(sample, "office.yaml", "fallback: voicemail:4001", "fallback: phone:4001")
    assert problems(sample) == [f"desired/office.yaml:11: ring_groups[0].fallback: {TARGET_HELP}"]


@pytest.mark.parametrize("text", ["Extension:4001", "extension:", "ring_group:6a", "menu:Main", "hangup:1"])
def test_a_target_that_is_not_written_as_a_kind_and_a_value_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must be a target"):
        parse_target(text)


def test_a_bare_number_is_an_extension_and_hangup_has_no_value() -> None:
    assert parse_target("4001") == TargetRef("extension", "4001")
    assert parse_target("ring_group:600") == TargetRef("ring_group", "600")
    assert parse_target("menu:main") == TargetRef("menu", "main")
    assert parse_target("hangup") == TargetRef("hangup", "")
    assert str(parse_target("4001")) == "extension:4001" and str(parse_target("hangup")) == "hangup"


def test_a_target_naming_a_missing_ring_group_lists_the_known_ones(sample: Path) -> None:
    edit(sample, "office.yaml", '"1": ring_group:600', '"1": ring_group:601')
    assert problems(sample) == [
        "desired/office.yaml:28: menus[0].options.1: no ring group '601' (known: 600)"
    ]


def test_a_target_naming_a_missing_queue_lists_the_known_ones(sample: Path) -> None:
    edit(sample, "office.yaml", '"2": queue:700', '"2": queue:701')
    assert problems(sample) == ["desired/office.yaml:29: menus[0].options.2: no queue '701' (known: 700)"]


def test_a_target_naming_a_missing_menu_lists_the_known_ones(sample: Path) -> None:
    edit(sample, "routes.yaml", "open: menu:main", "open: menu:night")
    assert problems(sample) == ["desired/routes.yaml:19: inbound[1].to.open: no menu 'night' (known: main)"]


def test_a_target_naming_a_missing_extension_is_refused(sample: Path) -> None:
    edit(sample, "office.yaml", '"0": extension:4000', '"0": extension:4999')
    assert problems(sample) == ["desired/office.yaml:30: menus[0].options.0: no extension '4999'"]


def test_an_inbound_schedule_choice_naming_a_missing_schedule_is_refused(sample: Path) -> None:
    edit(sample, "routes.yaml", "schedule: office", "schedule: night")
    assert problems(sample) == [
        "desired/routes.yaml:19: inbound[1].to.schedule: no schedule 'night' (known: office)"
    ]


def test_a_voicemail_target_of_an_extension_without_voicemail_is_refused(sample: Path) -> None:
    edit(
        sample,
        "extensions.yaml",
        "    password: ${EXT_4001_PASSWORD}\n    voicemail: true",
        "    password: ${EXT_4001_PASSWORD}\n    voicemail: false",
    )
    assert problems(sample) == [
        "desired/office.yaml:11: ring_groups[0].fallback: extension '4001' has no voicemail "
        "(set voicemail: true on it)"
    ]


def test_an_unquoted_target_number_asks_for_quotes(sample: Path) -> None:
    edit(sample, "office.yaml", "timeout: extension:4000", "timeout: 4000")
    assert problems(sample) == [
        'desired/office.yaml:32: menus[0].timeout: must be a quoted string, e.g. "extension:4000" '
        "(YAML reads 4000 as a number)"
    ]


# --- ring groups and queues -----------------------------------------------------------------------


def test_a_ring_group_number_that_is_an_extension_number_is_refused(sample: Path) -> None:
    edit(sample, "office.yaml", 'number: "600"', 'number: "4004"')
    assert problems(sample) == [
        "desired/office.yaml:6: ring_groups[0].number: number 4004 is already extension 4004",
        # and the menu still names the old number: every problem at once
        "desired/office.yaml:28: menus[0].options.1: no ring group '600' (known: 4004)",
    ]


def test_a_queue_number_that_is_a_ring_group_number_is_refused(sample: Path) -> None:
    edit(sample, "office.yaml", 'number: "700"', 'number: "600"')
    assert problems(sample) == [
        "desired/office.yaml:15: queues[0].number: number 600 is already ring group 600",
        "desired/office.yaml:29: menus[0].options.2: no queue '700' (known: 600)",
    ]


def test_a_ring_group_number_under_a_prefix_route_is_refused(sample: Path) -> None:
    edit(sample, "office.yaml", 'number: "600"', 'number: "950"')
    edit(sample, "office.yaml", '"1": ring_group:600', '"1": ring_group:950')
    assert problems(sample) == [
        "desired/office.yaml:6: ring_groups[0].number: number 950 starts with prefix '9' of route external"
    ]


def test_a_member_listed_twice_is_refused_at_its_second_place(sample: Path) -> None:
    edit(sample, "office.yaml", 'members: ["4001", "4005"]', 'members: ["4001", "4001"]')
    assert problems(sample) == [
        "desired/office.yaml:8: ring_groups[0].members[1]: extension 4001 is listed twice "
        "(first at ring_groups[0].members[0])"
    ]


def test_a_member_that_is_no_extension_is_refused(sample: Path) -> None:
    edit(sample, "office.yaml", 'members: ["4002", "4003"]', 'members: ["4002", "4009"]')
    assert problems(sample) == ["desired/office.yaml:17: queues[0].members[1]: no extension '4009'"]


def test_a_queue_music_class_that_is_not_installed_is_refused(sample: Path) -> None:
    edit(sample, "office.yaml", "music: default", "music: jazz")
    assert problems(sample) == [
        "desired/office.yaml:19: queues[0].music: no music class 'jazz' (known: default; "
        "classes of your own from files are not supported yet)"
    ]


# --- forwards and circles -------------------------------------------------------------------------


def test_a_forward_to_the_extension_itself_is_refused(sample: Path) -> None:
    edit(sample, "extensions.yaml", "    devices: 2", "    devices: 2\n    forward: {busy: extension:4005}")
    found = problems(sample)
    assert (
        "desired/extensions.yaml:28: extensions[5].forward.busy: extension 4005 cannot forward to itself"
        in found
    )
    assert all(p.startswith("desired/extensions.yaml:28: extensions[5].forward.busy: ") for p in found)


def test_a_circle_of_forwards_and_fallbacks_is_refused_with_the_whole_circle(sample: Path) -> None:
    # 4005 unanswered -> ring group 600, unanswered -> queue 700, after the wait -> 4005 again.
    edit(
        sample,
        "extensions.yaml",
        "    devices: 2",
        "    devices: 2\n    forward:\n      no_answer: ring_group:600",
    )
    edit(sample, "office.yaml", "fallback: voicemail:4001", "fallback: queue:700")
    edit(sample, "office.yaml", "fallback: voicemail:4002", "fallback: extension:4005")
    assert problems(sample) == [
        "desired/extensions.yaml:29: extensions[5].forward.no_answer: calls would go round in a circle: "
        "extension:4005 -> ring_group:600 -> queue:700 -> extension:4005"
    ]


def test_a_menu_breaks_a_chain_because_the_caller_chooses(sample: Path) -> None:
    # ring group 600 -> menu main -> (key 1) ring group 600: the caller pressed a key, no circle.
    edit(sample, "office.yaml", "fallback: voicemail:4001", "fallback: menu:main")
    assert load_desired(sample).state.ring_groups[0].fallback == "menu:main"


# --- schedules and menus --------------------------------------------------------------------------


def test_a_schedule_span_ending_before_it_starts_is_refused(sample: Path) -> None:
    edit(sample, "office.yaml", "mon-fri 09:00-18:00", "mon-fri 18:00-09:00")
    assert problems(sample) == [
        "desired/office.yaml:38: schedules[0].open[0]: 09:00 is not after 18:00: "
        "write a span past midnight as two lines"
    ]


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ("fri-mon 09:00-18:00", "fri-mon: write days in week order (mon-sun)"),
        ("mon-fri 09:00-25:00", "hours run from 00:00 to 24:00"),
        ("weekdays 9-18", SPAN_HELP),
    ],
)
def test_a_schedule_span_out_of_order_or_out_of_the_day_is_refused(
    sample: Path, span: str, message: str
) -> None:
    edit(sample, "office.yaml", "mon-fri 09:00-18:00", span)
    assert problems(sample) == [f"desired/office.yaml:38: schedules[0].open[0]: {message}"]


def test_a_span_names_its_days_and_minutes() -> None:
    span = parse_span("mon-wed,fri 09:30-24:00")
    assert (span.days, span.start, span.end, span.day_ranges) == ((0, 1, 2, 4), 570, 1440, ("mon-wed", "fri"))
    assert parse_span("daily 08:00-20:00").days == tuple(range(7))


def test_an_unknown_time_zone_is_refused_with_examples(sample: Path) -> None:
    edit(sample, "office.yaml", "timezone: Europe/Madrid", "timezone: Mars/Olympus")
    assert problems(sample) == [
        "desired/office.yaml:37: schedules[0].timezone: unknown time zone 'Mars/Olympus' "
        "(write it as Europe/Madrid, America/New_York or UTC)"
    ]


def test_a_time_zone_that_is_a_path_is_refused_before_any_file_is_looked_up(sample: Path) -> None:
    edit(sample, "office.yaml", "timezone: Europe/Madrid", 'timezone: "../../etc/passwd"')
    assert problems(sample) == [
        "desired/office.yaml:37: schedules[0].timezone: must be a time zone name such as Europe/Madrid or UTC"
    ]


@pytest.mark.parametrize("date", ['"2026-13-25"', '"2026-1-5"', '"25/12/2026"'])
def test_a_closed_date_that_is_not_a_yyyy_mm_dd_date_is_refused(sample: Path, date: str) -> None:
    edit(sample, "office.yaml", '"2026-12-25"', date)
    assert problems(sample) == [
        "desired/office.yaml:39: schedules[0].closed_dates[0]: must be a date written YYYY-MM-DD"
    ]


def test_an_unquoted_menu_key_1_is_accepted_as_the_digit(sample: Path) -> None:
    edit(sample, "office.yaml", '"1": ring_group:600', "1: ring_group:600")
    edit(sample, "office.yaml", '"0": extension:4000', "0: extension:4000")
    options = load_desired(sample).state.menus[0].options
    assert options == {"1": "ring_group:600", "2": "queue:700", "0": "extension:4000"}


def test_a_menu_key_of_two_digits_is_refused_at_its_line(sample: Path) -> None:
    edit(sample, "office.yaml", '"1": ring_group:600', '"12": ring_group:600')
    [problem] = problems(sample)
    assert problem.startswith("desired/office.yaml:28: menus[0].options.12: ")


def test_the_cli_reports_an_office_problem_with_its_file_and_line(sample: Path, cli: Cli) -> None:
    edit(sample, "office.yaml", '"2": queue:700', '"2": queue:701')
    result = cli("validate", "desired")
    assert result.code == 1
    assert "desired/office.yaml:29: menus[0].options.2: no queue '701' (known: 700)" in result.stderr
