"""DirectorySource snapshots a local directory and reports edits, debounced."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from reconciler.gitops.sources import DirectorySource


def test_a_snapshot_copies_the_files_and_names_their_content(tmp_path: Path) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "extensions.yaml").write_text("extensions: []\n")
    source = DirectorySource(desired, cache_dir=tmp_path / "cache")
    first = source.snapshot()
    assert (first.path / "extensions.yaml").read_text() == "extensions: []\n"
    assert first.revision.startswith("sha256:")
    assert source.snapshot().revision == first.revision
    (desired / "extensions.yaml").write_text("extensions: [1]\n")
    assert source.snapshot().revision != first.revision


def test_a_burst_of_edits_is_reported_once_after_they_settle(tmp_path: Path) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    source = DirectorySource(desired, cache_dir=tmp_path / "cache", quiet_s=0.3)
    fired: list[float] = []
    done = threading.Event()

    def on_change() -> None:
        fired.append(time.monotonic())
        done.set()

    source.watch(on_change)
    try:
        for n in range(10):
            (desired / "extensions.yaml").write_text(f"n: {n}\n")
            time.sleep(0.02)
        assert done.wait(5)
        time.sleep(0.6)
    finally:
        source.close()
    assert len(fired) == 1


def test_a_directory_that_cannot_be_watched_falls_back_to_polling(tmp_path: Path) -> None:
    source = DirectorySource(tmp_path / "gone", cache_dir=tmp_path / "cache")
    assert source.watch(lambda: None) is False
    source.close()
