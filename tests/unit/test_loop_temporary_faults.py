"""The watch loop treats the faults of an apply transaction as temporary: an Asterisk that went away
mid-apply, a lock held by another apply, a full volume. The revision is retried, never remembered
as failed. (The Asterisk side of these faults is in tests/integration/test_apply_faults.py; here
the client raises them, to pin the loop's bookkeeping.)"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.asterisk.client import AsteriskWentAway
from reconciler.errors import LockBusy, ManagedWriteFailed, ReconcilerError
from reconciler.gitops.history import LoopState
from reconciler.gitops.loop import Reconciler, WatchOptions
from reconciler.gitops.sources import DirectorySource
from tests.unit.desired_support import SAMPLE_DIR, fake_settings


class FailingClient:
    """Raises `error` as soon as the apply asks the PBX anything."""

    container_name = "pbx"
    managed_dir = "/etc/asterisk/managed"
    exec_count = transfer_count = 0

    def __init__(self, error: ReconcilerError) -> None:
        self.error = error

    def read_live(self, *args: object) -> None:
        raise self.error

    def uptime_s(self) -> int:
        raise self.error


FAULTS = {
    "Asterisk killed mid-reload": AsteriskWentAway("Asterisk went away during a batch", "start it"),
    "another apply holds the lock": LockBusy("another apply holds the lock of the PBX", "try later"),
    "the managed volume is full": ManagedWriteFailed("No space left on device", "free space"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_of_the_apply_transaction_is_retried_not_remembered_as_a_failed_revision(
    tmp_path: Path, fault: str
) -> None:
    desired = tmp_path / "desired"
    shutil.copytree(SAMPLE_DIR, desired)
    settings = replace(fake_settings(tmp_path), state_dir=tmp_path / "state", desired_dir=desired)
    source = DirectorySource(desired, cache_dir=tmp_path / "cache")
    reconciler = Reconciler(settings, source, FailingClient(FAULTS[fault]), WatchOptions())  # type: ignore[arg-type]

    outcome = reconciler.reconcile("poll")

    assert outcome.result == "failed" and outcome.temporary, outcome
    assert outcome.stage == "apply"
    assert LoopState.load(settings).failed == {}
