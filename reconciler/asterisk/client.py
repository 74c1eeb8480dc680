"""Talk to Asterisk in its container: CLI commands, managed files, the log, restarts.

Every `docker exec` costs 70-90 ms, far more than a small reload (~10 ms), so this client batches:
one exec runs a whole shell script of steps (CLI commands, file renames, a reload with the log
lines it produced, the verification queries) and the outputs are split on a separator line that
no Asterisk output contains. Files travel inside the script or by `put_archive`, land in a temp
directory of the managed volume, are checked (every write, its hash, owner and mode) and only then
moved into place by rename(2), so Asterisk never reads a half-written file.

A step that changes something runs inside a *transaction exec* (`AsteriskClient.transact`): its
first step takes flock(1) and the PBX's lease (`reconciler.asterisk.lease`); the first step that fails sets
`STOP` and every later step of that exec is skipped, so nothing is renamed after a failed write and
nothing is reloaded after a failed rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
import secrets as _random
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.asterisk import lease as lease_mod
from reconciler.asterisk import sounds as sounds_mod
from reconciler.asterisk import store as store_mod
from reconciler.asterisk.executor import (
    CONTROL_SOCKET,
    DEFAULT_CONTROL,
    ControlMode,
    DockerExecutor,
    Executor,
    kill_signal_codes,
    make_executor,
)
from reconciler.asterisk.journal import (
    JOURNAL_PATH,
    LAST_GOOD,
    LAST_GOOD_STATE_PATH,
    STATE_FILE,
    TMP_PREFIX,
    Journal,
    settle_step,
    write_journal_step,
)
from reconciler.asterisk.lease import (
    LEASE_FILE,
    TXN_DIR,
    Holder,
    LeaseAnswer,
    LeaseMode,
    abandon_step,
    guard,
    parse_lease_answer,
)
from reconciler.asterisk.providers_health import HostLookup, lookup_step, parse_lookups
from reconciler.asterisk.restart import BOOT_TIMEOUT_S, CHANNELS_COUNT, RestartPolicy
from reconciler.asterisk.store import StoreRead
from reconciler.desired.render import RENDERED_FILES
from reconciler.errors import AsteriskUnavailable, ManagedWriteFailed, ReconcilerError
from reconciler.markers import (
    DIALPLAN_QUERY,
    PJSIP_MARKER_SED,
    aor_found,
    dialplan_revision,
    pjsip_marker_query,
)
from reconciler.settings import Settings

UNREACHABLE_MARKER = "Unable to connect to remote asterisk"
# Rendered files not named *.conf (msmtprc): read back and written like the .conf files.
_OTHER_RENDERED = tuple(n for n in RENDERED_FILES if not n.endswith(".conf"))
MANAGED_NAMES = re.compile(
    r"^(?:[\w.-]+\.conf|state\.json" + "".join(f"|{re.escape(n)}" for n in _OTHER_RENDERED) + r")$"
)
LEASE_PATH = f"{TXN_DIR}/{LEASE_FILE}"
# Besides the managed files, the read exec returns these records (journal, lease, last good copy).
_META_PATHS = (JOURNAL_PATH, LEASE_PATH, LAST_GOOD_STATE_PATH)
# Asterisk logs through a logger thread: when `asterisk -rx` returns, its lines may not be in the
# file yet. After a reload the script makes Asterisk log LOG_BARRIER (see `_flush_barrier_script`)
# and waits, bounded, until that line reaches the file.
BARRIER_COMMAND = "module reload udptl"
LOG_BARRIER = "Reloading module 'udptl'"
LOG_FLUSH_TIMEOUT_S = 3.0
# Files and store SQL up to this size (together) are written by the exec's own script instead of
# an upload.
INLINE_LIMIT_BYTES = 48 * 1024
# The whole script is ONE argv string of `sh -c`: Linux refuses one longer than MAX_ARG_STRLEN
# (32 pages, 128 KiB) with E2BIG ("argument list too long"). A transaction script above
# SCRIPT_LIMIT_BYTES (the texts inline, the steps and their separators, all counted) is uploaded
# into its temp dir as SCRIPT_FILE and run from there.
ARGV_LIMIT_BYTES = 128 * 1024
SCRIPT_LIMIT_BYTES = 96 * 1024
SCRIPT_FILE = "txn.sh"
FILE_OWNER = "asterisk:asterisk"
FILE_MODE = "0640"  # managed files and state.json hold passwords: never world-readable
# msmtp refuses a file that holds a password and is readable by anyone but its owner.
OWNER_ONLY_FILES = ("msmtprc",)
STALE_TMP_MINUTES = 10  # temp dirs of a crashed apply older than this are removed by the next one
_FAILED = re.compile(r"^FAILED (.*)$", re.M)
STORE_SQL = "store.sql"  # the store's SQL, staged in the transaction's temp dir


class AsteriskCommandFailed(ReconcilerError):
    """A shell step in the container failed (e.g. a rename); not Asterisk refusing config."""


class AsteriskWentAway(AsteriskUnavailable):
    """Asterisk (or its container) stopped answering in the middle of a batch.

    `outputs` are the outputs of the steps that completed, so a caller can tell what was done.
    """

    def __init__(self, message: str, hint: str, outputs: Sequence[str] = ()) -> None:
        super().__init__(message, hint)
        self.outputs = tuple(outputs)
        self.completed: dict[str, str] = {}  # by step name, for a transaction exec


@dataclass(frozen=True)
class ExecResult:
    """What one batched exec returned: each step's output, in order."""

    outputs: tuple[str, ...]
    exit_code: int


