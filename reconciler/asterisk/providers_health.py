"""One provider never holds back the PBX: a provider's reachability is an operational state.

A provider whose host does not resolve makes Asterisk refuse exactly one object, its identify
(`Could not create an object of type 'identify' with id '<name>-identify'`): PJSIP resolves an
identify's `match` host while loading it, and resolves the registration's and the AOR's hosts
only when it sends. Everything else of the revision loads. So:

- `judge_reload` splits the problems a reload logged into those that fail the apply and those
  that are only "this provider's host does not resolve" (an identify of a provider of the desired
  state, with a resolution failure logged for it, and no other error about that object);
- `lookup_step`/`parse_lookups` resolve every provider host inside the PBX container, in the read
  exec the apply runs anyway, so the warning appears even when pjsip.conf did not change;
- the degraded providers are recorded with the live revision (`state.json`, key `degraded`), and
  `heal` brings them up once their hosts resolve again: `module reload res_pjsip.so` (Asterisk
  re-reads pjsip.conf on every reload, changed or not, and resolves the identify anew), then it
  checks that the identify now exists.

Refused or unanswered registrations need none of this: Asterisk retries by itself, and status
shows the registration's state with the reason it logged.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.asterisk import sourcemap
from reconciler.asterisk.parsers import (
    LogProblem,
    parse_reload_log,
    parse_resolution_failures,
    retained_objects,
    split_host_port,
)
from reconciler.desired.model import DesiredState, Provider
from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    from reconciler.asterisk.client import AsteriskClient

# A dead resolver must not stall an apply: each lookup is cut off after this long, all run at once.
LOOKUP_TIMEOUT_S = 2
_LOOKUP_TAG = "gitops-lookup"
_LOOKUP_LINE = re.compile(rf"^{_LOOKUP_TAG} (?P<host>\S+) (?P<rc>\d+)\s*$", re.M)
PJSIP_RELOAD = "module reload res_pjsip.so"
IDENTIFY_SUFFIX = "-identify"


def identify_name(provider: str) -> str:
    """The identify section the templates render for a provider: `<name>-identify`."""
    return f"{provider}{IDENTIFY_SUFFIX}"


@dataclass(frozen=True)
class HostLookup:
    """What `getent ahosts HOST` answered inside the PBX container."""

    host: str
    resolved: bool
    timed_out: bool = False


@dataclass(frozen=True)
class ProviderIssue:
    """A provider that is configured but cannot work right now, and why.

    `str()` is the one-line warning: `pbx_provider: host does-not-exist.invalid does not resolve`.
    `detail` says what it means for calls.
    """

    provider: str
    reason: str
    host: str | None = None
    detail: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}: {self.reason}"


@dataclass(frozen=True)
class ReloadJudgement:
    """The problems of one reload, judged: `fatal` fail the apply; `excused` are explained by
    `issues` (a provider whose host does not resolve) and leave the rest of the revision live."""

    fatal: tuple[LogProblem, ...]
    issues: tuple[ProviderIssue, ...]
    excused: tuple[LogProblem, ...] = ()


@dataclass(frozen=True)
class HealResult:
    """What `heal` did: providers that are up again, those still degraded (provider → reason),
    and whether it reloaded res_pjsip."""

    healed: tuple[str, ...]
    still: dict[str, str]
    reloaded: bool = False
    problems: tuple[LogProblem, ...] = ()


def is_address(host: str) -> bool:
    """An IP address or network: nothing to resolve."""
    try:
        ipaddress.ip_network(host, strict=False)
    except ValueError:
        return False
    return True


def provider_hosts(provider: Provider) -> list[str]:
    """The host names a provider needs resolved: its host (registration, AOR contact, default
    identify match) and the host names among its `match` entries."""
    names = [provider.host] + [split_host_port(m)[0] for m in provider.match]
    return sorted({n for n in names if n and not is_address(n)})


def dns_names(state: DesiredState) -> list[str]:
    """Every provider host name of the desired state that must resolve, sorted, once each."""
    return sorted({h for p in state.providers for h in provider_hosts(p)})


def lookup_step(hosts: Iterable[str]) -> str:
    """Shell that resolves `hosts` in the container, all at once, each bounded by LOOKUP_TIMEOUT_S,
    and prints `gitops-lookup HOST RC` per host (getent: 0 found, 2 not found; timeout: 124).

    `getent ahosts` asks getaddrinfo(), as Asterisk does, through the same /etc/hosts and resolver.
    """
    names = sorted(set(hosts))
    if not names:
        return "true"
    jobs = [
        f"( timeout {LOOKUP_TIMEOUT_S} getent ahosts {shlex.quote(h)} >/dev/null 2>&1; "
        f"echo {_LOOKUP_TAG} {shlex.quote(h)} $? ) &"
        for h in names
    ]
    return " ".join(jobs) + " wait"


def parse_lookups(output: str) -> dict[str, HostLookup]:
    """The output of `lookup_step` → host → HostLookup."""
    result = {}
    for match in _LOOKUP_LINE.finditer(output):
        rc = int(match["rc"])
        result[match["host"]] = HostLookup(match["host"], resolved=rc == 0, timed_out=rc == 124)
    return result


def _unresolved_reason(host: str, lookup: HostLookup | None = None) -> str:
    if lookup is not None and lookup.timed_out:
        return f"host {host} does not resolve (DNS lookup timed out after {LOOKUP_TIMEOUT_S} s)"
    return f"host {host} does not resolve"


_DNS_DETAIL = "its registration and calls through it fail until the host resolves"
_IDENTIFY_DETAIL = "inbound calls from it are not recognised until the host resolves"
_RETAINED_DETAIL = "Asterisk keeps matching inbound calls by the address it resolved before"


def dns_issues(state: DesiredState, lookups: Mapping[str, HostLookup]) -> list[ProviderIssue]:
    """One issue per provider host that the container could not resolve."""
    issues = []
    for provider in sorted(state.providers, key=lambda p: p.name):
        for host in provider_hosts(provider):
            lookup = lookups.get(host)
            if lookup is not None and not lookup.resolved:
                issues.append(
                    ProviderIssue(provider.name, _unresolved_reason(host, lookup), host, _DNS_DETAIL)
                )
    return issues


def judge_reload(
    problems: Sequence[LogProblem],
    log_lines: Iterable[str],
    state: DesiredState,
    files: Mapping[str, str],
) -> ReloadJudgement:
    """Split a reload's problems: an identify of a provider of `state` that Asterisk could not
    create because its host did not resolve is a provider issue; every other problem — including
    any other error about that same identify (a wrong option, a bad value) — stays fatal."""
    lines = list(log_lines)
    owners = {identify_name(p.name): p.name for p in state.providers}
    unresolved = {f.identify: f for f in parse_resolution_failures(lines)}
    retained = retained_objects(lines)

    # Which objects have a problem other than "could not be created" (that one names every failure).
    blamed: set[str] = set()
    for problem in problems:
        if problem.failed_object is not None:
            continue
        obj = sourcemap.rendered_object(problem, files)
        name = problem.category or (obj.section if obj is not None else None)
        if name is not None:
            blamed.add(name)

    fatal: list[LogProblem] = []
    excused: list[LogProblem] = []
    issues: list[ProviderIssue] = []
    for problem in problems:
        failed = problem.failed_object
        if failed is not None and failed[0] == "identify":
            identify = failed[1]
            failure = unresolved.get(identify)
            if identify in owners and failure is not None and identify not in blamed:
                detail = _RETAINED_DETAIL if failed in retained else _IDENTIFY_DETAIL
                issues.append(
                    ProviderIssue(owners[identify], _unresolved_reason(failure.host), failure.host, detail)
                )
                excused.append(problem)
                continue
        fatal.append(problem)
    return ReloadJudgement(tuple(fatal), tuple(issues), tuple(excused))


def merge(*groups: Iterable[ProviderIssue]) -> tuple[ProviderIssue, ...]:
    """Issues of several sources, once per (provider, host), the first one's wording kept."""
    seen: set[tuple[str, str | None]] = set()
    result = []
    for group in groups:
        for issue in group:
            key = (issue.provider, issue.host)
            if key not in seen:
                seen.add(key)
                result.append(issue)
    return tuple(result)


