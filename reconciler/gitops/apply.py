"""Apply a desired directory to a running Asterisk, as a transaction.

One apply is: render (no Docker) → ONE exec that reads the live files, the markers Asterisk has
live and the transaction records (journal, lease, last verified copy) → plan → (nothing changed
and nothing unsettled: done) → ONE exec that takes the PBX's lock, checks that the live files are
still those the plan was made from, writes the journal, writes every changed file into a temp dir
(each write, hash, owner and mode checked), renames them into place, reloads what can be reloaded
and runs the verification queries → verify in Python → (a transport changed: ONE exec that
restarts Asterisk per the restart policy and verifies again) → ONE exec that records `state.json`,
refreshes the last verified copy, removes the journal and releases the lock.

On a refused config or a failed check the last verified copy goes back (hard links: no space
needed), the same modules are reloaded, and `ApplyRolledBack` carries Asterisk's own words. A
failed write renames nothing and reloads nothing (`ManagedWriteFailed`). An Asterisk that goes away
mid-apply is a temporary failure (`AsteriskUnavailable`, exit 3): the journal stays, and the next
apply verifies what is on disk before recording it, or puts the last verified copy back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.asterisk import providers_health
from reconciler.asterisk import sounds as sounds_mod
from reconciler.asterisk import store as store_mod
from reconciler.asterisk.client import (
    AsteriskClient,
    AsteriskWentAway,
    FileSource,
    RestartRequest,
    TxnOutcome,
    sha256_text,
)
from reconciler.asterisk.journal import JOURNAL_PATH, STATE_FILE, new_journal
from reconciler.asterisk.lease import DEFAULT_LOCK_WAIT_S, LEASE_TTL_S, Holder, Lease, parse_lease
from reconciler.asterisk.parsers import LogProblem, parse_reload_log
from reconciler.asterisk.restart import DEFAULT_RESTART_WAIT_S, PendingRestart, RestartPolicy
from reconciler.desired import render
from reconciler.errors import (
    ApplyFailed,
    AsteriskUnavailable,
    LeaseLost,
    LockBusy,
    ManagedWriteFailed,
    RestartRefused,
    ValidationFailed,
)
from reconciler.gitops import plan as plan_mod
from reconciler.gitops.checks import (
    TRANSPORTS_QUERY,
    Check,
    Expectations,
    expectations,
    failure_message,
    runs_files_on_disk,
    verification_queries,
    verify,
)
from reconciler.gitops.decide import Decision, Observed, decide, observe, plan_store, reloads_for
from reconciler.gitops.livestate import LiveState, parse_live_state, read_live_state
from reconciler.markers import declared_dialplan_rev12, declared_pjsip_rev12, rev12
from reconciler.settings import Settings

__all__ = [
    "STATE_FILE",
    "ApplyOptions",
    "ApplyResult",
    "ApplyRolledBack",
    "Check",
    "LiveState",
    "apply_desired",
    "declared_dialplan_rev12",
    "declared_pjsip_rev12",
    "parse_live_state",
    "read_live_state",
    "rev12",
    "runs_files_on_disk",
    "sha256_text",
    "verification_queries",
    "verify",
]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ApplyOptions:
    """How an apply treats a needed restart and a lock held by someone else."""

    restart: RestartPolicy = RestartPolicy.IDLE
    restart_wait_s: float = DEFAULT_RESTART_WAIT_S
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S


@dataclass(frozen=True)
class ApplyResult:
    """What one apply did. `unchanged`: the live files already matched, nothing was reloaded.

    `execs` counts `docker exec` calls and `transfers` file uploads of this apply. `warnings` are
    operational problems that did not stop it (`pbx_provider: host X does not resolve`): the rest
    of the revision is live.
    `restart_pending`: the restart a transport change needs has not happened yet (why).
    `settled`: an unsettled state this apply found and settled (an interrupted apply, ...).
    """

    revision: str
    subject: str | None
    unchanged: bool
    changed_files: tuple[str, ...]
    changes: tuple[str, ...]
    reloads: tuple[str, ...]
    restarted: bool
    duration_s: float
    checks: tuple[Check, ...] = ()
    recorded: bool = False
    execs: int = 0
    transfers: int = 0
    restart_pending: str | None = None
    settled: str | None = None
    lock_waited_s: float = 0.0
    warnings: tuple[str, ...] = ()


class ApplyRolledBack(ApplyFailed):
    """Asterisk refused the new config or verification failed; the previous files are live again.

    `problems` are Asterisk's log lines about the managed files, `checks` the verification answers,
    `rolled_back` whether restoring the previous files succeeded.
    """

    def __init__(
        self,
        message: str,
        hint: str,
        *,
        revision: str,
        problems: Sequence[LogProblem] = (),
        checks: Sequence[Check] = (),
        rolled_back: bool = True,
    ) -> None:
        super().__init__(message, hint)
        self.revision = revision
        self.problems = tuple(problems)
        self.checks = tuple(checks)
        self.rolled_back = rolled_back


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Retry(Exception):
    """Read again and re-plan: the lock was busy or the live files changed since they were read."""

    def __init__(self, why: str, lease: Lease | None = None, now: int | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.lease = lease
        self.now = now


# --- the transaction ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Swapped:
    """What the swap stage left for verify and record."""

    out: TxnOutcome
    on_disk: dict[str, str]
    exp: Expectations
    queries: tuple[str, ...]
    store_queries: int  # the last `store_queries` queries are the store's per-object checks
    unregisters: int  # the `unregisters` queries before them drop removed extensions' contacts
    store_checked: list[str]
    store_skipped: int
    store_digest: str | None


class _Apply:
    """One attempt at applying a render over what one read exec saw."""

    def __init__(
        self,
        settings: Settings,
        client: AsteriskClient,
        rendered: Any,
        obs: Observed,
        options: ApplyOptions,
        holder: Holder,
        subject: str | None,
        say: Progress,
    ) -> None:
        self.settings = settings
        self.client = client
        self.rendered = rendered
        self.obs = obs
        self.options = options
        self.holder = holder
        self.subject = subject
        self.say = say
        self.revision: str = rendered.revision
        self.warnings: list[str] = []
        self.store = plan_store(rendered, obs, holder)
        self.store_ran = False  # the store SQL of this attempt committed (undo on a rollback)

    # -- steps --------------------------------------------------------------------------------

    def _expect(self) -> dict[str, str | None]:
        """The live files the plan was made from: the swap goes ahead only if they are unchanged."""
        expect: dict[str, str | None] = {
            n: (sha256_text(self.obs.conf[n]) if n in self.obs.conf else None) for n in self.rendered.files
        }
        expect[STATE_FILE] = sha256_text(self.obs.state_text) if self.obs.state_text is not None else None
        return expect

    def _check_first(self, out: TxnOutcome, what: str) -> None:
        """Handle a lease or compare-and-swap answer of an `acquire` exec."""
        if out.lease.status == "busy":
            raise _Retry("the PBX's lock was taken meanwhile", out.lease.lease, out.lease.now)
        if out.lease.status == "lost":
            raise LeaseLost(
                f"another apply took the PBX's lock over while revision {rev12(self.revision)} was {what}: "
                f"{out.lease.lease.describe(out.lease.now) if out.lease.lease else 'unknown holder'}",
                "run `reconciler status`, then apply again",
            )
        if out.lease.status == "error":
            raise ManagedWriteFailed(
                f"cannot take the PBX's lock in {self.client.container_name}:{self.client.managed_dir}: "
                f"{out.lease.error}",
                "free space in the managed volume (or fix its permissions) and apply again; nothing changed",
            )
        if out.stopped == "check" and out.detail.startswith("conflict"):
            raise _Retry("the live files changed since they were read (another apply?): reading them again")

    def record(
        self,
        on_disk: Mapping[str, str],
        pending: PendingRestart | None,
        mode: str,
        degraded: Mapping[str, str],
        store_digest: str | None = None,
    ) -> TxnOutcome:
        """Write state.json for `on_disk`, refresh the last verified copy (not while a restart is
        pending), remove the journal, release the lock: one exec."""
        record = LiveState(
            self.revision,
            self.subject,
            _now(),
            {n: sha256_text(t) for n, t in sorted(on_disk.items())},
            dict(degraded),
            pending,
            store_digest if store_digest is not None else self.obs.live.store.digest,
        )
        out = self.client.transact(
            self.holder,
            self.revision,
            mode=mode,  # type: ignore[arg-type]
            doing="recording",
            expect=self._expect() if mode == "acquire" else None,
            record=record.to_json(),
            settle=sorted(on_disk),
            keep_last_good=pending is not None,
        )
        self.warnings += [f"the last verified copy was not refreshed: {w}" for w in out.warnings]
        return out

    def rollback(
        self, on_disk: Mapping[str, str], written: Iterable[str], restarted: bool
    ) -> tuple[bool, str, list[LogProblem]]:
        """Put the last verified copy back (hard links, checked against its state.json), or, when
        there is none, the files as they were read; reload them (restart at once if this apply
        restarted: the PBX now runs a config that failed). Returns (restored, what, problems)."""
        good = self.obs.last_good
        names = set(self.rendered.files)
        files: dict[str, FileSource] = {}
        remove: list[str] = []
        if good is not None and names <= set(good.files):
            for n in sorted(names):
                want = good.files[n]
                if n in on_disk and sha256_text(on_disk[n]) == want:
                    continue
                old = self.obs.conf.get(n)
                files[n] = FileSource(
                    text=old if old is not None and sha256_text(old) == want else None, link_sha=want
                )
            good_text = self.obs.live.last_good_state_text or ""
            if self.obs.state_text != good_text:
                files[STATE_FILE] = FileSource(text=good_text, link_sha=sha256_text(good_text))
            what = f"the last verified copy (revision {rev12(good.revision)})"
            reload_names = names if self.obs.journal or restarted else {n for n in files if n != STATE_FILE}
        else:
            for n in sorted(set(written)):
                old = self.obs.conf.get(n)
                if old is None:
                    remove.append(n)
                else:
                    files[n] = FileSource(text=old)
            what = "the previous files"
            reload_names = set(written)
        if self.store_ran:
            what += " and the previous store rows"
        restart = (
            RestartRequest(RestartPolicy.NOW, self.options.restart_wait_s, "rolling back")
            if restarted
            else None
        )
        self.say(f"restoring {what}" + (" and restarting" if restarted else ""))
        try:
            out = self.client.transact(
                self.holder,
                self.revision,
                mode="fence",
                doing=f"rolling back to {what}",
                files=files,
                remove=remove,
                commands=() if restarted else reloads_for(reload_names),
                restart=restart,
                settle=sorted(names - set(remove)),
                keep_last_good=True,
                store_sql=store_mod.undo_sql(self.store.token) if self.store_ran else None,
            )
        except AsteriskUnavailable as exc:
            return False, what, [LogProblem("ERROR", "reconciler", exc.message)]
        except ManagedWriteFailed as exc:
            return False, what, [LogProblem("ERROR", "reconciler", exc.message)]
        if not out.ok:
            return False, f"{what}: {out.detail or out.lease.error or out.lease.status}", []
        if restarted and not out.restart.startswith("restarted"):
            return False, f"{what}: Asterisk did not restart ({out.restart})", []
        return True, what, parse_reload_log(out.reload.log_lines) if out.reload else []

    def _rolled_back_error(
        self,
        message: str,
        hint: str,
        on_disk: Mapping[str, str],
        written: Iterable[str],
        restarted: bool,
        *,
        problems: Sequence[LogProblem] = (),
        checks: Sequence[Check] = (),
        error: type[ApplyFailed] = ApplyRolledBack,
    ) -> ApplyFailed:
        restored, what, restore_problems = self.rollback(on_disk, written, restarted)
        if restored:
            message += (
                f"\n{what[0].upper() + what[1:]} was restored and reloaded: the last good config is live."
            )
        else:
            message += (
                f"\nRESTORING {what.upper()} FAILED; the journal is kept and the next apply settles it."
            )
            hint = f"check it now (`reconciler status`, {self.client.logs_hint()}); then apply again"
        if restore_problems:
            message += "\nWhile restoring:" + "".join(f"\n  {p}" for p in restore_problems)
        message = plan_mod.mask(message, self.rendered.secret_values)
        if error is ApplyRolledBack:
            return ApplyRolledBack(
                message, hint, revision=self.revision, problems=problems, checks=checks, rolled_back=restored
            )
        return error(message, hint)

    def _went_away(self, exc: AsteriskWentAway, during: str, names: Sequence[str]) -> AsteriskUnavailable:
        done = exc.completed
        state = "are on disk"
        if during == "swap":
            if "journaled" not in done.get("journal", ""):
                return exc  # it went away before anything was changed
            if "swapped" not in done.get("swap", "").splitlines():
                state = "may be on disk"
            else:
                during = "reload"
        return AsteriskUnavailable(
            f"{exc.message}.\nThis happened during the {during} of revision {rev12(self.revision)}: "
            f"the new {', '.join(names) or 'files'} {state}, not verified (the journal "
            f"{JOURNAL_PATH} in the managed volume records it). The next apply, or the watch loop, "
            "verifies what is on disk before recording it, or puts the last verified copy back.",
            f"{self.client.start_hint().removesuffix(', then retry')}, then run the apply again",
        )

    # -- the attempt ----------------------------------------------------------------------------

    def run(self, dry_run: bool, result: Callable[..., ApplyResult]) -> ApplyResult:
        """decide → (no change: record a new id, if any) → swap → verify → restart → record."""
        d = decide(self.rendered, self.obs, self.options, self.store)
        if d.no_change:
            return self._no_change(dry_run, result, d.pending, list(d.changes), d.dns_issues)
        if dry_run:
            return result(
                unchanged=False,
                changed_files=d.changed_files,
                changes=d.changes,
                reloads=d.reloads,
                restarted=False,
                warnings=providers_health.warnings_of(d.degraded),
            )
        swapped = self._swap(d)
        checks, issues = self._verify(d, swapped)
        restarted = False
        new_pending: PendingRestart | None = None
        if d.restart:
            restarted, new_pending, checks, after = self._restart(
                swapped.exp, d.reason, swapped.on_disk, d.written, checks
            )
            issues = [*issues, *after]
        settled = providers_health.settle(
            self.client,
            self.rendered.state,
            self.obs.degraded,
            providers_health.merge(issues, d.dns_issues),
            "pjsip.conf" in d.reload_names or restarted,
        )
        self._record_stage(d, swapped, new_pending, settled.still, restarted)
        return result(
            unchanged=False,
            changed_files=d.changed_files,
            changes=(*d.changes, *providers_health.came_back(settled.healed)),
            reloads=d.reloads,
            restarted=restarted,
            checks=tuple(checks),
            recorded=True,
            restart_pending=_pending_text(new_pending),
            settled=d.settled_note,
            warnings=(*providers_health.warnings_of(settled.still), *self.warnings),
        )

    # -- stages ---------------------------------------------------------------------------------

    def _swap(self, d: Decision) -> _Swapped:
        """One exec: lock, compare-and-swap, journal, staged files, store rows, reloads, queries.
        Fails with its own reason: `_Retry` (lock/conflict), `LeaseLost`, `RestartRefused`,
        `ManagedWriteFailed` (nothing renamed), a rollback for a failed rename or store write."""
        rendered, obs, opts, store = self.rendered, self.obs, self.options, self.store
        on_disk = {**obs.conf, **{n: rendered.files[n] for n in d.written}}
        exp = expectations(rendered.state, on_disk)
        queries = verification_queries(exp, d.reload_names, restarted=False)
        if d.booted_since and exp.transports and not d.restart:
            queries.append(TRANSPORTS_QUERY)
        # The store's queries come last (unregister, then the per-object checks): store_mod.judge
        # alone judges them (a removed extension's `pjsip show endpoint` must find nothing).
        store_queries, store_checked, store_skipped = store_mod.verification_plan(store.present, store.absent)
        unregisters = store_mod.unregister_commands(store.absent)
        queries += unregisters + store_queries
        if d.reload_names:
            self.say("reloading " + ", ".join(d.reload_names) + (" (a restart follows)" if d.restart else ""))
        if store.sql:
            self.say(f"writing the store ({store.summary()})")
        try:
            out = self.client.transact(
                self.holder,
                self.revision,
                mode="acquire",
                doing=f"reloading {', '.join(d.reload_names)}",
                expect=self._expect(),
                refuse_calls=d.restart and opts.restart is RestartPolicy.REFUSE,
                journal=new_journal(
                    self.revision, self.holder.who, {n: sha256_text(t) for n, t in on_disk.items()}, d.restart
                ),
                files={n: FileSource(text=rendered.files[n]) for n in d.written},
                commands=d.commands,
                queries=queries,
                store_sql=store.sql,
                store_digest=store.sql is not None,
            )
        except AsteriskWentAway as exc:
            raise self._went_away(exc, "swap", d.written) from exc
        self._check_first(out, "being applied")
        self.store_ran = store.sql is not None and "stored" in out.outputs.get("store", "").splitlines()
        if out.stopped == "check" and out.detail.startswith("calls"):
            raise RestartRefused(
                f"revision {rev12(self.revision)} needs an Asterisk restart ({d.reason}) and "
                f"{out.calls} call(s) are up; --restart refuse: nothing was changed",
                "apply again when the PBX is idle, or use --restart idle (waits for the calls to end) "
                "or --restart now (drops them)",
            )
        if out.stopped == "store":  # it runs before the renames, and a failed transaction commits nothing
            raise ManagedWriteFailed(
                f"writing the store for revision {rev12(self.revision)} failed: {out.detail}\n"
                "Nothing was renamed or reloaded: Asterisk runs the previous config and store rows.",
                "check the store in the managed volume (free space, permissions), then apply again",
            )
        if out.stopped in ("journal", "store-stage", "stage"):
            raise ManagedWriteFailed(
                f"writing revision {rev12(self.revision)} into "
                f"{self.client.container_name}:{self.client.managed_dir} failed: {out.detail}\n"
                "Nothing was renamed or reloaded: Asterisk runs the previous config, and so will a restart.",
                "free space in the managed volume (or fix its permissions), then apply again",
            )
        if out.stopped == "swap":
            raise self._rolled_back_error(
                f"renaming the new files into place failed: {out.detail} "
                f"(renamed: {', '.join(out.renamed) or 'none'})",
                "check the managed volume (free space, permissions), then apply again",
                on_disk,
                d.written,
                False,
                error=ManagedWriteFailed,
            )
        if not out.ok or out.reload is None:
            raise ApplyFailed(
                f"the apply of revision {rev12(self.revision)} stopped at {out.stopped}: {out.detail}",
                "run `reconciler status`, then apply again",
            )
        digest = store_mod.parse_digest(out.outputs.get("store-digest", "")) if store.sql else None
        return _Swapped(
            out,
            on_disk,
            exp,
            tuple(queries),
            len(store_queries),
            len(unregisters),
            store_checked,
            store_skipped,
            digest,
        )

    def _verify(self, d: Decision, s: _Swapped) -> tuple[list[Check], list[providers_health.ProviderIssue]]:
        """Judge what the swap's reloads logged and its queries answered (files and store rows);
        a refused object or a failed check rolls back (`ApplyRolledBack`)."""
        assert s.out.reload is not None
        file_queries = s.queries[: len(s.queries) - s.store_queries - s.unregisters]
        problems, checks, issues = self._judge(s.exp, file_queries, s.out, s.on_disk)
        answers = s.out.reload.query_outputs[len(s.queries) - s.store_queries :]
        checks += [
            Check(c.name, c.ok, c.detail) for c in store_mod.judge(s.store_checked, answers, s.store_skipped)
        ]
        if self.store.sql and s.store_digest is None:
            checks.append(
                Check("store digest read after the write", False, s.out.outputs.get("store-digest", ""))
            )
        if problems or not all(c.ok for c in checks):
            raise self._rolled_back_error(
                failure_message(self.revision, problems, checks, self.rendered.secret_values),
                "fix the lines above in the desired state (or the template) and apply again; "
                "the PBX keeps running the previous revision",
                s.on_disk,
                d.written,
                False,
                problems=problems,
                checks=checks,
            )
        return checks, issues

    def _record_stage(
        self,
        d: Decision,
        s: _Swapped,
        pending: PendingRestart | None,
        degraded: Mapping[str, str],
        restarted: bool,
    ) -> None:
        """One exec: state.json (with the store's digest), the last verified copy, release."""
        try:
            rec = self.record(s.on_disk, pending, "fence", degraded, s.store_digest)
        except AsteriskWentAway as exc:
            raise self._went_away(exc, "record", d.written) from exc
        if rec.lease.status != "ok":
            self._check_first(rec, "being recorded")
        if not rec.ok:
            raise self._rolled_back_error(
                f"recording revision {rev12(self.revision)} in state.json failed: {rec.detail}",
                "free space in the managed volume (or fix its permissions), then apply again",
                s.on_disk,
                d.written,
                restarted,
                error=ManagedWriteFailed,
            )

    def _judge(
        self, exp: Expectations, queries: Sequence[str], out: TxnOutcome, on_disk: Mapping[str, str]
    ) -> tuple[list[LogProblem], list[Check], list[providers_health.ProviderIssue]]:
        """The one place where what a reload (or restart) logged and answered is judged: Asterisk's
        problems about the managed files, and the verification checks; any of either fails it.
        A provider whose host does not resolve costs only its identify: a provider issue (a
        warning), not a problem."""
        assert out.reload is not None
        judged = providers_health.judge_reload(
            parse_reload_log(out.reload.log_lines), out.reload.log_lines, self.rendered.state, on_disk
        )
        checks = verify(exp, queries, out.reload.query_outputs[: len(queries)])
        if not out.reload.log_complete:
            checks.append(Check("log lines of the reload read", False, "barrier line never reached the log"))
        return list(judged.fatal), checks, list(judged.issues)

    def _restart(
        self,
        exp: Expectations,
        reason: str,
        on_disk: Mapping[str, str],
        written: Sequence[str],
        checks: list[Check],
    ) -> tuple[bool, PendingRestart | None, list[Check], list[providers_health.ProviderIssue]]:
        """The restart a transport change needs, per the policy; verify everything after it.
        Returns (restarted, pending restart or None, the checks, provider issues it logged)."""
        opts = self.options
        queries = verification_queries(exp, self.rendered.files, restarted=True)
        if opts.restart is RestartPolicy.NOW:
            self.say(f"restarting Asterisk now ({reason})")
        else:
            self.say(
                f"restarting Asterisk once no call is up, waiting up to {opts.restart_wait_s:.0f} s "
                f"({reason})"
            )
        try:
            out = self.client.transact(
                self.holder,
                self.revision,
                mode="fence",
                doing="restarting",
                restart=RestartRequest(opts.restart, opts.restart_wait_s, reason),
                queries=queries,
            )
        except AsteriskWentAway as exc:
            raise self._went_away(exc, "restart", written) from exc
        if out.lease.status != "ok":
            self._check_first(out, "restarting Asterisk")
        if out.restart.startswith("pending"):
            calls = out.restart.removeprefix("pending").strip() or "some"
            pending = PendingRestart(
                reason=f"{reason}; waiting for {calls} call(s) to end",
                requested_at=_now(),
                boot_id=self.obs.live.boot_id or "",
                policy=opts.restart.value,
            )
            return False, pending, checks, []
        if not out.restart.startswith("restarted") or out.reload is None:
            raise AsteriskUnavailable(
                f"Asterisk in {self.client.label} did not come back after the restart for "
                f"revision {rev12(self.revision)} ({out.restart or out.detail}): the new files are on disk, "
                f"not verified (the journal {JOURNAL_PATH} records it); the next apply verifies them or "
                "puts the last verified copy back",
                f"see {self.client.logs_hint()}; then apply again",
            )
        problems, after, issues = self._judge(exp, queries, out, on_disk)
        if problems or not all(c.ok for c in after):
            raise self._rolled_back_error(
                failure_message(self.revision, problems, after, self.rendered.secret_values),
                "fix the lines above in the desired state and apply again; "
                "the PBX keeps running the previous revision",
                on_disk,
                written,
                True,
                problems=problems,
                checks=after,
            )
        return True, None, after, issues

    def _no_change(
        self,
        dry_run: bool,
        result: Callable[..., ApplyResult],
        pending: PendingRestart | None,
        changes: list[str],
        dns_issues: Sequence[providers_health.ProviderIssue],
    ) -> ApplyResult:
        """The live files already match and are verified: record a new revision id (or a change of
        the degraded providers), if any. A degraded provider whose host resolves again is healed
        here (one more exec, only then)."""
        obs = self.obs
        settled = (
            providers_health.HealResult((), providers_health.degraded_record(dns_issues))
            if dry_run
            else providers_health.settle(self.client, self.rendered.state, obs.degraded, dns_issues, False)
        )
        hashes = {n: sha256_text(t) for n, t in sorted(obs.conf.items())}
        needs_record = (
            obs.state is None
            or obs.state.revision != self.revision
            or obs.state.files != hashes
            or obs.degraded != settled.still
            or obs.state.store != obs.live.store.digest
        )
        recorded = False
        if needs_record and not dry_run:
            out = self.record(obs.conf, pending, "acquire", settled.still)
            self._check_first(out, "recorded")
            if not out.ok:
                raise ManagedWriteFailed(
                    f"recording revision {rev12(self.revision)} in state.json failed: {out.detail}",
                    "free space in the managed volume (or fix its permissions), then apply again; "
                    "nothing else changed",
                )
            recorded = True
        return result(
            unchanged=True,
            changed_files=(),
            changes=(*changes, *providers_health.came_back(settled.healed)),
            reloads=(providers_health.PJSIP_RELOAD,) if settled.reloaded else (),
            restarted=False,
            recorded=recorded,
            restart_pending=_pending_text(pending),
            warnings=(*providers_health.warnings_of(settled.still), *self.warnings),
        )


def _refuse_missing_sounds(rendered: render.Rendered, available: frozenset[str] | None, label: str) -> None:
    """ValidationFailed (nothing written) naming each prompt the PBX does not have."""
    missing = sounds_mod.missing_sounds(rendered.state, available)
    if missing:
        raise ValidationFailed(
            [
                rendered.problem(path, f"no sound {name!r} in the PBX ({label}): {sounds_mod.HINT}")
                for path, name in missing
            ]
        )


def _pending_text(pending: PendingRestart | None) -> str | None:
    return None if pending is None else f"{pending.reason} (asked at {pending.requested_at})"


# --- apply --------------------------------------------------------------------------------------


def apply_desired(
    settings: Settings,
    client: AsteriskClient,
    desired_dir: Path,
    *,
    revision: str | None = None,
    subject: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    options: ApplyOptions | None = None,
    holder: Holder | None = None,
) -> ApplyResult:
    """Make Asterisk run `desired_dir`: render, plan, swap atomically under the PBX's lock, reload
    only what changed (restart per the policy when a transport changed), verify by asking
    Asterisk, record `state.json`.

    Raises `ValidationFailed`/`RenderFailed` before touching Asterisk; `LockBusy` when another
    apply held the lock for longer than `options.lock_wait_s`; `AsteriskUnavailable` when the
    container cannot be reached (also mid-apply: the journal then lets the next apply settle it);
    `ManagedWriteFailed` when the volume refused a write (nothing renamed or reloaded);
    `RestartRefused` (`--restart refuse` with calls up); and `ApplyRolledBack` when Asterisk refused
    the config or verification failed — the last verified config is then live again.
    With `dry_run`, stops after the plan (nothing written, nothing reloaded, no lock taken).
    """
    opts = options or ApplyOptions()
    started = time.monotonic()
    execs0, transfers0 = client.exec_count, client.transfer_count
    rendered = render.render_desired(Path(desired_dir), settings, revision)
    holder = holder or Holder.new()
    say: Progress = progress or (lambda _message: None)
    waiting_since: float | None = None  # when this apply first found the lock busy
    waited = 0.0

    def result(**kw: Any) -> ApplyResult:
        return ApplyResult(
            revision=rendered.revision,
            subject=subject,
            duration_s=time.monotonic() - started,
            execs=client.exec_count - execs0,
            transfers=client.transfer_count - transfers0,
            lock_waited_s=round(waited, 3),
            **kw,
        )

    say("reading the live config")
    # The read exec also resolves the provider hosts: a provider whose host does not resolve is
    # named even when nothing changed.
    hosts = providers_health.dns_names(rendered.state)
    # ...and lists Asterisk's sounds for the menus' prompts: a missing one stops it before any write.
    ask_sounds = bool(rendered.state.menus)
    while True:
        if waiting_since is not None:
            waited = time.monotonic() - waiting_since
        live = client.read_live(resolve=hosts, sounds=ask_sounds)
        _refuse_missing_sounds(rendered, live.markers.sounds, client.label)
        held = parse_lease(live.lease_text)
        try:
            if (
                not dry_run
                and held is not None
                and held.holder != holder.token
                and not held.void(live.now, live.box)
            ):
                raise _Retry("the PBX's lock is held", held, live.now)
            attempt = _Apply(
                settings, client, rendered, observe(live, rendered.files), opts, holder, subject, say
            )
            return attempt.run(dry_run, result)
        except _Retry as retry:
            now = time.monotonic()
            waiting_since = now if waiting_since is None else waiting_since
            waited = now - waiting_since
            left = opts.lock_wait_s - waited
            who = retry.lease.describe(retry.now) if retry.lease is not None else None
            if left <= 0:
                raise LockBusy(
                    f"another apply holds the lock of the PBX in {client.label}: "
                    f"{who or retry.why}; waited {waited:.0f} s",
                    "try again when it is done (`reconciler status` shows it), or wait longer with "
                    f"--lock-wait SECONDS; a holder that crashed loses the lock within {LEASE_TTL_S} s",
                ) from None
            say(
                f"waiting for the PBX's lock, held by {who}; {left:.0f} s left"
                if who
                else f"{retry.why}; {left:.0f} s left"
            )
            time.sleep(min(1.0, left) if who else min(0.2, left))
