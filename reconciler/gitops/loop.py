"""The watch loop: triggers feed one coalescing queue; one worker runs one reconcile at a time.

Triggers (startup, poll every interval with jitter, webhook, filesystem events, CLI requests) only
put a reason into the `TriggerQueue`. Reasons that arrive while a reconcile runs are merged, so a
burst of any size costs at most the running reconcile plus one more.

One reconcile (`Reconciler.reconcile`) runs named stages, like a Flux controller:
`fetch` (snapshot of the head) → `live` (what Asterisk runs) → `drift` (head already live: do the
managed files and revision marker still match?) or `apply` (the apply pipeline, which restores the
last good config itself on failure). The outcome is a small frozen value; it is recorded in one
place, in `finally`, whatever happened. Errors are either permanent (the revision is bad: remember
it and do not retry until a new revision or `reconciler retry`) or temporary (Docker down, remote
unreachable: retry with backoff). No exception leaves the worker.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from reconciler.asterisk import providers_health
from reconciler.asterisk.client import AsteriskClient, LiveMarkers
from reconciler.asterisk.journal import parse_journal
from reconciler.desired import render
from reconciler.desired.load import display_name
from reconciler.errors import ReconcilerError, ValidationFailed
from reconciler.gitops import history, plan
from reconciler.gitops.apply import (
    STATE_FILE,
    ApplyOptions,
    LiveState,
    apply_desired,
    parse_live_state,
    runs_files_on_disk,
)
from reconciler.gitops.health import Health, HealthPolicy, LoopProbe, ThreadProbe, assess
from reconciler.gitops.history import History, LoopState, Record, Result
from reconciler.gitops.rollout import WAITING_POLL_S, Rollout, RolloutTracker
from reconciler.gitops.sources import Snapshot, Source
from reconciler.markers import rev12
from reconciler.settings import Settings

log = logging.getLogger("reconciler.gitops.loop")

DriftMode = Literal["fix", "warn"]


@dataclass(frozen=True)
class WatchOptions:
    """How often and how eagerly the loop works."""

    interval_s: float = 30.0
    jitter: float = 0.1  # the poll interval varies by ±10 % so several reconcilers do not align
    drift: DriftMode = "fix"
    backoff_initial_s: float = 2.0
    control_poll_s: float = 1.0  # how often the suspend/resume/retry requests of the CLI are noticed


@dataclass(frozen=True)
class Outcome:
    """What one reconcile did. `record=False` outcomes are logged but kept out of the history."""

    result: Result
    revision: str | None = None
    subject: str | None = None
    reason: str | None = None
    changes: tuple[str, ...] = ()
    temporary: bool = False
    stage: str = ""
    record: bool = True
    waiting: bool = False  # held by the rollout gate: ask again soon (rollout.WAITING_POLL_S)


class TriggerQueue:
    """Reasons to reconcile; `take()` returns everything pending at once (the coalescing)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[str] = []
        self._closed = False
        self.received = 0  # triggers put, for tests and status
        # time.monotonic() when the oldest pending reason arrived (None: nothing pending), for /healthz
        self.pending_since: float | None = None

    def put(self, reason: str) -> None:
        """Ask for a reconcile; a reason already pending is not added twice."""
        with self._cond:
            self.received += 1
            if not self._pending:
                self.pending_since = time.monotonic()
            if reason not in self._pending:
                self._pending.append(reason)
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> list[str] | None:
        """Wait for triggers; return all pending reasons (None on timeout or after `close()`)."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._closed, timeout=timeout)
            if not self._pending:
                return None
            reasons, self._pending = self._pending, []
            self.pending_since = None
            return reasons

    def pending(self) -> list[str]:
        with self._cond:
            return list(self._pending)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


@dataclass(frozen=True)
class _Observed:
    """What the `live` stage saw in the container."""

    files: dict[str, str]
    markers: LiveMarkers
    wiped: bool
    live: LiveState | None = None  # state.json: the live revision and its degraded providers
    interrupted: str | None = None  # an apply whose journal is still there (see reconciler.asterisk.journal)
    restarted_pending: bool = False  # the restart a recorded revision waited for has happened
    store_drift: str | None = None  # why the realtime store's rows are not those state.json recorded
    boot_id: str | None = None  # which start of Asterisk this is (the read exec's boot id)


@dataclass
class _Attempt:
    """Mutable bookkeeping of the reconcile in progress (the stage reached, what is known)."""

    trigger: str
    _stage: str = "start"
    _since: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)
    revision: str | None = None
    subject: str | None = None
    snapshot: Snapshot | None = None
    secrets: list[str] = field(default_factory=list)

    @property
    def stage(self) -> str:
        return self._stage

    @stage.setter
    def stage(self, name: str) -> None:
        """Enter stage `name`; the time spent in the previous stage is kept for the log line."""
        now = time.monotonic()
        self.timings[self._stage] = round(self.timings.get(self._stage, 0.0) + now - self._since, 3)
        self._stage, self._since = name, now


class Reconciler:
    """One reconcile of `source` into the Asterisk behind `client` (an `asterisk.AsteriskClient`)."""

    def __init__(
        self,
        settings: Settings,
        source: Source,
        client: AsteriskClient,
        options: WatchOptions,
        apply_options: ApplyOptions | None = None,
        rollout: RolloutTracker | None = None,
    ) -> None:
        self.settings = settings
        self.rollout = rollout  # a fleet site: the gate before a new revision, and its record
        self.source = source
        self.client = client
        self.options = options
        self.apply_options = apply_options or ApplyOptions()
        self.history = History(settings)
        self.last_good_dir = history.last_good_dir(settings)
        self._last_boot_id: str | None = None  # Asterisk's boot id at the last drift check

    # -- the one entry point ------------------------------------------------------------------

    def reconcile(self, trigger: str) -> Outcome:
        """Run one reconcile; never raises. Records the outcome and logs one line."""
        attempt = _Attempt(trigger=trigger)
        started_at = history.utcnow()
        started = time.monotonic()
        outcome: Outcome | None = None
        try:
            outcome = self._run(attempt)
        except ReconcilerError as exc:
            outcome = self._failure(attempt, exc)
        except Exception as exc:  # a bug must not stop the loop; retry later like a temporary error
            log.exception("reconcile crashed in stage %s", attempt.stage)
            outcome = Outcome(
                result="failed",
                revision=attempt.revision,
                subject=attempt.subject,
                reason=f"internal error in stage {attempt.stage}: {type(exc).__name__}: {exc}",
                temporary=True,
                stage=attempt.stage,
            )
        finally:
            if outcome is None:  # only on BaseException (KeyboardInterrupt): still say what happened
                outcome = Outcome(
                    result="failed", revision=attempt.revision, reason="interrupted", temporary=True
                )
            outcome = self._finalize(attempt, outcome, started_at, time.monotonic() - started)
        return outcome

    # -- stages -------------------------------------------------------------------------------

    def _run(self, attempt: _Attempt) -> Outcome:
        state = LoopState.load(self.settings)
        if state.suspended:
            why = f"suspended since {state.suspended_at}" + (
                f": {state.suspended_reason}" if state.suspended_reason else ""
            )
            return Outcome(result="skipped", reason=why, stage="start", record=False)

        attempt.stage = "fetch"
        snap = self.source.snapshot()
        attempt.snapshot, attempt.revision, attempt.subject = snap, snap.revision, snap.subject
        if (state.head_revision, state.head_subject) != (snap.revision, snap.subject):

            def new_head(s: LoopState) -> None:
                s.head_revision, s.head_subject = snap.revision, snap.subject

            state = history.update_state(self.settings, new_head)
        if self.rollout is not None:
            # The gate and its record speak of the whole source's revision (the same at every
            # site); everything else of the site's own.
            self.rollout.seen(snap.fleet_revision)
            self.rollout.follow(snap.path)

        # A restart of the reconciler is a retry too: its secrets or settings may have been fixed.
        if state.retry_requested or ("startup" in attempt.trigger and snap.revision in state.failed):

            def forget_failure(s: LoopState) -> None:
                s.retry_requested = False
                s.failed.pop(snap.revision, None)

            state = history.update_state(self.settings, forget_failure)

        held: Rollout | None = None
        if snap.revision != state.last_applied_revision and snap.revision not in state.failed:
            # A new head: the apply pipeline reads the live state itself and does nothing when
            # it is already live, so reading it here too would only cost another docker exec.
            held = self._gate(attempt, snap.fleet_revision)
            if held is None:
                return self._apply(attempt, snap, result="applied")

        attempt.stage = "live"
        # ONE exec: the managed files, state.json, the revision markers Asterisk has live and the
        # transaction records (an interrupted apply's journal, a pending restart's boot id).
        read = self.client.read_live()
        live_files = dict(read.files)
        live = parse_live_state(live_files.pop(STATE_FILE, None))
        journal = parse_journal(read.journal_text)
        pending = live.pending_restart if live is not None else None
        observed = _Observed(
            live_files,
            read.markers,
            wiped=False,
            live=live,
            interrupted=journal.describe() if journal is not None else None,
            restarted_pending=pending is not None and pending.done(read.boot_id),
            store_drift=_store_drift(live, read.store.digest),
            boot_id=read.boot_id,
        )

        live_revision = live.revision if live is not None else None
        if live is None and state.last_applied_revision is not None:
            # state.json is gone but this reconciler applied something: a wiped managed volume.
            live_revision = state.last_applied_revision
            observed = replace(observed, wiped=True)

        if live_revision == snap.revision:
            return self._drift(attempt, snap, observed)

        failed = state.failed.get(snap.revision)
        if failed is None and held is None:
            held = self._gate(attempt, snap.fleet_revision)
        if failed is not None or held is not None:
            # The head is known bad, or the rollout holds it: keep the last good revision healthy
            # (never gated), say why nothing moves.
            if live_revision is not None:
                live_snap = self._snapshot_of(live_revision)
                if live_snap is not None:
                    healed = self._drift(attempt, live_snap, observed)
                    if healed.result != "unchanged":
                        return replace(healed, waiting=held is not None)
            if held is not None:
                return Outcome(
                    result="skipped",
                    revision=snap.revision,
                    subject=snap.subject,
                    reason=f"rollout {held.state}: {held.reason}",
                    stage="rollout",
                    record=False,
                    waiting=True,
                )
            assert failed is not None
            return Outcome(
                result="skipped",
                revision=snap.revision,
                subject=snap.subject,
                reason=f"revision {rev12(snap.revision)} {failed.result} before ({failed.reason}); "
                "push a fix or run `reconciler retry`",
                stage="fetch",
                record=False,
            )

        return self._apply(attempt, snap, result="applied")

    def _gate(self, attempt: _Attempt, revision: str) -> Rollout | None:
        """None: this site may apply `revision` now; else the rollout verdict that holds it."""
        if self.rollout is None:
            return None
        attempt.stage = "rollout"
        verdict = self.rollout.check(revision)
        return None if verdict.proceed else verdict

    def _drift(self, attempt: _Attempt, snap: Snapshot, observed: _Observed) -> Outcome:
        """The revision of `snap` should be live: check files and markers, re-apply if they differ."""
        attempt.stage = "drift"
        rendered = render.render_desired(snap.path, self.settings, revision=snap.revision)
        attempt.secrets = sorted(rendered.secret_values)
        live_conf = {n: t for n, t in observed.files.items() if n in rendered.files}
        drift_plan = plan.make_plan(rendered.files, live_conf, rendered.secret_values)

        why: list[str] = []
        if observed.interrupted:
            # Asterisk or a reconciler was killed mid-apply: the apply verifies what is on disk.
            why.append(f"{observed.interrupted} was interrupted")
        if observed.restarted_pending:
            why.append("Asterisk restarted for the pending transport change: verifying it")
        if observed.wiped:
            why.append("the managed files were wiped (no state.json)")
        elif drift_plan.has_changes:
            why.append("managed files were changed by hand: " + ", ".join(drift_plan.changed_files))
        elif not runs_files_on_disk(observed.markers, live_conf):
            why.append("Asterisk is not running the managed files (revision markers missing)")
        if observed.store_drift and not observed.wiped:
            why.append(observed.store_drift)
        restarted = self._restarted(observed.boot_id)
        if restarted:
            why.append(f"Asterisk restarted ({restarted})")
        if not why:
            came_back = self._recheck_providers(snap, rendered.state, observed.live)
            if came_back is not None:
                return came_back
            return Outcome(result="unchanged", revision=snap.revision, subject=snap.subject, stage="drift")
        reason = "; ".join(why)
        if self.options.drift == "warn":
            log.warning("drift detected (not fixed, --drift=warn): %s", reason)
            return Outcome(
                result="drift-detected",
                revision=snap.revision,
                subject=snap.subject,
                reason=reason,
                changes=tuple(drift_plan.changes),
                stage="drift",
            )
        attempt.revision, attempt.subject, attempt.snapshot = snap.revision, snap.subject, snap
        fixed = self._apply(attempt, snap, result="drift-fixed")
        if fixed.result == "unchanged":
            # e.g. a restart that loaded the files itself: re-applying found nothing to do.
            return replace(fixed, reason=reason + f"; Asterisk runs revision {rev12(snap.revision)}")
        return replace(fixed, reason=reason)

    def _recheck_providers(self, snap: Snapshot, state: Any, live: LiveState | None) -> Outcome | None:
        """While a provider of the live revision is degraded (its host did not resolve), re-resolve
        its hosts (one exec; nothing when no provider is degraded); once they resolve, reload
        res_pjsip and check its identify (`providers_health.heal`). No new revision is needed."""
        if live is None or not live.degraded:
            return None
        healed = providers_health.heal(self.client, state, live.degraded)
        if healed.still != dict(live.degraded):
            self.client.write_managed({STATE_FILE: replace(live, degraded=healed.still).to_json()})
        if not healed.healed:
            return None  # still degraded: status, doctor and /metrics say why
        changes = providers_health.came_back(healed.healed)
        return Outcome(
            result="drift-fixed",
            revision=snap.revision,
            subject=snap.subject,
            reason="; ".join(changes),
            changes=changes,
            stage="drift",
        )

    def _apply(self, attempt: _Attempt, snap: Snapshot, *, result: Result) -> Outcome:
        attempt.stage = "apply"
        applied = apply_desired(
            self.settings,
            self.client,
            snap.path,
            revision=snap.revision,
            subject=snap.subject,
            options=self.apply_options,
        )
        self._keep_last_good(snap)
        if applied.unchanged and not applied.recorded:
            # Already live (e.g. applied before this reconciler started, or healed by a restart).
            result = "unchanged"

        def remember(s: LoopState) -> None:
            s.last_applied_revision, s.last_applied_subject = snap.revision, snap.subject

        history.update_state(self.settings, remember)
        return Outcome(
            result=result,
            revision=snap.revision,
            subject=snap.subject,
            changes=tuple(applied.changes),
            stage="apply",
        )

    def _failure(self, attempt: _Attempt, exc: ReconcilerError) -> Outcome:
        """Classify an error: temporary (retry with backoff) or permanent (remember the revision)."""
        reason = self._reason(attempt, exc)
        if exc.temporary:
            return Outcome(
                result="failed",
                revision=attempt.revision,
                subject=attempt.subject,
                reason=reason,
                temporary=True,
                stage=attempt.stage,
            )
        result: Result = "invalid" if isinstance(exc, ValidationFailed) else "failed"
        if isinstance(exc, ValidationFailed):
            attempt.stage = "validate"  # raised by the apply pipeline before it touches Asterisk
        if attempt.revision is not None:
            history.update_state(
                self.settings, lambda s: s.mark_failed(attempt.revision or "", result, reason)
            )
        return Outcome(
            result=result,
            revision=attempt.revision,
            subject=attempt.subject,
            reason=reason,
            stage=attempt.stage,
        )

    def _reason(self, attempt: _Attempt, exc: ReconcilerError) -> str:
        text = "; ".join(str(p) for p in exc.problems) if isinstance(exc, ValidationFailed) else exc.message
        if attempt.snapshot is not None:
            # Problems name the exported snapshot, as `load.display_name` shows it (relative to the
            # working directory when below it: `state/dir/...` in the image, whose cwd is `/`); a
            # person knows the file as desired/<name>. Longest first, so no form is left half-replaced.
            path = attempt.snapshot.path
            for prefix in sorted({str(path.resolve()), str(path), display_name(path)}, key=len, reverse=True):
                text = text.replace(prefix, attempt.snapshot.display_path)
        # Masked here, before the reason is saved in the loop state or the history.
        return plan.mask(text, attempt.secrets)

    def _finalize(self, attempt: _Attempt, outcome: Outcome, started_at: str, duration: float) -> Outcome:
        """Write the history record and the one log line: the only place status is written."""
        outcome = replace(outcome, reason=outcome.reason and plan.mask(outcome.reason, attempt.secrets))
        if self.rollout is not None and not outcome.waiting:
            # A heal of the live revision while the head is held says nothing about the head.
            snap = attempt.snapshot
            revision = (
                snap.fleet_revision
                if snap is not None and snap.revision == outcome.revision
                else outcome.revision
            )
            self.rollout.outcome(outcome.result, revision, outcome.temporary)
        if outcome.record:
            try:
                self.history.append(
                    Record(
                        revision=outcome.revision,
                        subject=outcome.subject,
                        trigger=attempt.trigger,
                        result=outcome.result,
                        reason=outcome.reason,
                        started_at=started_at,
                        duration_s=round(duration, 3),
                        changes=list(outcome.changes),
                        temporary=outcome.temporary,
                    )
                )
            except OSError as exc:
                log.error("cannot write history in %s: %s", self.settings.state_dir, exc)
        attempt.stage = "done"
        line: dict[str, object] = {
            "event": "reconcile",
            "revision": rev12(outcome.revision) if outcome.revision else None,
            "trigger": attempt.trigger,
            "result": outcome.result,
            "duration_s": round(duration, 3),
            "changes": len(outcome.changes),
            "stage": outcome.stage,
            "stages_s": attempt.timings,
        }
        if outcome.temporary:
            line["temporary"] = True
        if outcome.reason:
            line["reason"] = outcome.reason
        level = logging.WARNING if outcome.result in ("failed", "invalid", "drift-detected") else logging.INFO
        log.log(level, json.dumps(line, ensure_ascii=False))
        return outcome

    # -- helpers --------------------------------------------------------------------------------

    def _restarted(self, boot_id: str | None) -> str | None:
        """How Asterisk is seen to have restarted since the last drift check, or None: its boot id
        changed (seen by this process), or its uptime went down (one exec; kept in the loop state,
        so a restarted reconciler notices it too). The uptime alone misses a restart that comes
        within seconds of the previous one (e.g. after an apply that restarted Asterisk): the new
        uptime is not below the old one, whole seconds both.

        Asked only when checking drift: an apply does not need it, and every exec costs ~0.1 s.
        """
        uptime = _uptime(self.client)
        before: list[float | None] = []

        def remember(s: LoopState) -> None:
            before.append(s.last_uptime_s)
            s.last_uptime_s = uptime

        history.update_state(self.settings, remember)
        last_boot, self._last_boot_id = self._last_boot_id, boot_id or self._last_boot_id
        if boot_id and last_boot and boot_id != last_boot:
            return "its boot id changed"
        if uptime is not None and before[0] is not None and uptime < before[0]:
            return "uptime went down"
        return None

    def _keep_last_good(self, snap: Snapshot) -> None:
        """Keep a copy of the applied desired files: drift can be healed after the head moved on."""
        history.keep_last_good(self.settings, snap.path, snap.revision, snap.subject)

    def _snapshot_of(self, revision: str) -> Snapshot | None:
        meta = self.last_good_dir / ".revision"
        try:
            kept = json.loads(meta.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            kept = {}
        if kept.get("revision") == revision:
            return Snapshot(path=self.last_good_dir, revision=revision, subject=kept.get("subject"))
        return self.source.snapshot_at(revision)


def _store_drift(live: LiveState | None, digest: str | None) -> str | None:
    """Why the realtime store is not the one the live revision recorded, or None. The digest is
    taken in the container by the read exec (O(n) in C, nothing O(n) transferred)."""
    if live is None or live.store is None:
        return None
    if digest is None:
        return "the realtime store is missing or unreadable"
    if digest != live.store:
        return "the realtime store's rows were changed behind the reconciler's back"
    return None


def _uptime(client: Any) -> float | None:
    try:
        value = client.uptime_s()
    except ReconcilerError:
        raise
    except Exception:  # the uptime is a hint for restart detection, not essential
        return None
    return float(value) if value is not None else None


ReconcileFn = Callable[[str], Outcome]


class WatchLoop:
    """Runs the worker, the poll timer and the control-file check as daemon threads.

    It also watches itself for `/healthz` (`probe()`, `health()`): when the running reconcile
    started, when each thread last went round its loop, and the durations of the recent reconciles
    (seeded from the history, so a restarted loop knows what "usual" is).
    """

    RECENT_DURATIONS = 20  # reconciles behind the "typical duration" of the health check
    WORKER_TAKE_S = 1.0  # the idle worker wakes this often (and ticks)

    def __init__(
        self,
        settings: Settings,
        reconcile: ReconcileFn,
        options: WatchOptions,
        queue: TriggerQueue | None = None,
        health_policy: HealthPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.reconcile_fn = reconcile
        self.options = options
        self.queue = queue or TriggerQueue()
        self.health_policy = health_policy or HealthPolicy()
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._failures = 0  # consecutive temporary failures, for the backoff
        self._backoff: threading.Timer | None = None
        self._rollout_timer: threading.Timer | None = None
        self.reconciles = 0
        self.last_outcome: Outcome | None = None
        self.busy = threading.Event()
        # Self-observation (time.monotonic() values), written by the loop's threads, read by probe().
        self._ticks: dict[str, float] = {}
        self._running: tuple[float, str] | None = None  # (started, trigger) of the running reconcile
        self._idle_since = time.monotonic()
        self._durations: deque[float] = deque(self._recorded_durations(), maxlen=self.RECENT_DURATIONS)

    def _recorded_durations(self) -> list[float]:
        """Durations of the newest reconciles in the history, oldest first (none when unreadable)."""
        try:
            records = History(self.settings).records(limit=self.RECENT_DURATIONS)
        except (OSError, ValueError):
            return []
        durations = [r.get("duration_s") for r in reversed(records)]
        return [float(d) for d in durations if isinstance(d, int | float) and d >= 0]

    def start(self, startup: bool = True) -> None:
        """Start the threads; with `startup`, reconcile once right away."""
        if startup:
            self.queue.put("startup")
        for name, target in (("worker", self._work), ("poll", self._poll), ("control", self._control)):
            self._tick(name)
            thread = threading.Thread(target=target, name=f"reconciler-{name}", daemon=True)
            thread.start()
            self._threads[name] = thread

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking triggers and wait for a running reconcile to finish."""
        self._stop.set()
        for timer in (self._backoff, self._rollout_timer):
            if timer is not None:
                timer.cancel()
        self.queue.close()
        for thread in self._threads.values():
            thread.join(timeout=timeout)

    def trigger(self, reason: str) -> None:
        """Ask for a reconcile (any thread)."""
        if not self._stop.is_set():
            self.queue.put(reason)

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads.values())

    # -- self-observation -----------------------------------------------------------------------

    def _tick(self, name: str) -> None:
        self._ticks[name] = time.monotonic()

    def probe(self) -> LoopProbe:
        """What the loop is doing right now, for the health check."""
        now = time.monotonic()
        running = self._running
        periods = {
            "worker": self.WORKER_TAKE_S,
            "poll": self.options.interval_s * (1 + self.options.jitter),
            "control": self.options.control_poll_s,
        }
        threads = []
        for name, thread in self._threads.items():
            tick = self._ticks.get(name)
            # A busy worker does not go round its loop: the reconcile's duration judges it instead.
            judged = tick is not None and not (name == "worker" and running is not None)
            threads.append(
                ThreadProbe(
                    name=name,
                    alive=thread.is_alive(),
                    period_s=periods.get(name, 1.0),
                    tick_age_s=now - tick if judged and tick is not None else None,
                )
            )
        pending = tuple(self.queue.pending())
        since = self.queue.pending_since
        pending_idle = None
        if pending and since is not None and running is None:
            # Triggers that arrived during a reconcile wait legitimately until it ends.
            pending_idle = now - max(since, self._idle_since)
        return LoopProbe(
            started=bool(self._threads),
            threads=tuple(threads),
            running_s=now - running[0] if running is not None else None,
            running_trigger=running[1] if running is not None else None,
            pending=pending,
            pending_idle_s=pending_idle,
            recent_durations_s=tuple(self._durations),
        )

    def health(self) -> Health:
        """The verdict of `/healthz` on this loop."""
        return assess(self.probe(), self.health_policy)

    # -- threads ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            self._tick("worker")
            reasons = self.queue.take(timeout=self.WORKER_TAKE_S)
            if not reasons:
                continue
            trigger = ",".join(reasons)
            started = time.monotonic()
            self._running = (started, trigger)
            self.busy.set()
            try:
                outcome = self.reconcile_fn(trigger)
            except Exception:  # reconcile_fn is meant never to raise; be sure anyway
                log.exception("reconcile raised")
                outcome = Outcome(result="failed", reason="internal error", temporary=True)
            finally:
                self._durations.append(time.monotonic() - started)
                self._running = None
                self._idle_since = time.monotonic()
                self._tick("worker")  # back in its loop: judged by ticks again, from now
                self.busy.clear()
            self.reconciles += 1
            self.last_outcome = outcome
            self._after(outcome)

    def _after(self, outcome: Outcome) -> None:
        if outcome.waiting:
            # Held by the rollout gate: ask the predecessor again soon, not at the next poll.
            if self._rollout_timer is not None:
                self._rollout_timer.cancel()
            self._rollout_timer = threading.Timer(WAITING_POLL_S, self.trigger, ("rollout",))
            self._rollout_timer.daemon = True
            self._rollout_timer.start()
        if not outcome.temporary:
            self._failures = 0
            if self._backoff is not None:  # recovered: a pending retry would be a wasted reconcile
                self._backoff.cancel()
                self._backoff = None
            return
        # Temporary failure: retry sooner than the next poll, doubling, but never later than it.
        delay = min(self.options.backoff_initial_s * 2**self._failures, self.options.interval_s)
        self._failures += 1
        if self._backoff is not None:
            self._backoff.cancel()
        self._backoff = threading.Timer(delay, self.trigger, ("backoff",))
        self._backoff.daemon = True
        self._backoff.start()

    def _poll(self) -> None:
        while True:
            self._tick("poll")
            spread = self.options.interval_s * self.options.jitter
            wait = max(0.05, self.options.interval_s + random.uniform(-spread, spread))
            if self._stop.wait(wait):
                return
            self.trigger("poll")

    def _control(self) -> None:
        while not self._stop.wait(self.options.control_poll_s):
            self._tick("control")
            try:
                reason = history.take_trigger(self.settings)
            except OSError as exc:
                log.error("cannot read trigger requests in %s: %s", self.settings.state_dir, exc)
                continue
            if reason:
                self.trigger(reason)


def describe_triggers(reasons: Iterable[str]) -> str:
    """`poll,webhook` for a set of reasons, in a stable order."""
    return ",".join(sorted(set(reasons)))
