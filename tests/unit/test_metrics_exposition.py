"""metrics.render_metrics output parses as Prometheus text and carries the right numbers."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from reconciler.gitops.history import History, LoopState, ReconcileTotals, Record
from reconciler.observe.metrics import escape_label, render_metrics
from reconciler.settings import Settings

STATUS = {
    "asterisk": {"reachable": True},
    "live": {
        "revision": "0123456789abcdef0123456789abcdef01234567",
        "subject": 'Add "Sales" line\nand a back\\slash',
        "applied_at": "2026-11-26T15:00:00+00:00",
    },
    "providers": [{"name": "pbx_provider", "registered": True}, {"name": "backup", "registered": False}],
    "extensions": [],
    "summary": {
        "providers_registering": 2,
        "providers_registered": 1,
        "extensions_total": 6,
        "extensions_online": 2,
    },
    "suspended": False,
}
HISTORY = [
    {"result": "applied", "duration_s": 0.4, "started_at": "2026-11-26T15:00:00+00:00", "count": 1},
    {"result": "failed", "duration_s": 3.0, "started_at": "2026-11-26T14:00:00+00:00", "count": 2},
    {"result": "unchanged", "duration_s": 0.08, "started_at": "2026-11-26T13:00:00+00:00"},
]


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_parse_with_the_reference_parser() -> None:
    families = {f.name: f.type for f in text_string_to_metric_families(render_metrics(STATUS, HISTORY))}
    assert families["reconciler_reconciles"] == "counter"
    assert families["reconciler_reconcile_duration_seconds"] == "histogram"
    assert families["reconciler_last_success_timestamp_seconds"] == "gauge"
    assert families["reconciler_live_revision_info"] == "gauge"


def test_reconciles_are_counted_by_result_including_repeats() -> None:
    samples = _samples(render_metrics(STATUS, HISTORY))
    assert samples[("reconciler_reconciles_total", (("result", "applied"),))] == 1
    assert samples[("reconciler_reconciles_total", (("result", "failed"),))] == 2
    assert samples[("reconciler_reconciles_total", (("result", "invalid"),))] == 0


def test_duration_histogram_buckets_are_cumulative() -> None:
    samples = _samples(render_metrics(STATUS, HISTORY))
    bucket = "reconciler_reconcile_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.1"),))] == 1
    assert samples[(bucket, (("le", "0.5"),))] == 2
    assert samples[(bucket, (("le", "+Inf"),))] == 4
    assert samples[("reconciler_reconcile_duration_seconds_count", ())] == 4


def test_last_success_is_the_newest_successful_reconcile() -> None:
    samples = _samples(render_metrics(STATUS, HISTORY))
    assert samples[("reconciler_last_success_timestamp_seconds", ())] == 1795705200.0


def test_registration_and_extension_gauges_come_from_the_status() -> None:
    samples = _samples(render_metrics(STATUS, HISTORY))
    assert samples[("reconciler_providers_registered", ())] == 1
    assert samples[("reconciler_extensions_online", ())] == 2
    assert samples[("reconciler_provider_registered", (("provider", "backup"),))] == 0


def test_revision_subject_with_quotes_newline_and_backslash_survives_escaping() -> None:
    samples = _samples(render_metrics(STATUS, HISTORY))
    (labels,) = [dict(k[1]) for k in samples if k[0] == "reconciler_live_revision_info"]
    assert labels["subject"] == STATUS["live"]["subject"]
    assert labels["revision"] == STATUS["live"]["revision"]
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_empty_history_and_unreachable_asterisk_still_parse() -> None:
    status = {"asterisk": {"reachable": False}, "providers": [], "extensions": [], "summary": {}}
    samples = _samples(render_metrics(status, []))
    assert samples[("reconciler_asterisk_up", ())] == 0
    assert samples[("reconciler_last_success_timestamp_seconds", ())] == 0


def _scrape(settings: Settings, history: History) -> dict[tuple[str, tuple], float]:
    """What /metrics serves: the kept history plus the loop state's running totals."""
    totals = LoopState.load(settings).totals
    return _samples(render_metrics(STATUS, history.records(), totals=totals))


def _monotonic(samples: dict[tuple[str, tuple], float]) -> dict[tuple[str, tuple], float]:
    suffixes = ("_total", "_bucket", "_sum", "_count")
    return {k: v for k, v in samples.items() if k[0].endswith(suffixes)}


def _append(history: History, n: int, result: str, duration_s: float) -> None:
    history.append(
        Record(revision=f"{n:040x}", trigger="poll", result=result, duration_s=duration_s)  # type: ignore[arg-type]
    )


def test_counters_never_decrease_across_scrapes_when_old_records_fall_off_the_history(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    history = History(settings, max_records=5)
    for n in range(5):
        _append(history, n, "failed", 3.0)
    first = _monotonic(_scrape(settings, history))
    # Five new outcomes push every failed record out of the kept history.
    for n in range(5, 10):
        _append(history, n, "applied", 0.2)
    assert all(r["result"] == "applied" for r in history.records())

    second = _monotonic(_scrape(settings, history))

    assert first.keys() == second.keys()
    assert {k: (first[k], second[k]) for k in first if second[k] < first[k]} == {}
    assert second[("reconciler_reconciles_total", (("result", "failed"),))] == 5
    assert second[("reconciler_reconciles_total", (("result", "applied"),))] == 5
    assert second[("reconciler_reconcile_duration_seconds_count", ())] == 10
    assert second[("reconciler_reconcile_duration_seconds_sum", ())] == 16.0
    assert second[("reconciler_reconcile_duration_seconds_bucket", (("le", "0.25"),))] == 5


def test_counters_keep_counting_past_the_200_record_history_and_still_parse(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    history = History(settings)
    for n in range(260):
        _append(history, n, "applied" if n % 2 else "drift-fixed", 0.4)
    text = render_metrics(STATUS, history.records(), totals=LoopState.load(settings).totals)
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    samples = _samples(text)
    assert len(history.records()) == 200
    assert families["reconciler_reconciles"] == "counter"
    assert families["reconciler_reconcile_duration_seconds"] == "histogram"
    assert samples[("reconciler_reconciles_total", (("result", "applied"),))] == 130
    assert samples[("reconciler_reconciles_total", (("result", "drift-fixed"),))] == 130
    assert samples[("reconciler_reconcile_duration_seconds_bucket", (("le", "+Inf"),))] == 260


def test_totals_and_history_fallback_give_the_same_exposition_for_the_same_reconciles() -> None:
    totals = ReconcileTotals.from_records(HISTORY)
    assert render_metrics(STATUS, HISTORY, totals=totals) == render_metrics(STATUS, HISTORY)


def test_a_totals_file_missing_some_buckets_still_gives_cumulative_buckets() -> None:
    totals = ReconcileTotals(
        results={"applied": 3}, duration_buckets={"0.5": 2}, duration_sum_s=1.0, duration_count=3
    )
    samples = _samples(render_metrics(STATUS, [], totals=totals))
    bucket = "reconciler_reconcile_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.25"),))] == 0
    assert samples[(bucket, (("le", "1"),))] == 2
    assert samples[(bucket, (("le", "+Inf"),))] == 3
    assert samples[("reconciler_reconcile_duration_seconds_count", ())] == 3
