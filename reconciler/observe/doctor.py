"""`doctor`: the troubleshooting list, automated, from the Docker engine up to the last reconcile.

Each check has a verdict and, when it does not pass, the concrete fix. Checks that depend on an
earlier one (everything after "container running" needs a running Asterisk) are SKIPped with the
reason, so the first FAIL is the thing to fix. Asterisk is asked in two `docker exec` calls.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.asterisk import parsers, providers_health
from reconciler.asterisk.client import rx_command
from reconciler.errors import ReconcilerError
from reconciler.markers import (
    DIALPLAN_QUERY,
    aor_found,
    dialplan_revision,
    pjsip_marker,
    pjsip_marker_query,
    rev12,
)
from reconciler.observe.verdict import Finding as Check
from reconciler.observe.verdict import Verdict
from reconciler.settings import Settings

_RTP = re.compile(r"Port start:\s*(\d+).*?Port end:\s*(\d+)", re.S)


def _desired_state(settings: Settings) -> Any:
    try:
        from reconciler.desired.fleet import load_tree

        return load_tree(Path(settings.desired_dir), settings.site).state
    except (ReconcilerError, OSError):
        return None


def _start_fix(name: str) -> str:
    return f"start it: `docker start {name}` (or `make up` for the whole stack)"


def _container_checks(settings: Settings) -> tuple[list[Check], Any]:
    """Engine reachable → container exists → running → healthy. Returns the container when running."""
    import docker
    from docker.errors import DockerException, NotFound

    name = settings.container
    checks: list[Check] = []
    try:
        engine = docker.from_env()
        engine.ping()
        version = engine.version().get("Version", "?")
    except DockerException as exc:
        checks.append(
            Check(
                "Docker engine reachable",
                Verdict.FAIL,
                f"cannot reach the Docker engine: {exc}",
                "start Docker (`systemctl start docker`, or `dockerd &`); check DOCKER_HOST and that you may "
                "use /var/run/docker.sock",
            )
        )
        return checks, None
    checks.append(Check("Docker engine reachable", Verdict.PASS, f"Docker {version}"))
    try:
        container = engine.containers.get(name)
    except NotFound:
        checks.append(
            Check(
                "container exists",
                Verdict.FAIL,
                f"no container named {name!r}",
                "create it with `make up`, or pass --container NAME (RECONCILER_CONTAINER) of yours",
            )
        )
        return checks, None
    except DockerException as exc:
        checks.append(Check("container exists", Verdict.FAIL, str(exc), "retry; check the Docker engine"))
        return checks, None
    image = (container.attrs.get("Config") or {}).get("Image", "?")
    checks.append(Check("container exists", Verdict.PASS, f"{name} (image {image})"))
    state = container.attrs.get("State") or {}
    if container.status != "running":
        exit_code = state.get("ExitCode")
        finished = state.get("FinishedAt", "")
        detail = f"{name} is {container.status}"
        if container.status == "exited":
            detail += f" (exit code {exit_code}, stopped at {finished[:19]})"
        checks.append(Check("container running", Verdict.FAIL, detail, _start_fix(name)))
        return checks, None
    checks.append(
        Check("container running", Verdict.PASS, f"running since {state.get('StartedAt', '?')[:19]}")
    )
    health = (state.get("Health") or {}).get("Status")
    if health is None:
        checks.append(Check("container healthy", Verdict.WARN, "the container has no health check", None))
    elif health == "healthy":
        checks.append(Check("container healthy", Verdict.PASS, "healthy (Asterisk fully booted)"))
    elif health == "starting":
        checks.append(
            Check(
                "container healthy",
                Verdict.WARN,
                "health check still starting",
                "wait a few seconds and re-run",
            )
        )
    else:
        log = ((state.get("Health") or {}).get("Log") or [{}])[-1].get("Output", "").strip()
        checks.append(
            Check(
                "container healthy",
                Verdict.FAIL,
                f"{health}: {log[:120]}" if log else health,
                f"see `docker logs {name}`; `docker restart {name}` restarts Asterisk",
            )
        )
    return checks, container


# Never `pjsip show endpoints` (2-9 s at 10,000): online comes from the registered contacts, and
# "configured" is checked for a bounded sample of the desired extensions, one endpoint each.
EXISTENCE_SAMPLE = 25


def existence_sample(state: Any) -> list[str]:
    """The desired extensions whose endpoint the doctor looks up (the first EXISTENCE_SAMPLE)."""
    if state is None:
        return []
    return sorted((e.number for e in state.extensions), key=lambda n: (len(n), n))[:EXISTENCE_SAMPLE]


def _exec_queries(
    client: Any,
    settings: Settings,
    numbers: list[str],
    hosts: list[str] | None = None,
    sample: list[str] | None = None,
) -> dict[str, Any]:
    state_file = shlex.quote(f"{settings.managed_dir.rstrip('/')}/state.json")
    sample = sample or []
    steps = [
        f"cat {state_file} 2>/dev/null",
        rx_command("pjsip show registrations"),
        rx_command("pjsip show contacts"),
        rx_command("pjsip show transports"),
        rx_command("rtp show settings"),
        rx_command(DIALPLAN_QUERY),
    ]
    steps += [rx_command(f"dialplan show {n}@internal") for n in numbers]
    steps += [rx_command(f"pjsip show endpoint {n}") for n in sample]
    steps.append(providers_health.lookup_step(hosts or []))
    out = client.run_steps(steps).outputs
    routes_end = 6 + len(numbers)
    return {
        "state": out[0],
        "registrations": out[1],
        "contacts": out[2],
        "transports": out[3],
        "rtp": out[4],
        "meta": out[5],
        "routes": dict(zip(numbers, out[6:routes_end], strict=True)),
        "sample": dict(zip(sample, out[routes_end:-1], strict=True)),
        "lookups": providers_health.parse_lookups(out[-1]),
    }


def _route_numbers(state: Any) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Numbers to look up: exact emergency numbers, and a sample number per prefix route."""
    exact: list[str] = []
    samples: list[tuple[str, str, str]] = []  # (route name, sample number, prefix)
    if state is None:
        return ["911"], []
    for route in state.outbound:
        if route.numbers:
            exact += [n for n in route.numbers if n not in exact]
        elif route.prefix is not None:
            samples.append((route.name, f"{route.prefix}5550100", route.prefix))
    return exact, samples