def degraded_record(issues: Iterable[ProviderIssue]) -> dict[str, str]:
    """What `state.json` keeps: provider → its reasons, `; `-joined, sorted by provider."""
    reasons: dict[str, list[str]] = {}
    for issue in issues:
        reasons.setdefault(issue.provider, [])
        if issue.reason not in reasons[issue.provider]:
            reasons[issue.provider].append(issue.reason)
    return {name: "; ".join(reasons[name]) for name in sorted(reasons)}


def identify_found(output: str, provider: str) -> bool:
    """Whether `pjsip show identify <provider>-identify` found the object."""
    return "Unable to find object" not in output and identify_name(provider) in output


def heal(client: AsteriskClient, state: DesiredState, degraded: Mapping[str, str]) -> HealResult:
    """Bring degraded providers up once their hosts resolve again, without a new revision.

    One exec resolves the hosts of the degraded providers (nothing else is looked up). Only when
    every host of at least one of them resolves: one more exec reloads res_pjsip with its log
    lines and asks for each such provider's identify. A provider the desired state no longer has
    is dropped from the record. Call it only when the managed files on disk are the desired ones
    (the reload loads whatever is on disk).
    """
    providers = {p.name: p for p in state.providers if p.name in degraded}
    if not providers:
        return HealResult(healed=(), still={})
    hosts = sorted({h for p in providers.values() for h in provider_hosts(p)})
    lookups = parse_lookups(client.run_steps([lookup_step(hosts)]).outputs[0]) if hosts else {}
    resolving = [
        name
        for name, p in sorted(providers.items())
        if all(lookups.get(h, HostLookup(h, False)).resolved for h in provider_hosts(p))
    ]
    still = {name: degraded[name] for name in providers if name not in resolving}
    if not resolving:
        return HealResult(healed=(), still=still)
    outcome = client.reload(
        [PJSIP_RELOAD], queries=[f"pjsip show identify {identify_name(n)}" for n in resolving]
    )
    files: dict[str, str] = {}  # problems are matched by object names here, the render is not needed
    judged = judge_reload(parse_reload_log(outcome.log_lines), outcome.log_lines, state, files)
    reasons = degraded_record(judged.issues)
    healed = []
    for name, output in zip(resolving, outcome.query_outputs, strict=True):
        if name in reasons or not identify_found(output, name):
            still[name] = reasons.get(name) or degraded[name]
        else:
            healed.append(name)
    return HealResult(
        healed=tuple(healed), still=dict(sorted(still.items())), reloaded=True, problems=judged.fatal
    )


