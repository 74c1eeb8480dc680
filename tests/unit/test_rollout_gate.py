"""The rollout gate (docs/fleet.md "Progressive rollout"): the pure decision, a site's own state,
and the loop holding a new revision (no apply) while drift of the live one is still fixed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.gitops.rollout import PeerAnswer, Rollout, RolloutTracker, gate, peer_answer, site_rollout
from reconciler.settings import Settings

R = "a" * 40
OLD = "b" * 40


def test_the_first_site_has_no_predecessor_and_proceeds() -> None:
    assert gate(R, None) == Rollout("done")


def test_a_predecessor_that_reconciled_the_revision_lets_it_through() -> None:
    assert gate(R, PeerAnswer("hq", True, ok_revision=R)).proceed


def test_an_unreachable_predecessor_means_waiting_with_the_error() -> None:
    verdict = gate(R, PeerAnswer("hq", False, error="connection refused"))
    assert verdict.state == "waiting" and verdict.waiting_for == "hq"
    assert verdict.reason is not None and "connection refused" in verdict.reason


def test_a_predecessor_still_on_the_old_revision_means_waiting() -> None:
    verdict = gate(R, PeerAnswer("hq", True, ok_revision=OLD))
    assert verdict.state == "waiting" and "aaaaaaaaaaaa" in (verdict.reason or "")


def test_a_predecessor_that_failed_the_revision_holds_the_chain() -> None:
    verdict = gate(R, PeerAnswer("hq", True, ok_revision=OLD, failed_revision=R))
    assert verdict.state == "held" and verdict.waiting_for == "hq"


def test_a_predecessor_held_on_the_revision_holds_the_next_site_too() -> None:
    verdict = gate(R, PeerAnswer("branch", True, ok_revision=OLD, desired_revision=R, rollout_state="held"))
    assert verdict.state == "held"


def test_a_sites_own_state_is_failed_done_or_what_the_gate_said() -> None:
    assert site_rollout(R, OLD, R, None).state == "failed"
    assert site_rollout(R, R, None, None).state == "done"
    held = Rollout("held", "hq", "hq failed")
    assert site_rollout(R, OLD, None, held) == held
    assert site_rollout(R, OLD, None, None).state == "waiting"


def test_a_peers_status_json_gives_its_rollout_facts() -> None:
    status = {
        "fleet": {"site": "hq", "ok_revision": R, "failed_revision": None, "rollout": {"state": "done"}}
    }
    answer = peer_answer("hq", status)
    assert answer.reachable and answer.ok_revision == R and answer.rollout_state == "done"
    assert peer_answer("hq", {}).ok_revision is None


def tracker(tmp_path: Path, answers: list[Any]) -> RolloutTracker:
    def fetch(url: str, timeout: float) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return RolloutTracker(Settings(state_dir=tmp_path, environ={}), "branch", ("hq", "http://x"), fetch=fetch)


def test_the_tracker_records_why_it_holds_and_clears_it_when_the_predecessor_is_done(tmp_path: Path) -> None:
    t = tracker(tmp_path, [OSError("refused"), {"fleet": {"ok_revision": R}}])
    assert t.check(R).state == "waiting"
    assert t.waiting and t.fleet_json()["rollout"]["state"] == "waiting"
    assert t.fleet_json()["rollout"]["waiting_for"] == "hq"
    assert t.check(R).proceed and not t.waiting
    t.outcome("applied", R, temporary=False)
    fleet = t.fleet_json()
    assert fleet["ok_revision"] == R and fleet["rollout"] == {
        "state": "done",
        "waiting_for": None,
        "reason": None,
    }
    # Kept across a restart of the reconciler.
    again = RolloutTracker(Settings(state_dir=tmp_path, environ={}), "branch", None)
    assert again.fleet_json()["ok_revision"] == R


def test_a_permanent_failure_is_the_failed_revision_a_temporary_one_is_not(tmp_path: Path) -> None:
    t = tracker(tmp_path, [])
    t.seen(R)
    t.outcome("failed", R, temporary=True)
    assert t.fleet_json()["failed_revision"] is None
    t.outcome("invalid", R, temporary=False)
    assert t.fleet_json()["failed_revision"] == R and t.fleet_json()["rollout"]["state"] == "failed"
    t.outcome("applied", R, temporary=False)
    assert t.fleet_json()["failed_revision"] is None


class NothingLiveClient:
    """A PBX with nothing applied yet; any change to it fails the test."""

    container_name = "pbx"
    managed_dir = "/etc/asterisk/managed"
    exec_count = transfer_count = 0

    def read_live(self, *args: object, **kwargs: object) -> Any:
        from reconciler.asterisk.client import LiveMarkers, LiveRead

        return LiveRead(files={}, markers=LiveMarkers(None, None, None))

    def transact(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("the gate must hold before anything reaches Asterisk")


def test_the_loop_holds_a_new_revision_without_touching_asterisk_and_asks_again_soon(tmp_path: Path) -> None:
    import shutil
    from dataclasses import replace

    from reconciler.gitops.loop import Reconciler, WatchOptions
    from reconciler.gitops.sources import DirectorySource
    from tests.unit.desired_support import SAMPLE_DIR, fake_settings

    desired = tmp_path / "desired"
    shutil.copytree(SAMPLE_DIR, desired)
    settings = replace(fake_settings(tmp_path), state_dir=tmp_path / "state", desired_dir=desired)
    settings.state_dir.mkdir()
    gate_ = tracker(settings.state_dir, [{"fleet": {"ok_revision": OLD}}])
    source = DirectorySource(desired, cache_dir=tmp_path / "cache")
    reconciler = Reconciler(settings, source, NothingLiveClient(), WatchOptions(), rollout=gate_)  # type: ignore[arg-type]

    outcome = reconciler.reconcile("poll")

    assert outcome.result == "skipped" and outcome.waiting and outcome.stage == "rollout", outcome
    assert "hq has not reconciled" in (outcome.reason or "")
    fleet = gate_.fleet_json()
    assert fleet["rollout"]["state"] == "waiting" and fleet["desired_revision"] == outcome.revision


def test_the_tracker_takes_the_rollout_order_of_each_revision(tmp_path: Path) -> None:
    from tests.unit.fleet_support import copy_example

    fleet = copy_example(tmp_path / "fleet")
    branch = RolloutTracker(Settings(state_dir=tmp_path / "state"), "branch", None)
    branch.follow(fleet)
    assert branch.predecessor == ("hq", "http://127.0.0.1:8181")

    fleet_yaml = fleet / "fleet.yaml"
    fleet_yaml.write_text(fleet_yaml.read_text().replace("rollout: [hq, branch]", "rollout: [branch, hq]"))
    branch.follow(fleet)
    assert branch.predecessor is None  # branch is the canary now

    fleet_yaml.write_text("sites: [oops\n")  # a broken fleet.yaml: the load reports it, the order stays
    branch.follow(fleet)
    assert branch.predecessor is None