def _managed_config_check(raw: dict[str, Any], marker_out: str | None) -> Check:
    try:
        live = json.loads(raw["state"]) if raw["state"].strip() else None
    except ValueError:
        live = None
    if not live or not live.get("revision"):
        return Check(
            "managed config loaded",
            Verdict.FAIL,
            "no state.json in the managed directory: no revision was applied yet",
            "apply the desired state: `reconciler apply` (or start `reconciler watch`)",
        )
    r12 = rev12(str(live["revision"]))
    meta = dialplan_revision(raw["meta"])
    problems = []
    if marker_out is not None and not aor_found(marker_out, r12):
        problems.append(f"PJSIP has no marker AOR {pjsip_marker(r12)}")
    if meta != r12:
        problems.append(f"dialplan marker is {meta or 'missing'}")
    if problems:
        return Check(
            "managed config loaded",
            Verdict.FAIL,
            f"state.json says {r12} but "
            + "; ".join(problems)
            + " (Asterisk did not load the managed files)",
            "re-apply: `reconciler apply`; if it persists, look for config errors in "
            "`docker exec <container> tail -50 /var/log/asterisk/messages.log`",
        )
    return Check(
        "managed config loaded", Verdict.PASS, f"revision {r12} live ({live.get('subject') or 'no subject'})"
    )


def _provider_checks(raw: dict[str, Any], state: Any) -> list[Check]:
    regs = parsers.parse_registrations(raw["registrations"])
    wanted = [p.name for p in state.providers if p.register] if state is not None else [r.name for r in regs]
    if not wanted:
        return [Check("providers registered", Verdict.PASS, "no provider keeps a registration")]
    checks = []
    for name in wanted:
        reg = next((r for r in regs if r.name == name or r.name.startswith((name + "-", name + "_"))), None)
        if reg is None:
            checks.append(
                Check(
                    f"provider {name} registered",
                    Verdict.FAIL,
                    "Asterisk has no registration for it",
                    "the live config differs from the desired state: `reconciler plan`, then "
                    "`reconciler apply`",
                )
            )
        elif reg.registered and (reg.expires_s is None or reg.expires_s >= 0):
            checks.append(Check(f"provider {name} registered", Verdict.PASS, f"{reg.status} ({reg.detail})"))
        else:
            checks.append(
                Check(
                    f"provider {name} registered",
                    Verdict.FAIL,
                    f"{reg.status} ({reg.detail}) at {reg.server_uri}",
                    f"run `reconciler check-provider {name}` to find the failing step (DNS, port, password)",
                )
            )
    return checks


