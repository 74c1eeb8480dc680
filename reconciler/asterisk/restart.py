"""When the restart that a transport change needs may happen: the admin's policy, and a pending one.

PJSIP does not reload transports, so a changed transport needs an Asterisk restart. Everything else
of the revision is reloaded (and verified) first, at once; the restart itself follows the policy:

- `idle` (default): `core restart when convenient`. Asterisk waits until no channel is left and then
  restarts; unlike `core restart gracefully` it does not call `ast_begin_shutdown()` (it uses
  SHUTDOWN_REALLY_NICE), so new calls keep being accepted while it waits (checked against Asterisk
  22.10 here: a call placed during the wait was answered, and the restart came about 1 s after the
  last call ended). The apply waits up to `--restart-wait` seconds; after that the restart stays
  scheduled in Asterisk, `state.json` records it as pending, and the next apply or the watch loop
  verifies the revision once the restart has happened.
- `now`: `core restart now`, dropping the calls in progress.
- `refuse`: when calls are up, apply nothing and fail (retry later); an idle PBX restarts at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

RESTART_WHEN_IDLE = "core restart when convenient"
RESTART_NOW = "core restart now"
CHANNELS_COUNT = "core show channels count"
DEFAULT_RESTART_WAIT_S = 120.0
BOOT_TIMEOUT_S = 120.0  # a 10,000-endpoint config took ~7 s to boot here

_ACTIVE_CALLS = re.compile(r"^(\d+) active calls?", re.M)


class RestartPolicy(StrEnum):
    IDLE = "idle"
    NOW = "now"
    REFUSE = "refuse"

    @property
    def command(self) -> str:
        return RESTART_NOW if self is RestartPolicy.NOW else RESTART_WHEN_IDLE


def active_calls(output: str) -> int | None:
    """`core show channels count` → the number of active calls (None when not in the answer)."""
    match = _ACTIVE_CALLS.search(output)
    return int(match[1]) if match else None


@dataclass(frozen=True)
class PendingRestart:
    """A restart that a recorded revision still needs, kept in `state.json`.

    `boot_id` names the Asterisk that was asked to restart: the modification time of its control
    socket, which Asterisk creates anew at every start (also after `core restart`, which keeps
    PID 1). An Asterisk with another boot id has restarted since.
    """

    reason: str
    requested_at: str
    boot_id: str
    policy: str = RestartPolicy.IDLE.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "requested_at": self.requested_at,
            "boot_id": self.boot_id,
            "policy": self.policy,
        }

    def done(self, boot_id_now: str | None) -> bool:
        """Whether the Asterisk running now started after this restart was asked for."""
        return bool(boot_id_now) and boot_id_now != self.boot_id


def parse_pending(data: Any) -> PendingRestart | None:
    if not isinstance(data, dict):
        return None
    try:
        return PendingRestart(
            reason=str(data.get("reason", "")),
            requested_at=str(data.get("requested_at", "")),
            boot_id=str(data["boot_id"]),
            policy=str(data.get("policy", RestartPolicy.IDLE.value)),
        )
    except (KeyError, TypeError, ValueError):
        return None
