"""A change's way through the example fleet deployed with `make fleet-up` (a real single-node
swarm, each site's reconciler beside its Asterisk with no Docker socket, following the fleet dir):

- a base change reaches both sites, the canary (hq) first;
- a change to one site's files goes live only there (the other site reconciles it as unchanged);
- a change that breaks the canary leaves the other site on its last good revision and holds the
  rollout there, and the fix lets it through;
- a killed Asterisk is restarted by Swarm and is back on its live revision, phones register again;
- a change that adds a `${NAME}` is refused at its site until `make fleet-up` runs again, which
  generates the value and its Swarm secret, and then goes live.

The fleet is a temp copy of examples/fleet edited the way a user edits their repository. The time
a base change takes to reach both sites is printed and kept in test-artifacts (never asserted).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.desired.revision import revision_of, site_revision
from tests.harness import sipp
from tests.harness.fleet import (
    REPO_ROOT,
    Deployed,
    docker_out,
    example_deployed,
    fleet_up,
    record_timing,
    site_status,
)
from tests.harness.waiting import poll

pytestmark = [pytest.mark.userpath, pytest.mark.integration]

SITES = {"hq": "127.0.0.1:8181", "branch": "127.0.0.1:8182"}
REACH_TIMEOUT_S = 120.0  # inotify or the 30 s poll, then the canary's apply, then the next site's


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """The example fleet from a temp copy, deployed with `make fleet-up`; always torn down."""
    with example_deployed(tmp_path_factory.mktemp("fleet-rollout")) as deployed:
        assert deployed.up.returncode == 0, deployed.up.stdout[-8000:]
        yield deployed


def _task_container(fleet: Deployed, site: str, role: str = "asterisk") -> str:
    ids = docker_out(
        "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={fleet.stack}_{site}-{role}"
    ).split()
    assert len(ids) == 1, f"{site}-{role}: running task containers {ids}"
    return ids[0]


def _cli(fleet: Deployed, site: str, command: str) -> str:
    return docker_out("exec", _task_container(fleet, site), "asterisk", "-rx", command)


def _booted(fleet: Deployed, site: str) -> bool:
    """Whether the site's (possibly just replaced) Asterisk answers and is fully booted."""
    try:
        return "fully booted" in _cli(fleet, site, "core waitfullybooted")
    except (AssertionError, subprocess.CalledProcessError):
        return False  # no task container yet, or Asterisk not answering yet


def _caller_name(fleet: Deployed, site: str, number: str) -> str:
    out = _cli(fleet, site, f"pjsip show endpoint {number}")
    match = re.search(r"callerid\s*:\s*(.*)", out)
    return match[1].strip() if match else ""


def _status_or_none(site: str) -> dict[str, Any] | None:
    try:
        return site_status(SITES[site])
    except OSError:
        return None


def _live(site: str) -> str | None:
    status = _status_or_none(site)
    return ((status or {}).get("live") or {}).get("revision")


def _record_for(site: str, revision: str) -> dict[str, Any] | None:
    """The newest history record of `site` for `revision` (None: not reconciled yet)."""
    status = _status_or_none(site) or {}
    for record in status.get("history") or []:
        if record.get("revision") == revision:
            return dict(record)
    return None


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new, 1))


def _wait_live(site: str, revision: str, timeout_s: float = REACH_TIMEOUT_S) -> float:
    started = time.monotonic()
    assert poll(lambda: _live(site) == revision, timeout_s, interval_s=0.5), (
        f"{site} is not live on {revision[:19]} after {timeout_s:.0f} s (it runs {_live(site)})"
    )
    return time.monotonic() - started


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_base_change_reaches_both_sites_the_canary_first(fleet: Deployed) -> None:
    for site in SITES:
        assert _live(site) == site_revision(fleet.fleet_dir, site), (
            f"{site} is not live on the deployed revision"
        )
    assert "'999'" not in _cli(fleet, "branch", "dialplan show 999@internal")
    started = time.monotonic()
    _edit(fleet.fleet_dir / "bases" / "common" / "routes.yaml", '["911", "112"]', '["911", "112", "999"]')
    revisions = {site: site_revision(fleet.fleet_dir, site) for site in SITES}

    for site in SITES:
        _wait_live(site, revisions[site])
    reached = time.monotonic() - started
    record_timing("fleet_base_change_reaches_both_sites_s", reached)

    for site in SITES:
        assert "'999'" in _cli(fleet, site, "dialplan show 999@internal"), site
    hq, branch = _record_for("hq", revisions["hq"]), _record_for("branch", revisions["branch"])
    assert hq and branch and hq["result"] == branch["result"] == "applied", (hq, branch)
    # The canary took it before the next site started on it.
    assert _epoch(branch["started_at"]) >= _epoch(hq["started_at"]) + float(hq["duration_s"]) - 0.5, (
        hq,
        branch,
    )
    for site in SITES:
        assert (_status_or_none(site) or {})["fleet"]["ok_revision"] == revision_of(fleet.fleet_dir), site


def test_a_change_to_one_sites_files_goes_live_only_at_that_site(fleet: Deployed) -> None:
    hq_before = _live("hq")
    edited_at = time.time()
    hq_uptime = _cli(fleet, "hq", "core show uptime seconds")
    _edit(
        fleet.fleet_dir / "sites" / "branch" / "extensions.yaml",
        "name: Branch sales",
        "name: Branch sales desk",
    )
    whole = revision_of(fleet.fleet_dir)
    assert site_revision(fleet.fleet_dir, "hq") == hq_before

    _wait_live("branch", site_revision(fleet.fleet_dir, "branch"))
    assert "Branch sales desk" in _caller_name(fleet, "branch", "5001")
    # hq reconciled the same revision (the gate asked it) and found nothing of its own to do.
    assert poll(
        lambda: ((_status_or_none("hq") or {}).get("fleet") or {}).get("ok_revision") == whole, 60.0, 0.5
    )
    hq = _status_or_none("hq") or {}
    assert hq["live"]["revision"] == hq_before
    new_records = [r for r in hq.get("history") or [] if _epoch(r["started_at"]) >= edited_at - 1]
    assert not [r for r in new_records if r.get("result") == "applied"], new_records
    assert "Branch sales desk" not in _cli(fleet, "hq", "pjsip show endpoints")
    assert _uptime(hq_uptime) <= _uptime(_cli(fleet, "hq", "core show uptime seconds"))