def _provider_host_checks(raw: dict[str, Any], state: Any) -> list[Check]:
    """Each provider host name, resolved inside the PBX container now, as Asterisk would."""
    if state is None:
        return []
    try:
        live = json.loads(raw["state"]) if raw["state"].strip() else {}
    except ValueError:
        live = {}
    degraded = (live or {}).get("degraded") or {}
    checks = []
    for provider in sorted(state.providers, key=lambda p: p.name):
        hosts = providers_health.provider_hosts(provider)
        if not hosts:
            continue
        failing = [
            h for h in hosts if not raw["lookups"].get(h, providers_health.HostLookup(h, False)).resolved
        ]
        name = f"provider {provider.name} host resolves"
        if failing:
            checks.append(
                Check(
                    name,
                    Verdict.FAIL,
                    "; ".join(f"{h} does not resolve inside the PBX container" for h in failing),
                    f"check the host in the desired state and the container's DNS (`docker exec <container> "
                    f"getent ahosts {failing[0]}`); everything else keeps working, and the provider comes up "
                    "by itself once it resolves (`reconciler watch`, or `reconciler apply`)",
                )
            )
        elif provider.name in degraded:
            checks.append(
                Check(
                    name,
                    Verdict.WARN,
                    f"resolves now, but the live revision recorded: {degraded[provider.name]}",
                    "the watch loop brings it up at its next poll; or run `reconciler apply`",
                )
            )
        else:
            checks.append(Check(name, Verdict.PASS, ", ".join(hosts)))
    return checks


ONLINE_LISTED = 20  # beyond this many, the detail gives the count only


def _extension_check(raw: dict[str, Any], state: Any) -> Check:
    reachable = {c.aor for c in parsers.parse_contacts(raw["contacts"]) if c.reachable}
    numbers = (
        [e.number for e in state.extensions]
        if state is not None
        else sorted((a for a in reachable if a.isdigit()), key=lambda n: (len(n), n))
    )
    sample = raw.get("sample") or {}
    missing = [n for n, text in sample.items() if not any(e.name == n for e in parsers.parse_endpoints(text))]
    online = [n for n in numbers if n in reachable]
    if missing:
        checked = f" (checked {len(sample)} of {len(numbers)})" if len(sample) < len(numbers) else ""
        return Check(
            "extensions configured",
            Verdict.FAIL,
            f"not in Asterisk: {', '.join(missing)}{checked}",
            "the live config is behind the desired state: `reconciler apply`",
        )
    listed = f": {', '.join(online)}" if online and len(online) <= ONLINE_LISTED else ""
    detail = f"{len(online)} of {len(numbers)} registered{listed}"
    if len(online) == len(numbers):
        return Check("extensions registered", Verdict.PASS, detail)
    return Check(
        "extensions registered",
        Verdict.WARN,
        detail,
        "offline phones: `reconciler softphones` prints the settings to enter; a phone on another "
        "network needs pbx.bind/external_address set",
    )


def _route_checks(raw: dict[str, Any], state: Any) -> list[Check]:
    exact, samples = _route_numbers(state)
    checks: list[Check] = []
    for number in exact:
        matches = parsers.parse_dialplan(raw["routes"][number])
        first = matches[0].exten if matches else None
        if first == number and matches[0].first_priority == 1:
            checks.append(Check(f"emergency route {number}", Verdict.PASS, f"'{number}' is the first match"))
        else:
            checks.append(
                Check(
                    f"emergency route {number}",
                    Verdict.FAIL,
                    f"first match for {number} is {first!r}"
                    if first
                    else f"nothing matches {number} in [internal]",
                    f"{number} must match exactly before any pattern: check the emergency route in "
                    "desired/ and re-apply (`reconciler apply`)",
                )
            )
    for name, sample, prefix in samples:
        matches = parsers.parse_dialplan(raw["routes"][sample])
        first = matches[0].exten if matches else None
        if first and first.startswith(f"_{prefix}"):
            checks.append(Check(f"outbound route {name}", Verdict.PASS, f"{sample} → '{first}'"))
        else:
            checks.append(
                Check(
                    f"outbound route {name}",
                    Verdict.FAIL,
                    f"{sample} matches {first!r}" if first else f"nothing matches {sample} in [internal]",
                    "re-apply the desired state (`reconciler apply`); check for a route that shadows "
                    "this prefix",
                )
            )
    return checks


