"""metrics.render_metrics output parses as Prometheus text and carries the right numbers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from reconciler.metrics import escape_label, render_metrics

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
