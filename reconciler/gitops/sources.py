"""Where desired state comes from: a git branch or a local directory, behind one small interface.

A `Source` produces a `Snapshot`: a directory holding the desired files of exactly one revision.
`GitSource` keeps a bare clone in a cache directory, fetches the branch and exports the `path`
subtree of the fetched commit's tree (no work tree, no checkout, no merge: nothing a hand edit or a
force-push can leave in conflict). `DirectorySource` copies a local directory and watches it.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import git
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from reconciler.desired.fleet import fleet_entries, is_fleet_dir
from reconciler.desired.load import (
    DANGLING_LINK,
    LEAVES_DIRECTORY,
    NOT_REGULAR,
    DesiredEntry,
    desired_entries,
    is_desired_name,
    write_refused,
)
from reconciler.errors import ReconcilerError

KEEP_SNAPSHOTS = 4


class SourceUnavailable(ReconcilerError):
    """The source cannot be read right now (remote unreachable, directory gone): retry later."""

    temporary = True


class SourceInvalid(ReconcilerError):
    """The source has no desired state to offer (no such branch or path): needs a new revision."""


@dataclass(frozen=True)
class Snapshot:
    """The desired files of one revision, exported into their own directory."""

    path: Path
    revision: str
    subject: str | None = None
    author: str | None = None
    committed_at: str | None = None
    # How problems should name this directory's files for a person (e.g. "desired").
    display_path: str = "desired"
    # A fleet site: `revision` is the site's own (it changes only with the site's inputs) and this
    # is the whole source's (the commit, or the fleet dir's hash), which the rollout gate compares.
    source_revision: str | None = None

    @property
    def fleet_revision(self) -> str:
        """The revision of the whole source (for one PBX, the revision itself)."""
        return self.source_revision or self.revision


class Source(Protocol):
    """Anything that can produce the current desired state as a snapshot."""

    def snapshot(self) -> Snapshot:
        """Fetch (if remote) and export the head revision."""
        ...

    def snapshot_at(self, revision: str) -> Snapshot | None:
        """Export an older revision if this source can still produce it, else None."""
        ...

    def describe(self) -> str:
        """A short human description, e.g. `git /srv/pbx.git#main:desired`."""
        ...

    def close(self) -> None:
        """Stop any background watching."""
        ...


def redact_url(text: str) -> str:
    """Hide credentials in URLs (`https://user:token@host/...` → `https://***@host/...`)."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", text)


