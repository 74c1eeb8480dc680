"""Where `AsteriskClient`'s shell scripts run: in the Asterisk container, or right here.

The client builds every script (reads, the transaction exec, restarts) once; an *executor* only
runs one script and copies files into a temp dir of the managed volume:

- `DockerExecutor`: `docker exec sh -c SCRIPT` in the Asterisk container, uploads by
  `put_archive` (the reconciler holds the Docker socket: `make up`, CI, a laptop).
- `LocalExecutor`: `sh -c SCRIPT` in this process's own container: the sidecar, built from the
  Asterisk image (same binaries: `asterisk -rx`, sqlite3, flock), sharing Asterisk's managed
  volume, log volume and control-socket directory at the same paths. It needs no Docker socket
  and imports no Docker module.

Each executor also answers what a person should do when Asterisk is gone (`start_hint`,
`logs_hint`), whether Asterisk went away during a batch (`went_away`), and what the PBX's lease
records as its `box` (see `reconciler.asterisk.lease`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from reconciler.asterisk.lease import CONTAINER_BOX, LOCAL_BOX, TXN_DIR
from reconciler.errors import AsteriskUnavailable, ManagedWriteFailed

ControlMode = Literal["docker", "local"]
CONTROL_MODES: tuple[ControlMode, ...] = ("docker", "local")
DEFAULT_CONTROL: ControlMode = "docker"
CONTROL_ENV = "RECONCILER_CONTROL"
# Asterisk creates its control socket anew at every start, also after `core restart` (which keeps
# PID 1): its modification time tells one Asterisk run from the next.
CONTROL_SOCKET = "/var/run/asterisk/asterisk.ctl"
UPLOAD_FILE_MODE = 0o640  # as the tar entries of a docker upload: the stage step then sets owner/mode
UPLOAD_DIR_MODE = 0o750


class Executor(Protocol):
    """Runs one shell script where Asterisk's files and CLI are; copies files next to them."""

    kind: ControlMode
    label: str  # how messages name this Asterisk: "'gitops-pbx'" or "the local Asterisk (...)"
    box_expr: str  # shell expression of the lease's `box` (reconciler.asterisk.lease)

    def run(self, script: str) -> tuple[int, str]:
        """(exit code, combined stdout+stderr) of `sh -c script`; raises AsteriskUnavailable when
        the script could not be started at all."""
        ...

    def upload(self, managed_dir: str, files: Mapping[str, str], tmp_dir: str) -> None:
        """Put `files` into `tmp_dir` (a new subdirectory of `<managed_dir>/.gitops`), mode 0640.
        A refused write raises ManagedWriteFailed."""
        ...

    def went_away(self) -> str | None:
        """Why the Asterisk that ran the last script is not there any more (stopped, restarted)."""
        ...

    def start_hint(self) -> str:
        """What to do when Asterisk is not running."""
        ...

    def logs_hint(self) -> str:
        """Where to read why Asterisk failed (a phrase: "see <this>")."""
        ...


def _exit_code(returncode: int) -> int:
    """A shell killed by a signal reports -N to subprocess; docker exec reports 128+N."""
    return 128 - returncode if returncode < 0 else returncode


# --- docker exec --------------------------------------------------------------------------------


class DockerExecutor:
    """The Asterisk in one Docker container, reached through the Docker SDK (imported lazily)."""

    kind: ControlMode = "docker"
    # A container restart kills every exec in it: the start time of the container's PID 1 (which
    # `core restart` keeps) names the run that took a lease.
    box_expr = CONTAINER_BOX

    def __init__(self, container: str, docker_client: Any = None) -> None:
        self.container_name = container
        self.label = repr(container)
        self._docker = docker_client
        self._container: Any = None
        self._started_at: str | None = None

    def start_hint(self) -> str:
        return f"start it with `make up` (or `docker start {self.container_name}`), then retry"

    def logs_hint(self) -> str:
        return f"`docker logs {self.container_name}`"

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
                self.start_hint(),
            )
        self._container = container
        self._started_at = (container.attrs.get("State") or {}).get("StartedAt")
        return container

    def _container_or_fetch(self) -> Any:
        return self._container if self._container is not None else self._get_container()

    def run(self, script: str) -> tuple[int, str]:
        from docker.errors import APIError, DockerException, NotFound

        container = self._container_or_fetch()
        try:
            code, out = container.exec_run(["sh", "-c", script], stdout=True, stderr=True)
        except (NotFound, APIError) as exc:
            # The container stopped or vanished since we looked it up: look again next time.
            self._container = None
            raise AsteriskUnavailable(
                f"cannot exec in the Asterisk container {self.container_name!r}: {exc}", self.start_hint()
            ) from exc
        except DockerException as exc:
            self._container = None
            raise AsteriskUnavailable(
                f"cannot reach the Docker engine: {exc}", "start Docker and retry"
            ) from exc
        return code or 0, out.decode("utf-8", errors="replace") if out else ""

    def went_away(self) -> str | None:
        from docker.errors import DockerException

        try:
            if self._docker is None:
                return None
            container = self._docker.containers.get(self.container_name)
        except DockerException as exc:
            return f"the container cannot be found any more ({exc})"
        self._container = None  # look it up afresh next time
        if container.status != "running":
            return f"the container is {container.status}"
        started = (container.attrs.get("State") or {}).get("StartedAt")
        if self._started_at and started and started != self._started_at:
            return f"the container was restarted (at {started})"
        return None

    def upload(self, managed_dir: str, files: Mapping[str, str], tmp_dir: str) -> None:
        import io
        import posixpath
        import tarfile

        from docker.errors import APIError, DockerException

        rel = posixpath.relpath(tmp_dir, managed_dir)
        buf = io.BytesIO()
        now = time.time()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for directory in (TXN_DIR, rel):
                info = tarfile.TarInfo(directory)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, UPLOAD_DIR_MODE, now
                tar.addfile(info)
            for name, text in sorted(files.items()):
                data = text.encode("utf-8")
                info = tarfile.TarInfo(f"{rel}/{name}")
                info.size, info.mode, info.mtime = len(data), UPLOAD_FILE_MODE, now
                tar.addfile(info, io.BytesIO(data))
        container = self._container_or_fetch()
        try:
            ok = container.put_archive(managed_dir, buf.getvalue())
        except APIError as exc:
            if self.went_away() is not None:
                raise AsteriskUnavailable(
                    f"cannot copy files into {self.container_name!r}:{managed_dir}: {exc}", self.start_hint()
                ) from exc
            raise ManagedWriteFailed(
                f"copying {', '.join(sorted(files))} into {self.container_name}:{managed_dir} failed: "
                f"{getattr(exc, 'explanation', None) or exc}\n"
                "Nothing was renamed or reloaded: Asterisk runs the previous config, and so will a restart.",
                "free space in the managed volume (or fix its permissions), then apply again",
            ) from exc
        except DockerException as exc:
            self._container = None
            raise AsteriskUnavailable(
                f"cannot copy files into {self.container_name!r}:{managed_dir}: {exc}", self.start_hint()
            ) from exc
        if not ok:
            raise ManagedWriteFailed(
                f"copying files into {self.container_name!r}:{managed_dir} failed",
                "check that the managed directory exists in the container",
            )


