"""A failure the watch loop records names the file as the person knows it (`desired/<file>`), never
the snapshot the loop exported, wherever the state dir is relative to the working directory (in the
reconciler image the working directory is `/` and the state dir `/state`)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.gitops.history import LoopState
from reconciler.gitops.loop import Reconciler, WatchOptions
from reconciler.gitops.sources import DirectorySource
from tests.unit.desired_support import SAMPLE_DIR, edit, fake_settings


class UnusedClient:
    """Validation fails before the apply asks the PBX anything."""

    container_name = "pbx"
    managed_dir = "/etc/asterisk/managed"
    exec_count = transfer_count = 0


@pytest.mark.parametrize("cwd_is", ["the state dir's parent", "elsewhere"])
def test_an_invalid_revision_is_reported_at_desired_file_and_line_not_at_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cwd_is: str
) -> None:
    desired = tmp_path / "desired"
    shutil.copytree(SAMPLE_DIR, desired)
    edit(desired, "extensions.yaml", "name: Sales", "name: Sales\n    pasword: x")
    state_dir = tmp_path / "state"
    monkeypatch.chdir(tmp_path if cwd_is == "the state dir's parent" else "/")
    settings = replace(fake_settings(tmp_path), state_dir=state_dir, desired_dir=desired)
    source = DirectorySource(desired, cache_dir=state_dir / "dir")
    reconciler = Reconciler(settings, source, UnusedClient(), WatchOptions())  # type: ignore[arg-type]

    outcome = reconciler.reconcile("poll")

    assert outcome.result == "invalid"
    assert outcome.reason is not None
    assert "snapshots" not in outcome.reason, outcome.reason
    assert f"{desired}/extensions.yaml:" in outcome.reason, outcome.reason
    failed = LoopState.load(settings).failed
    assert all("snapshots" not in (f.reason or "") for f in failed.values())
