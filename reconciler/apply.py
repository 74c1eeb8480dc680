"""Apply a desired directory to a running Asterisk: render, plan, swap, reload, verify, record.

One apply is: render (no Docker) → ONE exec that reads the live files and asks which revision
markers Asterisk has live → plan → (nothing changed: done) → upload the changed files and ONE exec
that renames them into place, reloads only what changed (or restarts when a transport changed),
waits for the log lines of that reload and runs every verification query → verify in Python →
on success write `state.json` (one upload + one exec); on any failure put the previous files back,
reload the same modules, and raise `ApplyFailed` with Asterisk's own words.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from reconciler import plan as plan_mod
from reconciler import providers_health, render
from reconciler.asterisk import AsteriskClient, LiveMarkers, ReloadResult
from reconciler.errors import ApplyFailed
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
from reconciler.parsers import (
    LogProblem,
    parse_dialplan,
    parse_endpoint_list,
    parse_reload_log,
    parse_voicemail_users,
)
from reconciler.plan import RELOAD_COMMANDS, RESTART_COMMAND
from reconciler.settings import Settings

STATE_FILE = "state.json"

Progress = Callable[[str], None]


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
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LiveState:
    """The record of the last verified apply, `<managed_dir>/state.json` in the container.

    `degraded`: providers of the live revision that cannot work right now, and why (a host that
    does not resolve); `providers_health.heal` clears them once they are up.
    """

    revision: str
    subject: str | None
    applied_at: str
    files: Mapping[str, str] = field(default_factory=dict)
    degraded: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "revision": self.revision,
            "subject": self.subject,
            "applied_at": self.applied_at,
            "files": dict(sorted(self.files.items())),
        }
        if self.degraded:
            data["degraded"] = dict(sorted(self.degraded.items()))
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


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    on disk declare: a file whose content did not change keeps the marker of its older revision."""

    pjsip_rev12: str | None
    dialplan_rev12: str | None
    endpoints: frozenset[str]
    emergency: tuple[str, ...]
    mailboxes: frozenset[str]


def _expectations(state: Any, on_disk: Mapping[str, str]) -> _Expectations:
    endpoints = {e.number for e in state.extensions} | {p.name for p in state.providers}
    emergency = sorted({n for route in state.outbound for n in (route.numbers or [])})
    mailboxes = {e.number for e in state.extensions if e.has_voicemail}
    return _Expectations(
        declared_pjsip_rev12(on_disk.get("pjsip.conf")),
        declared_dialplan_rev12(on_disk.get("extensions.conf")),
        frozenset(endpoints),
        tuple(emergency),
        frozenset(mailboxes),
    )


def verification_queries(exp: _Expectations, files: Iterable[str], restarted: bool) -> list[str]:
    """The CLI queries that verify the reloaded `files` (every file after a restart)."""
    files = set(files)
    queries: list[str] = []
    if restarted or "pjsip.conf" in files:
        queries += [pjsip_marker_query(exp.pjsip_rev12 or ""), "pjsip list endpoints"]
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


# --- the transaction ----------------------------------------------------------------------------


