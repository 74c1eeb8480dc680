"""One apply at a time per PBX: a lease kept in the PBX's own managed volume.

The lock lives with the PBX, not with whoever applies: `<managed_dir>/.gitops/lease`, reached
through the same `docker exec` as everything else, so the watch loop, a CLI on a laptop and CI jobs
on other hosts all see the same one. It is a *lease* (holder, since, expiry), because a holder can
crash between two execs; and it is *fenced*: every exec that changes something first takes
`flock(1)` on `<managed_dir>/.gitops/lock` (only for the duration of that exec) and checks, under
it, that the lease is free, expired or already ours, before it writes, renames, reloads or
records anything. The time is the container's clock (`date +%s`), the one clock every holder shares.

A container restart kills every exec running in it, so a lease taken in an earlier run of the
container (`box`: the start time of its PID 1, which `core restart` keeps) is void at once. A
sidecar (`--control local`) runs its scripts in its own container, whose PID 1 is the sidecar's:
its box is `local:<hostname>:<start time of the sidecar's PID 1>`, the run whose death kills its
scripts. Boxes of different kinds (`box_kind`) say nothing about each other: a docker-exec holder
and a sidecar see each other's lease as held until it expires.

The lease file is `key=value` lines, written by the shell in the container (tmp + rename, so
readers never see half of it):

    holder=<16 hex: this apply's token>
    who=<user@host pid N (reconciler apply)>
    revision=<revision being applied>
    doing=<what it does now, e.g. waiting for 1 call to end before restarting>
    since=<epoch>
    expires=<epoch>
    box=<start time of the container's PID 1, in clock ticks; local:HOST:TICKS for a sidecar>
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shlex
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

TXN_DIR = ".gitops"  # in the managed dir: lock, lease, journal, last-good copy, temp files
LEASE_FILE = "lease"
# A holder renews its lease in every exec and every few seconds while it waits for a restart;
# the longest gap is one exec (a 10,000-endpoint reload or restart took 7-9 s here), so 30 s leaves
# room, and a crashed holder blocks the next apply for at most this long.
LEASE_TTL_S = 30
# Waiting for flock(1) itself: only another exec's transaction step holds it, for at most a reload.
FLOCK_WAIT_S = 20
DEFAULT_LOCK_WAIT_S = 60.0

# The `box` of whoever runs the exec (see above): a shell expression evaluated where it runs.
_PID1_START = "$(cut -d' ' -f22 /proc/1/stat 2>/dev/null)"
CONTAINER_BOX = _PID1_START
LOCAL_BOX = f"local:$(cat /proc/sys/kernel/hostname 2>/dev/null):{_PID1_START}"

_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:@()/+,=#-]")
_TOKEN = re.compile(r"^[0-9a-f]{16}$")

LeaseStatus = Literal["ok", "busy", "lost", "error"]


def _clean(text: str, limit: int = 120) -> str:
    """A value safe on one line of the lease file (and in a shell single-quoted string)."""
    return _UNSAFE.sub("_", text)[:limit]


@dataclass(frozen=True)
class Holder:
    """Who applies: a fresh random token per apply, and a description a person can act on."""

    token: str
    who: str

    @classmethod
    def new(cls, role: str = "reconciler apply") -> Holder:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        who = f"{user}@{socket.gethostname()} pid {os.getpid()} ({role})"
        return cls(secrets.token_hex(8), _clean(who))


def box_kind(box: str) -> str:
    """`container` for a bare PID-1 start time, else the prefix before the first ':'."""
    return box.partition(":")[0] if ":" in box else "container"


@dataclass(frozen=True)
class Lease:
    """A lease as read from the PBX's lease file."""

    holder: str
    who: str
    revision: str
    doing: str
    since: int
    expires: int
    box: str = ""

    def expired(self, now: int) -> bool:
        return self.expires <= now

    def void(self, now: int | None, box: str | None) -> bool:
        """Whether nobody can be holding this lease any more: it expired, or it was taken in an
        earlier run of the container (a container restart kills every exec in it)."""
        return (now is not None and self.expired(now)) or bool(
            box and self.box and box != self.box and box_kind(box) == box_kind(self.box)
        )

    def describe(self, now: int | None = None) -> str:
        """`who`, since when, doing what (and when it expires, given the container's `now`)."""
        since = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
        text = f"{self.who}, since {since}" + (f" ({self.doing})" if self.doing else "")
        if now is not None:
            left = self.expires - now
            text += f", lease expires in {left} s" if left > 0 else ", lease expired"
        return text


