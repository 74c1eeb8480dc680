"""Is the watch loop doing its job? The verdict behind `GET /healthz`.

Threads that are alive are not a loop that works: an alias bomb once kept the worker busy in one
reconcile at 2 GB and growing while `/healthz` said ok. `assess()` judges what the loop reports
about itself (a `LoopProbe`, taken by `WatchLoop.probe()`) against a `HealthPolicy`:

- every thread of the loop is alive;
- the running reconcile has not run far longer than usual: more than
  `max(slow_floor_s, slow_factor x the median of the recent durations)`;
- each periodic thread went round its loop recently (the worker only counts while idle: a busy
  worker is judged by the reconcile's duration);
- no trigger has waited long for an idle worker.

- and, when the watch loop is given a SIP probe, the PBX answers SIP on its own transport
  (`with_sip`): after a restart a large PBX is "fully booted" seconds before it serves REGISTERs.

Pure: no clock, no I/O; the probe carries the ages (the SIP probe's answer is taken by the caller,
`reconciler.asterisk.sipready.sip_answers`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HealthPolicy:
    """How much slack the loop gets before `/healthz` calls it unhealthy."""

    # A reconcile may always take this long (a restart that waits for calls, a slow git remote)...
    slow_floor_s: float = 300.0
    # ...or this many times the typical (median) duration of the recent reconciles, if longer.
    slow_factor: float = 10.0
    # A periodic thread may be this late (beyond twice its period) before it counts as stuck.
    tick_slack_s: float = 30.0
    # A trigger may wait this long for an idle worker to take it.
    pending_slack_s: float = 30.0


@dataclass(frozen=True)
class ThreadProbe:
    """One thread of the loop, as seen at probe time."""

    name: str
    alive: bool
    period_s: float  # how often it goes round its loop when nothing blocks it
    tick_age_s: float | None  # seconds since it last went round; None: never, or not judged now


@dataclass(frozen=True)
class LoopProbe:
    """What the loop says about itself at one moment (ages in seconds)."""

    started: bool
    threads: tuple[ThreadProbe, ...] = ()
    running_s: float | None = None  # how long the running reconcile has run; None when idle
    running_trigger: str | None = None
    pending: tuple[str, ...] = ()
    # How long the pending triggers have waited while the worker was idle (None: nothing pending).
    pending_idle_s: float | None = None
    recent_durations_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class Health:
    """The verdict: `ok`, every reason it is not, and the numbers it was judged on."""

    ok: bool = True
    reasons: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The `/healthz` keys: `ok`, `reason` (one line, null when ok), `reasons`, the numbers."""
        return {
            "ok": self.ok,
            "reason": "; ".join(self.reasons) or None,
            "reasons": list(self.reasons),
            **self.details,
        }


def typical_duration(durations: Sequence[float]) -> float | None:
    """The median of the recent reconcile durations, None when there are none."""
    return statistics.median(durations) if durations else None


def slow_limit(policy: HealthPolicy, durations: Sequence[float]) -> float:
    """How long a reconcile may run before the loop counts as stuck."""
    typical = typical_duration(durations)
    return max(policy.slow_floor_s, policy.slow_factor * typical) if typical else policy.slow_floor_s


def assess(probe: LoopProbe, policy: HealthPolicy) -> Health:
    """Judge one probe of the loop."""
    typical = typical_duration(probe.recent_durations_s)
    limit = slow_limit(policy, probe.recent_durations_s)
    details: dict[str, Any] = {
        "running_s": None if probe.running_s is None else round(probe.running_s, 1),
        "typical_s": None if typical is None else round(typical, 3),
        "slow_after_s": round(limit, 1),
    }
    if not probe.started:
        return Health(False, ("the loop has not started",), details)

    reasons: list[str] = []
    for thread in probe.threads:
        if not thread.alive:
            reasons.append(f"the {thread.name} thread is not running")
        elif thread.tick_age_s is not None and thread.tick_age_s > 2 * thread.period_s + policy.tick_slack_s:
            reasons.append(
                f"the {thread.name} thread has not gone round its loop for {thread.tick_age_s:.0f} s "
                f"(it should every {thread.period_s:g} s)"
            )
    if probe.running_s is not None and probe.running_s > limit:
        usual = f"usually {typical:.2g} s" if typical is not None else "no earlier reconcile to compare"
        reasons.append(
            f"a reconcile (trigger {probe.running_trigger}) has run for {probe.running_s:.0f} s "
            f"({usual}; limit {limit:.0f} s): see the watch log for its stage"
        )
    if probe.pending and probe.pending_idle_s is not None and probe.pending_idle_s > policy.pending_slack_s:
        reasons.append(
            f"trigger(s) {','.join(probe.pending)} have waited {probe.pending_idle_s:.0f} s "
            "for an idle worker that takes nothing"
        )
    return Health(not reasons, tuple(reasons), details)


@dataclass(frozen=True)
class SipProbe:
    """One OPTIONS to the PBX's own transport: where, and how long the answer took (None: none)."""

    target: str  # host:port/udp
    answered_s: float | None


def with_sip(health: Health, probe: SipProbe | None) -> Health:
    """The loop's verdict plus "the PBX serves SIP": unhealthy when the OPTIONS got no answer."""
    if probe is None:
        return health
    details = {
        **health.details,
        "sip": {
            "target": probe.target,
            "answers": probe.answered_s is not None,
            "rtt_ms": None if probe.answered_s is None else round(probe.answered_s * 1000, 1),
        },
    }
    if probe.answered_s is not None:
        return Health(health.ok, health.reasons, details)
    reason = f"the PBX does not answer SIP on {probe.target} (still loading after a restart, or down)"
    return Health(False, (*health.reasons, reason), details)