class ManagedFilesTransaction:
    """Back up, swap, restore on failure (like pipx's venv transaction).

    Holds the previous text of every file it will replace (None: the file did not exist). If the
    block raises after the swap, the previous files are put back and the same modules reloaded
    (or Asterisk restarted again), so the last good config is live again.
    """

    def __init__(
        self,
        client: AsteriskClient,
        previous: Mapping[str, str | None],
        reloads: Sequence[str],
        restart: bool,
        progress: Progress | None = None,
    ) -> None:
        self.client = client
        self.previous = dict(previous)
        self.reloads = tuple(reloads)
        self.restart = restart
        self.progress = progress
        self.swapped = False
        self.restored: bool | None = None
        self.restore_error: str | None = None
        self.restore_problems: tuple[LogProblem, ...] = ()

    def __enter__(self) -> ManagedFilesTransaction:
        return self

    def restore(self) -> None:
        files = {n: t for n, t in self.previous.items() if t is not None}
        remove = [n for n, t in self.previous.items() if t is None]
        if self.progress:
            self.progress("restoring the previous files" + (" and restarting" if self.restart else ""))
        try:
            result = self.client.reload(self.reloads, files=files, remove=remove, restart=self.restart)
            self.restore_problems = tuple(parse_reload_log(result.log_lines))
            self.restored = True
        except Exception as exc:  # the original failure is what the user must see first
            self.restored = False
            self.restore_error = str(exc)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not self.swapped:
            return
        self.restore()
        if isinstance(exc, ApplyRolledBack):
            exc.rolled_back = bool(self.restored)
            if self.restored:
                exc.message += (
                    "\nThe previous files were restored and reloaded: the last good config is live."
                )
            else:
                exc.message += f"\nRESTORING THE PREVIOUS FILES FAILED: {self.restore_error}"
                exc.hint = "check the container now (`reconciler status`, `docker logs`); then apply again"
            if self.restore_problems:
                exc.message += "\nWhile restoring, Asterisk logged:" + "".join(
                    f"\n  {p}" for p in self.restore_problems
                )


# --- apply --------------------------------------------------------------------------------------


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
    return tuple(RELOAD_COMMANDS[name] for name in sorted(changed_files) if name in RELOAD_COMMANDS)


def _describe_changes(plan: Any) -> tuple[str, ...]:
    return tuple(str(c) for c in getattr(plan, "changes", ()) or ())


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


