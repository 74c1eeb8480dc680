"""`reconciler calls --since`: durations back from now, ISO times (UTC unless they say otherwise),
and one clear line with exit 2 for anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.observe.calls import SinceError, iso_time, parse_since, sql_time

NOW = datetime(2026, 12, 2, 10, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        (" 2H ", timedelta(hours=2)),
        ("0m", timedelta()),
    ],
)
def test_a_duration_counts_back_from_now(text: str, back: timedelta) -> None:
    assert parse_since(text, NOW) == NOW - back


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-02", datetime(2026, 12, 2, tzinfo=UTC)),
        ("2026-12-02T09:00", datetime(2026, 12, 2, 9, 0, tzinfo=UTC)),
        ("2026-12-02 09:00:30", datetime(2026, 12, 2, 9, 0, 30, tzinfo=UTC)),
        ("2026-12-02T09:00:00Z", datetime(2026, 12, 2, 9, 0, tzinfo=UTC)),
        ("2026-12-02T10:00:00+01:00", datetime(2026, 12, 2, 9, 0, tzinfo=UTC)),
    ],
)
def test_an_iso_time_is_utc_unless_it_has_an_offset(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "1 hour",
        "-1h",
        "1y",
        "10000000h",
        "999999w",
        "2026-13-01",
        "1h; rm -rf /",
        "'",
        "2026-12-02' OR 1=1",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(SinceError, match="not a duration or a time"):
        parse_since(text, NOW)


def test_the_sql_literal_is_always_our_own_utc_format() -> None:
    madrid = timezone(timedelta(hours=1))
    assert sql_time(datetime(2026, 12, 2, 11, 0, 5, tzinfo=madrid)) == "2026-12-02 10:00:05"
    assert sql_time(parse_since("2026-12-02T10:00:00.123456+00:00", NOW)) == "2026-12-02 10:00:00"
    assert iso_time("2026-12-02 10:00:05") == "2026-12-02T10:00:05Z"
    assert iso_time("garbage") == ""


def test_a_bad_since_is_one_line_and_exit_2_before_asterisk_is_asked() -> None:
    result = CliRunner().invoke(app, ["calls", "--since", "yesterday", "--container", "nowhere-at-all"])

    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: --since yesterday: not a duration or a time")


def test_a_bad_control_mode_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["calls", "--control", "ssh"])

    assert result.exit_code == 2
    assert "--control 'ssh' is not docker or local" in result.output
