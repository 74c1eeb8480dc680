"""collect_status: where the desired head comes from (a local directory, or the watch loop's branch head)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.desired.revision import revision_of
from reconciler.gitops import history
from reconciler.gitops.history import History, Record
from reconciler.observe.status import collect_status
from reconciler.settings import Settings

HEAD = "1f0c2a9e77b41f0c2a9e77b41f0c2a9e77b41f0c"
OLDER = "0123456789abcdef0123456789abcdef01234567"

ENDPOINTS = """
 Endpoint:  <Endpoint/CID.....................................>  <State.....>  <Channels.>
==========================================================================================

 Endpoint:  4001/4001                                            Unavailable   0 of inf
     InAuth:  4001-auth/4001
        Aor:  4001                                               1


Objects found: 1
"""

EXTENSIONS_YAML = 'extensions:\n  - number: "4001"\n    name: {name}\n    password: ${{EXT_4001_PASSWORD}}\n'


@dataclass
class _Steps:
    outputs: list[str]


class FakeClient:
    """Answers the status exec with a state.json naming `live` as the live revision."""

    managed_dir = "/etc/asterisk/managed"
    container_name = "pbx"

    def __init__(self, live: str | None) -> None:
        self.live = live

    def run_steps(self, steps: list[str]) -> _Steps:
        state = json.dumps({"revision": self.live, "subject": "s", "applied_at": "2026-11-26T15:00:00+00:00"})
        outputs = [state if self.live else "", "", ENDPOINTS, "System uptime: 42\n"]
        return _Steps(outputs + [""] * (len(steps) - len(outputs)))

    def run(self, *commands: str) -> list[str]:
        return ["" for _ in commands]


def _settings(tmp_path: Path) -> Settings:
    # A `desired/` of the working directory with other content: `watch --repo` must not read it.
    stray = tmp_path / "cwd" / "desired"
    stray.mkdir(parents=True)
    (stray / "extensions.yaml").write_text(EXTENSIONS_YAML.format(name="Stray"))
    return Settings(state_dir=tmp_path / "state", desired_dir=stray)


def _loop_fetched(settings: Settings, revision: str, subject: str) -> None:
    def head(s: history.LoopState) -> None:
        s.head_revision, s.head_subject = revision, subject

    history.update_state(settings, head)


def test_watch_repo_status_reports_the_fetched_branch_head_not_the_working_directory(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _loop_fetched(settings, HEAD, "Add reception phone")

    status = collect_status(settings, FakeClient(live=HEAD), head_from_loop=True)

    assert status["desired"] == {
        "dir": None,
        "revision": HEAD,
        "subject": "Add reception phone",
        "error": None,
        "pending": False,
    }


def test_watch_repo_status_is_pending_while_the_branch_head_is_not_live(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _loop_fetched(settings, HEAD, "Add reception phone")

    assert collect_status(settings, FakeClient(live=OLDER), head_from_loop=True)["desired"]["pending"] is True
    assert collect_status(settings, FakeClient(live=None), head_from_loop=True)["desired"]["pending"] is True


def test_a_branch_head_that_failed_carries_the_reason_from_the_history(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _loop_fetched(settings, HEAD, "Add 4007 (typo)")
    reason = "desired/extensions.yaml:7: number: must be digits"
    history.update_state(settings, lambda s: s.mark_failed(HEAD, "invalid", reason))
    History(settings).append(Record(revision=HEAD, trigger="webhook", result="invalid", reason=reason))

    desired = collect_status(settings, FakeClient(live=OLDER), head_from_loop=True)["desired"]

    assert desired["pending"] is True
    assert desired["error"] == reason


def test_watch_repo_names_extensions_from_the_revision_the_loop_applied(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _loop_fetched(settings, HEAD, "Add reception phone")
    kept = history.last_good_dir(settings)
    kept.mkdir(parents=True)
    (kept / "extensions.yaml").write_text(EXTENSIONS_YAML.format(name="Reception"))

    status = collect_status(settings, FakeClient(live=HEAD), head_from_loop=True)

    assert [(e["number"], e["name"]) for e in status["extensions"]] == [("4001", "Reception")]


def test_before_the_loop_fetched_anything_there_is_no_desired_head(tmp_path: Path) -> None:
    status = collect_status(_settings(tmp_path), FakeClient(live=HEAD), head_from_loop=True)
    assert status["desired"] is None


def test_status_on_the_host_keeps_reading_the_desired_directory(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _loop_fetched(settings, HEAD, "a branch head in the same state dir")

    status: dict[str, Any] = collect_status(settings, FakeClient(live=HEAD))

    assert status["desired"]["dir"] == str(settings.desired_dir)
    assert status["desired"]["revision"] == revision_of(settings.desired_dir)
    assert status["desired"]["pending"] is True
    assert [(e["number"], e["name"]) for e in status["extensions"]] == [("4001", "Stray")]