def apply_desired(
    settings: Settings,
    client: AsteriskClient,
    desired_dir: Path,
    *,
    revision: str | None = None,
    subject: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    restart_timeout_s: float = 120.0,
) -> ApplyResult:
    """Make Asterisk run `desired_dir`: render, plan, swap atomically, reload only what changed
    (restart when a transport changed), verify by asking Asterisk, record `state.json`.

    Raises `ValidationFailed`/`RenderFailed` before touching Asterisk, `AsteriskUnavailable` when
    the container cannot be reached, and `ApplyRolledBack` (an `ApplyFailed`) when Asterisk refused
    the config or verification failed — the previous files are then live again.
    With `dry_run`, stops after the plan (nothing written, nothing reloaded).
    """
    started = time.monotonic()
    execs0, transfers0 = client.exec_count, client.transfer_count
    rendered = render.render_desired(Path(desired_dir), settings, revision)
    secrets = rendered.secret_values

    def result(**kw: Any) -> ApplyResult:
        return ApplyResult(
            revision=rendered.revision,
            subject=subject,
            duration_s=time.monotonic() - started,
            execs=client.exec_count - execs0,
            transfers=client.transfer_count - transfers0,
            **kw,
        )

    if progress:
        progress("reading the live config")
    # The same exec resolves the provider hosts: a provider whose host does not resolve is named
    # even when nothing changed.
    hosts = providers_health.dns_names(rendered.state)
    live_files, markers = client.read_managed_with_markers(resolve=hosts)
    live_state = parse_live_state(live_files.pop(STATE_FILE, None))
    dns_issues = providers_health.dns_issues(rendered.state, markers.lookups)
    was_degraded = dict(live_state.degraded) if live_state is not None else {}
    live_conf = {n: t for n, t in live_files.items() if n in rendered.files}
    plan = plan_mod.make_plan(rendered.files, live_conf, secrets)
    changes = _describe_changes(plan)

    # A new revision with the same content (plan.revision_only) is not written: only changed files
    # are, so each file's marker names the revision that last changed it, and state.json names
    # the revision that is live.
    live_ok = runs_files_on_disk(markers, live_conf)
    if not plan.has_changes and live_ok:
        recorded = False
        settled = (
            providers_health.HealResult((), providers_health.degraded_record(dns_issues))
            if dry_run
            else providers_health.settle(client, rendered.state, was_degraded, dns_issues, False)
        )
        wanted = LiveState(
            rendered.revision,
            subject,
            _now(),
            {n: sha256_text(t) for n, t in sorted(live_conf.items())},
            settled.still,
        )
        needs_record = (
            live_state is None
            or live_state.revision != rendered.revision
            or live_state.files != wanted.files
            or dict(live_state.degraded) != settled.still
        )
        if needs_record and not dry_run:
            client.write_managed({STATE_FILE: wanted.to_json()})
            recorded = True
        return result(
            unchanged=True,
            changed_files=(),
            changes=(*changes, *providers_health.came_back(settled.healed)),
            reloads=(providers_health.PJSIP_RELOAD,) if settled.reloaded else (),
            restarted=False,
            recorded=recorded,
            warnings=providers_health.warnings_of(settled.still),
        )

    changed = tuple(sorted(plan.changed_files))
    if not plan.has_changes:
        # The files on disk match, but Asterisk is not running them (restarted with an older
        # file, reload lost, hand edit): write and reload everything to converge.
        changed = tuple(sorted(rendered.files))
        changes = (*changes, "Asterisk is not running the managed files on disk: reloading them")
    restart = bool(plan.restart_required)
    planned = tuple(plan.reloads) if plan.has_changes else ()
    reloads = (RESTART_COMMAND,) if restart else (planned or _reloads_for(changed))
    if dry_run:
        return result(
            unchanged=False,
            changed_files=changed,
            changes=changes,
            reloads=reloads,
            restarted=False,
            warnings=providers_health.warnings_of(providers_health.degraded_record(dns_issues)),
        )

    new_files = {n: rendered.files[n] for n in changed}
    previous = {n: live_conf.get(n) for n in changed}
    on_disk = {**live_conf, **new_files}
    exp = _expectations(rendered.state, on_disk)
    reload_cmds = () if restart else reloads
    queries = verification_queries(exp, changed, restart)
    with ManagedFilesTransaction(client, previous, reload_cmds, restart, progress) as txn:
        if progress:
            progress(
                "restarting Asterisk (transports changed)" if restart else "reloading " + ", ".join(changed)
            )
        txn.swapped = True  # from here on the files may be swapped: restore on any failure
        outcome: ReloadResult = client.reload(
            reload_cmds,
            files=new_files,
            queries=queries,
            restart=restart,
            restart_timeout_s=restart_timeout_s,
        )
        # A provider whose host does not resolve costs only its identify: a warning, not a rollback.
        judged = providers_health.judge_reload(
            parse_reload_log(outcome.log_lines), outcome.log_lines, rendered.state, on_disk
        )
        problems = list(judged.fatal)
        checks = verify(exp, queries, outcome.query_outputs)
        if not outcome.log_complete:
            checks.append(Check("log lines of the reload read", False, "barrier line never reached the log"))
        if problems or not all(c.ok for c in checks):
            raise ApplyRolledBack(
                _failure_message(rendered.revision, problems, checks, secrets),
                "fix the lines above in the desired state (or the template) and apply again; "
                "the PBX keeps running the previous revision",
                revision=rendered.revision,
                problems=problems,
                checks=checks,
            )
        pjsip_reloaded = restart or "pjsip.conf" in changed
        issues = providers_health.merge(judged.issues, dns_issues)
        settled = providers_health.settle(client, rendered.state, was_degraded, issues, pjsip_reloaded)
        record = LiveState(
            rendered.revision,
            subject,
            _now(),
            {n: sha256_text(t) for n, t in sorted(on_disk.items())},
            settled.still,
        )
        client.write_managed({STATE_FILE: record.to_json()})
    return result(
        unchanged=False,
        changed_files=changed,
        changes=(*changes, *providers_health.came_back(settled.healed)),
        reloads=reloads,
        restarted=restart,
        checks=tuple(checks),
        recorded=True,
        warnings=providers_health.warnings_of(settled.still),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