def parse_lease(text: str | None) -> Lease | None:
    """The lease file's text → Lease; None when absent or not a lease."""
    if not text:
        return None
    fields = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    holder = fields.get("holder", "")
    if not _TOKEN.match(holder):
        return None
    try:
        since, expires = int(fields.get("since", "0")), int(fields.get("expires", "0"))
    except ValueError:
        return None
    return Lease(
        holder,
        fields.get("who", "?"),
        fields.get("revision", ""),
        fields.get("doing", ""),
        since,
        expires,
        fields.get("box", ""),
    )


@dataclass(frozen=True)
class LeaseAnswer:
    """What the lease step of a transaction exec answered."""

    status: LeaseStatus
    lease: Lease | None = None  # the other holder's lease (busy, lost)
    now: int | None = None  # the container's clock
    error: str = ""
    took_over: Lease | None = None  # an expired lease of another holder that this exec replaced


def parse_lease_answer(output: str) -> LeaseAnswer:
    """Parse the output of `lease_step`."""
    head, _, rest = output.partition("\n")
    words = head.split()
    status = words[0] if words else ""
    now = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
    if status == "lease-ok":
        return LeaseAnswer("ok", now=now, took_over=parse_lease(rest))
    if status in ("lease-busy", "lease-lost"):
        return LeaseAnswer("busy" if status == "lease-busy" else "lost", parse_lease(rest), now)
    if status == "lock-error":
        return LeaseAnswer("error", now=now, error=rest.strip() or "unknown error")
    return LeaseAnswer("error", now=now, error=output.strip()[-300:] or "no answer")


def shell_functions(
    managed_dir: str, holder: Holder, revision: str, ttl_s: int = LEASE_TTL_S, box_expr: str = CONTAINER_BOX
) -> str:
    """Shell variables and functions the lease and journal steps of one exec use.

    `lease_write DOING` (re)writes our lease with a fresh expiry; `STOP` is set by the first step
    that fails, and every later step of the exec is skipped (see `guard`).
    """
    d = shlex.quote(managed_dir.rstrip("/") or "/")
    return "\n".join(
        [
            f"D={d}; G={d}/{TXN_DIR}; ME={shlex.quote(holder.token)}; STOP=",
            f"WHO={shlex.quote(_clean(holder.who))}; REV={shlex.quote(_clean(revision))}; TTL={int(ttl_s)}",
            f'SINCE=$(date +%s); BOX="{box_expr}"',
            'box_kind() { case "$1" in *:*) printf %s "${1%%:*}" ;; *) printf container ;; esac; }',
            "lease_write() {",
            "  LERR=$( { printf 'holder=%s\\nwho=%s\\nrevision=%s\\ndoing=%s\\n"
            "since=%s\\nexpires=%s\\nbox=%s\\n' "
            '"$ME" "$WHO" "$REV" "$1" "$SINCE" "$(( $(date +%s) + TTL ))" "$BOX" > "$G/lease.tmp" '
            '&& mv -f "$G/lease.tmp" "$G/lease"; } 2>&1 )',
            "}",
        ]
    )


LeaseMode = Literal["acquire", "fence", "check"]


