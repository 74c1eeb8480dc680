"""Prometheus text exposition (format 0.0.4) of the status and the reconcile history.

Plain string building: the values come from `status.collect_status()` and `History.records()`, so
there is no registry to keep in sync. Counters count the reconciles in the kept history (the history
file is the reconciler's memory; a restart of the reconciler does not reset them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# History results (reconciler.history.RESULTS) after which the desired head is live.
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


def _count(record: Mapping[str, Any]) -> int:
    count = record.get("count", 1)
    return count if isinstance(count, int) and count > 0 else 1


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, object] | None = None) -> None:
        self.lines.append(f"{name}{_labels(labels or {})} {_number(value)}")


def _histogram(w: _Writer, name: str, values: Iterable[float]) -> None:
    data = sorted(values)
    for bound in DURATION_BUCKETS:
        w.sample(f"{name}_bucket", sum(1 for v in data if v <= bound), {"le": _number(bound)})
    w.sample(f"{name}_bucket", len(data), {"le": "+Inf"})
    w.sample(f"{name}_sum", sum(data))
    w.sample(f"{name}_count", len(data))


def render_metrics(status: Mapping[str, Any], history: list[dict]) -> str:
    """The `/metrics` page: reconcile counts, durations, last success, registrations, contacts, revision."""
    w = _Writer()

    w.family("reconciler_reconciles_total", "counter", "Reconciles in the kept history, by result.")
    # A history record stands for `count` identical consecutive outcomes.
    results: Counter[str] = Counter()
    for r in history:
        results[str(r.get("result") or "unknown")] += _count(r)
    # Every known result appears, also at 0, so rate() and alerts work from the first scrape.
    for result in sorted(set(KNOWN_RESULTS) | set(results)):
        w.sample("reconciler_reconciles_total", results.get(result, 0), {"result": result})

    w.family("reconciler_reconcile_duration_seconds", "histogram", "How long reconciles took.")
    durations = [
        float(d)
        for r in history
        if isinstance(d := r.get("duration_s"), int | float)
        for _ in range(_count(r))
    ]
    _histogram(w, "reconciler_reconcile_duration_seconds", durations)

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
    return "\n".join(w.lines) + "\n"