def _prune(snapshots_dir: Path, keep: Path) -> None:
    """Delete all but the newest KEEP_SNAPSHOTS snapshot dirs (never `keep`)."""
    dirs = sorted(
        (p for p in snapshots_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in dirs[KEEP_SNAPSHOTS:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


class GitSource:
    """Follow `branch` of a git remote (URL or local path); export `path` of its head commit."""

    def __init__(
        self,
        url: str,
        branch: str = "main",
        path: str = "desired",
        *,
        cache_dir: Path,
        site: str | None = None,
    ) -> None:
        self.url = url
        self.branch = branch
        self.path = path.strip("/")
        self.cache_dir = Path(cache_dir)
        self.site = site  # `path` is a fleet: snapshots carry this site's revision
        self._lock = threading.Lock()
        self._repo: git.Repo | None = None

    def describe(self) -> str:
        return f"git {redact_url(self.url)}#{self.branch}:{self.path or '.'}"

    @property
    def _ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _open(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        repo_dir = self.cache_dir / "repo.git"
        if (repo_dir / "HEAD").exists():
            repo = git.Repo(repo_dir)
            if repo.remotes.origin.url != self.url:
                repo.remotes.origin.set_url(self.url)
        else:
            repo_dir.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.init(repo_dir, bare=True)
            repo.create_remote("origin", self.url)
        self._repo = repo
        return repo

    def fetch(self) -> str:
        """Fetch the branch from the remote; return the sha of its head."""
        repo = self._open()
        refspec = f"+refs/heads/{self.branch}:{self._ref}"
        try:
            # Never wait for a password prompt: a daemon has no terminal; fail and retry later.
            with repo.git.custom_environment(GIT_TERMINAL_PROMPT="0"):
                repo.git.fetch("--quiet", "--no-tags", "origin", refspec, kill_after_timeout=60)
        except git.GitCommandError as exc:
            stderr = redact_url((exc.stderr or "").strip().replace("\n", " "))
            if "couldn't find remote ref" in stderr:
                raise SourceInvalid(
                    f"branch {self.branch!r} does not exist in {redact_url(self.url)}",
                    "push the branch, or pass the right one with --branch",
                ) from exc
            raise SourceUnavailable(
                f"cannot fetch {redact_url(self.url)}: {stderr or redact_url(str(exc))}",
                "check that the remote is reachable and the credentials work; the loop retries",
            ) from exc
        return repo.commit(self._ref).hexsha

    def snapshot(self) -> Snapshot:
        with self._lock:
            self.fetch()
            return self._export(self._open().commit(self._ref))

    def snapshot_at(self, revision: str) -> Snapshot | None:
        with self._lock:
            try:
                commit = self._open().commit(revision)
            except (ValueError, git.BadName, git.BadObject):
                return None
            return self._export(commit)

    def _export(self, commit: git.Commit) -> Snapshot:
        tree = commit.tree
        if self.path:
            try:
                tree = tree / self.path
            except KeyError as exc:
                raise SourceInvalid(
                    f"commit {commit.hexsha[:12]} of {self.branch!r} has no {self.path!r} directory",
                    "commit the desired state under that path, or pass the right one with --path",
                ) from exc
            if tree.type != "tree":
                raise SourceInvalid(f"{self.path!r} in commit {commit.hexsha[:12]} is not a directory")
        snapshots = self.cache_dir / "snapshots"
        target = snapshots / commit.hexsha
        if not target.exists():
            # Commits are immutable: export once into a temp dir, rename into place.
            snapshots.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=snapshots, prefix=".export-"))
            try:
                _write_tree(tree, tmp)
                tmp.rename(target)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not target.exists():
                    raise
        target.touch()
        _prune(snapshots, keep=target)
        # A fleet site's revision is the newest commit that changed the site's inputs (its state
        # is the same at that commit and at the head): other sites' commits do not re-apply it.
        changed = self._site_commit(target, commit) if self.site else commit
        return Snapshot(
            path=target,
            revision=changed.hexsha,
            subject=changed.summary if isinstance(changed.summary, str) else changed.summary.decode(),
            author=changed.author.name,
            committed_at=changed.committed_datetime.isoformat(),
            display_path=self.path or ".",
            source_revision=commit.hexsha if self.site else None,
        )

    def _site_commit(self, exported: Path, head: git.Commit) -> git.Commit:
        from reconciler.desired.fleet import load_fleet, site_inputs

        assert self.site is not None
        try:
            inputs = site_inputs(load_fleet(exported), self.site)
        except ReconcilerError:
            return head  # an invalid fleet at this commit: the load reports it
        paths = [posixpath.join(self.path, p) if self.path else p for p in inputs]
        found = next(self._open().iter_commits(head.hexsha, paths=paths, max_count=1), None)
        return found if found is not None else head

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None


_REGULAR, _SYMLINK = 0o100000, 0o120000
_MAX_LINK_HOPS = 8


def _write_tree(tree: git.Tree, target: Path) -> None:
    """Write the regular files of `tree` (recursively) below `target`.

    A symlink is never written as a link (it must not make the reconciler read files outside the
    snapshot). A desired file (`load.is_desired_name`) that is a symlink is judged like
    `load.desired_entries` judges one in a directory: to a regular file of the tree, it is written
    as that file's content; leaving the tree or to nothing, it is written as the same refusal
    (`load.write_refused`), so the loop reports what `validate` reports on a checkout.
    """
    for entry in tree.traverse():
        item = cast("git.objects.base.IndexObject", entry)  # traverse() yields objects, not edges
        rel = Path(item.path).relative_to(tree.path) if tree.path else Path(item.path)
        dest = target / rel
        mode = item.mode & 0o170000
        desired = len(rel.parts) == 1 and is_desired_name(rel.name)
        if item.type == "blob" and mode == _REGULAR:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(item.data_stream.read())
        elif desired and item.type == "tree":
            dest.mkdir(parents=True, exist_ok=True)  # a directory named x.yaml: not a regular file
        elif desired:
            found = (
                _follow_link(tree, cast(git.Blob, item))
                if item.type == "blob" and mode == _SYMLINK
                else NOT_REGULAR
            )
            if isinstance(found, bytes):
                dest.write_bytes(found)
            else:
                write_refused(dest, found)


def _follow_link(tree: git.Tree, link: git.Blob, hops: int = 0) -> bytes | str:
    """The content a symlink blob points at inside `tree`, or why it is refused (a refusal reason
    of `load`). Targets are resolved lexically: absolute or escaping with `..` leaves the tree."""
    text = link.data_stream.read().decode("utf-8", "surrogateescape")
    here = posixpath.dirname(str(Path(link.path).relative_to(tree.path) if tree.path else link.path))
    joined = posixpath.normpath(posixpath.join(here, text))
    if text.startswith("/") or joined == ".." or joined.startswith("../"):
        return LEAVES_DIRECTORY
    try:
        found = tree / joined
    except KeyError:
        return DANGLING_LINK
    mode = found.mode & 0o170000
    if found.type == "blob" and mode == _REGULAR:
        return found.data_stream.read()
    if found.type == "blob" and mode == _SYMLINK:
        return DANGLING_LINK if hops >= _MAX_LINK_HOPS else _follow_link(tree, found, hops + 1)
    return NOT_REGULAR


class _Debounced(FileSystemEventHandler):
    """Calls `fire()` once after events stop arriving for `quiet_s` seconds."""

    IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".part")

    def __init__(self, fire: Callable[[], None], quiet_s: float) -> None:
        self.fire = fire
        self.quiet_s = quiet_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        name = Path(str(event.src_path)).name
        if event.event_type in ("opened", "closed_no_write") or name.startswith(".#"):
            return
        if name.endswith(self.IGNORED_SUFFIXES) and event.event_type != "moved":
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.quiet_s, self.fire)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


