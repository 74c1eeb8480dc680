"""The journal of an apply in progress, and the last verified copy kept aside for rollback.

Both live in `<managed_dir>/.gitops/`, on the same filesystem as the managed files:

- `journal.json` is written (and synced) before the first rename of a swap and removed by the same
  exec that records `state.json`. Whoever finds it knows that an apply was interrupted between the
  two (Asterisk or the reconciler killed): the files on disk may be new and unverified. The next
  apply verifies them before recording anything, then rolls forward (its own render, verified) or
  back (the last verified copy).
- `last-good` is a symlink to `good-<token>/`, a directory of *hard links* of the managed files and
  `state.json` of the last fully verified revision, taken when that revision is recorded. A hard link
  needs no data blocks, and neither does putting it back (link + rename), so a rollback works on a
  full disk, and it never re-reads a file a failed write may have damaged: the applier only ever
  replaces managed files by rename(2), which leaves the linked inode alone. Before use each link is
  checked against the hash its `state.json` recorded (a hand edit in place would change both).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from reconciler.asterisk.lease import TXN_DIR, release_step

JOURNAL_FILE = "journal.json"
LAST_GOOD = "last-good"
GOOD_PREFIX = "good-"
TMP_PREFIX = "tmp-"
STATE_FILE = "state.json"
# Paths (relative to the managed dir) that the read exec returns besides the managed files.
JOURNAL_PATH = f"{TXN_DIR}/{JOURNAL_FILE}"
LAST_GOOD_STATE_PATH = f"{TXN_DIR}/{LAST_GOOD}/{STATE_FILE}"


@dataclass(frozen=True)
class Journal:
    """An apply that swapped files and has not recorded them yet."""

    revision: str
    who: str
    started_at: str
    files: Mapping[str, str] = field(default_factory=dict)  # name → sha256 of the new content
    restart: bool = False  # the apply needed a restart (a transport changed)
    boot_id: str | None = None  # the Asterisk running when it was written (see restart.PendingRestart)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "revision": self.revision,
            "who": self.who,
            "started_at": self.started_at,
            "files": dict(sorted(self.files.items())),
            "restart": self.restart,
            "boot_id": self.boot_id,
        }
        return json.dumps(data, indent=2) + "\n"

    def describe(self) -> str:
        return f"an apply of revision {self.revision} by {self.who} at {self.started_at}"


def parse_journal(text: str | None) -> Journal | None:
    """`journal.json` text → Journal; None when absent. An unreadable journal still counts."""
    if text is None:
        return None
    try:
        data = json.loads(text)
        return Journal(
            revision=str(data["revision"]),
            who=str(data.get("who", "?")),
            started_at=str(data.get("started_at", "")),
            files={str(k): str(v) for k, v in (data.get("files") or {}).items()},
            restart=bool(data.get("restart", False)),
            boot_id=str(data["boot_id"]) if data.get("boot_id") else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return Journal(revision="?", who="?", started_at="?")


def new_journal(revision: str, who: str, files: Mapping[str, str], restart: bool) -> Journal:
    return Journal(revision, who, datetime.now(UTC).isoformat(timespec="seconds"), dict(files), restart)


BOOT_PLACEHOLDER = "@BOOT_ID@"


def write_journal_step(journal: Journal) -> str:
    """Shell (after the lease step): write and sync `journal.json` before anything is renamed.
    The boot id of the running Asterisk (`$BOOT`, set by the exec's prelude) is filled in there."""
    text = shlex.quote(replace(journal, boot_id=BOOT_PLACEHOLDER).to_json())
    return (
        f'JERR=$( {{ printf %s {text} | sed "s|{BOOT_PLACEHOLDER}|$BOOT|" '
        f'| dd of="$G/{JOURNAL_FILE}.tmp" status=none '
        f'&& sync "$G/{JOURNAL_FILE}.tmp" && mv -f "$G/{JOURNAL_FILE}.tmp" "$G/{JOURNAL_FILE}"; }} 2>&1 ) '
        f'|| {{ rm -f "$G/{JOURNAL_FILE}.tmp"; '
        f'echo "FAILED write-failed: {JOURNAL_PATH}: $JERR"; STOP=1; }}; '
        '[ -n "$STOP" ] || { JOURNALED=1; echo journaled; }'
    )


def settle_step(names: list[str], *, keep_last_good: bool) -> str:
    """Shell (after `state.json` was renamed into place): refresh the last verified copy (hard links
    of `names` and state.json), remove the journal, release the lease. A failure to refresh the copy
    is reported (`last-good-failed`) but does not undo the record: the older copy stays in place."""
    links = " && ".join(
        f'ln -f "$D"/{shlex.quote(n)} "$N"/{shlex.quote(n)}' for n in [*sorted(names), STATE_FILE]
    )
    refresh = (
        f'N="$G/{GOOD_PREFIX}$ME"; rm -rf "$N"; '
        f'LGERR=$( {{ mkdir -m 0750 "$N" && {links} && ln -sfn "{GOOD_PREFIX}$ME" "$G/{LAST_GOOD}.tmp" '
        f'&& mv -fT "$G/{LAST_GOOD}.tmp" "$G/{LAST_GOOD}"; }} 2>&1 ) '
        f'&& {{ for x in "$G"/{GOOD_PREFIX}*; do [ "$x" = "$N" ] || rm -rf "$x"; done; }} '
        f'|| {{ rm -rf "$N"; echo "last-good-failed: $LGERR"; }}; '
    )
    return (
        (refresh if not keep_last_good else "")
        + f'rm -f "$G/{JOURNAL_FILE}"; '
        + release_step()
        + "; echo settled"
    )
