"""The revision id of a desired directory: the git commit when it is committed, else a content hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from reconciler.desired.load import desired_entries, read_entry
from reconciler.safeio import FileRefused


def content_hash(desired_dir: Path) -> str:
    """`sha256:<hex>` over the desired files (name and bytes) in name order, i.e. what `load` reads,
    listed by the same `desired_entries()`. A refused entry (a symlink leaving the directory or
    to nothing, a pipe, a file over the size limit) counts by its name and why it is refused: its
    target is never read, and the revision changes when the entry appears, goes or becomes usable.
    A fleet directory (`fleet.yaml`) is hashed over `fleet_entries()`, named by their relative
    paths, so a change in fleet.yaml or in any base or site changes the revision."""
    from reconciler.desired.fleet import fleet_entries, is_fleet_dir

    directory = Path(desired_dir)
    named = (
        fleet_entries(directory)
        if is_fleet_dir(directory)
        else [(entry.name, entry) for entry in desired_entries(directory)]
    )
    digest = hashlib.sha256()
    for name, entry in named:
        try:
            data = read_entry(entry)
        except FileRefused as exc:
            digest.update(name.encode() + b"\0refused\0" + exc.reason.encode() + b"\0")
            continue
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return "sha256:" + digest.hexdigest()


def git_revision(desired_dir: Path) -> str | None:
    """HEAD's 40-hex sha when `desired_dir` is in a git work tree and nothing under it differs from
    HEAD (no modified, staged or untracked file); None otherwise."""
    try:
        import git
    except ImportError:  # pragma: no cover - GitPython is a dependency, but git itself may be absent
        return None
    try:
        repo = git.Repo(desired_dir, search_parent_directories=True)
        if repo.bare:
            return None
        sha = repo.head.commit.hexsha
        workdir = Path(repo.working_tree_dir or "").resolve()
        rel = str(Path(desired_dir).resolve().relative_to(workdir)) or "."
        if repo.is_dirty(index=True, working_tree=True, untracked_files=True, path=rel):
            return None
        if repo.git.ls_files("--others", "--exclude-standard", "--", rel).strip():
            return None
        return sha
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError, ValueError):
        return None


def revision_of(desired_dir: Path) -> str:
    """The git commit sha (40 hex) when `desired_dir` is inside a clean git work tree, else
    `sha256:<hex>` of its contents. Both are stable: same input, same revision."""
    return git_revision(desired_dir) or content_hash(desired_dir)
