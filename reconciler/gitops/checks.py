"""The verify stage's questions and judgement: what Asterisk must answer once a revision is live.

Pure: the queries are asked by the swap/restart execs (or a control channel), the answers judged
here. The store's per-object checks are `reconciler.asterisk.store.verification_plan`/`judge`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.asterisk import store as store_mod
from reconciler.asterisk.client import LiveMarkers
from reconciler.asterisk.parsers import (
    LogProblem,
    parse_dialplan,
    parse_endpoint_list,
    parse_transports,
    parse_voicemail_users,
)
from reconciler.desired.confparse import parse_conf
from reconciler.gitops import plan as plan_mod
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

TRANSPORTS_QUERY = "pjsip show transports"
_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass(frozen=True)
class Check:
    """One verification question asked of Asterisk after a reload, and its answer."""

    name: str
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'FAILED'}: {self.name}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Expectations:
    """What Asterisk must report once the files on disk are live. The markers are those the files
    on disk declare: a file whose content did not change keeps the marker of its older revision.
    `transports` (name → bind) are checked after a restart only: a reload does not apply them."""

    pjsip_rev12: str | None
    dialplan_rev12: str | None
    endpoints: frozenset[str]
    emergency: tuple[str, ...]
    mailboxes: frozenset[str]
    transports: Mapping[str, str] = field(default_factory=dict)
    queues: frozenset[str] = frozenset()  # queue names queues.conf defines
    music_classes: frozenset[str] = frozenset()  # musiconhold.conf's classes


QUEUES_QUERY = "queue show"
MOH_QUERY = "moh show classes"
_QUEUE_LINE = re.compile(r"^(\S+) has \d+ calls? ", re.MULTILINE)
_MOH_CLASS = re.compile(r"^Class: (\S+)", re.MULTILINE)


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


def expectations(state: Any, on_disk: Mapping[str, str]) -> Expectations:
    # Extensions live in the realtime store: they are verified one by one (store_verify), never by
    # listing every endpoint; the file objects are the providers. Mailboxes are store rows too.
    endpoints = {p.name for p in state.providers}
    emergency = sorted({n for route in state.outbound for n in (route.numbers or [])})
    mailboxes: set[str] = set()
    return Expectations(
        declared_pjsip_rev12(on_disk.get("pjsip.conf")),
        declared_dialplan_rev12(on_disk.get("extensions.conf")),
        frozenset(endpoints),
        tuple(emergency),
        frozenset(mailboxes),
        expected_transports(on_disk.get("pjsip.conf")),
        _sections(on_disk.get("queues.conf")),
        _sections(on_disk.get("musiconhold.conf")),
    )


def _sections(text: str | None) -> frozenset[str]:
    """The section names of a file on disk, `[general]` aside (queues, music on hold classes)."""
    return frozenset(s.name for s in parse_conf(text or "") if s.name != "general" and not s.is_template)


def verification_queries(exp: Expectations, files: Iterable[str], restarted: bool) -> list[str]:
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
    if (restarted or "queues.conf" in files) and exp.queues:
        queries.append(QUEUES_QUERY)
    if (restarted or "musiconhold.conf" in files) and exp.music_classes:
        queries.append(MOH_QUERY)
    return queries


def verify(exp: Expectations, queries: Sequence[str], outputs: Sequence[str]) -> list[Check]:
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
        elif query in (QUEUES_QUERY, MOH_QUERY):
            found = set((_QUEUE_LINE if query == QUEUES_QUERY else _MOH_CLASS).findall(out))
            wanted = exp.queues if query == QUEUES_QUERY else exp.music_classes
            what = "queues" if query == QUEUES_QUERY else "music on hold classes"
            missing = sorted(wanted - found)
            detail = f"missing: {', '.join(missing)}" if missing else ""
            checks.append(Check(f"{what} ({len(wanted)})", not missing, detail))
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


def failure_message(
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
