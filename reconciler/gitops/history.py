"""Reconcile history and loop state, persisted in `Settings.state_dir`.

Two writers share the state directory: the `watch` loop (records, failed revisions, last seen uptime)
and short CLI verbs in another process (`suspend`, `resume`, `retry`). Every read-modify-write holds
an exclusive `flock` on `state_dir/.lock`, and every file is replaced atomically (temp file + rename),
so a crash never leaves half a file and neither writer loses the other's change.

Files:
- `history.jsonl`: one JSON record per line, oldest first, bounded to `MAX_RECORDS`.
- `loop-state.json`: `LoopState` (suspend flag, failed revisions, retry request, last uptime, and
  the running totals of recorded reconciles that `/metrics` exposes as counters).
- `trigger`: present when a CLI verb asks the running loop to reconcile now (content: the reason).
- `last-good/`: the desired files of the revision the loop applied last (drift is healed from it).

Everything in the state directory is private to its owner: directories 0700, files 0600, written
so from the start (never readable by others for a moment) and tightened when found looser (a state
directory made by an older version, or by hand), with one log line saying so. `watch` also runs with
umask 077, so what other modules put here (the git cache and its exported snapshots) is private too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from reconciler.errors import ReconcilerError
from reconciler.settings import Settings

log = logging.getLogger("reconciler.gitops.history")

MAX_RECORDS = 200
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PRIVATE_UMASK = 0o077  # what `watch` runs with: everything it creates is owner-only
MAX_FAILED_REVISIONS = 50

Result = Literal["applied", "unchanged", "failed", "invalid", "drift-fixed", "drift-detected", "skipped"]
RESULTS: tuple[str, ...] = (
    "applied",  # a new revision is live and verified
    "unchanged",  # the head is live and the managed files match its render: nothing was done
    "failed",  # Asterisk refused the revision (rolled back) or a temporary error (see `temporary`)
    "invalid",  # the revision failed validation: nothing was rendered or applied
    "drift-fixed",  # the live revision was applied again (hand edit, wiped volume, restarted Asterisk)
    "drift-detected",  # like drift-fixed, but `--drift=warn`: only reported
    "skipped",  # suspended, or the head revision failed before and no retry was requested
)
# Upper bounds (seconds) of the reconcile duration histogram. `ReconcileTotals` keeps a running
# count per bound in the loop state, so changing them starts those buckets over.
DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def bucket_label(bound: float) -> str:
    """The `le` label of a histogram bound, as Prometheus writes it (`0.05`, `1`, `+Inf`)."""
    if bound == float("inf"):
        return "+Inf"
    return repr(int(bound)) if float(bound).is_integer() else repr(float(bound))


def utcnow() -> str:
    """The current time as an ISO 8601 UTC string with second precision."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class Record(BaseModel):
    """One reconcile, as kept in the history and printed by `reconciler history`."""

    revision: str | None
    subject: str | None = None
    trigger: str
    result: Result
    reason: str | None = None
    started_at: str = Field(default_factory=utcnow)
    duration_s: float = 0.0
    changes: list[str] = Field(default_factory=list)
    temporary: bool = False
    # Identical consecutive outcomes (same revision, result, reason) collapse into one record.
    count: int = 1
    last_at: str | None = None

    def same_outcome(self, other: Record) -> bool:
        """True when `other` says nothing new after this record (a repeat of the same outcome)."""
        return (self.revision, self.result, self.reason, self.changes) == (
            other.revision,
            other.result,
            other.reason,
            other.changes,
        )


class FailedRevision(BaseModel):
    result: Result
    reason: str | None
    at: str = Field(default_factory=utcnow)