@dataclass(frozen=True)
class ReloadResult:
    """Outputs of a reload batch: each reload command's reply, the log lines it produced, the
    outputs of the queries that ran after it, and whether Asterisk was restarted."""

    reload_outputs: tuple[str, ...]
    log_lines: tuple[str, ...]
    query_outputs: tuple[str, ...]
    restarted: bool = False
    log_complete: bool = True


@dataclass(frozen=True)
class LiveMarkers:
    """The revision markers Asterisk has live.

    `pjsip_declared`: the rev12 the managed pjsip.conf on disk declares (None: no file/marker);
    `pjsip_rev12`: the same, when `pjsip show aor gitops-rev-<rev12>` finds it (Asterisk took it);
    `dialplan_rev12`: what `dialplan show revision@gitops-meta` says (None: no dialplan marker).
    `lookups`: the host names the same exec was asked to resolve, and whether they did.
    `sounds`: Asterisk's sound names when the exec was asked for them (`reconciler.asterisk.sounds`).
    """

    pjsip_rev12: str | None
    pjsip_declared: str | None
    dialplan_rev12: str | None
    lookups: Mapping[str, HostLookup] = field(default_factory=dict)
    sounds: frozenset[str] | None = None


@dataclass(frozen=True)
class LiveRead:
    """Everything one read exec learns: the managed files and `state.json`, the markers Asterisk
    has live, the transaction records (journal, lease, last verified copy's state.json), the
    container's clock and the boot id of the running Asterisk."""

    files: dict[str, str]
    markers: LiveMarkers
    journal_text: str | None = None
    lease_text: str | None = None
    last_good_state_text: str | None = None
    now: int | None = None
    boot_id: str | None = None
    box: str | None = None  # the container run (see reconciler.asterisk.lease)
    store: StoreRead = field(default_factory=lambda: StoreRead(None, None, {}))


@dataclass(frozen=True)
class FileSource:
    """What to put at one managed name: `text` (sent inline or uploaded), or a hard link of the
    last verified copy whose content hashes to `link_sha` (falling back to `text`, if any)."""

    text: str | None = None
    link_sha: str | None = None

    @property
    def sha(self) -> str | None:
        return sha256_text(self.text) if self.text is not None else None


@dataclass(frozen=True)
class RestartRequest:
    policy: RestartPolicy
    wait_s: float
    reason: str


@dataclass(frozen=True)
class TxnOutcome:
    """What a transaction exec did.

    `stopped` names the first step that failed (None: every step ran) and `detail` its `FAILED`
    line. `swapped`: the files were renamed into place (and `renamed` which, if the rename of one
    failed). `restart` is `restarted <s>` / `pending <calls>` / `not-restarted`.
    """

    lease: LeaseAnswer
    stopped: str | None = None
    detail: str = ""
    swapped: bool = False
    renamed: tuple[str, ...] = ()
    calls: int | None = None
    reload: ReloadResult | None = None
    restart: str = ""
    recorded: bool = False
    warnings: tuple[str, ...] = ()
    outputs: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lease.status == "ok" and self.stopped is None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_outputs(text: str, separator: str) -> list[str]:
    """Split the output of a batch whose every step was followed by `\\n<separator>\\n`."""
    parts = text.split("\n" + separator + "\n")
    # The text after the last separator is whatever came after the last step (normally nothing).
    return parts[:-1] if len(parts) > 1 else parts


def batch_script(steps: Sequence[str]) -> tuple[str, str]:
    """(the shell script of ONE exec running `steps` in order, each followed by a separator line;
    that separator): what `AsteriskClient.run_steps` runs and `split_outputs` splits."""
    separator = f"--8<-- gitops-{_random.token_hex(8)} --8<--"
    echo = f"printf '\\n%s\\n' {shlex.quote(separator)}"
    return "\n".join(f"{{ {step}\n}}; {echo}" for step in steps), separator


def rx_command(command: str) -> str:
    """A shell step that runs one Asterisk CLI command, for `AsteriskClient.run_steps`."""
    return f"asterisk -rx {shlex.quote(command)} 2>&1"


def _uploads(files: Mapping[str, FileSource], record: str | None, store_sql: str | None) -> dict[str, str]:
    """name → text of what a transaction sends by upload rather than inside its script: every
    file text when they exceed INLINE_LIMIT_BYTES together, and the store SQL when it does together
    with what stays inline (the record, and the file texts when they stay)."""
    texts = {n: src.text for n, src in files.items() if src.text is not None}
    file_bytes = sum(len(t.encode()) for t in texts.values())
    out = texts if file_bytes > INLINE_LIMIT_BYTES else {}
    inline_bytes = (0 if out else file_bytes) + len((record or "").encode())
    if store_sql is not None and len(store_sql.encode()) + inline_bytes > INLINE_LIMIT_BYTES:
        out = {**out, STORE_SQL: store_sql}
    return out


def _free_space() -> str:
    """Shell expression: free space of the managed dir, for write errors."""
    return '$(df -Pk "$D" 2>/dev/null | awk \'NR==2 {print $4 " KiB free of " $2 " KiB"}\')'


