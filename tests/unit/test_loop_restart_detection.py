"""The watch loop notices a restarted Asterisk at its drift check: by the boot id the read exec
reports (a restart seconds after the previous one leaves the whole-second uptime no lower), or by
the uptime going down (kept in the loop state, so a restarted reconciler notices it too)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler.gitops.loop import Reconciler, WatchOptions
from reconciler.gitops.sources import DirectorySource
from tests.unit.desired_support import SAMPLE_DIR, fake_settings


class UptimeClient:
    """Answers `core show uptime seconds` with the next of `uptimes`."""

    container_name = "pbx"

    def __init__(self, *uptimes: int) -> None:
        self.uptimes = list(uptimes)

    def uptime_s(self) -> int:
        return self.uptimes.pop(0)


def reconciler(tmp_path: Path, client: UptimeClient) -> Reconciler:
    settings = replace(fake_settings(tmp_path), state_dir=tmp_path / "state", desired_dir=SAMPLE_DIR)
    source = DirectorySource(SAMPLE_DIR, cache_dir=tmp_path / "cache")
    return Reconciler(settings, source, client, WatchOptions())  # type: ignore[arg-type]


def test_a_restart_within_seconds_of_the_previous_one_is_noticed_by_its_boot_id(tmp_path: Path) -> None:
    loop = reconciler(tmp_path, UptimeClient(2, 2, 3))
    assert loop._restarted("boot-1") is None
    assert loop._restarted("boot-2") == "its boot id changed"
    assert loop._restarted("boot-2") is None


def test_an_uptime_that_went_down_is_a_restart_also_for_a_new_reconciler(tmp_path: Path) -> None:
    assert reconciler(tmp_path, UptimeClient(500))._restarted("boot-1") is None
    # A new process knows no boot id yet: the uptime kept in the loop state tells.
    assert reconciler(tmp_path, UptimeClient(4))._restarted("boot-2") == "uptime went down"


def test_a_steady_asterisk_is_not_called_restarted(tmp_path: Path) -> None:
    loop = reconciler(tmp_path, UptimeClient(10, 12, 14))
    assert [loop._restarted("boot-1") for _ in range(3)] == [None, None, None]