def lease_step(mode: LeaseMode, doing: str, flock_wait_s: float = FLOCK_WAIT_S) -> str:
    """Shell step: take flock on the lock file (held until the exec ends), then the lease.

    `acquire`: take the lease when it is free, expired or ours (anything else: `lease-busy` and the
    holder's lease). `fence`: the lease must still be ours, expired or not (nobody took it over);
    else `lease-lost`. `check`: only make sure nobody else holds it (tools writing one file).
    Prints `lease-ok <now>` on success, followed by an expired lease it replaced.
    """
    wait = max(1, int(flock_wait_s))
    others = (
        '[ -n "$LH" ] && [ "$LH" != "$ME" ]'
        if mode == "fence"
        else '[ -n "$LH" ] && [ "$LH" != "$ME" ] && [ "${LE:-0}" -gt "$NOW" ] && '
        '{ [ "${LB:-$BOX}" = "$BOX" ] || [ "$(box_kind "$LB")" != "$(box_kind "$BOX")" ]; }'
    )
    lost = "lease-lost" if mode == "fence" else "lease-busy"
    missing = ' || [ -z "$LH" ]' if mode == "fence" else ""
    # `check` holds no lease: later steps (a restart's renewals) must not write one either.
    no_lease = ["lease_write() { true; }"] if mode == "check" else []
    return "\n".join(
        [
            *no_lease,
            'if ! ERR=$(mkdir -p "$G" 2>&1 && chmod 0750 "$G" 2>&1 && touch "$G/lock" 2>&1); then',
            '  echo "lock-error $(date +%s)"; echo "cannot create $G/lock: $ERR"; STOP=1',
            'elif ! command exec 9>>"$G/lock"; then',
            '  echo "lock-error $(date +%s)"; echo "cannot open $G/lock"; STOP=1',
            f"elif ! flock -w {wait} 9; then",
            f'  echo "lock-error $(date +%s)"; echo "another exec held {TXN_DIR}/lock for {wait} s"; STOP=1',
            "else",
            '  NOW=$(date +%s); LH=$(sed -n "s/^holder=//p" "$G/lease" 2>/dev/null)',
            '  LE=$(sed -n "s/^expires=//p" "$G/lease" 2>/dev/null); case "$LE" in *[!0-9]*|"") LE=0 ;; esac',
            '  LB=$(sed -n "s/^box=//p" "$G/lease" 2>/dev/null)',
            f"  if {others}{missing}; then",
            f'    echo "{lost} $NOW"; cat "$G/lease" 2>/dev/null; STOP=1',
            "  else",
            '    if [ "$LH" = "$ME" ]; then S=$(sed -n "s/^since=//p" "$G/lease"); SINCE=${S:-$SINCE}; fi',
            '    OLD=; [ -n "$LH" ] && [ "$LH" != "$ME" ] && OLD=$(cat "$G/lease" 2>/dev/null)',
            f"    if lease_write {shlex.quote(_clean(doing))}; then",
            '      echo "lease-ok $NOW"; [ -n "$OLD" ] && printf "%s\\n" "$OLD"',
            "    else",
            '      echo "lock-error $NOW"; echo "cannot write $G/lease: $LERR"; STOP=1',
            "    fi",
            "  fi",
            "fi",
        ]
    )


def release_step() -> str:
    """Shell fragment: give the lease up if it is still ours."""
    return '[ "$(sed -n "s/^holder=//p" "$G/lease" 2>/dev/null)" = "$ME" ] && rm -f "$G/lease"; true'


def abandon_step() -> str:
    """Shell, the last step of every transaction exec: when a step failed before anything was
    renamed, nothing changed, so the journal this exec wrote is removed and the lease released."""
    return (
        'if [ -n "$STOP" ] && [ -z "$MOVED" ]; then [ -n "$JOURNALED" ] && rm -f "$G/journal.json"; '
        + release_step()
        + "; fi; true"
    )


def guard(step: str) -> str:
    """Run `step` only if no earlier step of this exec set STOP; else print `skipped`."""
    return f'if [ -z "$STOP" ]; then\n{step}\nelse echo skipped; fi'