def _port_checks(raw: dict[str, Any], state: Any) -> list[Check]:
    checks: list[Check] = []
    binds = re.findall(r"^Transport:\s+(transport-\S+)\s+(\S+)\s+\d+\s+\d+\s+(\S+)", raw["transports"], re.M)
    want = f"{state.pbx.bind}:{state.pbx.port}" if state is not None else None
    if not binds:
        checks.append(
            Check(
                "SIP port bound",
                Verdict.FAIL,
                "Asterisk has no SIP transport (the port may be taken by another process, or "
                "pjsip.conf failed to load at start)",
                "find who holds the port: `ss -lunp 'sport = :5060'`; stop it or change pbx.port, then "
                "`docker restart <container>`",
            )
        )
    elif want and not any(addr == want for _, _, addr in binds):
        got = ", ".join(f"{n} {a}" for n, _, a in binds)
        checks.append(
            Check(
                "SIP port bound",
                Verdict.FAIL,
                f"desired {want}, Asterisk has {got}",
                "transports change only on restart: `docker restart <container>` (or `reconciler apply`)",
            )
        )
    else:
        checks.append(Check("SIP port bound", Verdict.PASS, ", ".join(f"{n} {p} {a}" for n, p, a in binds)))
    rtp = _RTP.search(raw["rtp"])
    if not rtp:
        checks.append(Check("RTP port range", Verdict.WARN, "`rtp show settings` gave no range", None))
    else:
        start, end = int(rtp.group(1)), int(rtp.group(2))
        size = end - start + 1
        if start < 1024 or end > 65535 or size < 20:
            checks.append(
                Check(
                    "RTP port range",
                    Verdict.FAIL,
                    f"{start}-{end} ({size} ports)",
                    "set RTP_START/RTP_END of the container to a range of at least 20 ports above 1024 "
                    "(each call uses 2-4 ports), then recreate it",
                )
            )
        else:
            checks.append(
                Check("RTP port range", Verdict.PASS, f"{start}-{end} ({size} ports, ~{size // 4} calls)")
            )
    return checks


def _history_check(settings: Settings) -> Check:
    from reconciler.gitops.history import History, LoopState

    last = History(settings).last()
    suspended = LoopState.load(settings).suspended
    if last is None:
        return Check(
            "last reconcile",
            Verdict.WARN,
            f"no reconcile recorded in {settings.state_dir}",
            "run `reconciler watch` (or pass --state-dir of the running loop)",
        )
    text = f"{last.get('result')} at {last.get('started_at')} ({str(last.get('revision') or '')[:12]})"
    if last.get("result") in ("failed", "invalid"):
        return Check(
            "last reconcile",
            Verdict.FAIL,
            text + f": {last.get('reason')}",
            "fix the revision (see `reconciler history`), push a new commit, or `reconciler retry`",
        )
    if suspended:
        return Check("last reconcile", Verdict.WARN, text + "; the loop is SUSPENDED", "`reconciler resume`")
    return Check("last reconcile", Verdict.PASS, text)


def run_doctor(settings: Settings, on_check: Callable[[Check], None] | None = None) -> list[Check]:
    """Run every check in order; returns them (each also passed to `on_check` as it completes)."""
    from reconciler.asterisk.client import client_for
    from reconciler.errors import AsteriskUnavailable

    checks: list[Check] = []

    def add(*new: Check) -> None:
        for check in new:
            checks.append(check)
            if on_check:
                on_check(check)

    container_checks, container = _container_checks(settings)
    add(*container_checks)
    asterisk_names = (
        "managed config loaded",
        "provider hosts resolve",
        "providers registered",
        "extensions registered",
        "routes",
        "SIP port bound",
    )
    if container is None:
        add(*(Check(n, Verdict.SKIP, "needs a running Asterisk container") for n in asterisk_names))
        add(_history_check(settings))
        return checks
    state = _desired_state(settings)
    client = client_for(settings)
    exact, samples = _route_numbers(state)
    try:
        hosts = providers_health.dns_names(state) if state is not None else []
        raw = _exec_queries(
            client, settings, exact + [s for _, s, _ in samples], hosts, existence_sample(state)
        )
        marker_out = None
        try:
            live = json.loads(raw["state"]) if raw["state"].strip() else None
        except ValueError:
            live = None
        if live and live.get("revision"):
            marker_out = client.run(pjsip_marker_query(rev12(str(live["revision"]))))[0]
    except AsteriskUnavailable as exc:
        add(
            Check("Asterisk answers", Verdict.FAIL, exc.message, exc.hint),
            *(Check(n, Verdict.SKIP, "needs Asterisk to answer") for n in asterisk_names),
        )
        add(_history_check(settings))
        return checks
    add(_managed_config_check(raw, marker_out))
    add(*_provider_host_checks(raw, state))
    add(*_provider_checks(raw, state))
    add(_extension_check(raw, state))
    add(*_route_checks(raw, state))
    add(*_port_checks(raw, state))
    add(_history_check(settings))
    return checks
