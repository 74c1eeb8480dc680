"""Talk to Asterisk in its container: CLI commands, managed files, the log, restarts.

Every `docker exec` costs 70-90 ms, far more than a small reload (~10 ms), so this client batches:
one exec runs a whole shell script of steps (CLI commands, file renames, a reload with the log
lines it produced, the verification queries) and the outputs are split on a separator line that
no Asterisk output contains. Files travel by `put_archive` (no exec) and are moved into place by
rename(2), so Asterisk never reads a half-written file.
"""

from __future__ import annotations

import io
import posixpath
import re
import secrets as _random
import shlex
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import AsteriskUnavailable, ReconcilerError
from reconciler.markers import (
    DIALPLAN_QUERY,
    PJSIP_MARKER_SED,
    aor_found,
    dialplan_revision,
    pjsip_marker_query,
)
from reconciler.providers_health import HostLookup, lookup_step, parse_lookups

UNREACHABLE_MARKER = "Unable to connect to remote asterisk"
MANAGED_NAMES = re.compile(r"^(?:[\w.-]+\.conf|state\.json)$")
# Asterisk logs through a logger thread: when `asterisk -rx` returns, its lines may not be in the
# file yet. After a reload the script makes Asterisk log LOG_BARRIER (see `_flush_barrier_script`)
# and waits, bounded, until that line reaches the file.
BARRIER_COMMAND = "module reload udptl"
LOG_BARRIER = "Reloading module 'udptl'"
LOG_FLUSH_TIMEOUT_S = 3.0
# Files up to this size (together) are written by the exec's own script instead of an upload.
INLINE_LIMIT_BYTES = 48 * 1024