class ReconcileTotals(BaseModel):
    """Running totals of the recorded reconciles since the state directory was created.

    Unlike the bounded history they only ever grow, so `/metrics` can expose them as Prometheus
    counters and a histogram. Updated by `History.append`, under the state lock.
    """

    results: dict[str, int] = Field(default_factory=dict)  # result -> reconciles
    # `le` label -> reconciles that took at most that long (cumulative, as exposed), incl. "+Inf".
    duration_buckets: dict[str, int] = Field(default_factory=dict)
    duration_sum_s: float = 0.0
    duration_count: int = 0

    def add(self, result: str, duration_s: float, count: int = 1) -> None:
        """Count `count` reconciles with `result` that took `duration_s` each."""
        duration = max(float(duration_s), 0.0)
        self.results[result] = self.results.get(result, 0) + count
        for bound in (*DURATION_BUCKETS, float("inf")):
            label = bucket_label(bound)
            self.duration_buckets[label] = self.duration_buckets.get(label, 0) + (
                count if duration <= bound else 0
            )
        self.duration_sum_s = round(self.duration_sum_s + duration * count, 6)
        self.duration_count += count

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> ReconcileTotals:
        """Totals counted from history records (JSON dicts); a record stands for `count` reconciles.

        The fallback for a state directory written before the totals existed. A collapsed record
        keeps only its first duration, so that duration is counted for each repeat.
        """
        totals = cls()
        for r in records:
            count = r.get("count", 1)
            duration = r.get("duration_s")
            totals.add(
                str(r.get("result") or "unknown"),
                float(duration) if isinstance(duration, int | float) else 0.0,
                count if isinstance(count, int) and count > 0 else 1,
            )
        return totals


class LoopState(BaseModel):
    """What the loop remembers between reconciles and restarts; CLI verbs change parts of it."""

    suspended: bool = False
    suspended_reason: str | None = None
    suspended_at: str | None = None
    failed: dict[str, FailedRevision] = Field(default_factory=dict)
    retry_requested: bool = False
    last_uptime_s: float | None = None
    last_applied_revision: str | None = None
    last_applied_subject: str | None = None
    # The head of the followed branch/dir at the last fetch (what "pending" compares with live).
    head_revision: str | None = None
    head_subject: str | None = None
    # Never decreasing counts for /metrics; None in a state file written before they existed.
    totals: ReconcileTotals | None = None

    @classmethod
    def load(cls, settings: Settings) -> LoopState:
        """Read the loop state; a missing or unparsable file is the default state."""
        path = _state_path(settings)
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return cls()
        except PermissionError as exc:
            raise _not_ours(path) from exc

    def save(self, settings: Settings) -> None:
        """Write the loop state atomically. Callers that read-modify-write use `update_state`."""
        _atomic_write(_state_path(settings), self.model_dump_json(indent=2) + "\n")

    def mark_failed(self, revision: str, result: Result, reason: str | None) -> None:
        """Remember that `revision` failed, so the loop does not retry it on every poll."""
        self.failed[revision] = FailedRevision(result=result, reason=reason)
        while len(self.failed) > MAX_FAILED_REVISIONS:
            del self.failed[next(iter(self.failed))]


def _state_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / "loop-state.json"


def last_good_dir(settings: Settings) -> Path:
    """Where the loop keeps a copy of the desired files it applied last (with a `.revision` file)."""
    return Path(settings.state_dir) / "last-good"


def _history_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / "history.jsonl"


def _trigger_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / "trigger"


def _not_ours(path: Path) -> ReconcilerError:
    return ReconcilerError(
        f"cannot read or write {path}: permission denied",
        "the state directory is private to the user that runs `reconciler watch` (mode 700): "
        "run this command as that user (or root), or pass your own --state-dir",
    )


def _tighten(path: Path, st: os.stat_result) -> bool:
    """Take group and other permissions away from one entry; True when it had any."""
    if not st.st_mode & 0o077:
        return False
    is_dir = stat.S_ISDIR(st.st_mode)
    # Directories: exactly 0700. Files keep their owner bits (0644 -> 0600, git's 0444 -> 0400).
    os.chmod(path, PRIVATE_DIR_MODE if is_dir else stat.S_IMODE(st.st_mode) & 0o700)
    return True