def settle(
    client: AsteriskClient,
    state: DesiredState,
    previous: Mapping[str, str],
    issues: Iterable[ProviderIssue],
    pjsip_reloaded: bool,
) -> HealResult:
    """The degraded providers after an apply, given those recorded before it and the issues this
    apply found. A provider degraded before and not now was re-resolved by this apply's own
    res_pjsip reload (`pjsip_reloaded`), or is healed here; a provider the desired state no longer
    has is forgotten. When Asterisk cannot be asked, the recorded providers stay degraded."""
    current = degraded_record(issues)
    names = {p.name for p in state.providers}
    before = {n: r for n, r in previous.items() if n in names and n not in current}
    if pjsip_reloaded or not before:
        return HealResult(healed=tuple(sorted(before)), still=current)
    try:
        healed = heal(client, state, before)
    except ReconcilerError:
        return HealResult(healed=(), still=dict(sorted({**current, **before}.items())))
    still = dict(sorted({**current, **healed.still}.items()))
    return HealResult(healed.healed, still, healed.reloaded, healed.problems)


def warnings_of(degraded: Mapping[str, str]) -> tuple[str, ...]:
    """The apply's warnings for a degraded record: `<provider>: <reason>` each."""
    return tuple(f"{name}: {reason}" for name, reason in sorted(degraded.items()))


def came_back(names: Iterable[str]) -> tuple[str, ...]:
    """The change lines for providers that are up again."""
    return tuple(f"provider {name} is up again: its host resolves" for name in names)