class DirectorySource:
    """A local directory of desired files, or a fleet directory (fleet.yaml, bases/, sites/: the
    snapshot holds the whole tree); `watch()` reports edits anywhere below it (recursively,
    debounced) to a callback."""

    def __init__(
        self, directory: Path, *, cache_dir: Path, quiet_s: float = 0.5, site: str | None = None
    ) -> None:
        self.directory = Path(directory)
        self.site = site  # a fleet directory: snapshots carry this site's revision
        self.cache_dir = Path(cache_dir)
        self.quiet_s = quiet_s
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._handler: _Debounced | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"dir {self.directory}"

    def _revision(self) -> tuple[str, str | None]:
        """(revision, source revision): for a fleet site, the site's own revision and the whole
        directory's; else the directory's and None."""
        from reconciler.desired import revision  # the core helper's module: git sha when clean, else a hash

        if self.site is None:
            return revision.revision_of(self.directory), None
        try:
            return revision.site_revisions(self.directory, self.site)
        except ReconcilerError:
            whole = revision.revision_of(self.directory)
            return whole, whole  # an invalid fleet.yaml: the load says why

    def snapshot(self) -> Snapshot:
        if not self.directory.is_dir():
            raise SourceUnavailable(
                f"desired-state directory {self.directory} does not exist",
                "create it or pass the right one with --dir; the loop retries",
            )
        with self._lock:
            # Copy, then make sure nobody changed the files meanwhile: the revision must name
            # exactly the files that get applied.
            for _ in range(5):
                before = self._revision()
                snap = self._copy(before)
                if self._revision() == before:
                    return snap
            raise SourceUnavailable(
                f"{self.directory} keeps changing while being read",
                "the loop tries again once the edits settle",
            )

    def snapshot_at(self, revision: str) -> Snapshot | None:
        target = self.cache_dir / "snapshots" / _safe_name(revision)
        return (
            Snapshot(path=target, revision=revision, display_path=str(self.directory))
            if target.is_dir()
            else None
        )

    def _entries(self) -> list[tuple[str, DesiredEntry]]:
        """(relative path, entry) of every file the snapshot holds: the desired files of a plain
        directory, or every file of a fleet (fleet.yaml, bases, sites)."""
        if is_fleet_dir(self.directory):
            return fleet_entries(self.directory)
        return [(entry.name, entry) for entry in desired_entries(self.directory)]

    def _copy(self, revisions: tuple[str, str | None]) -> Snapshot:
        revision, source_revision = revisions
        snapshots = self.cache_dir / "snapshots"
        snapshots.mkdir(parents=True, exist_ok=True)
        target = snapshots / _safe_name(revision)
        tmp = Path(tempfile.mkdtemp(dir=snapshots, prefix=".copy-"))
        try:
            # The same entries, and the same refusals, as `load_desired` on the directory itself
            # (for a fleet: every file `fleet_entries` lists, at its relative path).
            for name, entry in self._entries():
                target_path = tmp / name
                target_path.parent.mkdir(parents=True, exist_ok=True)
                if entry.refused is not None:
                    write_refused(target_path, entry.refused)
                else:
                    shutil.copyfile(entry.path, target_path)  # follows a link inside the dir
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        target.touch()
        _prune(snapshots, keep=target)
        return Snapshot(
            path=target,
            revision=revision,
            display_path=str(self.directory),
            source_revision=source_revision,
        )

    def watch(self, on_change: Callable[[], None]) -> bool:
        """Start a watchdog observer that calls `on_change()` after edits settle.

        Returns False when the directory cannot be watched (gone, inotify limits reached): the
        caller then relies on polling alone.
        """
        if self._observer is not None:
            return True
        self._handler = _Debounced(on_change, self.quiet_s)
        observer = Observer()
        observer.daemon = True
        try:
            observer.schedule(self._handler, str(self.directory), recursive=True)
            observer.start()
        except OSError:
            self._handler.cancel()
            self._handler = None
            return False
        self._observer = observer
        return True

    def close(self) -> None:
        if self._handler is not None:
            self._handler.cancel()
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(timeout=2)
            self._observer = None


def _safe_name(revision: str) -> str:
    return revision.replace(":", "-").replace("/", "-")