def private_dir(path: Path, *, say: bool = True) -> Path:
    """Make `path` (and missing parents) a directory only its owner can enter: mode 0700.

    A directory found with looser modes is tightened, with one warning (the next call finds it
    private and says nothing); `say=False` leaves the saying to the caller.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        st = path.stat()
    except PermissionError as exc:
        raise _not_ours(path) from exc
    before = stat.S_IMODE(st.st_mode)
    try:
        if _tighten(path, st):
            if say:
                log.warning("state directory %s was mode %04o: made it 0700 (owner only)", path, before)
        elif before & 0o700 != 0o700:
            os.chmod(path, PRIVATE_DIR_MODE)  # e.g. created under a strange umask: the owner needs rwx
    except PermissionError as exc:
        raise ReconcilerError(
            f"cannot make the state directory {path} private (mode {before:04o}): permission denied",
            f"run `chmod 700 {path}` as its owner, or pass another --state-dir",
        ) from exc
    return path


def secure_state_dir(settings: Settings) -> int:
    """Make the whole state directory owner-only (dirs 0700, files 0600) and say so in one log
    line; return how many entries (the directory included) had to be tightened. Symlinks are left
    alone, never followed."""
    root = Path(settings.state_dir)
    try:
        before = stat.S_IMODE(root.stat().st_mode)
    except FileNotFoundError:
        before = PRIVATE_DIR_MODE
    private_dir(root, say=False)
    tightened, refused = _tighten_tree(root)
    tightened += 1 if before & 0o077 else 0
    if tightened:
        log.warning(
            "state directory %s (mode %04o) held %d entries readable by others: "
            "made them owner-only (directories 0700, files 0600)",
            root,
            before,
            tightened,
        )
    if refused:
        log.warning(
            "cannot make %d entries in the state directory %s owner-only, e.g. %s: "
            "they belong to another user; chown them to the user that runs watch",
            len(refused),
            root,
            refused[0],
        )
    return tightened


def _tighten_tree(root: Path) -> tuple[int, list[Path]]:
    """Tighten every entry below `root`; return how many were tightened and which could not be."""
    tightened, refused = 0, []
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(top) / name
            try:
                st = path.lstat()
                if not stat.S_ISLNK(st.st_mode) and _tighten(path, st):
                    tightened += 1
            except FileNotFoundError:
                continue  # removed meanwhile (a snapshot being pruned)
            except PermissionError:
                refused.append(path)
    return tightened, refused


@contextlib.contextmanager
def state_lock(settings: Settings) -> Iterator[None]:
    """Hold the state directory's exclusive lock (across processes) for a read-modify-write."""
    state_dir = private_dir(Path(settings.state_dir))
    lock_path = state_dir / ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    except PermissionError as exc:
        raise _not_ours(lock_path) from exc
    with os.fdopen(fd, "r+b") as fh:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # a lock file made before the modes were kept
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _atomic_write(path: Path, text: str) -> None:
    """Replace `path` with `text`: a private temp file (0600 from its creation), renamed into place."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # mkstemp's own mode, said here so no umask can matter
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def keep_last_good(settings: Settings, source: Path, revision: str, subject: str | None) -> Path:
    """Keep a private copy of the desired files of `revision` in `last-good/`, replaced whole.

    The copy is made in a temp directory beside it, made owner-only, then renamed into place, so
    `last-good/` always holds one complete revision.
    """
    target = last_good_dir(settings)
    private_dir(target.parent)
    tmp = target.with_name(".last-good.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    _tighten_tree(tmp)  # copytree copied the snapshot's modes (0644 under an ordinary umask)
    os.chmod(tmp, PRIVATE_DIR_MODE)
    _atomic_write(tmp / ".revision", json.dumps({"revision": revision, "subject": subject}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def update_state(settings: Settings, change: Callable[[LoopState], None]) -> LoopState:
    """Load the loop state, apply `change` to it and save it, all under the state lock."""
    with state_lock(settings):
        state = LoopState.load(settings)
        change(state)
        state.save(settings)
        return state


def suspend(settings: Settings, reason: str | None = None) -> LoopState:
    """Hold the loop: no reconcile runs until `resume` (a maintenance window)."""

    def change(state: LoopState) -> None:
        state.suspended = True
        state.suspended_reason = reason
        state.suspended_at = utcnow()

    return update_state(settings, change)


def resume(settings: Settings) -> LoopState:
    """Release the loop and ask it to reconcile now."""

    def change(state: LoopState) -> None:
        state.suspended = False
        state.suspended_reason = None
        state.suspended_at = None

    state = update_state(settings, change)
    request_trigger(settings, "resume")
    return state


def request_retry(settings: Settings) -> LoopState:
    """Ask the loop to try the head revision again even though it failed before."""

    def change(state: LoopState) -> None:
        state.retry_requested = True

    state = update_state(settings, change)
    request_trigger(settings, "retry")
    return state


def request_trigger(settings: Settings, reason: str) -> None:
    """Ask a running `watch` loop (which checks every second) to reconcile now."""
    _atomic_write(_trigger_path(settings), reason + "\n")


def take_trigger(settings: Settings) -> str | None:
    """Consume a pending trigger request, returning its reason (None when there is none)."""
    path = _trigger_path(settings)
    try:
        reason = path.read_text(encoding="utf-8").strip() or "cli"
        path.unlink()
    except FileNotFoundError:
        return None
    return reason


class History:
    """The bounded reconcile history of one state directory."""

    def __init__(self, settings: Settings, max_records: int = MAX_RECORDS) -> None:
        self.settings = settings
        self.max_records = max_records
        self.path = _history_path(settings)

    def _read(self) -> list[Record]:
        try:
            # "\n" only: a subject or reason may hold U+2028 or \x1e, which splitlines() would split.
            lines = [line for line in self.path.read_text(encoding="utf-8").split("\n") if line]
        except FileNotFoundError:
            return []
        except PermissionError as exc:
            raise _not_ours(self.path) from exc
        records = []
        for line in lines:
            # A line that does not parse (a hand edit, a future format) is dropped, not fatal.
            with contextlib.suppress(ValueError):
                records.append(Record.model_validate_json(line))
        return records

    def append(self, record: Record) -> Record:
        """Add a record (or count a repeat of the last one) and keep only the newest records.

        The loop state's running totals count it too, in the same locked section, so the counters
        of `/metrics` keep growing after old records fall off the bounded history.
        """
        with state_lock(self.settings):
            records = self._read()
            state = LoopState.load(self.settings)
            if state.totals is None:
                # Older state file: start from what the history still knows, so counts go on from there.
                state.totals = ReconcileTotals.from_records(r.model_dump() for r in records)
            state.totals.add(record.result, record.duration_s)
            if records and records[-1].same_outcome(record):
                last = records[-1]
                record = last.model_copy(
                    update={"count": last.count + 1, "last_at": record.started_at, "trigger": record.trigger}
                )
                records[-1] = record
            else:
                records.append(record)
            records = records[-self.max_records :]
            _atomic_write(self.path, "".join(r.model_dump_json() + "\n" for r in records))
            state.save(self.settings)
        return record

    def records(self, limit: int | None = None) -> list[dict[str, object]]:
        """The newest records first, as JSON-able dicts (at most `limit`)."""
        newest_first = list(reversed(self._read()))
        if limit is not None:
            newest_first = newest_first[: max(limit, 0)]
        return [json.loads(r.model_dump_json()) for r in newest_first]

    def last(self) -> dict[str, object] | None:
        """The newest record, or None when nothing was reconciled yet."""
        recent = self.records(limit=1)
        return recent[0] if recent else None