# --- local: the sidecar -------------------------------------------------------------------------


def socket_boot_id(path: str | os.PathLike[str] = CONTROL_SOCKET) -> str | None:
    """Asterisk's boot id as seen from here: its control socket's mtime (None: no socket)."""
    try:
        return str(os.stat(path).st_mtime_ns)
    except OSError:
        return None


class LocalExecutor:
    """Scripts run by `sh -c` in this container, beside Asterisk (shared volumes, same paths)."""

    kind: ControlMode = "local"
    # /proc/1 is the SIDECAR's PID 1 here, not Asterisk's: the box names this sidecar's run (its
    # scripts die with it), prefixed so a reader in the Asterisk container (docker mode) never
    # takes it for an earlier run of its own container; see reconciler.asterisk.lease.
    box_expr = LOCAL_BOX

    def __init__(self, control_socket: str = CONTROL_SOCKET, log_path: str | None = None) -> None:
        self.control_socket = control_socket
        self.log_path = log_path
        self.label = f"the local Asterisk (control socket {control_socket})"
        self._boot: str | None = None

    def start_hint(self) -> str:
        return (
            "start this site's Asterisk container (the sidecar shares its volumes and its control "
            f"socket {self.control_socket}), then retry"
        )

    def logs_hint(self) -> str:
        log = f"{self.log_path} (shared with this sidecar) or " if self.log_path else ""
        return f"{log}the logs of this site's Asterisk container"

    def run(self, script: str) -> tuple[int, str]:
        self._boot = socket_boot_id(self.control_socket)
        try:
            done = subprocess.run(
                ["sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
        except OSError as exc:
            raise AsteriskUnavailable(
                f"cannot run a shell beside Asterisk: {exc}",
                "the sidecar image needs sh, asterisk, sqlite3 and flock (it is built FROM the Asterisk one)",
            ) from exc
        return _exit_code(done.returncode), done.stdout.decode("utf-8", errors="replace")

    def went_away(self) -> str | None:
        now = socket_boot_id(self.control_socket)
        if now is None:
            return f"Asterisk's control socket {self.control_socket} is gone (Asterisk stopped)"
        if self._boot is not None and now != self._boot:
            return "Asterisk was restarted (its control socket is new)"
        return None

    def upload(self, managed_dir: str, files: Mapping[str, str], tmp_dir: str) -> None:
        tmp = Path(tmp_dir)
        try:
            for directory in (Path(managed_dir) / TXN_DIR, tmp):
                directory.mkdir(mode=UPLOAD_DIR_MODE, exist_ok=True)
            for name, text in sorted(files.items()):
                path = tmp / name
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, UPLOAD_FILE_MODE)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(text.encode("utf-8"))
                os.chmod(path, UPLOAD_FILE_MODE)
        except OSError as exc:
            raise ManagedWriteFailed(
                f"writing {', '.join(sorted(files))} into {tmp_dir} failed: {exc.strerror or exc}\n"
                "Nothing was renamed or reloaded: Asterisk runs the previous config, and so will a restart.",
                "free space in the managed volume (or fix its permissions), then apply again",
            ) from exc


def make_executor(
    control: ControlMode, container: str, *, docker_client: Any = None, log_path: str | None = None
) -> Executor:
    """The executor for `--control`: docker (exec in `container`) or local (this container)."""
    if control == "local":
        return LocalExecutor(log_path=log_path)
    return DockerExecutor(container, docker_client)


def kill_signal_codes() -> tuple[int, ...]:
    """Exit codes of a script killed by SIGKILL/SIGTERM (the container or sidecar stopping)."""
    return (128 + signal.SIGKILL, 128 + signal.SIGTERM)
