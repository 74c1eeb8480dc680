"""History records and loop state persist in the state dir, bounded, and survive two writers."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from reconciler.gitops import history
from reconciler.gitops.history import History, LoopState, Record
from reconciler.settings import Settings


def settings_in(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state")


def record(n: int, result: str = "applied") -> Record:
    return Record(revision=f"{n:040x}", subject=f"commit {n}", trigger="poll", result=result)  # type: ignore[arg-type]


def test_history_keeps_only_the_newest_records(tmp_path: Path) -> None:
    h = History(settings_in(tmp_path), max_records=200)
    for n in range(230):
        h.append(record(n))
    records = h.records()
    assert len(records) == 200
    assert records[0]["subject"] == "commit 229"
    assert records[-1]["subject"] == "commit 30"
    assert len(h.path.read_text().splitlines()) == 200


def test_records_are_newest_first_and_limited(tmp_path: Path) -> None:
    h = History(settings_in(tmp_path))
    for n in range(5):
        h.append(record(n))
    assert [r["subject"] for r in h.records(limit=2)] == ["commit 4", "commit 3"]
    assert h.last()["subject"] == "commit 4"  # type: ignore[index]


def test_a_repeated_outcome_is_counted_instead_of_filling_the_history(tmp_path: Path) -> None:
    h = History(settings_in(tmp_path))
    h.append(record(1, "applied"))
    for _ in range(10):
        h.append(record(1, "unchanged"))
    records = h.records()
    assert [r["result"] for r in records] == ["unchanged", "applied"]
    assert records[0]["count"] == 10
    assert records[0]["last_at"] is not None


def test_records_are_json_with_every_documented_field(tmp_path: Path) -> None:
    h = History(settings_in(tmp_path))
    h.append(
        Record(
            revision="abc",
            subject="s",
            trigger="webhook",
            result="invalid",
            reason="desired/extensions.yaml:7: number: bad",
            duration_s=0.25,
            changes=["4006"],
        )
    )
    line = json.loads(h.path.read_text().splitlines()[0])
    for key in ("revision", "subject", "trigger", "result", "reason", "started_at", "duration_s", "changes"):
        assert key in line


def test_an_unparsable_history_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    h = History(settings_in(tmp_path))
    h.append(record(1))
    with h.path.open("a") as fh:
        fh.write("{not json\n")
    h.append(record(2))
    assert [r["subject"] for r in h.records()] == ["commit 2", "commit 1"]


def test_no_history_file_means_no_records(tmp_path: Path) -> None:
    assert History(settings_in(tmp_path)).records() == []
    assert History(settings_in(tmp_path)).last() is None


def test_suspend_and_resume_round_trip_through_the_state_file(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    history.suspend(s, "maintenance window")
    state = LoopState.load(s)
    assert state.suspended and state.suspended_reason == "maintenance window"
    history.resume(s)
    assert not LoopState.load(s).suspended
    assert history.take_trigger(s) == "resume"
    assert history.take_trigger(s) is None


def test_failed_revisions_are_bounded(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    for n in range(history.MAX_FAILED_REVISIONS + 10):
        history.update_state(s, lambda st, n=n: st.mark_failed(f"rev{n}", "invalid", "x"))
    failed = LoopState.load(s).failed
    assert len(failed) == history.MAX_FAILED_REVISIONS
    assert "rev0" not in failed and f"rev{history.MAX_FAILED_REVISIONS + 9}" in failed


def _suspend_many(state_dir: str) -> None:
    s = Settings(state_dir=Path(state_dir))
    for _ in range(30):
        history.suspend(s, "other process")


def test_a_cli_suspend_in_another_process_is_not_lost_by_the_loops_writes(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    s.state_dir.mkdir(parents=True)
    proc = multiprocessing.get_context("fork").Process(target=_suspend_many, args=(str(s.state_dir),))
    proc.start()
    for n in range(100):
        history.update_state(s, lambda st, n=n: setattr(st, "last_uptime_s", float(n)))
    proc.join(10)
    state = LoopState.load(s)
    assert state.suspended
    assert state.last_uptime_s == 99.0


def test_a_corrupt_state_file_reads_as_the_default_state(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    s.state_dir.mkdir(parents=True)
    (s.state_dir / "loop-state.json").write_text("{")
    assert LoopState.load(s) == LoopState()


def test_running_totals_keep_growing_after_records_fall_off_the_bounded_history(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    h = History(s, max_records=200)
    for n in range(230):
        h.append(record(n, "applied"))
    for _ in range(40):  # collapsed into one record with count 40
        h.append(record(229, "unchanged"))
    h.append(record(230, "invalid"))

    totals = LoopState.load(s).totals
    assert totals is not None
    assert totals.results == {"applied": 230, "unchanged": 40, "invalid": 1}
    assert totals.duration_count == 271
    assert totals.duration_buckets["+Inf"] == 271
    assert len(h.records()) == 200
    assert sum(int(r["count"]) for r in h.records() if r["result"] == "applied") == 198  # type: ignore[call-overload]


def test_running_totals_bucket_each_duration_cumulatively(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    h = History(s)
    for n, duration in enumerate((0.04, 0.3, 0.3, 7.0, 120.0)):
        h.append(record(n).model_copy(update={"duration_s": duration}))
    totals = LoopState.load(s).totals
    assert totals is not None
    buckets = totals.duration_buckets
    assert (buckets["0.05"], buckets["0.25"], buckets["0.5"], buckets["10"], buckets["60"]) == (1, 1, 3, 4, 4)
    assert buckets["+Inf"] == 5
    assert totals.duration_sum_s == 127.64


def test_a_state_file_without_totals_starts_them_from_the_kept_history(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    h = History(s)
    h.append(record(1, "applied"))
    for _ in range(3):
        h.append(record(1, "unchanged"))
    # A loop state written by a version without running totals.
    state_file = s.state_dir / "loop-state.json"
    old = json.loads(state_file.read_text())
    del old["totals"]
    state_file.write_text(json.dumps(old))
    assert LoopState.load(s).totals is None

    h.append(record(2, "failed"))

    totals = LoopState.load(s).totals
    assert totals is not None
    assert totals.results == {"applied": 1, "unchanged": 3, "failed": 1}


def test_the_loops_history_writes_keep_a_cli_suspend_and_vice_versa(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    h = History(s)
    h.append(record(1))
    history.suspend(s, "window")
    h.append(record(2))
    state = LoopState.load(s)
    assert state.suspended and state.suspended_reason == "window"
    assert state.totals is not None and state.totals.results["applied"] == 2
