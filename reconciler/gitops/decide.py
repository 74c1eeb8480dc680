"""The decide stage: what an apply must do, from the render and what the observe stage saw. Pure.

observe (one read exec: files, markers, records, the store's digest) → **decide** → swap (one exec:
lock, compare-and-swap, journal, files, store rows, reloads, queries) → verify (judge the answers)
→ record (one exec: state.json, last verified copy, release). Nothing here touches Docker, so every
decision (no change, settle, heal the store, restart, which reloads) has a Docker-free unit test.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.asterisk import providers_health
from reconciler.asterisk import store as store_mod
from reconciler.asterisk.client import LiveRead, sha256_text
from reconciler.asterisk.journal import STATE_FILE, Journal, parse_journal
from reconciler.asterisk.lease import Holder
from reconciler.asterisk.restart import PendingRestart, RestartPolicy
from reconciler.gitops import plan as plan_mod
from reconciler.gitops.checks import runs_files_on_disk
from reconciler.gitops.livestate import LiveState, parse_live_state
from reconciler.gitops.plan import RELOAD_COMMANDS
from reconciler.markers import declared_dialplan_rev12, declared_pjsip_rev12, rev12


def reloads_for(changed_files: Iterable[str]) -> tuple[str, ...]:
    order = list(RELOAD_COMMANDS)
    names = sorted(set(changed_files), key=lambda n: order.index(n) if n in order else len(order))
    return tuple(RELOAD_COMMANDS[name] for name in names if name in RELOAD_COMMANDS)


@dataclass
class Observed:
    """What the read exec saw, interpreted."""

    live: LiveRead
    state: LiveState | None
    state_text: str | None
    journal: Journal | None
    last_good: LiveState | None
    conf: dict[str, str]  # managed files on disk that the render also produces

    @property
    def pending(self) -> PendingRestart | None:
        return self.state.pending_restart if self.state is not None else None

    @property
    def degraded(self) -> dict[str, str]:
        return dict(self.state.degraded) if self.state is not None else {}


def observe(live: LiveRead, rendered_names: Iterable[str]) -> Observed:
    files = dict(live.files)
    state_text = files.pop(STATE_FILE, None)
    names = set(rendered_names)
    return Observed(
        live=live,
        state=parse_live_state(state_text),
        state_text=state_text,
        journal=parse_journal(live.journal_text),
        last_good=parse_live_state(live.last_good_state_text),
        conf={n: t for n, t in files.items() if n in names},
    )


def unsettled(obs: Observed, names: Iterable[str]) -> list[str]:
    """Why the files on disk may not be the verified ones that state.json records."""
    why = []
    if obs.journal is not None:
        why.append(f"{obs.journal.describe()} was interrupted before it was recorded")
    elif obs.state is None:
        if obs.conf and any(declared_pjsip_rev12(t) or declared_dialplan_rev12(t) for t in obs.conf.values()):
            why.append("no state.json records the managed files on disk as verified")
    else:
        recorded = {n: obs.state.files.get(n) for n in names}
        on_disk = {n: (sha256_text(obs.conf[n]) if n in obs.conf else None) for n in names}
        if recorded != on_disk:
            why.append("the managed files on disk are not those state.json recorded")
    pending = obs.pending
    if pending is not None and obs.state is not None and pending.done(obs.live.boot_id):
        why.append(
            f"Asterisk restarted since the restart for revision {rev12(obs.state.revision)} was pending"
        )
    return why


@dataclass(frozen=True)
class StorePlan:
    """What the realtime store needs in this apply: `sql` (None: nothing), the extensions that must
    be present/absent afterwards (for verification), and why (`heal`: the whole store is rewritten)."""

    token: str
    sql: str | None = None
    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    added: int = 0
    changed: int = 0
    heal: str | None = None

    def summary(self) -> str:
        if self.heal:
            return f"rewriting every row: {self.heal}"
        return f"{self.added} added, {self.changed} changed, {len(self.absent)} removed"

    def describe(self) -> list[str]:
        if not self.sql:
            return []
        if self.heal:
            return [f"store: {self.summary()}"]
        return [f"store: extension {n} {self._verb(n)}" for n in (*self.present, *self.absent)][:50] + (
            [f"store: ... {len(self.present) + len(self.absent) - 50} more"]
            if len(self.present) + len(self.absent) > 50
            else []
        )

    def _verb(self, n: str) -> str:
        return "removed" if n in self.absent else "added or changed"


def plan_store(rendered: Any, obs: Observed, holder: Holder) -> StorePlan:
    """Decide the store's part of this apply (pure): the extensions whose rows differ from those last
    applied (keyed hashes kept in the store, O(n) dict lookups), or a rewrite of every row when the
    live store is not the one state.json recorded (drift, a first apply, an upgrade from files)."""
    token = f"{holder.token}:{rev12(rendered.revision)}"
    live = obs.live.store
    key = live.key or os.urandom(32)
    desired = store_mod.desired_rows(rendered.state, rendered.secrets, key)
    numbers = sorted(desired[store_mod.APPLIED])
    recorded = obs.state.store if obs.state is not None else None
    heal = None
    if live.key is None:
        heal = "the store has no applied rows yet"
    elif recorded is None:
        heal = "state.json records no store"
    elif live.digest != recorded and obs.journal is not None:
        heal = f"{obs.journal.describe()} was interrupted after its store rows were written"
    elif live.digest != recorded:
        heal = "the store's rows differ from those recorded (drift)"
    if heal is not None:
        gone = sorted(set(live.applied) - set(numbers))
        sql = store_mod.rewrite_sql(desired, token, key)
        return StorePlan(token, sql, tuple(numbers), tuple(gone), len(numbers), 0, heal)
    todo = store_mod.changed_numbers(desired, live.applied)
    if not todo:
        return StorePlan(token)
    present = tuple(n for n in todo if n in desired[store_mod.APPLIED])
    absent = tuple(n for n in todo if n not in desired[store_mod.APPLIED])
    added = sum(1 for n in present if n not in live.applied)
    return StorePlan(
        token, store_mod.delta_sql(todo, desired, token), present, absent, added, len(present) - added
    )


@dataclass(frozen=True)
class Decision:
    """What this apply does, decided before anything is written.

    `no_change`: the files on disk and the store already are the render, verified and live; only a
    new revision id (or degraded providers) may need recording. Otherwise `written` files are
    swapped in, `reload_names` reloaded (`commands`), the store's SQL run, and `restart` says
    whether a restart follows (`reason`).
    """

    plan: plan_mod.Plan
    changes: tuple[str, ...]
    no_change: bool
    pending: PendingRestart | None  # a restart still pending (not yet happened)
    written: tuple[str, ...] = ()
    reload_names: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    reloads: tuple[str, ...] = ()
    restart: bool = False
    reason: str = ""
    changed_files: tuple[str, ...] = ()
    settled_note: str | None = None
    booted_since: bool = False  # Asterisk started after the files on disk were written
    dns_issues: tuple[providers_health.ProviderIssue, ...] = ()
    degraded: Mapping[str, str] = field(default_factory=dict)  # providers degraded after this apply


# Asterisk keeps the store's file open (res_config_sqlite3, and its reload does not reopen it): once
# that file is gone from the managed dir, rows written to a new one stay invisible until it restarts.
STORE_REOPEN_REASON = "the realtime store's file was missing: Asterisk must reopen the rewritten one"


def _restart_reasons(plan: plan_mod.Plan, obs: Observed, pending: PendingRestart | None) -> list[str]:
    reasons = list(plan.restart_reasons) if plan.restart_required else []
    if obs.live.store.digest is None:
        # The image creates the store before Asterisk starts: no digest means the file Asterisk
        # opened was deleted (a wiped volume) or is unreadable.
        reasons.append(STORE_REOPEN_REASON)
    if pending is not None:
        reasons.append(f"{pending.reason} (pending since {pending.requested_at})")
    journal = obs.journal
    if journal is not None and journal.restart and journal.boot_id and journal.boot_id == obs.live.boot_id:
        reasons.append(f"the interrupted apply of revision {rev12(journal.revision)} needed a restart")
    return list(dict.fromkeys(reasons))


def decide(rendered: Any, obs: Observed, options: Any, store: StorePlan) -> Decision:
    """The decide stage: compare the render (and the store plan) with what was observed."""
    names = list(rendered.files)
    # Provider hosts were resolved by the read exec: one that does not resolve is a warning.
    dns_issues = tuple(providers_health.dns_issues(rendered.state, obs.live.markers.lookups))
    plan = plan_mod.make_plan(rendered.files, obs.conf, rendered.secret_values)
    changes = [str(c) for c in plan.changes] + store.describe()
    why_unsettled = unsettled(obs, names)
    live_ok = runs_files_on_disk(obs.live.markers, obs.conf)
    pending = obs.pending if obs.pending is not None and not obs.pending.done(obs.live.boot_id) else None
    reasons = _restart_reasons(plan, obs, pending)
    quiet_pending = (
        pending is not None and not plan.restart_required and options.restart is not RestartPolicy.NOW
    )
    files_ok = live_ok and not why_unsettled
    if not plan.has_changes and not store.sql and files_ok and (pending is None or quiet_pending):
        return Decision(plan, tuple(changes), True, pending, dns_issues=dns_issues)

    written = list(plan.changed_files)
    # A store-only change reloads nothing: Asterisk reads the rows at once.
    reload_names = written if files_ok else names
    provider_names = {p.name for p in rendered.state.providers}
    degraded = providers_health.degraded_record(dns_issues)
    if "pjsip.conf" not in reload_names and any(
        n in provider_names and n not in degraded for n in obs.degraded
    ):
        # A degraded provider may be up again: this apply's own res_pjsip reload re-resolves
        # its identify (instead of a separate heal exec while this apply holds the lock).
        reload_names = [*reload_names, "pjsip.conf"]
    if why_unsettled:
        changes.append("settling: " + "; ".join(why_unsettled) + ": reloading and verifying every file")
    elif not live_ok:
        changes.append("Asterisk is not running the managed files on disk: reloading them")
    restart = bool(reasons)
    commands = reloads_for(reload_names)
    journal = obs.journal
    # Asterisk started after these files were written (the pending restart happened, or it was
    # restarted after an interrupted apply): it runs their transports, so check them too.
    booted_since = (obs.pending is not None and obs.pending.done(obs.live.boot_id)) or (
        journal is not None and bool(journal.boot_id) and journal.boot_id != obs.live.boot_id
    )
    return Decision(
        plan,
        tuple(changes),
        False,
        pending,
        written=tuple(written),
        reload_names=tuple(reload_names),
        commands=commands,
        reloads=(*commands, options.restart.command) if restart else commands,
        restart=restart,
        reason="; ".join(reasons),
        changed_files=tuple(written) or tuple(reload_names),  # the store's part is named in `changes`
        settled_note="; ".join(why_unsettled) or None,
        booted_since=booted_since,
        dns_issues=dns_issues,
        degraded=degraded,
    )
