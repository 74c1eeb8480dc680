"""The revision of a desired dir: the git commit when clean, a content hash otherwise."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import git

from reconciler.desired.revision import content_hash, revision_of
from tests.unit.desired_support import SAMPLE_DIR


def make_repo(tmp_path: Path) -> tuple[git.Repo, Path]:
    repo = git.Repo.init(tmp_path / "repo")
    desired = Path(repo.working_tree_dir or "") / "desired"
    shutil.copytree(SAMPLE_DIR, desired)
    repo.index.add([str(p) for p in desired.iterdir()])
    actor = git.Actor("Test", "test@example.invalid")
    repo.index.commit("sample", author=actor, committer=actor)
    return repo, desired


def test_a_clean_git_work_tree_gives_the_commit_sha(tmp_path: Path) -> None:
    repo, desired = make_repo(tmp_path)
    assert revision_of(desired) == repo.head.commit.hexsha
    assert re.fullmatch(r"[0-9a-f]{40}", revision_of(desired))


def test_a_modified_or_untracked_desired_file_gives_the_content_hash(tmp_path: Path) -> None:
    _, desired = make_repo(tmp_path)
    (desired / "extra.yaml").write_text("# new\n")
    assert revision_of(desired) == content_hash(desired)
    (desired / "extra.yaml").unlink()
    (desired / "pbx.yaml").write_text("pbx: {}\n")
    assert revision_of(desired).startswith("sha256:")


def test_changes_outside_the_desired_dir_do_not_make_it_dirty(tmp_path: Path) -> None:
    repo, desired = make_repo(tmp_path)
    (desired.parent / "notes.txt").write_text("unrelated\n")
    assert revision_of(desired) == repo.head.commit.hexsha


def test_the_content_hash_is_stable_and_follows_names_and_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(SAMPLE_DIR, a)
    shutil.copytree(SAMPLE_DIR, b)
    assert revision_of(a) == revision_of(b) == content_hash(a)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", content_hash(a))
    (b / "pbx.yaml").rename(b / "pbx2.yaml")
    assert content_hash(a) != content_hash(b)
    (a / "README.txt").write_text("not a desired file\n")
    assert content_hash(a) == revision_of(a)
