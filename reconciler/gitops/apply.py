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

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.asterisk import providers_health
from reconciler.asterisk import store as store_mod
from reconciler.asterisk.client import (
    AsteriskClient,
    AsteriskWentAway,
    FileSource,
    LiveMarkers,
    LiveRead,
    RestartRequest,
    TxnOutcome,
    sha256_text,
)
from reconciler.asterisk.journal import JOURNAL_PATH, STATE_FILE, Journal, new_journal, parse_journal
from reconciler.asterisk.lease import DEFAULT_LOCK_WAIT_S, LEASE_TTL_S, Holder, Lease, parse_lease
from reconciler.asterisk.parsers import (
    LogProblem,
    parse_dialplan,
    parse_endpoint_list,
    parse_reload_log,
    parse_transports,
    parse_voicemail_users,
)
from reconciler.asterisk.restart import DEFAULT_RESTART_WAIT_S, PendingRestart, RestartPolicy, parse_pending
from reconciler.desired import render
from reconciler.desired.confparse import parse_conf
from reconciler.errors import (
    ApplyFailed,
    AsteriskUnavailable,
    LeaseLost,
    LockBusy,
    ManagedWriteFailed,
    RestartRefused,
)
from reconciler.gitops import plan as plan_mod
from reconciler.gitops.plan import RELOAD_COMMANDS
from reconciler.markers import (
    DIALPLAN_QUERY,
    aor_found,
    declared_dialplan_rev12,
    declared_pjsip_rev12,
    dialplan_revision,
    pjsip_marker,
    pjsip_marker_query,
    rev12,
)
from reconciler.settings import Settings

__all__ = [
    "STATE_FILE",
    "ApplyOptions",
    "ApplyResult",
    "ApplyRolledBack",
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
TRANSPORTS_QUERY = "pjsip show transports"
_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass(frozen=True)
class ApplyOptions:
    """How an apply treats a needed restart and a lock held by someone else."""

    restart: RestartPolicy = RestartPolicy.IDLE
    restart_wait_s: float = DEFAULT_RESTART_WAIT_S
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S


@dataclass(frozen=True)
class Check:
    """One verification question asked of Asterisk after a reload, and its answer."""

    name: str
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'FAILED'}: {self.name}" + (f" ({self.detail})" if self.detail else "")


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


@dataclass(frozen=True)
class LiveState:
    """The record of the last verified apply, `<managed_dir>/state.json` in the container.

    `degraded`: providers of the live revision that cannot work right now, and why (a host that
    does not resolve); `providers_health.heal` clears them once they are up. `pending_restart`: the
    restart a transport change of this revision still waits for.
    """

    revision: str
    subject: str | None
    applied_at: str
    files: Mapping[str, str] = field(default_factory=dict)
    degraded: Mapping[str, str] = field(default_factory=dict)
    pending_restart: PendingRestart | None = None
    store: str | None = None  # the realtime store's digest once this revision was verified

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "revision": self.revision,
            "subject": self.subject,
            "applied_at": self.applied_at,
            "files": dict(sorted(self.files.items())),
        }
        if self.degraded:
            data["degraded"] = dict(sorted(self.degraded.items()))
        if self.pending_restart is not None:
            data["pending_restart"] = self.pending_restart.to_dict()
        if self.store is not None:
            data["store"] = self.store
        return json.dumps(data, indent=2) + "\n"


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


