"""Prometheus text exposition (format 0.0.4) of the status and the reconcile totals.

Plain string building: the values come from `status.collect_status()`, the loop state's running
totals (`history.ReconcileTotals`) and `History.records()`, so there is no registry to keep in sync.
The counters and the duration histogram come from the running totals, which only grow (a restart
of the reconciler or old records falling off the bounded history never lower them); without totals
(a state directory from before they existed) they are counted from the kept history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from reconciler.gitops.history import DURATION_BUCKETS, ReconcileTotals, bucket_label

# History results (reconciler.gitops.history.RESULTS) after which the desired head is live.
SUCCESS_RESULTS = frozenset({"applied", "unchanged", "drift-fixed"})
KNOWN_RESULTS = ("applied", "unchanged", "failed", "invalid", "drift-fixed", "drift-detected", "skipped")


def escape_label(value: object) -> str:
    """Escape a label value: backslash, double quote and newline (exposition format rules)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def to_epoch(value: object) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 string (None when neither)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def is_success(record: Mapping[str, Any]) -> bool:
    """True when a history record's result means the desired state is (now) live."""
    return str(record.get("result", "")).lower() in SUCCESS_RESULTS


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, object] | None = None) -> None:
        self.lines.append(f"{name}{_labels(labels or {})} {_number(value)}")


def _histogram(w: _Writer, name: str, totals: ReconcileTotals) -> None:
    cumulative = 0
    for bound in DURATION_BUCKETS:
        # max(): the buckets stay cumulative even for a hand-edited or partial state file.
        cumulative = max(cumulative, totals.duration_buckets.get(bucket_label(bound), 0))
        w.sample(f"{name}_bucket", cumulative, {"le": bucket_label(bound)})
    count = max(cumulative, totals.duration_buckets.get("+Inf", 0), totals.duration_count)
    w.sample(f"{name}_bucket", count, {"le": "+Inf"})
    w.sample(f"{name}_sum", totals.duration_sum_s)
    w.sample(f"{name}_count", count)


def render_metrics(
    status: Mapping[str, Any],
    history: list[dict],
    *,
    totals: ReconcileTotals | None = None,
    calls: Mapping[str, int] | None = None,
    active_channels: int | None = None,
) -> str:
    """The `/metrics` page: reconcile counts, durations, last success, registrations, contacts,
    revision, call records by disposition and the channels up now.

    `totals` are the loop state's running totals (`LoopState.totals`); without them the counters
    and the histogram are counted from `history`, which can go down once the history is full.
    `calls`: call records by disposition (`observe.calls`, from the CDR database); `active_channels`:
    the status's `asterisk.channels` (`core show channels concise`). Either None (not readable
    now): the family is there, its samples not.
    """
    w = _Writer()
    if totals is None:
        totals = ReconcileTotals.from_records(history)

    w.family("reconciler_reconciles_total", "counter", "Reconciles recorded by the watch loop, by result.")
    # Every known result appears, also at 0, so rate() and alerts work from the first scrape.
    for result in sorted(set(KNOWN_RESULTS) | set(totals.results)):
        w.sample("reconciler_reconciles_total", totals.results.get(result, 0), {"result": result})

    w.family("reconciler_reconcile_duration_seconds", "histogram", "How long reconciles took.")
    _histogram(w, "reconciler_reconcile_duration_seconds", totals)

    successes = [
        end
        for r in history
        if is_success(r) and (end := to_epoch(r.get("last_at") or r.get("started_at"))) is not None
    ]
    live = status.get("live") or {}
    applied = to_epoch(live.get("applied_at"))
    if applied is not None:
        successes.append(applied)
    w.family(
        "reconciler_last_success_timestamp_seconds",
        "gauge",
        "When a reconcile last made the desired state live (0: never).",
    )
    w.sample("reconciler_last_success_timestamp_seconds", max(successes) if successes else 0)

    summary = status.get("summary") or {}
    providers = status.get("providers") or []
    w.family("reconciler_providers", "gauge", "Providers that keep a registration.")
    w.sample("reconciler_providers", summary.get("providers_registering", len(providers)))
    w.family("reconciler_providers_registered", "gauge", "Providers whose registration is Registered.")
    w.sample("reconciler_providers_registered", summary.get("providers_registered", 0))
    w.family("reconciler_provider_registered", "gauge", "1 when this provider is registered.")
    for p in providers:
        w.sample(
            "reconciler_provider_registered", 1 if p.get("registered") else 0, {"provider": p.get("name")}
        )

    w.family(
        "reconciler_provider_degraded",
        "gauge",
        "1 when this provider cannot work right now (e.g. its host does not resolve); see status.",
    )
    for p in providers:
        w.sample("reconciler_provider_degraded", 1 if p.get("problem") else 0, {"provider": p.get("name")})

    w.family("reconciler_extensions", "gauge", "Extensions configured in Asterisk.")
    w.sample("reconciler_extensions", summary.get("extensions_total", 0))
    w.family("reconciler_extensions_online", "gauge", "Extensions with at least one reachable contact.")
    w.sample("reconciler_extensions_online", summary.get("extensions_online", 0))

    w.family("reconciler_asterisk_up", "gauge", "1 when Asterisk answered the status queries.")
    w.sample("reconciler_asterisk_up", 1 if (status.get("asterisk") or {}).get("reachable") else 0)
    w.family("reconciler_suspended", "gauge", "1 when the watch loop is suspended.")
    w.sample("reconciler_suspended", 1 if status.get("suspended") else 0)

    w.family("reconciler_live_revision_info", "gauge", "The revision live in Asterisk (value is always 1).")
    if live.get("revision"):
        labels = {"revision": live.get("revision"), "subject": live.get("subject") or ""}
        w.sample("reconciler_live_revision_info", 1, labels)

    w.family(
        "asterisk_gitops_calls_total",
        "counter",
        "Call records Asterisk wrote (CDR, one per call leg), by disposition.",
    )
    for disposition, count in sorted((calls or {}).items()):
        w.sample("asterisk_gitops_calls_total", count, {"disposition": disposition})
    w.family("asterisk_gitops_active_channels", "gauge", "Channels up in Asterisk now.")
    if active_channels is not None:
        w.sample("asterisk_gitops_active_channels", active_channels)
    return "\n".join(w.lines) + "\n"
