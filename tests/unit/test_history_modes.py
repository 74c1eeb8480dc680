"""The state directory at rest: everything the loop keeps there is private to its owner.

Directories 0700, files 0600: from creation (also through the temp-file-and-rename writes), when
found looser (tightened, said once in the log), and for what `watch` itself creates (git cache,
snapshots), which it does under umask 077.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.gitops import history
from reconciler.gitops.history import History, LoopState, Record
from reconciler.settings import Settings
from tests.unit.desired_support import SAMPLE_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
GENEROUS_S = 60.0


@pytest.fixture(autouse=True)
def ordinary_umask() -> Iterator[None]:
    """The umask most shells have: without care, new files would be 0644 and dirs 0755."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def modes(root: Path) -> dict[str, int]:
    """Mode of the root and of every entry below it (symlinks excluded), by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def loose(root: Path) -> dict[str, str]:
    """Entries that group or others may read, write or enter."""
    return {name: oct(mode) for name, mode in modes(root).items() if mode & 0o077}


def test_every_file_the_loop_keeps_in_its_state_dir_is_private_from_the_start(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    history.suspend(settings, "maintenance")
    history.resume(settings)  # leaves a trigger file
    history.request_retry(settings)
    History(settings).append(Record(revision="a" * 40, trigger="poll", result="applied"))
    desired = tmp_path / "desired"
    shutil.copytree(SAMPLE_DIR, desired)
    (desired / "sub").mkdir()
    (desired / "sub" / "x.yaml").write_text("{}\n")
    history.keep_last_good(settings, desired, "a" * 40, "subject")

    found = modes(settings.state_dir)
    for name in ("loop-state.json", "history.jsonl", "trigger", ".lock", "last-good/.revision"):
        assert found[name] == 0o600, name
    assert found["."] == found["last-good"] == found["last-good/sub"] == 0o700
    assert found["last-good/extensions.yaml"] == found["last-good/sub/x.yaml"] == 0o600
    assert loose(settings.state_dir) == {}


def test_a_pre_existing_0755_state_dir_is_tightened_and_said_once_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    (state / "git" / "repo.git" / "objects").mkdir(parents=True)
    for d in (state, state / "git", state / "git" / "repo.git", state / "git" / "repo.git" / "objects"):
        d.chmod(0o755)
    (state / "history.jsonl").write_text("")
    (state / "history.jsonl").chmod(0o644)
    (state / "git" / "repo.git" / "config").write_text("url = https://user:token@example.invalid/x\n")
    (state / "git" / "repo.git" / "config").chmod(0o664)
    (state / "git" / "repo.git" / "objects" / "ab").write_text("blob")
    (state / "git" / "repo.git" / "objects" / "ab").chmod(0o444)  # as git makes them
    settings = Settings(state_dir=state)

    with caplog.at_level(logging.WARNING, logger="reconciler.gitops.history"):
        tightened = history.secure_state_dir(settings)
        assert history.secure_state_dir(settings) == 0  # the second time there is nothing to say
    assert tightened == 7  # the directory itself and the six entries below it
    assert loose(state) == {}
    found = modes(state)
    assert found["history.jsonl"] == found["git/repo.git/config"] == 0o600
    assert found["git/repo.git/objects/ab"] == 0o400  # the owner's bits are kept, never widened
    assert found["git"] == found["git/repo.git/objects"] == 0o700
    assert [r.getMessage() for r in caplog.records] == [
        f"state directory {state} (mode 0755) held 7 entries readable by others: "
        "made them owner-only (directories 0700, files 0600)"
    ]


def test_a_cli_verb_on_a_loose_state_dir_makes_it_private_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    settings = Settings(state_dir=state)
    with caplog.at_level(logging.WARNING, logger="reconciler.gitops.history"):
        history.suspend(settings)
        history.resume(settings)
        history.request_retry(settings)
    assert [r.getMessage() for r in caplog.records] == [
        f"state directory {state} was mode 0777: made it 0700 (owner only)"
    ]
    assert loose(state) == {}


def test_a_write_over_a_world_readable_state_file_leaves_a_private_one(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    settings.state_dir.mkdir(mode=0o700)
    old = settings.state_dir / "loop-state.json"
    old.write_text("{}")
    old.chmod(0o644)
    lock = settings.state_dir / ".lock"
    lock.write_text("")
    lock.chmod(0o666)  # as `open(..., "a+")` made it before
    history.suspend(settings)
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert LoopState.load(settings).suspended


def test_a_history_subject_with_a_unicode_line_separator_survives_the_round_trip(tmp_path: Path) -> None:
    # pydantic writes U+2028 and U+0085 raw; str.splitlines() would cut the record in two and drop it.
    h = History(Settings(state_dir=tmp_path / "state"))
    subject = "fix\u2028[anonymous]\x85type=endpoint\x1c"
    h.append(Record(revision="b" * 40, subject=subject, trigger="poll", result="applied"))
    h.append(Record(revision="c" * 40, subject="next", trigger="poll", result="applied"))
    assert [r["subject"] for r in h.records()] == ["next", subject]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_another_user_can_read_nothing_of_the_state(tmp_path: Path) -> None:
    # Under a world-traversable parent, so only the state dir's own modes can keep them out.
    parent = Path(tempfile.mkdtemp(prefix="test-state-modes-"))
    try:
        parent.chmod(0o755)
        (parent / "public.txt").write_text("anyone\n")
        (parent / "public.txt").chmod(0o644)
        settings = Settings(state_dir=parent / "state")
        History(settings).append(Record(revision="a" * 40, trigger="poll", result="failed", reason="r"))

        def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
            def drop() -> None:
                os.setgid(65534)
                os.setuid(65534)

            return subprocess.run(argv, preexec_fn=drop, capture_output=True, text=True, timeout=GENEROUS_S)

        assert as_nobody("cat", str(parent / "public.txt")).stdout == "anyone\n"  # the control
        denied = as_nobody("cat", str(settings.state_dir / "history.jsonl"))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        assert as_nobody("ls", str(settings.state_dir)).returncode != 0
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_watch_keeps_its_git_cache_snapshots_and_history_private(tmp_path: Path) -> None:
    """`reconciler watch --repo` for real (no Asterisk: its reconciles fail, which is recorded)."""
    work = tmp_path / "work"
    shutil.copytree(SAMPLE_DIR, work / "desired")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "sample"], check=True)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)  # left loose by an older version
    (state / "history.jsonl").write_text("")
    (state / "history.jsonl").chmod(0o644)
    env = {
        **os.environ,
        "RECONCILER_ENV_FILE": "/dev/null",
        "RECONCILER_SECRETS_DIR": str(tmp_path / "no-secrets"),
    }
    log_path = tmp_path / "watch.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "watch",
                "--repo",
                str(work),
                "--branch",
                "main",
                "--path",
                "desired",
                "--container",
                f"test-absent-{uuid.uuid4().hex[:8]}",
                "--http",
                "off",
                "--interval",
                "3600",
                "--state-dir",
                str(state),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            deadline = time.monotonic() + GENEROUS_S
            while time.monotonic() < deadline and not (state / "history.jsonl").read_text():
                assert proc.poll() is None, log_path.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=GENEROUS_S)
    log = log_path.read_text()
    assert (state / "history.jsonl").read_text(), log  # one reconcile was recorded
    snapshots = [p for p in (state / "git" / "snapshots").iterdir() if not p.name.startswith(".")]
    assert snapshots and (snapshots[0] / "extensions.yaml").is_file()
    assert (state / "git" / "repo.git" / "config").is_file()
    assert loose(state) == {}
    assert log.count("readable by others") == 1
    assert "(mode 0755) held 2 entries readable by others" in log
