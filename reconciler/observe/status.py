"""The PBX at a glance: what is live, is the provider registered, which phones are online.

`collect_status(settings, client)` asks Asterisk in one `docker exec` (state.json, registrations,
the registered contacts, active channels, the providers' endpoints, uptime) plus one more only
when phones are online (their user agents, from `pjsip show contact`); with an AMI `channel` the
exec only reads the files and Asterisk answers over AMI. It never lists every endpoint (9 s at
10,000 in realtime mode): an extension is online when it has a registered contact. It adds the
reconcile history and the desired head, and returns a JSON-able dict (the `Status` shape in
docs/observe.md). It never raises for an unreachable Asterisk: the dict says so, because the
dashboard must still render.

The desired head is `settings.desired_dir` (`reconciler status --dir`, `watch --dir`), or, with
`head_from_loop` (`watch --repo`), the branch head the watch loop fetched last (`LoopState`).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.asterisk import parsers
from reconciler.asterisk import store as store_mod
from reconciler.asterisk.client import rx_command
from reconciler.asterisk.control import ControlChannel
from reconciler.asterisk.journal import JOURNAL_PATH, parse_journal
from reconciler.asterisk.lease import LEASE_FILE, TXN_DIR, parse_lease
from reconciler.errors import AsteriskUnavailable, ReconcilerError
from reconciler.gitops.history import History, LoopState, last_good_dir
from reconciler.markers import is_marker_section
from reconciler.observe.metrics import to_epoch
from reconciler.settings import Settings

FAILED_RESULTS = frozenset({"failed", "invalid"})
LEASE_PATH = f"{TXN_DIR}/{LEASE_FILE}"
HISTORY_SHOWN = 10
MAX_USER_AGENT_LOOKUPS = 64  # beyond this many online phones, skip user agents (one CLI call each)
# Why a registration is not Registered is only in the log: its last lines about registrations.
REGISTRATION_LOG_TAIL_BYTES = 256 * 1024
REGISTRATION_LOG_MARKER = "on registration attempt to"
_URI_HOSTPORT = re.compile(r"^sips?:(?:[^@;]*@)?(?P<hostport>\[[^\]]+\](?::\d+)?|[^;>?]+)")
_UPTIME = re.compile(r"System uptime:\s*(\d+)")
_FIELD = re.compile(r"^\s*(?P<key>[a-z_]+)\s*:\s*(?P<value>.*?)\s*$")


def contact_address(uri: str) -> str:
    """`sip:4001@127.0.0.1:5091;transport=udp` → `127.0.0.1:5091`."""
    match = _URI_HOSTPORT.match(uri)
    return match["hostport"] if match else uri


def _now() -> float:
    return time.time()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


# --- desired side ------------------------------------------------------------------------------


def _desired(settings: Settings) -> tuple[dict[str, Any] | None, Any]:
    """(desired head info, DesiredState or None). Problems are reported, never raised."""
    desired_dir = Path(settings.desired_dir)
    if not desired_dir.is_dir():
        return None, None
    info: dict[str, Any] = {"dir": str(desired_dir), "revision": None, "error": None}
    state = None
    try:
        from reconciler.desired.revision import revision_of, site_revision

        # A fleet site's own revision: what its loop applies (a change to another site is not its).
        info["revision"] = (
            site_revision(desired_dir, settings.site) if settings.site else revision_of(desired_dir)
        )
    except (OSError, ReconcilerError) as exc:
        info["error"] = str(exc)
    try:
        from reconciler.desired.fleet import load_tree

        # A fleet directory (watch --site): the site's merged state, not the dir as a plain one.
        state = load_tree(desired_dir, settings.site).state
    except ReconcilerError as exc:
        info["error"] = exc.message.splitlines()[0]
    except OSError as exc:
        info["error"] = str(exc)
    return info, state


def _desired_from_loop(
    settings: Settings, state: LoopState, records: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, Any]:
    """(desired head info, DesiredState or None) from the loop state of `watch --repo`.

    The head is the branch head the loop fetched last; the model (provider and extension names)
    is that of the revision the loop applied last, kept in `last-good/`. There is no local
    directory: `dir` is None.
    """
    head = state.head_revision
    if head is None:
        return None, None  # the loop has not fetched yet
    error = None
    failed = state.failed.get(head)
    if failed is not None:
        # The history's reason (secrets masked) when it is recent, else just the result.
        error = next(
            (r.get("reason") for r in records if r.get("revision") == head and r.get("reason")),
            f"revision {failed.result}; see `reconciler history`",
        )
    info: dict[str, Any] = {"dir": None, "revision": head, "subject": state.head_subject, "error": error}
    model = None
    kept = last_good_dir(settings)
    if kept.is_dir():
        try:
            from reconciler.desired.fleet import load_tree

            model = load_tree(kept, settings.site).state
        except (OSError, ReconcilerError):  # being replaced by the loop right now: names only
            model = None
    return info, model


# --- Asterisk side -----------------------------------------------------------------------------


def registration_log_step(log_path: str) -> str:
    """Shell: the last lines the log has about registration attempts (why one is Rejected)."""
    log = shlex.quote(log_path)
    marker = shlex.quote(REGISTRATION_LOG_MARKER)
    return f"tail -c {REGISTRATION_LOG_TAIL_BYTES} {log} 2>/dev/null | grep -F {marker} | tail -n 20; true"


_RECORD_SPLIT = "--8<-- gitops-status-record --8<--"


def _files_step(client: Any) -> str:
    managed = client.managed_dir.rstrip("/")
    state_file = shlex.quote(f"{managed}/state.json")
    records = " ".join(shlex.quote(f"{managed}/{p}") for p in (JOURNAL_PATH, LEASE_PATH))
    split = f"printf '\\n%s\\n' {shlex.quote(_RECORD_SPLIT)}"
    return (
        f'cat {state_file} 2>/dev/null; for f in {records}; do {split}; cat "$f" 2>/dev/null; done; '
        f"{split}; date +%s; {split}; {store_mod.digest_step()}"
    )


def query_asterisk(
    client: Any, channel: ControlChannel | None = None, providers: Sequence[str] = ()
) -> dict[str, Any]:
    """state.json (with the journal of an interrupted apply and the lock's lease), registrations,
    the registered contacts, the active channels, the `providers`' endpoints, uptime and the log's
    last lines about registration attempts, parsed.

    Never lists every endpoint (`pjsip show endpoints` takes 2-9 s at 10,000): extensions are
    judged from the contacts. Without an AMI `channel` everything is one exec; with one, the exec
    reads only the files and the log, and Asterisk is asked over AMI."""
    log_path = getattr(client, "log_path", "/var/log/asterisk/messages.log")
    files_and_log = [_files_step(client), registration_log_step(log_path)]
    if channel is None or channel.kind == "exec":
        queries = [
            "pjsip show registrations",
            "pjsip show contacts",
            "core show uptime seconds",
            "core show channels concise",
            *FEATURE_QUERIES,
            *(f"pjsip show endpoint {name}" for name in providers),
        ]
        first, registrations, contacts, uptime, reg_log, channels, *rest = client.run_steps(
            [files_and_log[0], *(rx_command(q) for q in queries[:3]), files_and_log[1]]
            + [rx_command(q) for q in queries[3:]]
        ).outputs
        feature_texts, endpoint_texts = rest[: len(FEATURE_QUERIES)], rest[len(FEATURE_QUERIES) :]
        regs = parsers.parse_registrations(registrations)
        live_contacts = parsers.parse_contacts(contacts)
        found = [e for text in endpoint_texts for e in parsers.parse_endpoints(text)[:1]]
    else:
        first, reg_log = client.run_steps(files_and_log).outputs
        regs = channel.registrations()
        live_contacts = channel.contacts()
        uptime, channels, *feature_texts = channel.commands(
            ["core show uptime seconds", "core show channels concise", *FEATURE_QUERIES]
        )
        found = [e for name in providers if (e := channel.endpoint(name)) is not None]
    parts = [*first.split(f"\n{_RECORD_SPLIT}\n"), "", "", "", ""]
    state_text, journal_text, lease_text, clock, digest_text = parts[:5]
    try:
        live = json.loads(state_text) if state_text.strip() else None
    except ValueError:
        live = None
    match = _UPTIME.search(uptime)
    return {
        "live": live if isinstance(live, dict) else None,
        "registrations": regs,
        "endpoints": found,
        "contacts": live_contacts,
        "channels": parsers.parse_channels_concise(channels),
        "uptime_s": int(match[1]) if match else None,
        "registration_events": parsers.parse_registration_events(reg_log.splitlines()),
        "transaction": transaction_view(journal_text, lease_text, clock),
        "store_digest": store_mod.parse_digest(digest_text),
        "phone_settings": phone_settings(feature_texts[:-1]),
        "queues": parsers.parse_queue_show(feature_texts[-1]) if feature_texts else [],
    }


# What the phones set with feature codes (AstDB, family per setting) and the queues' state.
PHONE_FAMILIES = {
    "dnd": "gitops-dnd",
    "forward_always": "gitops-fwd-always",
    "forward_busy": "gitops-fwd-busy",
    "forward_no_answer": "gitops-fwd-noanswer",
}
FEATURE_QUERIES = (*(f"database show {family}" for family in PHONE_FAMILIES.values()), "queue show")


def phone_settings(texts: Sequence[str]) -> dict[str, dict[str, str]]:
    """extension → setting → value, from the `database show` answers (in PHONE_FAMILIES order)."""
    result: dict[str, dict[str, str]] = {}
    for (setting, family), text in zip(PHONE_FAMILIES.items(), texts, strict=False):
        for number, value in parsers.parse_database_show(text).get(family, {}).items():
            result.setdefault(number, {})[setting] = value
    return result


def call_settings(ext: Any, phone: Mapping[str, str]) -> dict[str, Any]:
    """An extension's do-not-disturb and forwards as they act now: the phone's choice (a feature
    code) wins over desired/; `source` says which."""

    def one(setting: str, yaml_value: str | None) -> dict[str, Any]:
        chosen = phone.get(setting)
        if chosen is not None:
            value = None if chosen == "off" else chosen
            return {"value": value, "source": "phone", "desired": yaml_value}
        return {"value": yaml_value, "source": "desired", "desired": yaml_value}

    forward = ext.forward if ext is not None else None
    dnd_yaml = "on" if ext is not None and ext.dnd else None
    return {
        "dnd": one("dnd", dnd_yaml),
        "forward_always": one("forward_always", forward.always if forward else None),
        "forward_busy": one("forward_busy", forward.busy if forward else None),
        "forward_no_answer": one("forward_no_answer", forward.no_answer if forward else None),
    }


def extension_endpoints(
    contacts: Iterable[parsers.Contact],
    channels: Iterable[parsers.ChannelInfo],
    provider_names: set[str],
    desired_state: Any,
) -> list[parsers.EndpointInfo]:
    """One EndpointInfo per extension, from the contacts and channels alone: the desired
    extensions (offline when no contact), plus any other registered AOR that is not a provider.
    The device state is what Asterisk derives for a phone: In use with a channel, Not in use when
    a contact is reachable, else Unavailable."""
    by_aor: dict[str, list[parsers.Contact]] = {}
    for contact in contacts:
        if contact.aor not in provider_names and not is_marker_section(contact.aor):
            by_aor.setdefault(contact.aor, []).append(contact)
    in_use: dict[str, int] = {}
    for chan in channels:
        name = _channel_endpoint(chan.channel)
        if name:
            in_use[name] = in_use.get(name, 0) + 1
    numbers = [e.number for e in desired_state.extensions] if desired_state is not None else []
    known = set(numbers)
    numbers += sorted((a for a in by_aor if a not in known and a.isdigit()), key=lambda n: (len(n), n))
    result = []
    for number in numbers:
        own = tuple(by_aor.get(number, ()))
        busy = in_use.get(number, 0)
        state = "In use" if busy else ("Not in use" if any(c.reachable for c in own) else "Unavailable")
        result.append(parsers.EndpointInfo(number, None, state, busy, None, contacts=own, aors=(number,)))
    return result


def _channel_endpoint(channel: str) -> str | None:
    """`PJSIP/4001-00000000` → `4001`."""
    tech, _, rest = channel.partition("/")
    return rest.rpartition("-")[0] or None if tech == "PJSIP" else None


def transaction_view(journal_text: str, lease_text: str, clock: str) -> dict[str, Any]:
    """An interrupted apply (its journal is still there) and who holds the PBX's lock."""
    journal = parse_journal(journal_text) if journal_text.strip() else None
    lease = parse_lease(lease_text)
    now = int(clock.strip()) if clock.strip().isdigit() else None
    return {
        "interrupted": journal.describe() if journal is not None else None,
        "lock": lease.describe(now) if lease is not None and not lease.void(now, None) else None,
    }


def parse_contact_detail(text: str) -> dict[str, str]:
    """`pjsip show contact AOR/URI` → its `ParameterName : value` lines as a dict."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = _FIELD.match(line)
        if match:
            fields.setdefault(match["key"], match["value"])
    return fields


def user_agents(channel: Any, contacts: Iterable[parsers.Contact]) -> dict[str, str]:
    """`aor/uri` → user agent, for up to MAX_USER_AGENT_LOOKUPS contacts, in one exec (or over
    AMI: `channel` is a ControlChannel or anything with `run(*commands)`)."""
    ids = [f"{c.aor}/{c.uri}" for c in contacts][:MAX_USER_AGENT_LOOKUPS]
    if not ids:
        return {}
    commands = [f"pjsip show contact {cid}" for cid in ids]
    outputs = channel.commands(commands) if hasattr(channel, "commands") else channel.run(*commands)
    result = {}
    for cid, out in zip(ids, outputs, strict=True):
        agent = parse_contact_detail(out).get("user_agent")
        if agent:
            result[cid] = agent
    return result


# --- assembling --------------------------------------------------------------------------------


def _is_provider(ep: parsers.EndpointInfo, names: set[str]) -> bool:
    # What Asterisk runs decides (the desired dir may be another revision, or not this PBX's at all):
    # a trunk authenticates outbound or is identified by address; phones only authenticate inbound.
    return ep.name in names or bool(ep.out_auths or ep.identify_matches)


def _registration_for(
    ep: parsers.EndpointInfo, regs: list[parsers.Registration]
) -> parsers.Registration | None:
    for reg in regs:
        if reg.auth and reg.auth in ep.out_auths:
            return reg
    for reg in regs:
        if reg.name == ep.name or reg.name.startswith((ep.name + "-", ep.name + "_")):
            return reg
    return None


def _last_event(
    reg: parsers.Registration | None, events: list[parsers.RegistrationEvent]
) -> parsers.RegistrationEvent | None:
    """The newest logged failure of this registration (the table truncates long server URIs)."""
    if reg is None or not reg.server_uri:
        return None
    for event in reversed(events):
        if event.server_uri.startswith(reg.server_uri) or reg.server_uri.startswith(event.server_uri):
            return event
    return None


def _provider_problem(
    name: str, ep: parsers.EndpointInfo, degraded: dict[str, str], declared: dict[str, Any]
) -> str | None:
    """Why a provider cannot work right now: the degraded record of the live revision (its host
    did not resolve), or an identify the desired state has and Asterisk does not."""
    if name in degraded:
        return degraded[name]
    if name in declared and not ep.identify_matches:
        return "identify not loaded: inbound calls from it are not recognised"
    return None


def _provider_hint(name: str, state: str | None, detail: str) -> str | None:
    if state == "Registered":
        return "registration overdue: the provider stopped answering" if "ago" in detail else None
    if state == "Rejected":
        return (
            "rejected: wrong credentials (Asterisk stops retrying) or the provider does not answer; "
            f"run `reconciler check-provider {name}`"
        )
    if state == "Unregistered":
        return "not registered yet (normal for a few seconds after a start or reload)"
    if state is None:
        return "no outbound registration found in Asterisk for this provider"
    return f"registration is {state}"


def build_providers(
    endpoints: list[parsers.EndpointInfo],
    regs: list[parsers.Registration],
    desired_state: Any,
    *,
    degraded: dict[str, str] | None = None,
    events: list[parsers.RegistrationEvent] | None = None,
) -> list[dict[str, Any]]:
    """One entry per provider endpoint, with its registration and the qualify RTT of its contact.

    `problem` says why a provider cannot work right now (`degraded`, from state.json: its host did
    not resolve); `reason` why its registration is not Registered, from the log (`events`).
    """
    declared = {p.name: p for p in desired_state.providers} if desired_state is not None else {}
    degraded = degraded or {}
    result = []
    for ep in endpoints:
        if not _is_provider(ep, set(declared)):
            continue
        reg = _registration_for(ep, regs)
        wants_registration = declared[ep.name].register if ep.name in declared else reg is not None
        contact = next(iter(ep.contacts), None)
        state = reg.status if reg else None
        detail = reg.detail if reg else ""
        problem = _provider_problem(ep.name, ep, degraded, declared)
        event = _last_event(reg, events or []) if state != "Registered" else None
        hint = _provider_hint(ep.name, state, detail) if wants_registration else None
        if problem and ep.name in degraded:
            hint = (
                "fix the host in the desired state or the DNS; the provider comes up by itself once "
                "its host resolves (`reconciler watch`), or on the next `reconciler apply`"
            )
        result.append(
            {
                "name": ep.name,
                "register": wants_registration,
                "registered": state == "Registered",
                "state": state,
                "detail": detail,
                "expires_s": reg.expires_s if reg else None,
                "server_uri": reg.server_uri if reg else (contact.uri if contact else None),
                "contact_status": contact.status if contact else None,
                "rtt_ms": contact.rtt_ms if contact else None,
                "reachable": (contact.status != "Unavail") if contact else None,
                "problem": problem,
                "reason": event.describe() if event else None,
                "hint": hint,
            }
        )
    return result


def build_extensions(
    endpoints: list[parsers.EndpointInfo],
    provider_names: set[str],
    agents: dict[str, str],
    desired_state: Any,
) -> list[dict[str, Any]]:
    """One entry per extension endpoint (not a provider, not our revision marker), by number."""
    names = {e.number: e.name for e in desired_state.extensions} if desired_state is not None else {}
    result: list[dict[str, Any]] = []
    for ep in endpoints:
        if ep.name in provider_names or is_marker_section(ep.name):
            continue
        if not ep.in_auths and not ep.name.isdigit():
            continue
        contacts = [
            {
                "uri": c.uri,
                "address": contact_address(c.uri),
                "status": c.status,
                "rtt_ms": c.rtt_ms,
                "user_agent": agents.get(f"{c.aor}/{c.uri}"),
            }
            for c in ep.contacts
        ]
        online = any(c.reachable for c in ep.contacts)
        result.append(
            {
                "number": ep.name,
                "name": names.get(ep.name) or ep.callerid,
                # registered but failing qualify (Unavail) is "unreachable": calls to it fail
                "state": "online" if online else ("unreachable" if ep.contacts else "offline"),
                "online": online,
                "device_state": ep.state,
                "channels_in_use": ep.channels_in_use,
                "contacts": contacts,
            }
        )
    result.sort(key=lambda e: (len(e["number"]), e["number"]))
    return result


def summarize(status: dict[str, Any]) -> dict[str, Any]:
    """Counts and the list of problems that make `status` exit non-zero."""
    problems: list[str] = []
    asterisk = status["asterisk"]
    if not asterisk["reachable"]:
        problems.append(f"Asterisk unreachable: {asterisk.get('error')}")
    registering = [p for p in status["providers"] if p["register"]]
    registered = [p for p in registering if p["registered"]]
    for p in status["providers"]:
        if p.get("problem"):
            problems.append(f"provider {p['name']}: {p['problem']}")
    for p in registering:
        if not p["registered"]:
            why = f" ({p['reason']})" if p.get("reason") else ""
            problems.append(f"provider {p['name']} is {p['state'] or 'not registered'}{why}")
    if (status.get("store") or {}).get("drift"):
        problems.append(
            "the realtime store's rows are not those the live revision recorded (changed behind the "
            "reconciler's back?): the next apply, or the watch loop, rewrites them"
        )
    interrupted = (status.get("transaction") or {}).get("interrupted")
    if interrupted:
        problems.append(
            f"{interrupted} was interrupted: the files on disk are not verified; "
            "the next apply (or the watch loop) settles it"
        )
    last = status.get("last_reconcile")
    if last and last.get("result") in FAILED_RESULTS:
        problems.append(f"last reconcile {last.get('result')}: {last.get('reason') or 'see history'}")
    exts = status["extensions"]
    return {
        "providers_total": len(status["providers"]),
        "providers_registering": len(registering),
        "providers_registered": len(registered),
        "providers_degraded": sum(1 for p in status["providers"] if p.get("problem")),
        "extensions_total": len(exts),
        "extensions_online": sum(1 for e in exts if e["online"]),
        "healthy": not problems,
        "problems": problems,
    }


def collect_status(
    settings: Settings,
    client: Any,
    *,
    head_from_loop: bool = False,
    channel: ControlChannel | None = None,
    fleet: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything `status`, `/api/status`, the dashboard and `/metrics` show, as a JSON-able dict.

    `head_from_loop`: the desired head is the one the watch loop fetched (`watch --repo`), not
    `settings.desired_dir`. `channel`: a kept ControlChannel (AMI) to ask Asterisk through; without
    one, everything goes through `client`'s exec. `fleet`: a site's rollout facts (watch --site),
    the `fleet` key (docs/fleet.md).
    """
    now = _now()
    records = History(settings).records(HISTORY_SHOWN)
    loop_state = LoopState.load(settings)
    if head_from_loop:
        desired_info, desired_state = _desired_from_loop(settings, loop_state, records)
    else:
        desired_info, desired_state = _desired(settings)
    status: dict[str, Any] = {
        "generated_at": _iso(now),
        "container": getattr(client, "container_name", settings.container),
        "control": getattr(getattr(client, "executor", None), "kind", "docker"),
        "asterisk": {"reachable": False, "uptime_s": None, "channels": None, "error": None, "hint": None},
        "live": None,
        "desired": desired_info,
        "last_reconcile": records[0] if records else None,
        "history": records,
        "suspended": loop_state.suspended,
        "providers": [],
        "extensions": [],
        "restart_pending": None,
        "transaction": {"interrupted": None, "lock": None},
        "store": {"recorded": False, "drift": False},
        "queues": [],
    }
    try:
        wanted = [p.name for p in desired_state.providers] if desired_state is not None else []
        raw = query_asterisk(client, channel, wanted)
        degraded = (raw["live"] or {}).get("degraded") or {}
        providers = build_providers(
            raw["endpoints"],
            raw["registrations"],
            desired_state,
            degraded=degraded if isinstance(degraded, dict) else {},
            events=raw["registration_events"],
        )
        provider_names = {p["name"] for p in providers} | set(wanted)
        extensions = extension_endpoints(raw["contacts"], raw["channels"], provider_names, desired_state)
        agents = user_agents(channel or client, [c for ep in extensions for c in ep.contacts])
    except (AsteriskUnavailable, ReconcilerError) as exc:
        # e.g. AsteriskCommandFailed (the exec batch broke off): the page must still render
        status["asterisk"].update(error=exc.message, hint=exc.hint)
    else:
        status["asterisk"].update(reachable=True, uptime_s=raw["uptime_s"], channels=len(raw["channels"]))
        status["transaction"] = raw["transaction"]
        status["providers"] = providers
        status["extensions"] = build_extensions(extensions, provider_names, agents, desired_state)
        by_number = {e.number: e for e in desired_state.extensions} if desired_state is not None else {}
        for entry in status["extensions"]:
            entry["calls"] = call_settings(
                by_number.get(entry["number"]), raw["phone_settings"].get(entry["number"], {})
            )
        status["queues"] = [
            {
                "name": q.name,
                "waiting": q.waiting,
                "strategy": q.strategy,
                "members": [{"name": m.name, "interface": m.interface, "state": m.state} for m in q.members],
            }
            for q in raw["queues"]
        ]
        live = raw["live"]
        recorded_store = live.get("store") if live else None
        status["store"] = {
            "recorded": bool(recorded_store),
            "drift": bool(recorded_store) and raw["store_digest"] != recorded_store,
        }
        if live:
            applied = to_epoch(live.get("applied_at"))
            status["live"] = {
                "revision": live.get("revision"),
                "subject": live.get("subject"),
                "applied_at": live.get("applied_at"),
                "age_s": round(now - applied) if applied is not None else None,
            }
            pending = live.get("pending_restart")
            if isinstance(pending, dict):
                # Cleared by the next apply or the watch loop once the restart has happened.
                status["restart_pending"] = {
                    "reason": pending.get("reason"),
                    "since": pending.get("requested_at"),
                    "policy": pending.get("policy"),
                }
    if desired_info is not None:
        live_rev = (status["live"] or {}).get("revision")
        desired_info["pending"] = bool(
            status["asterisk"]["reachable"]
            and desired_info.get("revision")
            and desired_info["revision"] != live_rev
        )
    if fleet is not None:
        status["fleet"] = fleet()
    status["summary"] = summarize(status)
    return status
