"""The whole fleet at a glance: every site's `/api/status`, asked concurrently (docs/fleet.md,
"`fleet status --json`"). Used by `reconciler fleet status` and by a site reconciler's `/api/fleet`
and `/fleet` page.

A site that does not answer within the timeout is `reachable: false` with the error. The rollout
summary: `revision` is the desired revision of the first reachable site in rollout order (every
site follows the same source; the canary is first to see a new one); `state` is `held` when a site
is held or failed on its head, `done` when every site is reachable and reconciled `revision`, else
`rolling`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from reconciler.gitops.rollout import PEER_TIMEOUT_S, fetch_status

FLEET_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Peer:
    """One site as `fleet status` asks it."""

    name: str
    status_url: str


Fetch = Callable[[str, float], Mapping[str, Any]]


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def site_view(name: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """One site's row of the fleet view from its `/api/status`."""
    fleet = _dict(status.get("fleet"))
    live = _dict(status.get("live"))
    desired = _dict(status.get("desired"))
    summary = _dict(status.get("summary"))
    live_rev = live.get("revision")
    # The site's own revision (what its live revision is compared with), and the whole source's
    # revision its rollout is on (what the gate and the rollout summary compare).
    desired_rev = desired.get("revision") or fleet.get("desired_revision")
    source_rev = fleet.get("desired_revision") or desired_rev
    asterisk = _dict(status.get("asterisk"))
    rollout = _dict(fleet.get("rollout")) or {"state": None, "waiting_for": None, "reason": None}
    return {
        "name": name,
        "reachable": True,
        "live_revision": live_rev,
        "desired_revision": desired_rev,
        "source_revision": source_rev,
        "ok_revision": fleet.get("ok_revision"),
        "in_sync": bool(live_rev) and live_rev == desired_rev,
        "healthy": bool(summary.get("healthy")) and bool(asterisk.get("reachable")),
        "providers_registered": summary.get("providers_registered", 0),
        "providers_total": summary.get("providers_total", 0),
        "extensions_online": summary.get("extensions_online", 0),
        "extensions_total": summary.get("extensions_total", 0),
        "last_reconcile": status.get("last_reconcile"),
        "rollout": rollout,
        "problems": list(summary.get("problems") or []),
        "error": status.get("error") or asterisk.get("error"),
    }


def unreachable(name: str, error: str) -> dict[str, Any]:
    return {
        "name": name,
        "reachable": False,
        "live_revision": None,
        "desired_revision": None,
        "source_revision": None,
        "ok_revision": None,
        "in_sync": False,
        "healthy": False,
        "providers_registered": 0,
        "providers_total": 0,
        "extensions_online": 0,
        "extensions_total": 0,
        "last_reconcile": None,
        "rollout": {"state": None, "waiting_for": None, "reason": None},
        "problems": [],
        "error": error,
    }


def _ask(peer: Peer, fetch: Fetch, timeout_s: float) -> dict[str, Any]:
    try:
        return site_view(peer.name, fetch(peer.status_url, timeout_s))
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        # "[Errno 111] Connection refused" -> "connection refused": the table has little room.
        text = getattr(reason, "strerror", None) or str(reason)
        return unreachable(peer.name, f"{text[:1].lower()}{text[1:]} ({peer.status_url})"[:300])


def rollout_summary(order: Sequence[str], sites: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    by_name = {s["name"]: s for s in sites}
    in_order = [by_name[n] for n in order if n in by_name]
    revision = next(
        (s["source_revision"] for s in in_order if s["reachable"] and s.get("source_revision")), None
    )
    if any((s.get("rollout") or {}).get("state") in ("held", "failed") for s in in_order):
        state = "held"
    elif revision and all(s["reachable"] and s.get("ok_revision") == revision for s in in_order):
        state = "done"
    else:
        state = "rolling"
    return {"order": list(order), "revision": revision, "state": state}


def gather_fleet(
    name: str,
    order: Sequence[str],
    peers: Sequence[Peer],
    *,
    fetch: Fetch = fetch_status,
    timeout_s: float = FLEET_TIMEOUT_S,
) -> dict[str, Any]:
    """The fleet view (the contract JSON of `fleet status --json`), every site asked at once."""
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(peers)))) as pool:
        sites = list(pool.map(lambda p: _ask(p, fetch, timeout_s), peers))
    return {"fleet": name, "rollout": rollout_summary(order, sites), "sites": sites}


def fleet_ok(view: Mapping[str, Any]) -> bool:
    """Every site reachable, in sync and healthy (the exit status of `fleet status`)."""
    return all(s["reachable"] and s["in_sync"] and s["healthy"] for s in view["sites"])


def peers_of(fleet: Any) -> list[Peer]:
    """The peers of a `reconciler.desired.fleet.Fleet`, in its sites order."""
    return [Peer(site.name, site.status_url) for site in fleet.sites]


__all__ = ["FLEET_TIMEOUT_S", "PEER_TIMEOUT_S", "Peer", "fleet_ok", "gather_fleet", "peers_of", "site_view"]
