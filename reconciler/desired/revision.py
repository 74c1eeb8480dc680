"""The revision id of a desired directory: the git commit when it is committed, else a content hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from reconciler.desired.load import DesiredEntry, desired_entries, read_entry
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
    return _digest(_records(named))


def _records(named: list[tuple[str, DesiredEntry]]) -> list[tuple[str, bytes]]:
    """What each entry adds to a content hash: its name and bytes, or its name and why it is refused."""
    records = []
    for name, entry in named:
        try:
            data = read_entry(entry)
        except FileRefused as exc:
            records.append((name, name.encode() + b"\0refused\0" + exc.reason.encode() + b"\0"))
            continue
        records.append((name, name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data))
    return records


def _digest(records: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for _, record in records:
        digest.update(record)
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


def site_revision(fleet_dir: Path, site: str) -> str:
    """The revision id of one site of a fleet: in a clean git work tree, the newest commit that
    changed one of the site's inputs (`fleet.site_inputs`: fleet.yaml, its bases, its folder), else
    `sha256:<hex>` over those inputs alone. Either way a change to another site's files leaves it
    as it was, so that site is not re-applied (docs/fleet.md "Revisions of a site")."""
    return site_revisions(fleet_dir, site)[0]


def site_revisions(fleet_dir: Path, site: str) -> tuple[str, str]:
    """(`site_revision`, `revision_of` the whole fleet directory), from one look at git and one
    read of the files. Raises `ValidationFailed` when fleet.yaml does not load."""
    from reconciler.desired.fleet import fleet_entries, is_site_input, load_fleet, site_inputs

    fleet_dir = Path(fleet_dir)
    inputs = site_inputs(load_fleet(fleet_dir), site)
    head = git_revision(fleet_dir)
    if head is not None:
        found = git_last_change(fleet_dir, inputs)
        if found is not None:
            return found, head
    records = _records(fleet_entries(fleet_dir))
    mine = _digest([(name, record) for name, record in records if is_site_input(name, inputs)])
    return mine, head or _digest(records)


def git_last_change(directory: Path, paths: tuple[str, ...], ref: str = "HEAD") -> str | None:
    """The newest commit at or before `ref` that changed one of `paths` (relative to `directory`,
    inside a git work tree), or None."""
    try:
        import git
    except ImportError:  # pragma: no cover
        return None
    try:
        repo = git.Repo(directory, search_parent_directories=True)
        workdir = Path(repo.working_tree_dir or "").resolve()
        rel = Path(directory).resolve().relative_to(workdir)
        where = [(rel / p).as_posix() for p in paths]
        commit = next(repo.iter_commits(ref, paths=where, max_count=1), None)
        return commit.hexsha if commit is not None else None
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError, ValueError):
        return None