def _uptime(text: str) -> int:
    match = re.search(r"System uptime:\s*(\d+)", text)
    assert match, text
    return int(match[1])


def test_a_change_that_breaks_the_canary_holds_the_rollout_and_the_fix_lets_it_through(
    fleet: Deployed,
) -> None:
    good = {site: site_revision(fleet.fleet_dir, site) for site in SITES}
    for site in SITES:
        _wait_live(site, good[site])
    hq_file = fleet.fleet_dir / "sites" / "hq" / "extensions.yaml"
    branch_file = fleet.fleet_dir / "sites" / "branch" / "extensions.yaml"
    # One change: a rename at branch, and a codec no Asterisk has at hq (refused by validation).
    _edit(branch_file, "name: Branch reception", "name: Branch front desk")
    _edit(hq_file, "name: Sales\n", "name: Sales\n    codecs: [not-a-codec]\n")
    broken = site_revision(fleet.fleet_dir, "hq")

    record = poll(lambda: _record_for("hq", broken), REACH_TIMEOUT_S, interval_s=0.5)
    assert record, "hq did not reconcile the broken revision"
    assert record["result"] not in ("applied", "unchanged"), record
    branch = poll(
        lambda: (s := _status_or_none("branch")) and s["fleet"]["rollout"]["state"] == "held" and s,
        60.0,
        interval_s=0.5,
    )
    assert branch, f"branch never held the rollout: {(_status_or_none('branch') or {}).get('fleet')}"
    assert branch["fleet"]["rollout"]["waiting_for"] == "hq", branch["fleet"]
    assert _live("hq") == good["hq"] and _live("branch") == good["branch"]
    assert "Branch front desk" not in _caller_name(fleet, "branch", "5000")
    report = _fleet_status(fleet)
    assert report["rollout"]["state"] == "held", report["rollout"]
    assert {s["name"]: s["rollout"]["state"] for s in report["sites"]}["branch"] == "held"

    _edit(hq_file, "    codecs: [not-a-codec]\n", "")
    for site in SITES:
        _wait_live(site, site_revision(fleet.fleet_dir, site))
    assert _live("hq") == good["hq"], "hq is back on the same content: the same revision"
    assert "Branch front desk" in _caller_name(fleet, "branch", "5000")


def _fleet_status(fleet: Deployed) -> dict[str, Any]:
    done = subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "reconciler"),
            "fleet",
            "status",
            "--json",
            "--fleet",
            str(fleet.fleet_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_a_killed_asterisk_is_restarted_on_its_live_revision_and_phones_register_again(
    fleet: Deployed,
) -> None:
    live = _live("hq")
    assert live is not None
    old = _task_container(fleet, "hq")
    subprocess.run(["docker", "kill", old], capture_output=True, check=True)

    def replaced() -> str | None:
        ids = docker_out(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={fleet.stack}_hq-asterisk"
        ).split()
        return ids[0] if ids and ids[0] != old[: len(ids[0])] else None

    assert poll(replaced, 90.0, interval_s=1.0), "Swarm did not start a new hq Asterisk"
    assert poll(lambda: _booted(fleet, "hq"), 60.0, interval_s=1.0), "hq's new Asterisk did not boot"
    status = poll(
        lambda: (s := _status_or_none("hq")) and s["asterisk"]["reachable"] and s["summary"]["healthy"] and s,
        90.0,
        interval_s=1.0,
    )
    assert status, f"hq is not healthy again: {(_status_or_none('hq') or {}).get('summary')}"
    assert status["live"]["revision"] == live
    password = fleet.secret("hq", "EXT_4001_PASSWORD")
    result = sipp.register("4001", password, 5160)
    assert result.final_status("REGISTER") == 200, result.describe()
    sipp.unregister("4001", password, 5160)
    assert "4002" in _cli(fleet, "hq", "pjsip show endpoints")


def test_a_change_that_adds_a_secret_goes_live_once_fleet_up_runs_again(fleet: Deployed) -> None:
    hq_file = fleet.fleet_dir / "sites" / "hq" / "extensions.yaml"
    _edit(
        hq_file,
        "inbound:\n",
        '  - number: "4003"\n    name: Accounts\n    password: ${EXT_4003_PASSWORD}\ninbound:\n',
    )
    revision = site_revision(fleet.fleet_dir, "hq")
    record = poll(lambda: _record_for("hq", revision), REACH_TIMEOUT_S, interval_s=0.5)
    assert record, "hq did not reconcile the change"
    assert record["result"] == "invalid" and "EXT_4003_PASSWORD" in record["reason"], record

    up, seconds = fleet_up(fleet.fleet_dir, fleet.stack)
    assert up.returncode == 0, up.stdout[-6000:]
    assert "EXT_4003_PASSWORD" in up.stdout  # generated, and a new Swarm secret for it
    record_timing("fleet_up_with_a_new_secret_s", seconds)
    _wait_live("hq", revision)
    password = fleet.secret("hq", "EXT_4003_PASSWORD")
    result = sipp.register("4003", password, 5160)
    assert result.final_status("REGISTER") == 200, result.describe()
    sipp.unregister("4003", password, 5160)
