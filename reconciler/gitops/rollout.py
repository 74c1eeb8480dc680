"""The progressive rollout of a fleet (docs/fleet.md "Progressive rollout"): the gate and its record.

Every site's reconciler follows the same source. Before a site that has a predecessor in
`rollout` applies a NEW revision R, it asks that predecessor (`GET <status_url>/api/status`)
whether it has reconciled R successfully (`fleet.ok_revision == R`); until then it holds on its
last good revision. `gate()` is that decision, pure; `RolloutTracker` asks the predecessor, keeps
what this site reconciled (`ok_revision`, `failed_revision`) and why it holds, in
`<state_dir>/rollout.json`, and answers the `fleet` section of `/api/status`. Drift fixing and
healing of the live revision are never gated (the loop asks the gate only for a new revision).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from reconciler.markers import rev12
from reconciler.settings import Settings

RolloutStateName = Literal["done", "waiting", "held", "failed"]
STATUS_PATH = "/api/status"
PEER_TIMEOUT_S = 2.0  # one predecessor question; the loop asks again at the next (fast) poll
WAITING_POLL_S = 2.0  # how often a waiting site asks again
ROLLOUT_FILE = "rollout.json"  # in Settings.state_dir
OK_RESULTS = frozenset({"applied", "unchanged", "drift-fixed"})


@dataclass(frozen=True)
class Rollout:
    """Where this site stands in the rollout of its head revision."""

    state: RolloutStateName
    waiting_for: str | None = None
    reason: str | None = None

    @property
    def proceed(self) -> bool:
        return self.state == "done"

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "waiting_for": self.waiting_for, "reason": self.reason}


@dataclass(frozen=True)
class PeerAnswer:
    """What a predecessor's `/api/status` said about the rollout (or that it did not answer)."""

    site: str
    reachable: bool
    ok_revision: str | None = None
    failed_revision: str | None = None
    desired_revision: str | None = None
    rollout_state: str | None = None
    error: str | None = None


DONE = Rollout("done")


def gate(revision: str, predecessor: PeerAnswer | None) -> Rollout:
    """May this site apply `revision` now? `done`: yes (first site, or the predecessor reconciled
    it); `held`: the predecessor failed it, or is itself held or failed on it (the chain stops
    there); `waiting`: the predecessor is unreachable or has not reconciled it yet."""
    if predecessor is None:
        return DONE
    name, r = predecessor.site, rev12(revision)
    if not predecessor.reachable:
        return Rollout("waiting", name, f"{name} is unreachable ({predecessor.error or 'no answer'})")
    if predecessor.ok_revision == revision:
        return DONE
    if predecessor.failed_revision == revision:
        return Rollout("held", name, f"{name} failed revision {r}")
    if predecessor.desired_revision == revision and predecessor.rollout_state in ("held", "failed"):
        return Rollout("held", name, f"{name} is {predecessor.rollout_state} on revision {r}")
    on = f" (it runs {rev12(predecessor.ok_revision)})" if predecessor.ok_revision else ""
    return Rollout("waiting", name, f"{name} has not reconciled revision {r} yet{on}")


def site_rollout(
    head: str | None, ok_revision: str | None, failed_revision: str | None, held: Rollout | None
) -> Rollout:
    """This site's own rollout state for its head: failed (it failed the head), done (reconciled
    it), the gate's verdict while it holds, else waiting (the head is on its way)."""
    if head is None:
        return DONE if ok_revision is not None else Rollout("waiting", None, "no revision seen yet")
    if failed_revision == head:
        return Rollout("failed", None, f"revision {rev12(head)} failed here")
    if ok_revision == head:
        return DONE
    if held is not None and not held.proceed:
        return held
    return Rollout("waiting", None, f"revision {rev12(head)} is not reconciled yet")


# --- asking a peer -----------------------------------------------------------------------------

Fetch = Callable[[str, float], Mapping[str, Any]]


def fetch_status(status_url: str, timeout_s: float = PEER_TIMEOUT_S) -> Mapping[str, Any]:
    """GET `<status_url>/api/status` as JSON (raises OSError/ValueError when it cannot)."""
    url = status_url.rstrip("/") + STATUS_PATH
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        body = reply.read(4 * 1024 * 1024)
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    return data


def peer_answer(site: str, status: Mapping[str, Any]) -> PeerAnswer:
    """A peer's `/api/status` → its rollout facts."""
    fleet = status.get("fleet") if isinstance(status.get("fleet"), dict) else {}
    assert isinstance(fleet, dict)
    rollout = fleet.get("rollout") if isinstance(fleet.get("rollout"), dict) else {}
    assert isinstance(rollout, dict)
    desired = status.get("desired") if isinstance(status.get("desired"), dict) else {}
    assert isinstance(desired, dict)
    return PeerAnswer(
        site=site,
        reachable=True,
        ok_revision=_str(fleet.get("ok_revision")),
        failed_revision=_str(fleet.get("failed_revision")),
        desired_revision=_str(fleet.get("desired_revision")) or _str(desired.get("revision")),
        rollout_state=_str(rollout.get("state")),
    )