class AsteriskClient:
    """One Asterisk, its scripts run by an executor (`reconciler.asterisk.executor`): `docker exec`
    in its container (the default), or `sh -c` right here beside it (`LocalExecutor`, the sidecar).

    `exec_count` counts script runs (`docker exec` calls) and `transfer_count` file uploads, so callers can
    report what an apply cost.
    """

    def __init__(
        self,
        container: str,
        managed_dir: str = "/etc/asterisk/managed",
        log_path: str = "/var/log/asterisk/messages.log",
        docker_client: Any = None,
        executor: Executor | None = None,
    ) -> None:
        self.container_name = container
        self.managed_dir = managed_dir.rstrip("/") or "/"
        self.log_path = log_path
        self.file_owner = FILE_OWNER
        self.control_socket = CONTROL_SOCKET
        self.executor: Executor = executor or DockerExecutor(container, docker_client)
        self.exec_count = 0
        self.transfer_count = 0

    # --- plumbing -------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """How messages name this Asterisk (the container's name, or the local one)."""
        return self.executor.label

    def start_hint(self) -> str:
        return self.executor.start_hint()

    def logs_hint(self) -> str:
        return self.executor.logs_hint()

    def _exec(self, script: str) -> tuple[int, str]:
        self.exec_count += 1
        return self.executor.run(script)

    def _container_went_away(self) -> str | None:
        """Why Asterisk is not the one that ran the last exec (stopped, restarted), or None."""
        return self.executor.went_away()

    def run_steps(self, steps: Sequence[str], *, upload_to: str | None = None) -> ExecResult:
        """Run shell `steps` in ONE exec; return each step's combined stdout+stderr.

        With `upload_to` (a temp dir of the managed volume), a script longer than
        SCRIPT_LIMIT_BYTES is uploaded there and run from the file (argv holds 128 KiB at most);
        a refused upload raises `ManagedWriteFailed` before anything ran.

        Raises `AsteriskWentAway` (an AsteriskUnavailable) when the batch broke off because the
        container stopped or restarted, or when a step printed "Unable to connect to remote
        asterisk" (Asterisk is not running, or still booting); the completed steps' outputs are in
        the exception.
        """
        script, separator = batch_script(steps)
        if upload_to is not None and len(script.encode()) > SCRIPT_LIMIT_BYTES:
            path = posixpath.join(upload_to, SCRIPT_FILE)
            self._upload({SCRIPT_FILE: script}, upload_to)
            script = f"sh {shlex.quote(path)}"
        code, text = self._exec(script)
        outputs = split_outputs(text, separator)
        if len(outputs) != len(steps):
            done = outputs if separator in text else []
            gone = self._container_went_away()
            if gone is not None or code in kill_signal_codes():
                raise AsteriskWentAway(
                    f"Asterisk in {self.label} went away during a batch of commands "
                    f"({gone or f'the exec was killed, exit {code}'}; "
                    f"{len(done)} of {len(steps)} steps done)",
                    self.start_hint(),
                    done,
                )
            raise AsteriskCommandFailed(
                f"the batch in {self.label} stopped after {len(done)} of {len(steps)} steps "
                f"(exit {code}): {text[-500:]!r}",
                f"see {self.logs_hint()} and retry",
            )
        if any(UNREACHABLE_MARKER in out for out in outputs):
            done = outputs[: next(i for i, out in enumerate(outputs) if UNREACHABLE_MARKER in out)]
            raise AsteriskWentAway(
                f"Asterisk in {self.label} is not answering on its control socket "
                "(not running, or still booting)",
                f"wait a few seconds and retry; if it persists, {self.logs_hint()} shows why",
                done,
            )
        return ExecResult(tuple(outputs), code)

    def run(self, *commands: str) -> list[str]:
        """Run Asterisk CLI `commands` (`asterisk -rx`) in one exec; return each one's output."""
        return list(self.run_steps([rx_command(c) for c in commands]).outputs)

    # --- reading --------------------------------------------------------------------------------

    def _read_files_step(self, extra: Iterable[str] = ()) -> str:
        d = shlex.quote(self.managed_dir)
        more = " ".join(shlex.quote(p) for p in extra)
        # One record per file: its name line, then its bytes (configs are text); records are
        # split by the caller on a per-file separator echoed by the same loop.
        return (
            f"cd {d} 2>/dev/null && for f in *.conf {' '.join(_OTHER_RENDERED)} state.json {more}; do "
            '[ -f "$f" ] || continue; printf "%s\\n" "$f"; cat -- "$f"; printf "\\n%s\\n" "$SEP_FILE"; done'
        )

    def _parse_files(self, text: str, file_separator: str) -> dict[str, str]:
        files: dict[str, str] = {}
        for record in split_outputs(text, file_separator):
            name, _, content = record.partition("\n")
            if name and (MANAGED_NAMES.match(name) or name in _META_PATHS):
                files[name] = content
        return files

    def read_managed_and_run(self, *commands: str) -> tuple[dict[str, str], list[str]]:
        """The managed `*.conf` and `state.json` files, and the outputs of `commands`, in ONE exec."""
        file_sep = f"--8<-- file-{_random.token_hex(8)} --8<--"
        steps = [f"SEP_FILE={shlex.quote(file_sep)}; {self._read_files_step()}"]
        steps += [rx_command(c) for c in commands]
        outputs = self.run_steps(steps).outputs
        # A file whose content has no trailing newline is still returned byte for byte:
        # split_outputs removes exactly the "\n" the loop added before each separator.
        text = outputs[0]
        return self._parse_files(text + ("\n" if not text.endswith("\n") else ""), file_sep), list(
            outputs[1:]
        )

    def _boot_wait_step(self, timeout_s: float) -> str:
        """Shell that waits (bounded) until Asterisk is fully booted; ~8 ms when it already is.

        Right after `docker start` or a restart the control socket does not exist yet for
        ~0.5 s (longer with a big config): waiting here beats failing with "unavailable".
        """
        tries = max(1, int(timeout_s / 0.1))
        return (
            f"i=0; until {rx_command('core waitfullybooted')} | grep -q 'fully booted'; do "
            f"i=$((i+1)); [ $i -ge {tries} ] && break; sleep 0.1; done; true"
        )

    def _boot_id_expr(self) -> str:
        return f"$(stat -c %y {shlex.quote(self.control_socket)} 2>/dev/null)"

    def read_live(
        self, boot_timeout_s: float = 15.0, resolve: Sequence[str] = (), sounds: bool = False
    ) -> LiveRead:
        """The managed files, which revision markers Asterisk has live, the transaction records,
        the container's clock and Asterisk's boot id, in ONE exec.

        The PJSIP marker is looked up under the name the live `pjsip.conf` declares
        (`[gitops-rev-<rev12>]`), so this answers "is Asterisk running the files on disk?".
        Waits up to `boot_timeout_s` for an Asterisk that is still booting. The host names in
        `resolve` are looked up inside the container in the same exec (`LiveMarkers.lookups`):
        a provider whose host does not resolve is reported even when pjsip.conf did not change.
        With `sounds`, it also lists Asterisk's sounds (`LiveMarkers.sounds`).
        """
        file_sep = f"--8<-- file-{_random.token_hex(8)} --8<--"
        pjsip = shlex.quote(posixpath.join(self.managed_dir, "pjsip.conf"))
        # R holds only revision characters (the sed class), so it is safe inside double quotes.
        sed = shlex.quote("s/" + PJSIP_MARKER_SED + "/\\1/p")
        marker_step = (
            f"R=$(sed -n {sed} {pjsip} 2>/dev/null | head -n 1); "
            f'echo "$R"; if [ -n "$R" ]; then asterisk -rx "{pjsip_marker_query("$R")}" 2>&1; fi'
        )
        steps = [
            self._boot_wait_step(boot_timeout_s),
            f"SEP_FILE={shlex.quote(file_sep)}; {self._read_files_step(_META_PATHS)}",
            marker_step,
            rx_command(DIALPLAN_QUERY),
            f'date +%s; echo "{self._boot_id_expr()}"; echo "{self.executor.box_expr}"',
        ]
        steps.append(store_mod.digest_step(store_mod.READ_COMMAND))
        if resolve:
            steps.append(lookup_step(resolve))
        if sounds:
            steps.append(rx_command(sounds_mod.SOUNDS_QUERY))
        try:
            outputs = self.run_steps(steps).outputs[1:]
        except AsteriskWentAway:
            raise
        except AsteriskCommandFailed:
            # Seen once under load here: an exec's output came back without one of its separators.
            # This exec only reads, so asking again is safe.
            outputs = self.run_steps(steps).outputs[1:]
        files = self._parse_files(outputs[0], file_sep)
        declared, _, aor_out = outputs[1].partition("\n")
        declared = declared.strip()
        pjsip_live = bool(declared) and aor_found(aor_out, declared)
        clock = outputs[3].split("\n")
        now = int(clock[0]) if clock and clock[0].strip().isdigit() else None
        boot_id = clock[1].strip() if len(clock) > 1 and clock[1].strip() else None
        box = clock[2].strip() if len(clock) > 2 and clock[2].strip() else None
        return LiveRead(
            files={n: t for n, t in files.items() if n not in _META_PATHS},
            markers=LiveMarkers(
                pjsip_rev12=declared if pjsip_live else None,
                pjsip_declared=declared or None,
                dialplan_rev12=dialplan_revision(outputs[2]),
                lookups=parse_lookups(outputs[5]) if resolve else {},
                sounds=sounds_mod.parse_sounds(outputs[-1]) if sounds else None,
            ),
            journal_text=files.get(JOURNAL_PATH),
            lease_text=files.get(LEASE_PATH),
            last_good_state_text=files.get(LAST_GOOD_STATE_PATH),
            now=now,
            boot_id=boot_id,
            box=box,
            store=store_mod.parse_read(outputs[4]),
        )

    def read_managed(self) -> dict[str, str]:
        """The managed `*.conf` files and `state.json` as {name: text} (one exec)."""
        files, _ = self.read_managed_and_run()
        return files

    # --- writing: staged in a temp dir of the volume, every step checked -----------------------

    def _tmp_dir(self) -> str:
        return posixpath.join(self.managed_dir, TXN_DIR, f"{TMP_PREFIX}{_random.token_hex(6)}")

    def _upload(self, files: Mapping[str, str], tmp_dir: str) -> None:
        """Put `files` into `tmp_dir` (a new subdirectory of `<managed>/.gitops`), by the executor
        (put_archive, or a direct write beside Asterisk). A refused write (e.g. the volume is full)
        raises `ManagedWriteFailed` with the executor's words."""
        self.transfer_count += 1
        self.executor.upload(self.managed_dir, files, tmp_dir)

    def _stage_step(self, files: Mapping[str, FileSource], tmp: str, uploaded: Iterable[str]) -> str:
        """Shell: put every file of `files` into `tmp` and check it: the write's exit status, the
        content's sha256 (a short write on a full disk is caught here even when the writer did not
        report it), owner and mode. Prints `FAILED write-failed: ...` and sets STOP on any error."""
        t = shlex.quote(tmp)
        uploaded = set(uploaded)
        writes = [f"mkdir -p -m 0750 {t}"]
        checks = []
        for name, src in sorted(files.items()):
            n = shlex.quote(name)
            inline = (
                f"printf %s {shlex.quote(src.text)} | dd of={t}/{n} status=none"
                if src.text is not None and name not in uploaded
                else ""
            )
            if src.link_sha is not None:
                good = f'"$G/{LAST_GOOD}/"{n}'
                link = (
                    f'[ "$(sha256sum < {good} 2>/dev/null | cut -c1-64)" = {shlex.quote(src.link_sha)} ] '
                    f"&& ln -f {good} {t}/{n}"
                )
                missing = f"the last verified copy of {name} does not match its recorded hash"
                fallback = inline or ("true" if name in uploaded else f"{{ echo '{missing}' >&2; false; }}")
                writes.append(f"{{ {link} || {fallback}; }}")
            elif inline:
                writes.append(inline)
            accepted = " | ".join(shlex.quote(h) for h in {src.sha, src.link_sha} if h)
            checks.append(
                f'case "$(sha256sum < {t}/{n} 2>/dev/null | cut -c1-64)" in {accepted}) ;; '
                f'*) echo "FAILED write-failed: {name}: the file written is not the file sent '
                f'({_free_space()})"; STOP=1 ;; esac'
            )
        owner, mode = shlex.quote(self.file_owner), FILE_MODE
        owner_only = "".join(f" && {{ [ ! -e {t}/{f} ] || chmod 0600 {t}/{f}; }}" for f in OWNER_ONLY_FILES)
        return "\n".join(
            [
                f"SERR=$( {{ {' && '.join(writes)}; }} 2>&1 ) || "
                f'{{ echo "FAILED write-failed: $SERR ({_free_space()})"; STOP=1; }}',
                'if [ -z "$STOP" ]; then',
                *checks,
                "fi",
                'if [ -z "$STOP" ]; then',
                f"  SERR=$( {{ chown {owner} {t}/* && chmod {mode} {t}/*{owner_only} && sync {t}/*; }} "
                "2>&1 ) || "
                '{ echo "FAILED write-failed: owner/mode/sync of the new files: $SERR"; STOP=1; }',
                "fi",
            ]
        )

    def _rename_step(self, names: Iterable[str], tmp: str, remove: Iterable[str] = ()) -> str:
        """Shell: rename each staged file into place (checked), then delete `remove`."""
        t = shlex.quote(tmp)
        parts = ['MOVED=""']
        for name in sorted(names):
            n = shlex.quote(name)
            parts.append(
                f'if [ -z "$STOP" ]; then MERR=$(mv -f {t}/{n} "$D"/{n} 2>&1) && MOVED="$MOVED {name}" || '
                f'{{ echo "FAILED rename-failed: {name}: $MERR"; STOP=1; }}; fi'
            )
        for name in sorted(remove):
            n = shlex.quote(name)
            parts.append(
                f'if [ -z "$STOP" ]; then MERR=$(rm -f "$D"/{n} 2>&1) && MOVED="$MOVED -{name}" || '
                f'{{ echo "FAILED rename-failed: {name}: $MERR"; STOP=1; }}; fi'
            )
        parts.append('echo "renamed$MOVED"; [ -n "$STOP" ] || echo swapped')
        return "\n".join(parts)

    def _check_step(self, expect: Mapping[str, str | None], refuse_calls: bool) -> str:
        """Shell: the live files are still those the plan was made from (compare-and-swap), stale
        temp dirs are removed, and (with `refuse_calls`) no call is up."""
        stale = f'-name "{TMP_PREFIX}*" -mmin +{STALE_TMP_MINUTES}'
        parts = [f'find "$G" -maxdepth 1 {stale} -exec rm -rf {{}} + 2>/dev/null']
        for name, sha in sorted(expect.items()):
            n = shlex.quote(name)
            if sha is None:
                cond = f'[ ! -e "$D"/{n} ]'
            else:
                cond = f'[ "$(sha256sum < "$D"/{n} 2>/dev/null | cut -c1-64)" = {shlex.quote(sha)} ]'
            parts.append(f'{cond} || {{ [ -n "$STOP" ] || echo "FAILED conflict {name}"; STOP=1; }}')
        if refuse_calls:
            parts.append(
                f"C=$({rx_command(CHANNELS_COUNT)} | sed -n 's/^\\([0-9]*\\) active call.*/\\1/p'); "
                'echo "calls ${C:-?}"; '
                '[ "${C:-0}" -gt 0 ] && { [ -n "$STOP" ] || echo "FAILED calls $C"; STOP=1; }'
            )
        parts.append("true")
        return "\n".join(parts)

    def write_managed(self, files: dict[str, str], remove: Iterable[str] = ()) -> None:
        """Write `files` into the managed dir, each by rename(2) over the old one, every step
        checked (no lease: for tools and tests; applies go through `transact`)."""
        for name in [*files, *remove]:
            if not MANAGED_NAMES.match(name):
                raise ValueError(f"not a managed file name: {name!r}")
        holder = Holder.new("write_managed")
        sources = {n: FileSource(text=t) for n, t in files.items()}
        outcome = self.transact(holder, "-", mode="check", files=sources, remove=remove)
        if not outcome.ok:
            raise AsteriskCommandFailed(
                f"writing {', '.join(sorted(files)) or 'nothing'} into {self.managed_dir} failed: "
                f"{outcome.detail or outcome.lease.error}",
                "check the managed directory's owner and free space in the container",
            )

    def remove_managed(self, names: Iterable[str]) -> None:
        """Delete managed files (e.g. a file the desired state no longer renders)."""
        self.write_managed({}, remove=names)

    # --- the transaction exec -------------------------------------------------------------------

    def _prelude(self, holder: Holder, revision: str) -> str:
        return (
            lease_mod.shell_functions(self.managed_dir, holder, revision, box_expr=self.executor.box_expr)
            + f'\nBOOT="{self._boot_id_expr()}"'
        )

    def transact(
        self,
        holder: Holder,
        revision: str,
        *,
        mode: LeaseMode = "acquire",
        doing: str = "applying",
        expect: Mapping[str, str | None] | None = None,
        refuse_calls: bool = False,
        journal: Journal | None = None,
        files: Mapping[str, FileSource] | None = None,
        remove: Iterable[str] = (),
        commands: Sequence[str] = (),
        restart: RestartRequest | None = None,
        queries: Sequence[str] = (),
        record: str | None = None,
        settle: Sequence[str] | None = None,
        keep_last_good: bool = False,
        store_sql: str | None = None,
        store_digest: bool = False,
    ) -> TxnOutcome:
        """ONE exec (plus one upload when the files are large) that, in this order and each step
        only if every earlier one succeeded: takes flock and the lease (`mode`), checks that the
        live files are still `expect` (and, with `refuse_calls`, that no call is up), writes the
        `journal`, stages and renames `files` (and deletes `remove`), runs the reload `commands`,
        restarts Asterisk per `restart`, waits for the log lines all that produced, runs `queries`,
        writes `record` as state.json and, with `settle`, refreshes the last verified copy from the
        managed files named there (unless `keep_last_good`), removes the journal and releases the
        lease. `store_sql` runs against the realtime store with `sqlite3 -bail` as the
        asterisk user, staged and checked with the files and committed BEFORE they are renamed (a
        full volume changes nothing); `store_digest` then prints the store digest (step
        `store-digest`). In `acquire` mode a failure before anything was renamed also removes the journal this
        exec wrote and releases the lease: nothing changed. The temp dir is always removed.
        """
        files = dict(files or {})
        remove = [n for n in remove if n not in files]
        tmp = self._tmp_dir()
        t = shlex.quote(tmp)
        log = shlex.quote(self.log_path)
        uploads = _uploads(files, record, store_sql)
        uploaded: list[str] = []
        if uploads:
            try:
                self._upload(uploads, tmp)
                uploaded = [n for n in uploads if n != STORE_SQL]
            except ManagedWriteFailed:
                self._remove_tmp(tmp)
                # A full disk refuses the upload; a restore from the last verified copy needs no
                # space, so go on with the links alone when every file has one (and no store SQL
                # had to travel by upload). Their texts stay out of the script: they did not fit.
                if STORE_SQL in uploads or not all(src.link_sha for src in files.values() if src.text):
                    raise
                files = {n: FileSource(link_sha=s.link_sha) if s.link_sha else s for n, s in files.items()}
        store_inline = store_sql is not None and STORE_SQL not in uploads

        named: list[tuple[str, str]] = []
        named.append(("lease", self._prelude(holder, revision) + "\n" + lease_mod.lease_step(mode, doing)))
        if expect or refuse_calls:
            named.append(("check", self._check_step(expect or {}, refuse_calls)))
        if journal is not None:
            named.append(("journal", write_journal_step(journal)))
        if store_sql is not None:
            named.append(("store-stage", self._store_stage_step(tmp, store_sql, store_inline)))
        if files:
            named.append(("stage", self._stage_step(files, tmp, uploaded)))
        # Everything that needs space (the staged SQL and files, the store's WAL) comes before the
        # first rename: a full volume stops the exec with nothing changed. A store transaction that
        # fails does not commit; one that committed is undone with the files if a rename fails.
        if store_sql is not None:
            named.append(("store", self._store_step(tmp)))
        if files or remove:
            named.append(("swap", self._rename_step(files, tmp, remove)))
        if store_digest:
            named.append(("store-digest", store_mod.digest_step()))
        wants_log = bool(commands or restart)
        if wants_log:
            named.append(("offset", f"OFF=$(stat -c %s {log} 2>/dev/null || echo 0); echo $OFF"))
        named += [(f"reload:{i}", rx_command(c)) for i, c in enumerate(commands)]
        if restart is not None:
            named.append(("restart", self._restart_script(restart)))
        if wants_log:
            named.append(("barrier", self._flush_barrier_script()))
            named.append(("log", f"tail -c +$((OFF+1)) {log} 2>/dev/null"))
        named += [(f"query:{i}", rx_command(q)) for i, q in enumerate(queries)]
        if record is not None:
            state = {STATE_FILE: FileSource(text=record)}
            named.append(("record-stage", self._stage_step(state, tmp, ())))
            named.append(("record", self._rename_step(state, tmp)))
        if settle is not None:
            named.append(("settle", settle_step(list(settle), keep_last_good=keep_last_good)))

        steps = [named[0][1]] + [guard(script) for _, script in named[1:]]
        steps.append(f"rm -rf {t}; " + (abandon_step() if mode == "acquire" else "true"))
        try:
            outputs = self.run_steps(steps, upload_to=tmp).outputs
        except AsteriskWentAway as exc:
            # Name the completed steps so the caller can tell whether the files were swapped.
            exc.completed = {name: out for (name, _), out in zip(named, exc.outputs, strict=False)}
            raise
        except ManagedWriteFailed:
            self._remove_tmp(tmp)  # the script's own upload was refused: nothing ran
            raise
        by_name = {name: out for (name, _), out in zip(named, outputs, strict=False)}
        return self._outcome(by_name, commands, restart is not None, queries)

    def _remove_tmp(self, tmp: str) -> None:
        """A refused upload can leave part of it behind: remove it (one more exec, only then)."""
        with contextlib.suppress(ReconcilerError):
            self.run_steps([f"rm -rf {shlex.quote(tmp)}"])

    def _store_stage_step(self, tmp: str, sql: str, inline: bool) -> str:
        """Shell: put the store SQL into `tmp` (written here when `inline`, else uploaded before)
        and check its sha256, BEFORE anything is renamed: a full volume stops the exec here, with
        nothing changed."""
        t = shlex.quote(tmp)
        path = shlex.quote(posixpath.join(tmp, STORE_SQL))
        want = sha256_text(sql)
        # As the files are written (`_stage_step`): exact bytes, dd's own error words.
        write = f"printf %s {shlex.quote(sql)} | dd of={path} status=none" if inline else "true"
        return "\n".join(
            [
                f"SERR=$( {{ mkdir -p -m 0750 {t} && {write}; }} 2>&1 ) || "
                f'{{ echo "FAILED write-failed: {STORE_SQL}: $SERR ({_free_space()})"; STOP=1; }}',
                'if [ -z "$STOP" ]; then',
                f'  [ "$(sha256sum < {path} 2>/dev/null | cut -c1-64)" = {want} ] && chmod 0600 {path} || '
                f'{{ echo "FAILED write-failed: {STORE_SQL}: the file written is not the SQL sent '
                f'({_free_space()})"; STOP=1; }}',
                "fi",
            ]
        )

    def _store_step(self, tmp: str) -> str:
        """Shell: run the staged store SQL in ONE sqlite3 process (as the asterisk user; the root
        shell opens the 0600 file); its error text becomes the step's FAILED line."""
        path = posixpath.join(tmp, STORE_SQL)
        return (
            f"SERR=$( {{ {store_mod.sqlite_step(path)}; }} 2>&1 >/dev/null ) && "
            f"{{ echo stored; {store_mod.checkpoint_step()}; }} || "
            f"{{ echo \"FAILED store: $(printf %s \"$SERR\" | head -c 400 | tr '\\n' ' ') "
            f'({_free_space()})"; STOP=1; }}'
        )

    def _outcome(
        self, out: Mapping[str, str], commands: Sequence[str], restarting: bool, queries: Sequence[str]
    ) -> TxnOutcome:
        answer = parse_lease_answer(out.get("lease", ""))
        if answer.status != "ok":
            return TxnOutcome(lease=answer, stopped="lease", detail=answer.error, outputs=out)
        stopped, detail = None, ""
        for name, text in out.items():
            if name.startswith(("reload:", "query:", "log")):
                continue  # Asterisk's own words, not a step's verdict
            match = _FAILED.search(text)
            if match:
                stopped, detail = name, match[1]
                break
        calls_match = re.search(r"^calls (\d+)", out.get("check", ""), re.M)
        swap = out.get("swap", "")
        renamed_line = next((ln for ln in swap.splitlines() if ln.startswith("renamed")), "renamed")
        restart_line = (out.get("restart", "").strip().splitlines() or [""])[-1]
        reload = None
        if "offset" in out and out.get("offset") != "skipped":
            barrier = out.get("barrier", "")
            log_text = out.get("log", "")
            reload = ReloadResult(
                reload_outputs=tuple(out.get(f"reload:{i}", "") for i in range(len(commands))),
                log_lines=tuple(line for line in log_text.split("\n") if line and LOG_BARRIER not in line),
                query_outputs=tuple(out.get(f"query:{i}", "") for i in range(len(queries))),
                restarted=restart_line.startswith("restarted"),
                log_complete="flushed" in barrier,
            )
        elif queries:
            reload = ReloadResult((), (), tuple(out.get(f"query:{i}", "") for i in range(len(queries))))
        warnings = tuple(
            line.strip() for line in out.get("settle", "").splitlines() if line.startswith("last-good-failed")
        )
        return TxnOutcome(
            lease=answer,
            stopped=stopped,
            detail=detail,
            swapped="swapped" in swap.splitlines(),
            renamed=tuple(renamed_line.split()[1:]),
            calls=int(calls_match[1]) if calls_match else None,
            reload=reload,
            restart=restart_line if restarting else "",
            recorded="swapped" in out.get("record", "").splitlines(),
            warnings=warnings,
            outputs=out,
        )

    def reload(
        self,
        commands: Sequence[str],
        *,
        files: Mapping[str, str] | None = None,
        remove: Iterable[str] = (),
        queries: Sequence[str] = (),
        restart: bool = False,
        restart_timeout_s: float = 120.0,
    ) -> ReloadResult:
        """Swap in `files` (checked, as in a transaction), run the reload `commands` (or restart
        Asterisk once it is idle, waiting at most `restart_timeout_s`), collect the log lines they
        produced, then run `queries`, in ONE exec. Refused with `LockBusy` while another apply
        holds the PBX's lock: a reload loads whatever is on disk, and must not run in the middle of
        someone else's transaction. For tools (the sandbox carrier, provider healing); applies use
        `transact`."""
        from reconciler.errors import LockBusy

        outcome = self.transact(
            Holder.new("reload"),
            "-",
            mode="check",
            files={n: FileSource(text=t) for n, t in (files or {}).items()},
            remove=remove,
            commands=() if restart else commands,
            restart=RestartRequest(RestartPolicy.IDLE, restart_timeout_s, "transports changed")
            if restart
            else None,
            queries=queries,
        )
        if outcome.lease.status != "ok":
            held = outcome.lease.lease.describe(outcome.lease.now) if outcome.lease.lease else None
            why = f"another apply holds the PBX's lock: {held}" if held else outcome.lease.error
            raise LockBusy(f"not reloading {self.label}: {why}", "try again when it is done")
        if outcome.stopped is not None or outcome.reload is None:
            raise AsteriskCommandFailed(
                f"moving the new files into {self.managed_dir} failed: {outcome.detail}",
                "check the managed directory's owner and free space in the container",
            )
        if restart and not outcome.reload.restarted:
            raise AsteriskUnavailable(
                f"Asterisk in {self.label} did not restart within {restart_timeout_s:.0f} s "
                f"({outcome.restart})",
                f"see {self.logs_hint()}; calls in progress delay the restart",
            )
        return outcome.reload

    # --- reload / restart scripts ---------------------------------------------------------------

    def _flush_barrier_script(self) -> str:
        """Shell that waits until every line Asterisk logged so far is in the log file.

        Asterisk logs through a logger thread, so the lines of a reload can reach the file after
        `asterisk -rx` returned (seen here: 1 reload in 30 read too early). `module reload udptl`
        queues the line "Reloading module 'udptl'" behind them (udptl is a core module, always
        present, and its config is unused here); the queue is written in order, so once that line
        is in the file, so is everything the reload logged. `dialplan reload` logs nothing by
        itself, and `logger reload` logs through the queue only when queue_log is on.
        """
        log = shlex.quote(self.log_path)
        tries = int(LOG_FLUSH_TIMEOUT_S / 0.005)
        return (
            f"{rx_command(BARRIER_COMMAND)} >/dev/null; "
            f"i=0; while [ $i -lt {tries} ]; do "
            f"tail -c +$((OFF+1)) {log} 2>/dev/null | grep -qF {shlex.quote(LOG_BARRIER)} && "
            "{ echo flushed; break; }; sleep 0.005; i=$((i+1)); done"
        )

    def _restart_script(self, request: RestartRequest) -> str:
        """Shell: ask Asterisk to restart per the policy, then wait (renewing the lease) until a NEW
        Asterisk — another boot id — is fully booted. `idle` waits at most `wait_s` for the calls to
        end; the restart then stays scheduled in Asterisk. Prints `calls N` first, then
        `restarted <seconds>`, `pending <calls>` or `not-restarted`."""
        calls = f"$({rx_command(CHANNELS_COUNT)} | sed -n 's/^\\([0-9]*\\) active call.*/\\1/p')"
        booted = f'{rx_command("core waitfullybooted")} | grep -q "fully booted"'
        reason = shlex.quote(lease_mod._clean(request.reason, 80))
        # `core restart when convenient` blocks its CLI client until the restart; the request is
        # taken at once, so the client is cut off after 1 s (Asterisk carries on without it).
        ask = f"timeout 1 {rx_command(request.policy.command)} >/dev/null"
        return "\n".join(
            [
                f'B0="$BOOT"; C={calls}; echo "calls ${{C:-?}}"; R={reason}',
                'if [ "${C:-0}" -gt 0 ]; then DO="waiting for $C call(s) to end before restarting: $R"; '
                'else DO="restarting Asterisk: $R"; fi; lease_write "$DO" || true',
                f"START=$(date +%s); {ask}",
                f"DL=$((START + {int(request.wait_s)})); DOWN_AT=; OK=; LAST=$START",
                "while :; do",
                "  NOW=$(date +%s)",
                f'  B="{self._boot_id_expr()}"',
                '  if [ -n "$B" ] && [ "$B" != "$B0" ]; then',
                f"    if {booted}; then OK=1; break; fi",
                '    [ -n "$DOWN_AT" ] || DOWN_AT=$NOW',
                f'  elif ! {rx_command("core show uptime seconds")} | grep -q "System uptime"; then',
                '    [ -n "$DOWN_AT" ] || DOWN_AT=$NOW',
                '  elif [ -z "$DOWN_AT" ] && [ "$NOW" -ge "$DL" ]; then break',
                "  fi",
                f'  if [ -n "$DOWN_AT" ] && [ $((NOW - DOWN_AT)) -ge {int(BOOT_TIMEOUT_S)} ]; then break; fi',
                "  if [ $((NOW - LAST)) -ge 5 ]; then LAST=$NOW; C2=" + calls + "; "
                'lease_write "waiting for ${C2:-?} call(s) to end before restarting: $R" || true; fi',
                "  sleep 0.2",
                "done",
                'if [ -n "$OK" ]; then echo "restarted $(( $(date +%s) - START ))"; BOOT="$B"',
                f'elif [ -z "$DOWN_AT" ]; then echo "pending {calls}"',
                'else echo "not-restarted"; fi',
            ]
        )

    # --- small queries --------------------------------------------------------------------------

    def log_offset(self) -> int:
        """Current size of the Asterisk log file in bytes (where the next line will start)."""
        out = self.run_steps([f"stat -c %s {shlex.quote(self.log_path)} 2>/dev/null || echo 0"]).outputs[0]
        return int(out.strip() or 0)

    def read_log_since(self, offset: int) -> list[str]:
        """Lines appended to the Asterisk log since byte `offset`."""
        out = self.run_steps([f"tail -c +{offset + 1} {shlex.quote(self.log_path)} 2>/dev/null"]).outputs[0]
        return out.split("\n")

    def uptime_s(self) -> int:
        """Seconds since Asterisk started (`core show uptime seconds`)."""
        out = self.run("core show uptime seconds")[0]
        match = re.search(r"System uptime:\s*(\d+)", out)
        if not match:
            raise AsteriskCommandFailed(f"unexpected `core show uptime seconds` reply: {out.strip()!r}")
        return int(match[1])

    def wait_fully_booted(self, timeout_s: float = 60.0) -> float:
        """Wait until Asterisk answers and is fully booted; return the seconds waited."""
        start = time.monotonic()
        tries = max(1, int(timeout_s / 0.1))
        script = (
            f"i=0; while [ $i -lt {tries} ]; do "
            f'{rx_command("core waitfullybooted")} | grep -q "fully booted" && {{ echo booted; break; }}; '
            "sleep 0.1; i=$((i+1)); done"
        )
        out = self.run_steps([script]).outputs[0]
        if "booted" not in out:
            raise AsteriskUnavailable(
                f"Asterisk in {self.label} did not finish booting within {timeout_s:.0f} s",
                f"see {self.logs_hint()}",
            )
        return time.monotonic() - start


def client_for(settings: Settings, control: ControlMode = DEFAULT_CONTROL) -> AsteriskClient:
    """The client of `settings`' Asterisk (its container, managed dir and log): its scripts run by
    `docker exec` (control docker) or right here beside Asterisk (control local, the sidecar)."""
    return AsteriskClient(
        settings.container,
        managed_dir=settings.managed_dir,
        log_path=settings.asterisk_log,
        executor=make_executor(control, settings.container, log_path=settings.asterisk_log),
    )