class AsteriskCommandFailed(ReconcilerError):
    """A shell step in the container failed (e.g. a rename); not Asterisk refusing config."""


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
    """

    pjsip_rev12: str | None
    pjsip_declared: str | None
    dialplan_rev12: str | None
    lookups: Mapping[str, HostLookup] = field(default_factory=dict)


def split_outputs(text: str, separator: str) -> list[str]:
    """Split the output of a batch whose every step was followed by `\\n<separator>\\n`."""
    parts = text.split("\n" + separator + "\n")
    # The text after the last separator is whatever came after the last step (normally nothing).
    return parts[:-1] if len(parts) > 1 else parts


def rx_command(command: str) -> str:
    """A shell step that runs one Asterisk CLI command, for `AsteriskClient.run_steps`."""
    return f"asterisk -rx {shlex.quote(command)} 2>&1"


def _hint_for(container: str) -> str:
    return f"start it with `make up` (or `docker start {container}`), then retry"


class AsteriskClient:
    """The Asterisk in one Docker container, reached through the Docker SDK.

    `exec_count` counts `docker exec` calls and `api_calls` every file transfer too, so callers can
    report what an apply cost.
    """

    def __init__(
        self,
        container: str,
        managed_dir: str = "/etc/asterisk/managed",
        log_path: str = "/var/log/asterisk/messages.log",
        docker_client: Any = None,
    ) -> None:
        self.container_name = container
        self.managed_dir = managed_dir.rstrip("/") or "/"
        self.log_path = log_path
        self._docker = docker_client
        self._container: Any = None
        self.exec_count = 0
        self.transfer_count = 0

    # --- plumbing -------------------------------------------------------------------------------

    def _get_container(self) -> Any:
        import docker
        from docker.errors import DockerException, NotFound

        try:
            if self._docker is None:
                self._docker = docker.from_env()
            container = self._docker.containers.get(self.container_name)
        except NotFound as exc:
            raise AsteriskUnavailable(
                f"the Asterisk container {self.container_name!r} does not exist",
                "create and start it with `make up`, or pass --container NAME of the running one",
            ) from exc
        except DockerException as exc:
            raise AsteriskUnavailable(
                f"cannot reach the Docker engine: {exc}",
                "start Docker (`systemctl start docker`, or `dockerd &`) and retry",
            ) from exc
        if container.status != "running":
            raise AsteriskUnavailable(
                f"the Asterisk container {self.container_name!r} is {container.status}, not running",
                _hint_for(self.container_name),
            )
        self._container = container
        return container

    def _container_or_fetch(self) -> Any:
        return self._container if self._container is not None else self._get_container()

    def _exec(self, script: str) -> tuple[int, str]:
        from docker.errors import APIError, DockerException, NotFound

        container = self._container_or_fetch()
        try:
            self.exec_count += 1
            code, out = container.exec_run(["sh", "-c", script], stdout=True, stderr=True)
        except (NotFound, APIError) as exc:
            # The container stopped or vanished since we looked it up: look again next time.
            self._container = None
            raise AsteriskUnavailable(
                f"cannot exec in the Asterisk container {self.container_name!r}: {exc}",
                _hint_for(self.container_name),
            ) from exc
        except DockerException as exc:
            self._container = None
            raise AsteriskUnavailable(
                f"cannot reach the Docker engine: {exc}", "start Docker and retry"
            ) from exc
        return code or 0, out.decode("utf-8", errors="replace") if out else ""

    def run_steps(self, steps: Sequence[str]) -> ExecResult:
        """Run shell `steps` in ONE exec; return each step's combined stdout+stderr.

        Raises AsteriskUnavailable when any step printed "Unable to connect to remote asterisk"
        (Asterisk is not running, or still booting).
        """
        separator = f"--8<-- gitops-{_random.token_hex(8)} --8<--"
        echo = f"printf '\\n%s\\n' {shlex.quote(separator)}"
        script = "\n".join(f"{{ {step}\n}}; {echo}" for step in steps)
        code, text = self._exec(script)
        outputs = split_outputs(text, separator)
        if len(outputs) != len(steps):
            raise AsteriskCommandFailed(
                f"the batch in {self.container_name!r} stopped after {len(outputs)} of {len(steps)} steps: "
                f"{text[-500:]!r}",
                "check the container (`docker logs`) and retry",
            )
        if any(UNREACHABLE_MARKER in out for out in outputs):
            raise AsteriskUnavailable(
                f"Asterisk in {self.container_name!r} is not answering on its control socket "
                "(not running, or still booting)",
                f"wait a few seconds and retry; if it persists, `docker logs {self.container_name}` "
                f"shows why, and `docker restart {self.container_name}` restarts it",
            )
        return ExecResult(tuple(outputs), code)

    def run(self, *commands: str) -> list[str]:
        """Run Asterisk CLI `commands` (`asterisk -rx`) in one exec; return each one's output."""
        return list(self.run_steps([rx_command(c) for c in commands]).outputs)

    # --- managed files --------------------------------------------------------------------------

    def _read_files_step(self) -> str:
        d = shlex.quote(self.managed_dir)
        # One record per file: its name line, then its bytes base64-free (configs are text);
        # records are split by the caller on a per-file separator echoed by the same loop.
        return (
            f"cd {d} 2>/dev/null && for f in *.conf state.json; do "
            '[ -f "$f" ] || continue; printf "%s\\n" "$f"; cat -- "$f"; printf "\\n%s\\n" "$SEP_FILE"; done'
        )

    def _parse_files(self, text: str, file_separator: str) -> dict[str, str]:
        files: dict[str, str] = {}
        for record in split_outputs(text, file_separator):
            name, _, content = record.partition("\n")
            if name and MANAGED_NAMES.match(name):
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

    def read_managed_with_markers(
        self, boot_timeout_s: float = 15.0, resolve: Sequence[str] = ()
    ) -> tuple[dict[str, str], LiveMarkers]:
        """The managed files, and which revision markers Asterisk has live, in ONE exec.

        The PJSIP marker is looked up under the name the live `pjsip.conf` declares
        (`[gitops-rev-<rev12>]`), so this answers "is Asterisk running the files on disk?".
        Waits up to `boot_timeout_s` for an Asterisk that is still booting. The host names in
        `resolve` are looked up inside the container in the same exec (`LiveMarkers.lookups`):
        a provider whose host does not resolve is reported even when pjsip.conf did not change.
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
            f"SEP_FILE={shlex.quote(file_sep)}; {self._read_files_step()}",
            marker_step,
            rx_command(DIALPLAN_QUERY),
        ]
        if resolve:
            steps.append(lookup_step(resolve))
        outputs = self.run_steps(steps).outputs[1:]
        files = self._parse_files(outputs[0], file_sep)
        declared, _, aor_out = outputs[1].partition("\n")
        declared = declared.strip()
        pjsip_live = bool(declared) and aor_found(aor_out, declared)
        return files, LiveMarkers(
            pjsip_rev12=declared if pjsip_live else None,
            pjsip_declared=declared or None,
            dialplan_rev12=dialplan_revision(outputs[2]),
            lookups=parse_lookups(outputs[3]) if resolve else {},
        )

    def read_managed(self) -> dict[str, str]:
        """The managed `*.conf` files and `state.json` as {name: text} (one exec)."""
        files, _ = self.read_managed_and_run()
        return files

    def _put_tmp(self, files: dict[str, str]) -> str:
        """Upload `files` into a fresh temporary subdirectory of the managed dir; return its path."""
        from docker.errors import APIError, DockerException

        for name in files:
            if not MANAGED_NAMES.match(name):
                raise ValueError(f"not a managed file name: {name!r}")
        tmp_name = f".gitops-tmp-{_random.token_hex(6)}"
        buf = io.BytesIO()
        now = time.time()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(tmp_name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o750, now
            tar.addfile(info)
            for name, text in sorted(files.items()):
                data = text.encode("utf-8")
                info = tarfile.TarInfo(f"{tmp_name}/{name}")
                info.size, info.mode, info.mtime = len(data), 0o640, now
                tar.addfile(info, io.BytesIO(data))
        container = self._container_or_fetch()
        try:
            self.transfer_count += 1
            ok = container.put_archive(self.managed_dir, buf.getvalue())
        except (APIError, DockerException) as exc:
            self._container = None
            raise AsteriskUnavailable(
                f"cannot copy files into {self.container_name!r}:{self.managed_dir}: {exc}",
                _hint_for(self.container_name),
            ) from exc
        if not ok:
            raise AsteriskCommandFailed(
                f"copying files into {self.container_name!r}:{self.managed_dir} failed",
                "check that the managed directory exists in the container",
            )
        return posixpath.join(self.managed_dir, tmp_name)

    def _swap_step(self, tmp_dir: str, names: Iterable[str], remove: Iterable[str] = ()) -> str:
        """Shell that makes the uploaded files readable by Asterisk and renames each into place."""
        d, t = shlex.quote(self.managed_dir), shlex.quote(tmp_dir)
        parts = [f"chown -R asterisk:asterisk {t} 2>/dev/null; chmod 0640 {t}/* 2>/dev/null; true"]
        parts += [f"mv -f {t}/{shlex.quote(n)} {d}/{shlex.quote(n)}" for n in sorted(names)]
        parts += [f"rm -f {d}/{shlex.quote(n)}" for n in sorted(remove)]
        parts.append(f"rmdir {t}")
        return " && ".join(parts) + " && echo swapped"

    def _stage_and_swap_step(self, files: dict[str, str], remove: Iterable[str] = ()) -> str:
        """Shell that puts `files` into a temp subdir of the managed dir and renames each into place.

        Small files travel inside the exec's script itself (`printf` is a shell builtin, so only
        the script's own argv limit of 128 KiB applies); larger ones are uploaded first with
        `put_archive`, which costs one more Docker API call (~70-160 ms here).
        """
        for name in [*files, *remove]:
            if not MANAGED_NAMES.match(name):
                raise ValueError(f"not a managed file name: {name!r}")
        if not files:
            names = " ".join(shlex.quote(posixpath.join(self.managed_dir, n)) for n in remove)
            return f"rm -f {names} && echo swapped" if names else "echo swapped"
        if sum(len(text.encode("utf-8")) for text in files.values()) <= INLINE_LIMIT_BYTES:
            tmp = posixpath.join(self.managed_dir, f".gitops-tmp-{_random.token_hex(6)}")
            t = shlex.quote(tmp)
            writes = [f"mkdir -m 0750 {t}"]
            writes += [
                f"printf %s {shlex.quote(text)} > {t}/{shlex.quote(name)}"
                for name, text in sorted(files.items())
            ]
            return " && ".join(writes) + " && " + self._swap_step(tmp, files, remove)
        return self._swap_step(self._put_tmp(files), files, remove)

    def write_managed(self, files: dict[str, str], remove: Iterable[str] = ()) -> None:
        """Write `files` into the managed dir atomically, each by rename(2) over the old one.

        A live file is never truncated in place: the new text goes to a temp subdir of the same
        filesystem first. `remove` names files to delete in the same step.
        """
        remove = [n for n in remove if n not in files]
        out = self.run_steps([self._stage_and_swap_step(files, remove)]).outputs[0]
        if "swapped" not in out:
            raise AsteriskCommandFailed(
                f"moving the new files into {self.managed_dir} failed: {out.strip()}",
                "check the managed directory's owner and free space in the container",
            )

    def remove_managed(self, names: Iterable[str]) -> None:
        """Delete managed files (e.g. a file the desired state no longer renders)."""
        self.write_managed({}, remove=names)

    # --- reload with its log lines --------------------------------------------------------------

    def reload(
        self,
        commands: Sequence[str],
        *,
        files: dict[str, str] | None = None,
        remove: Iterable[str] = (),
        queries: Sequence[str] = (),
        restart: bool = False,
        restart_timeout_s: float = 120.0,
    ) -> ReloadResult:
        """Swap in `files` (if any), run the reload `commands` (or restart Asterisk gracefully),
        collect the log lines they produced, then run the `queries` — all in ONE exec (plus one
        upload when the files are larger than INLINE_LIMIT_BYTES).

        Log lines are complete: after the reloads the script asks Asterisk to log a barrier line
        and waits (bounded by LOG_FLUSH_TIMEOUT_S) until it is in the file.
        """
        remove = [n for n in remove if not files or n not in files]
        log = shlex.quote(self.log_path)
        steps: list[str] = []
        if files or remove:
            steps.append(self._stage_and_swap_step(files or {}, remove))
        steps.append(f"OFF=$(stat -c %s {log} 2>/dev/null || echo 0); echo $OFF")
        if restart:
            steps.append(self._restart_script(restart_timeout_s))
        else:
            steps += [rx_command(c) for c in commands]
        steps.append(self._flush_barrier_script())
        steps.append(f"tail -c +$((OFF+1)) {log} 2>/dev/null")
        steps += [rx_command(q) for q in queries]
        outputs = list(self.run_steps(steps).outputs)
        if files or remove:
            swap = outputs.pop(0)
            if "swapped" not in swap:
                raise AsteriskCommandFailed(
                    f"moving the new files into {self.managed_dir} failed: {swap.strip()}",
                    "check the managed directory's owner and free space in the container",
                )
        outputs.pop(0)  # the offset
        n_reload = 1 if restart else len(commands)
        reload_outputs, outputs = outputs[:n_reload], outputs[n_reload:]
        barrier_out, log_text, query_outputs = outputs[0], outputs[1], outputs[2:]
        if restart and "restarted" not in reload_outputs[0]:
            raise AsteriskUnavailable(
                f"Asterisk in {self.container_name!r} did not come back within {restart_timeout_s:.0f} s "
                f"of `core restart gracefully`: {reload_outputs[0].strip()[-300:]}",
                f"see `docker logs {self.container_name}`; calls in progress delay a graceful restart",
            )
        log_lines = [line for line in log_text.splitlines() if LOG_BARRIER not in line]
        return ReloadResult(
            reload_outputs=tuple(reload_outputs),
            log_lines=tuple(log_lines),
            query_outputs=tuple(query_outputs),
            restarted=restart,
            log_complete="flushed" in barrier_out,
        )

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

    def _restart_script(self, timeout_s: float) -> str:
        """Shell: `core restart gracefully`, wait until this is a NEW Asterisk, fully booted."""
        tries = int(timeout_s / 0.1)
        up = "core show uptime seconds"
        booted = f'{rx_command("core waitfullybooted")} | grep -q "fully booted"'
        return (
            f"BEFORE=$({rx_command(up)} | sed -n 's/^System uptime: \\([0-9]*\\).*/\\1/p'); "
            f"{rx_command('core restart gracefully')}; "
            "DOWN=0; OK=0; i=0; "
            f"while [ $i -lt {tries} ]; do "
            f"OUT=$({rx_command(up)}); "
            f'case "$OUT" in *"{UNREACHABLE_MARKER}"*) DOWN=1 ;; '
            '*) NOW=$(printf "%s" "$OUT" | sed -n "s/^System uptime: \\([0-9]*\\).*/\\1/p"); '
            'if [ -n "$NOW" ] && { [ $DOWN = 1 ] || [ "$NOW" -lt "${BEFORE:-0}" ]; }; '
            "then OK=1; break; fi ;; "
            "esac; sleep 0.1; i=$((i+1)); done; "
            f"if [ $OK = 1 ] && {booted}; then echo restarted; "
            "else echo not-restarted; fi"
        )

    # --- small queries --------------------------------------------------------------------------

    def log_offset(self) -> int:
        """Current size of the Asterisk log file in bytes (where the next line will start)."""
        out = self.run_steps([f"stat -c %s {shlex.quote(self.log_path)} 2>/dev/null || echo 0"]).outputs[0]
        return int(out.strip() or 0)

    def read_log_since(self, offset: int) -> list[str]:
        """Lines appended to the Asterisk log since byte `offset`."""
        out = self.run_steps([f"tail -c +{offset + 1} {shlex.quote(self.log_path)} 2>/dev/null"]).outputs[0]
        return out.splitlines()

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
                f"Asterisk in {self.container_name!r} did not finish booting within {timeout_s:.0f} s",
                f"see `docker logs {self.container_name}`",
            )
        return time.monotonic() - start

    def restart_gracefully(self, timeout_s: float = 120.0) -> ReloadResult:
        """`core restart gracefully` and wait until the new Asterisk is fully booted."""
        return self.reload((), restart=True, restart_timeout_s=timeout_s)