def ask_peer(
    site: str, status_url: str, fetch: Fetch = fetch_status, timeout_s: float = PEER_TIMEOUT_S
) -> PeerAnswer:
    try:
        return peer_answer(site, fetch(status_url, timeout_s))
    except (OSError, ValueError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return PeerAnswer(site=site, reachable=False, error=str(reason)[:200] or type(exc).__name__)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# --- this site's record ------------------------------------------------------------------------


@dataclass
class _Record:
    ok_revision: str | None = None
    failed_revision: str | None = None
    head: str | None = None
    held: dict[str, Any] | None = None  # the last gate verdict that held (state, waiting_for, reason)


class RolloutTracker:
    """The rollout facts of one site's reconciler: asked by the loop before a new revision, told
    every outcome, read by `/api/status` (`fleet_json`)."""

    def __init__(
        self,
        settings: Settings,
        site: str,
        predecessor: tuple[str, str] | None,
        *,
        fetch: Fetch = fetch_status,
        timeout_s: float = PEER_TIMEOUT_S,
    ) -> None:
        self.site = site
        self.predecessor = predecessor  # (name, status_url)
        self.fetch = fetch
        self.timeout_s = timeout_s
        self.path = Path(settings.state_dir) / ROLLOUT_FILE
        self._lock = threading.Lock()
        self._record = self._load()

    def _load(self) -> _Record:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return _Record()
        if not isinstance(data, dict):
            return _Record()
        held = data.get("held")
        return _Record(
            _str(data.get("ok_revision")),
            _str(data.get("failed_revision")),
            _str(data.get("head")),
            held if isinstance(held, dict) else None,
        )

    def _save(self) -> None:
        tmp = self.path.with_name(f".{ROLLOUT_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(self._record)), encoding="utf-8")
            os.chmod(tmp, 0o600)
            tmp.replace(self.path)
        except OSError:
            pass  # the record is a convenience across restarts; the next outcome writes it again

    def check(self, revision: str) -> Rollout:
        """The gate for a new `revision`: asks the predecessor (never raises)."""
        answer = (
            ask_peer(self.predecessor[0], self.predecessor[1], self.fetch, self.timeout_s)
            if self.predecessor is not None
            else None
        )
        verdict = gate(revision, answer)
        with self._lock:
            self._record.head = revision
            self._record.held = None if verdict.proceed else verdict.as_json()
            self._save()
        return verdict

    def follow(self, fleet_dir: Path) -> None:
        """Take the rollout order of the fleet as this revision has it: a commit may change
        `rollout` or add sites, and takes effect with that commit (no restart needed)."""
        from reconciler.desired.fleet import load_fleet
        from reconciler.errors import ReconcilerError

        try:
            fleet = load_fleet(fleet_dir)
        except ReconcilerError:
            return  # the load of this revision reports what is wrong
        before = fleet.predecessor(self.site) if self.site in fleet.names else None
        self.predecessor = (before.name, before.status_url) if before is not None else None

    def seen(self, revision: str | None) -> None:
        """The source's head, as the loop fetched it."""
        with self._lock:
            if revision and revision != self._record.head:
                self._record.head, self._record.held = revision, None
                self._save()

    def outcome(self, result: str, revision: str | None, temporary: bool) -> None:
        """Told every reconcile's outcome: success sets ok_revision; a permanent failure sets
        failed_revision (temporary ones, e.g. Asterisk down, are retried and hold nobody)."""
        if revision is None:
            return
        with self._lock:
            if result in OK_RESULTS:
                self._record.ok_revision = revision
                if self._record.failed_revision == revision:
                    self._record.failed_revision = None
                if self._record.head == revision:
                    self._record.held = None
            elif result in ("failed", "invalid") and not temporary:
                self._record.failed_revision = revision
            else:
                return
            self._save()

    @property
    def waiting(self) -> bool:
        with self._lock:
            return self._record.held is not None

    def fleet_json(self) -> dict[str, Any]:
        """The `fleet` section of `/api/status`."""
        with self._lock:
            rec = self._record
            held = Rollout(**rec.held) if rec.held else None
            rollout = site_rollout(rec.head, rec.ok_revision, rec.failed_revision, held)
            return {
                "site": self.site,
                "ok_revision": rec.ok_revision,
                "failed_revision": rec.failed_revision,
                "desired_revision": rec.head,
                "predecessor": self.predecessor[0] if self.predecessor else None,
                "rollout": rollout.as_json(),
            }
