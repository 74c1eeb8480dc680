"""The record of the last verified apply: `<managed_dir>/state.json` in the container.

The one definition of that record (its JSON keys are an interface: status, doctor, the watch loop
and users' scripts read them). Written last, by the record stage, only after verification passed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.asterisk.client import AsteriskClient
from reconciler.asterisk.journal import STATE_FILE
from reconciler.asterisk.restart import PendingRestart, parse_pending

__all__ = ["STATE_FILE", "LiveState", "parse_live_state", "read_live_state"]


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