def parse_live_state(text: str | None) -> LiveState | None:
    """`state.json` text → LiveState; None when absent or unreadable (treated as never applied)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        return LiveState(
            revision=str(data["revision"]),
            subject=data.get("subject"),
            applied_at=str(data.get("applied_at", "")),
            files={str(k): str(v) for k, v in (data.get("files") or {}).items()},
            degraded={str(k): str(v) for k, v in (data.get("degraded") or {}).items()},
            pending_restart=parse_pending(data.get("pending_restart")),
            store=str(data["store"]) if data.get("store") else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def read_live_state(client: AsteriskClient) -> LiveState | None:
    """The live revision record from the container (one exec); None if nothing was applied yet."""
    path = f"{client.managed_dir}/{STATE_FILE}"
    out = client.run_steps([f"cat {path} 2>/dev/null"]).outputs[0]
    return parse_live_state(out)


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Expectations:
    """What Asterisk must report once the files on disk are live. The markers are those the files
    on disk declare: a file whose content did not change keeps the marker of its older revision.
    `transports` (name → bind) are checked after a restart only: a reload does not apply them."""

    pjsip_rev12: str | None
    dialplan_rev12: str | None
    endpoints: frozenset[str]
    emergency: tuple[str, ...]
    mailboxes: frozenset[str]
    transports: Mapping[str, str] = field(default_factory=dict)


def expected_transports(pjsip_conf: str | None) -> dict[str, str]:
    """The transports a pjsip.conf defines: name → `address:port` as `pjsip show transports`
    prints it."""
    result = {}
    for section in parse_conf(pjsip_conf or ""):
        if section.type != "transport" or section.is_template:
            continue
        bind = (section.get("bind") or "").strip()
        protocol = (section.get("protocol") or "udp").strip().lower()
        result[section.name] = _with_port(bind, protocol)
    return result


def _with_port(bind: str, protocol: str) -> str:
    """`127.0.0.1` → `127.0.0.1:5060`; `[::]` → `[::]:5060`; a bind with a port is kept."""
    has_port = bind.rsplit("]", 1)[-1].count(":") == 1 if bind.startswith("[") else bind.count(":") == 1
    return bind if has_port else f"{bind}:{_DEFAULT_PORTS.get(protocol, 5060)}"


def _expectations(state: Any, on_disk: Mapping[str, str]) -> _Expectations:
    # Extensions live in the realtime store: they are verified one by one (store_verify), never by
    # listing every endpoint; the file objects are the providers. Mailboxes are store rows too.
    endpoints = {p.name for p in state.providers}
    emergency = sorted({n for route in state.outbound for n in (route.numbers or [])})
    mailboxes: set[str] = set()
    return _Expectations(
        declared_pjsip_rev12(on_disk.get("pjsip.conf")),
        declared_dialplan_rev12(on_disk.get("extensions.conf")),
        frozenset(endpoints),
        tuple(emergency),
        frozenset(mailboxes),
        expected_transports(on_disk.get("pjsip.conf")),
    )


def verification_queries(exp: _Expectations, files: Iterable[str], restarted: bool) -> list[str]:
    """The CLI queries that verify the reloaded `files` (every file after a restart)."""
    files = set(files)
    queries: list[str] = []
    if restarted or "pjsip.conf" in files:
        queries += [pjsip_marker_query(exp.pjsip_rev12 or "")]
        queries += [store_mod.endpoint_query(name) for name in sorted(exp.endpoints)]
    if restarted and exp.transports:
        queries.append(TRANSPORTS_QUERY)
    if restarted or "extensions.conf" in files:
        queries.append(DIALPLAN_QUERY)
        queries += [f"dialplan show {n}@internal" for n in exp.emergency]
    if (restarted or "voicemail.conf" in files) and exp.mailboxes:
        queries.append("voicemail show users")
    return queries


def verify(exp: _Expectations, queries: Sequence[str], outputs: Sequence[str]) -> list[Check]:
    """Judge the answers to `verification_queries`."""
    checks: list[Check] = []
    for query, out in zip(queries, outputs, strict=True):
        if query == pjsip_marker_query(exp.pjsip_rev12 or ""):
            ok = exp.pjsip_rev12 is not None and aor_found(out, exp.pjsip_rev12)
            name = f"pjsip.conf live (aor {pjsip_marker(exp.pjsip_rev12 or '')})"
            checks.append(Check(name, ok, "" if ok else "not found"))
        elif store_mod.is_endpoint_query(query):
            name = store_mod.queried_id(query)
            ok = store_mod.endpoint_found(out)
            checks.append(Check(f"endpoint {name}", ok, "" if ok else "not found"))
        elif query == "pjsip list endpoints":
            live = set(parse_endpoint_list(out))
            missing = sorted(exp.endpoints - live)
            extra = sorted(live - exp.endpoints)
            detail = "; ".join(
                part
                for part in (
                    f"missing: {', '.join(missing)}" if missing else "",
                    f"not removed: {', '.join(extra)}" if extra else "",
                )
                if part
            )
            checks.append(Check(f"endpoints ({len(exp.endpoints)})", not missing and not extra, detail))
        elif query == TRANSPORTS_QUERY:
            bound = {t.name: t.bind for t in parse_transports(out)}
            wrong = [
                f"{name} {'not bound' if name not in bound else f'bound to {bound[name]}'}, expected {bind}"
                for name, bind in sorted(exp.transports.items())
                if bound.get(name) != bind
            ]
            checks.append(Check(f"transports ({len(exp.transports)})", not wrong, "; ".join(wrong)))
        elif query == DIALPLAN_QUERY:
            live_rev = dialplan_revision(out)
            ok = live_rev is not None and live_rev == exp.dialplan_rev12
            name = f"dialplan live (revision {exp.dialplan_rev12})"
            checks.append(Check(name, ok, "" if ok else f"found {live_rev}"))
        elif query.startswith("dialplan show ") and query.endswith("@internal"):
            number = query.removeprefix("dialplan show ").removesuffix("@internal")
            exts = parse_dialplan(out)
            first = exts[0] if exts else None
            ok = first is not None and first.exten == number and first.first_priority == 1
            if first is None:
                detail = "no extension matches"
            elif first.exten != number:
                detail = f"matches pattern {first.exten!r} first"
            elif first.first_priority != 1:
                detail = f"has no priority 1 (starts at {first.first_priority})"
            else:
                detail = ""
            checks.append(Check(f"emergency {number} dials as {number}", ok, detail))
        elif query == "voicemail show users":
            boxes = {u.mailbox for u in parse_voicemail_users(out) if u.context == "default"}
            missing = sorted(exp.mailboxes - boxes)
            checks.append(
                Check(
                    f"mailboxes ({len(exp.mailboxes)})",
                    not missing,
                    f"missing: {', '.join(missing)}" if missing else "",
                )
            )
    return checks


# --- helpers ------------------------------------------------------------------------------------


def runs_files_on_disk(markers: LiveMarkers, live_files: Mapping[str, str]) -> bool:
    """Whether Asterisk runs the managed files on disk: the revision marker that each of
    pjsip.conf and extensions.conf declares is the one Asterisk reports."""
    if "pjsip.conf" in live_files and (
        markers.pjsip_declared is None or markers.pjsip_rev12 != markers.pjsip_declared
    ):
        return False
    if "extensions.conf" in live_files:
        declared = declared_dialplan_rev12(live_files["extensions.conf"])
        if declared is None or markers.dialplan_rev12 != declared:
            return False
    return bool(live_files)


def _reloads_for(changed_files: Iterable[str]) -> tuple[str, ...]:
    order = list(RELOAD_COMMANDS)
    names = sorted(set(changed_files), key=lambda n: order.index(n) if n in order else len(order))
    return tuple(RELOAD_COMMANDS[name] for name in names if name in RELOAD_COMMANDS)


def _failure_message(
    revision: str, problems: Sequence[LogProblem], checks: Sequence[Check], secrets: Iterable[str]
) -> str:
    lines = [f"Asterisk did not take revision {rev12(revision)}."]
    if problems:
        lines.append("Asterisk logged:")
        lines += [f"  {p}" for p in problems]
    failed = [c for c in checks if not c.ok]
    if failed:
        lines.append("Verification failed:")
        lines += [f"  {c}" for c in failed]
    return plan_mod.mask("\n".join(lines), secrets)


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


@dataclass
class _Observed:
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


def _observe(live: LiveRead, rendered_names: Iterable[str]) -> _Observed:
    files = dict(live.files)
    state_text = files.pop(STATE_FILE, None)
    names = set(rendered_names)
    return _Observed(
        live=live,
        state=parse_live_state(state_text),
        state_text=state_text,
        journal=parse_journal(live.journal_text),
        last_good=parse_live_state(live.last_good_state_text),
        conf={n: t for n, t in files.items() if n in names},
    )


def _unsettled(obs: _Observed, names: Iterable[str]) -> list[str]:
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
class _StorePlan:
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


def _plan_store(rendered: Any, obs: _Observed, holder: Holder) -> _StorePlan:
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
    elif live.digest != recorded:
        heal = "the store's rows differ from those recorded (drift)"
    if heal is not None:
        gone = sorted(set(live.applied) - set(numbers))
        sql = store_mod.rewrite_sql(desired, token, key)
        return _StorePlan(token, sql, tuple(numbers), tuple(gone), len(numbers), 0, heal)
    todo = store_mod.changed_numbers(desired, live.applied)
    if not todo:
        return _StorePlan(token)
    present = tuple(n for n in todo if n in desired[store_mod.APPLIED])
    absent = tuple(n for n in todo if n not in desired[store_mod.APPLIED])
    added = sum(1 for n in present if n not in live.applied)
    return _StorePlan(
        token, store_mod.delta_sql(todo, desired, token), present, absent, added, len(present) - added
    )


class _Apply:
    """One attempt at applying a render over what one read exec saw."""

    def __init__(
        self,
        settings: Settings,
        client: AsteriskClient,
        rendered: Any,
        obs: _Observed,
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
        self.store = _plan_store(rendered, obs, holder)
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
                commands=() if restarted else _reloads_for(reload_names),
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
            hint = "check the container now (`reconciler status`, `docker logs`); then apply again"
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
            f"start Asterisk again (`docker start {self.client.container_name}`), then run the apply again",
        )

    # -- the attempt ----------------------------------------------------------------------------

    def run(self, dry_run: bool, result: Callable[..., ApplyResult]) -> ApplyResult:
        rendered, obs, opts = self.rendered, self.obs, self.options
        names = list(rendered.files)
        # Provider hosts were resolved by the read exec: one that does not resolve is a warning.
        dns_issues = providers_health.dns_issues(rendered.state, obs.live.markers.lookups)
        plan = plan_mod.make_plan(rendered.files, obs.conf, rendered.secret_values)
        changes = [str(c) for c in plan.changes]
        unsettled = _unsettled(obs, names)
        live_ok = runs_files_on_disk(obs.live.markers, obs.conf)
        pending = obs.pending if obs.pending is not None and not obs.pending.done(obs.live.boot_id) else None
        settled_note = "; ".join(unsettled) or None

        restart_reasons = list(plan.restart_reasons) if plan.restart_required else []
        if pending is not None:
            restart_reasons.append(f"{pending.reason} (pending since {pending.requested_at})")
        journal = obs.journal
        if (
            journal is not None
            and journal.restart
            and journal.boot_id
            and journal.boot_id == obs.live.boot_id
        ):
            restart_reasons.append(
                f"the interrupted apply of revision {rev12(journal.revision)} needed a restart"
            )
        restart_reasons = list(dict.fromkeys(restart_reasons))
        quiet_pending = (
            pending is not None and not plan.restart_required and opts.restart is not RestartPolicy.NOW
        )

        store = self.store
        changes += store.describe()
        if (
            not plan.has_changes
            and not store.sql
            and live_ok
            and not unsettled
            and (pending is None or quiet_pending)
        ):
            return self._no_change(dry_run, result, pending, changes, dns_issues)

        written = list(plan.changed_files)
        # A store-only change reloads nothing: Asterisk reads the rows at once.
        files_ok = live_ok and not unsettled
        reload_names = written if files_ok else names
        provider_names = {p.name for p in rendered.state.providers}
        current = providers_health.degraded_record(dns_issues)
        if "pjsip.conf" not in reload_names and any(
            n in provider_names and n not in current for n in obs.degraded
        ):
            # A degraded provider may be up again: this apply's own res_pjsip reload re-resolves
            # its identify (instead of a separate heal exec while this apply holds the lock).
            reload_names = [*reload_names, "pjsip.conf"]
        if unsettled:
            changes.append("settling: " + "; ".join(unsettled) + ": reloading and verifying every file")
        elif not live_ok:
            changes.append("Asterisk is not running the managed files on disk: reloading them")
        restart = bool(restart_reasons)
        commands = _reloads_for(reload_names)
        reloads = (*commands, opts.restart.command) if restart else commands
        changed_files = tuple(written) or tuple(reload_names)  # the store's part is named in `changes`
        if dry_run:
            return result(
                unchanged=False,
                changed_files=changed_files,
                changes=tuple(changes),
                reloads=reloads,
                restarted=False,
                warnings=providers_health.warnings_of(current),
            )

        on_disk = {**obs.conf, **{n: rendered.files[n] for n in written}}
        exp = _expectations(rendered.state, on_disk)
        queries = verification_queries(exp, reload_names, restarted=False)
        store_queries, store_checked, store_skipped = store_mod.verification_plan(store.present, store.absent)
        unregister = [store_mod.unregister_command(n) for n in sorted(store.absent)]
        queries += unregister + store_queries
        # Asterisk started after these files were written (the pending restart happened, or it was
        # restarted after an interrupted apply): it runs their transports, so check them too.
        booted_since = (obs.pending is not None and obs.pending.done(obs.live.boot_id)) or (
            journal is not None and bool(journal.boot_id) and journal.boot_id != obs.live.boot_id
        )
        if booted_since and exp.transports and not restart:
            queries.append(TRANSPORTS_QUERY)
        reason = "; ".join(restart_reasons)
        refuse = restart and opts.restart is RestartPolicy.REFUSE
        if reload_names:
            self.say("reloading " + ", ".join(reload_names) + (" (a restart follows)" if restart else ""))
        if store.sql:
            self.say(f"writing the store ({store.summary()})")
        try:
            out = self.client.transact(
                self.holder,
                self.revision,
                mode="acquire",
                doing=f"reloading {', '.join(reload_names)}",
                expect=self._expect(),
                refuse_calls=refuse,
                journal=new_journal(
                    self.revision, self.holder.who, {n: sha256_text(t) for n, t in on_disk.items()}, restart
                ),
                files={n: FileSource(text=rendered.files[n]) for n in written},
                commands=commands,
                queries=queries,
                store_sql=store.sql,
                store_digest=store.sql is not None,
            )
        except AsteriskWentAway as exc:
            raise self._went_away(exc, "swap", written) from exc
        self._check_first(out, "being applied")
        self.store_ran = store.sql is not None and "stored" in out.outputs.get("store", "").splitlines()
        new_digest = store_mod.parse_digest(out.outputs.get("store-digest", "")) if store.sql else None
        if out.stopped == "check" and out.detail.startswith("calls"):
            raise RestartRefused(
                f"revision {rev12(self.revision)} needs an Asterisk restart ({reason}) and "
                f"{out.calls} call(s) are up; --restart refuse: nothing was changed",
                "apply again when the PBX is idle, or use --restart idle (waits for the calls to end) "
                "or --restart now (drops them)",
            )
        if out.stopped == "store":
            raise self._rolled_back_error(
                f"writing the store for revision {rev12(self.revision)} failed: {out.detail}",
                "check the store in the managed volume (free space, permissions), then apply again",
                on_disk,
                written,
                False,
                error=ManagedWriteFailed,
            )
        if out.stopped in ("journal", "stage"):
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
                written,
                False,
                error=ManagedWriteFailed,
            )
        if not out.ok or out.reload is None:
            raise ApplyFailed(
                f"the apply of revision {rev12(self.revision)} stopped at {out.stopped}: {out.detail}",
                "run `reconciler status`, then apply again",
            )
        problems, checks, issues = self._judge(exp, queries, out, on_disk)
        answers = out.reload.query_outputs[len(queries) - len(store_queries) :]
        checks += [
            Check(c.name, c.ok, c.detail) for c in store_mod.judge(store_checked, answers, store_skipped)
        ]
        if store.sql and new_digest is None:
            checks.append(
                Check("store digest read after the write", False, out.outputs.get("store-digest", ""))
            )
        if problems or not all(c.ok for c in checks):
            raise self._rolled_back_error(
                _failure_message(self.revision, problems, checks, rendered.secret_values),
                "fix the lines above in the desired state (or the template) and apply again; "
                "the PBX keeps running the previous revision",
                on_disk,
                written,
                False,
                problems=problems,
                checks=checks,
            )

        restarted = False
        new_pending: PendingRestart | None = None
        if restart:
            restarted, new_pending, checks, after = self._restart(exp, reason, on_disk, written, checks)
            issues = [*issues, *after]
        settled = providers_health.settle(
            self.client,
            rendered.state,
            obs.degraded,
            providers_health.merge(issues, dns_issues),
            "pjsip.conf" in reload_names or restarted,
        )

        try:
            rec = self.record(on_disk, new_pending, "fence", settled.still, new_digest)
        except AsteriskWentAway as exc:
            raise self._went_away(exc, "record", written) from exc
        if rec.lease.status != "ok":
            self._check_first(rec, "being recorded")
        if not rec.ok:
            raise self._rolled_back_error(
                f"recording revision {rev12(self.revision)} in state.json failed: {rec.detail}",
                "free space in the managed volume (or fix its permissions), then apply again",
                on_disk,
                written,
                restarted,
                error=ManagedWriteFailed,
            )
        return result(
            unchanged=False,
            changed_files=changed_files,
            changes=(*changes, *providers_health.came_back(settled.healed)),
            reloads=reloads,
            restarted=restarted,
            checks=tuple(checks),
            recorded=True,
            restart_pending=_pending_text(new_pending),
            settled=settled_note,
            warnings=(*providers_health.warnings_of(settled.still), *self.warnings),
        )

    def _judge(
        self, exp: _Expectations, queries: Sequence[str], out: TxnOutcome, on_disk: Mapping[str, str]
    ) -> tuple[list[LogProblem], list[Check], list[providers_health.ProviderIssue]]:
        """The one place where what a reload (or restart) logged and answered is judged: Asterisk's
        problems about the managed files, and the verification checks; any of either fails it.
        A provider whose host does not resolve costs only its identify: a provider issue (a
        warning), not a problem."""
        assert out.reload is not None
        judged = providers_health.judge_reload(
            parse_reload_log(out.reload.log_lines), out.reload.log_lines, self.rendered.state, on_disk
        )
        checks = verify(exp, queries, out.reload.query_outputs)
        if not out.reload.log_complete:
            checks.append(Check("log lines of the reload read", False, "barrier line never reached the log"))
        return list(judged.fatal), checks, list(judged.issues)

    def _restart(
        self,
        exp: _Expectations,
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
                f"Asterisk in {self.client.container_name!r} did not come back after the restart for "
                f"revision {rev12(self.revision)} ({out.restart or out.detail}): the new files are on disk, "
                f"not verified (the journal {JOURNAL_PATH} records it); the next apply verifies them or "
                "puts the last verified copy back",
                f"see `docker logs {self.client.container_name}`; then apply again",
            )
        problems, after, issues = self._judge(exp, queries, out, on_disk)
        if problems or not all(c.ok for c in after):
            raise self._rolled_back_error(
                _failure_message(self.revision, problems, after, self.rendered.secret_values),
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
    while True:
        if waiting_since is not None:
            waited = time.monotonic() - waiting_since
        live = client.read_live(resolve=hosts)
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
                settings, client, rendered, _observe(live, rendered.files), opts, holder, subject, say
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
                    f"another apply holds the lock of the PBX in {client.container_name!r}: "
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
