"""Symlinks and odd entries are judged once (`load.desired_entries`): `validate`, the content hash of
a revision, and the watch loop's snapshots of a directory or a git tree all see the same files and
report the same problems, and no target outside the desired directory is ever read."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.desired.load import load_desired
from reconciler.desired.revision import content_hash
from reconciler.errors import ValidationFailed
from reconciler.gitops.sources import DirectorySource, GitSource
from tests.unit.hostile_support import write_full


def problems_of(directory: Path) -> list[str]:
    """The problems of `directory`, as (file name, line, field, message): snapshots live elsewhere."""
    with pytest.raises(ValidationFailed) as info:
        load_desired(directory)
    return [f"{Path(p.file).name}:{p.line}: {p.field}: {p.message}" for p in info.value.problems]


def hostile_dir(tmp_path: Path) -> Path:
    desired = write_full(tmp_path / "desired")
    outside = tmp_path / "outside.yaml"
    outside.write_text("inbound: []\n# SECRET-OUTSIDE\n")
    (desired / "out.yaml").symlink_to(outside)
    (desired / "up.yaml").symlink_to("../outside.yaml")
    (desired / "gone.yaml").symlink_to("missing.yaml")
    (desired / "loop.yaml").symlink_to("loop.yaml")
    (desired / "dir.yaml").mkdir()
    os.mkfifo(desired / "pipe.yaml")
    (desired / "shared").mkdir()
    (desired / "routes.yaml").rename(desired / "shared" / "routes.yaml")
    (desired / "routes.yaml").symlink_to("shared/routes.yaml")
    return desired


EXPECTED = [
    "dir.yaml:1: -: is not a regular file (a directory, pipe, socket or device)",
    "gone.yaml:1: -: is a symbolic link to nothing (dangling)",
    "loop.yaml:1: -: is a symbolic link to nothing (dangling)",
    "out.yaml:1: -: is a symbolic link that leaves the desired directory (its target is not read)",
    "pipe.yaml:1: -: is not a regular file (a directory, pipe, socket or device)",
    "up.yaml:1: -: is a symbolic link that leaves the desired directory (its target is not read)",
]


def test_the_cli_and_a_watched_directory_refuse_the_same_entries_the_same_way(tmp_path: Path) -> None:
    desired = hostile_dir(tmp_path)
    assert problems_of(desired) == EXPECTED
    snap = DirectorySource(desired, cache_dir=tmp_path / "cache").snapshot()
    assert problems_of(snap.path) == EXPECTED
    assert snap.revision == content_hash(desired)
    # The snapshot holds no link to anything outside it, and the in-directory link became a file.
    assert not any(os.path.realpath(p).startswith(str(tmp_path / "outside")) for p in snap.path.iterdir())
    assert (snap.path / "routes.yaml").is_file() and not (snap.path / "routes.yaml").is_symlink()


def test_a_symlink_inside_the_directory_is_read_the_same_by_the_cli_and_the_watch_loop(
    tmp_path: Path,
) -> None:
    desired = write_full(tmp_path / "desired")
    (desired / "shared").mkdir()
    (desired / "routes.yaml").rename(desired / "shared" / "routes.yaml")
    (desired / "routes.yaml").symlink_to("shared/routes.yaml")
    snap = DirectorySource(desired, cache_dir=tmp_path / "cache").snapshot()
    assert load_desired(snap.path).state == load_desired(desired).state


def test_the_content_hash_never_reads_a_target_outside_the_directory(tmp_path: Path) -> None:
    desired = hostile_dir(tmp_path)
    before = content_hash(desired)
    (tmp_path / "outside.yaml").write_text("inbound: []\n# another outside content\n")
    assert content_hash(desired) == before
    (desired / "out.yaml").unlink()
    assert content_hash(desired) != before


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_a_git_source_exports_symlinks_as_the_cli_would_judge_them_on_a_checkout(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    git("config", "user.email", "t@example.invalid", cwd=work)
    git("config", "user.name", "Tester", cwd=work)
    desired = write_full(work / "desired")
    (work / "outside.yaml").write_text("inbound: []\n")
    (desired / "out.yaml").symlink_to("/etc/passwd")
    (desired / "up.yaml").symlink_to("../outside.yaml")
    (desired / "gone.yaml").symlink_to("missing.yaml")
    (desired / "shared").mkdir()
    (desired / "routes.yaml").rename(desired / "shared" / "routes.yaml")
    (desired / "routes.yaml").symlink_to("shared/routes.yaml")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "links", cwd=work)
    expected = [
        "gone.yaml:1: -: is a symbolic link to nothing (dangling)",
        "out.yaml:1: -: is a symbolic link that leaves the desired directory (its target is not read)",
        "up.yaml:1: -: is a symbolic link that leaves the desired directory (its target is not read)",
    ]
    assert problems_of(desired) == expected  # the CLI on the checkout
    snap = GitSource(str(work), "main", "desired", cache_dir=tmp_path / "cache").snapshot()
    assert problems_of(snap.path) == expected  # the watch loop on the exported tree
    assert (snap.path / "routes.yaml").read_text() == (desired / "shared" / "routes.yaml").read_text()
