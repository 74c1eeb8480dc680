"""GitSource follows a branch of a bare repo and exports the desired subtree of its head commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import git
import pytest

from reconciler.gitops.sources import GitSource, SourceInvalid, SourceUnavailable


def run(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path]:
    """A bare repo as the remote and a work clone to push from."""
    bare = tmp_path / "remote.git"
    run("init", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    run("clone", "-q", str(bare), str(work), cwd=tmp_path)
    run("config", "user.email", "t@example.invalid", cwd=work)
    run("config", "user.name", "Tester", cwd=work)
    run("checkout", "-q", "-b", "main", cwd=work)
    return bare, work


def commit(work: Path, files: dict[str, str], message: str, push: bool = True) -> str:
    for name, text in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        run("add", name, cwd=work)
    run("commit", "-q", "-m", message, cwd=work)
    if push:
        run("push", "-q", "origin", "main", cwd=work)
    return run("rev-parse", "HEAD", cwd=work)


def test_a_snapshot_holds_exactly_the_desired_subtree_of_the_branch_head(remote, tmp_path: Path) -> None:
    bare, work = remote
    sha = commit(
        work,
        {"desired/extensions.yaml": "extensions: []\n", "README.md": "x", "desired/sub/a.yaml": "a"},
        "Add extensions",
    )
    snap = GitSource(str(bare), "main", "desired", cache_dir=tmp_path / "cache").snapshot()
    assert snap.revision == sha
    assert snap.subject == "Add extensions"
    assert snap.author == "Tester"
    assert sorted(str(p.relative_to(snap.path)) for p in snap.path.rglob("*") if p.is_file()) == [
        "extensions.yaml",
        "sub/a.yaml",
    ]
    assert (snap.path / "extensions.yaml").read_text() == "extensions: []\n"


def test_a_new_push_is_seen_by_the_next_snapshot(remote, tmp_path: Path) -> None:
    bare, work = remote
    commit(work, {"desired/a.yaml": "1\n"}, "first")
    source = GitSource(str(bare), "main", "desired", cache_dir=tmp_path / "cache")
    first = source.snapshot()
    second_sha = commit(work, {"desired/a.yaml": "2\n"}, "second")
    second = source.snapshot()
    assert second.revision == second_sha != first.revision
    assert (second.path / "a.yaml").read_text() == "2\n"
    # The older snapshot is untouched: each revision has its own directory.
    assert (first.path / "a.yaml").read_text() == "1\n"


def test_a_force_push_rewriting_history_is_followed_without_conflict(remote, tmp_path: Path) -> None:
    bare, work = remote
    commit(work, {"desired/a.yaml": "1\n"}, "first")
    source = GitSource(str(bare), "main", "desired", cache_dir=tmp_path / "cache")
    source.snapshot()
    commit(work, {"desired/a.yaml": "2\n"}, "second")
    run("reset", "-q", "--hard", "HEAD~1", cwd=work)
    rewritten = commit(work, {"desired/a.yaml": "3\n"}, "rewritten", push=False)
    run("push", "-q", "--force", "origin", "main", cwd=work)
    snap = source.snapshot()
    assert snap.revision == rewritten
    assert (snap.path / "a.yaml").read_text() == "3\n"


def test_the_cache_is_reused_by_a_new_source_object(remote, tmp_path: Path) -> None:
    bare, work = remote
    sha = commit(work, {"desired/a.yaml": "1\n"}, "first")
    GitSource(str(bare), "main", "desired", cache_dir=tmp_path / "cache").snapshot()
    assert git.Repo(tmp_path / "cache" / "repo.git").bare
    assert GitSource(str(bare), "main", "desired", cache_dir=tmp_path / "cache").snapshot().revision == sha


def test_an_older_revision_can_be_exported_again(remote, tmp_path: Path) -> None:
    bare, work = remote
    first = commit(work, {"desired/a.yaml": "1\n"}, "first")
    commit(work, {"desired/a.yaml": "2\n"}, "second")
    source = GitSource(str(bare), "main", "desired", cache_dir=tmp_path / "cache")
    source.snapshot()
    old = source.snapshot_at(first)
    assert old is not None and (old.path / "a.yaml").read_text() == "1\n"
    assert source.snapshot_at("f" * 40) is None


def test_an_unreachable_remote_is_a_temporary_error(tmp_path: Path) -> None:
    source = GitSource(str(tmp_path / "missing.git"), "main", "desired", cache_dir=tmp_path / "cache")
    with pytest.raises(SourceUnavailable) as info:
        source.snapshot()
    assert info.value.temporary


def test_a_missing_branch_or_path_is_a_permanent_error(remote, tmp_path: Path) -> None:
    bare, work = remote
    commit(work, {"other/a.yaml": "1\n"}, "first")
    with pytest.raises(SourceInvalid) as no_path:
        GitSource(str(bare), "main", "desired", cache_dir=tmp_path / "c1").snapshot()
    assert not no_path.value.temporary
    with pytest.raises(SourceInvalid):
        GitSource(str(bare), "nosuch", "desired", cache_dir=tmp_path / "c2").snapshot()


def test_symlinks_in_the_repo_are_not_exported(remote, tmp_path: Path) -> None:
    bare, work = remote
    (work / "desired").mkdir()
    (work / "desired" / "link.yaml").symlink_to("/etc/passwd")
    commit(work, {"desired/a.yaml": "1\n"}, "with link", push=False)
    run("add", "desired/link.yaml", cwd=work)
    run("commit", "-q", "-m", "link", cwd=work)
    run("push", "-q", "origin", "main", cwd=work)
    snap = GitSource(str(bare), "main", "desired", cache_dir=tmp_path / "cache").snapshot()
    assert not (snap.path / "link.yaml").exists()
    assert (snap.path / "a.yaml").exists()


def test_credentials_in_the_remote_url_never_appear_in_messages(tmp_path: Path) -> None:
    url = "https://deploy:glpat-SECRETTOKEN@127.0.0.1:9/acme/pbx.git"
    source = GitSource(url, "main", "desired", cache_dir=tmp_path / "cache")
    assert "SECRETTOKEN" not in source.describe()
    with pytest.raises(SourceUnavailable) as info:
        source.snapshot()
    assert "SECRETTOKEN" not in str(info.value)
    assert "***@127.0.0.1" in str(info.value)
