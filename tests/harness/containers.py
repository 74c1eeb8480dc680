"""Asterisk containers for tests: the PBX under test and a second Asterisk acting as the provider.

The provider is the product's own sandbox carrier (`reconciler.asterisk.carrier`: the config `make up`
gives `gitops-carrier`), on a reserved port, so the tests exercise the carrier users get.

Both run the project's image with host networking (SIP on 127.0.0.1, a port reserved by
`ports.reserve_port`, their own RTP block). Containers are named `test-<purpose>-<random>` and are
always removed by `stop()` (the context managers and fixtures call it in `finally`).
"""

from __future__ import annotations

import os

# Ryuk (testcontainers' reaper image) cannot be pulled here; cleanup is ours (stop() in finally).
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import contextlib
import re
import secrets
import shlex
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import docker
from testcontainers.core.container import DockerContainer

from reconciler.asterisk import carrier
from tests.harness import ports
from tests.harness.waiting import poll

if TYPE_CHECKING:
    from reconciler.asterisk.client import AsteriskClient
    from reconciler.gitops.apply import ApplyResult
    from reconciler.settings import Settings

IMAGE = os.environ.get("ASTERISK_TEST_IMAGE", "asterisk-gitops/asterisk:latest")
MANAGED_DIR = "/etc/asterisk/managed"
MESSAGES_LOG = "/var/log/asterisk/messages.log"
PROVIDER_USER = "pbxtrunk"
EXTENSIONS = tuple(str(n) for n in range(4000, 4006))
T = TypeVar("T")


LABEL = "asterisk-gitops.test"
OWNER_LABEL = "asterisk-gitops.test.owner"
LIVE: set[AsteriskContainer] = set()  # started and not yet stopped: dumped on test failure


class HarnessError(RuntimeError):
    """The test harness could not set up what a test needs (image, container, port)."""


def image_available(image: str = IMAGE) -> bool:
    """True when `image` exists locally (it cannot be pulled here: it is built by `.ci/run`/make)."""
    try:
        client = docker.from_env()
    except docker.errors.DockerException:
        return False
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def docker_available() -> bool:
    """True when a Docker engine answers."""
    try:
        client = docker.from_env()
        client.ping()
        client.close()
        return True
    except docker.errors.DockerException:
        return False


def wait_for_image(image: str = IMAGE, timeout_s: float = 0.0, poll_s: float = 5.0) -> bool:
    """Wait up to `timeout_s` for `image` to exist locally; True when it does."""
    deadline = time.monotonic() + timeout_s
    while True:
        if image_available(image):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def remove_orphans(name_prefix: str = "test") -> list[str]:
    """Remove `<name_prefix>-*` containers of this harness whose starting process is gone.

    A test run killed with SIGKILL never reaches its `finally`, and Ryuk (which would reap its
    containers) cannot run here. Only containers with this harness's owner label, started on this
    host by a process that no longer exists, are removed. Returns their names.
    """
    client = docker.from_env()
    removed: list[str] = []
    try:
        for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
            host, _, pid = container.labels.get(OWNER_LABEL, "").rpartition(":")
            if not container.name.startswith(f"{name_prefix}-") or host != socket.gethostname():
                continue
            if pid.isdigit() and _process_exists(int(pid)):
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
                removed.append(container.name)
        for volume in client.volumes.list(filters={"label": OWNER_LABEL}):  # tmpfs managed volumes
            host, _, pid = (volume.attrs.get("Labels") or {}).get(OWNER_LABEL, "").rpartition(":")
            if host != socket.gethostname() or (pid.isdigit() and _process_exists(int(pid))):
                continue
            with contextlib.suppress(docker.errors.APIError):
                volume.remove(force=True)
                removed.append(volume.name)
    finally:
        client.close()
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AsteriskContainer:
    """One Asterisk of the project's image, host-networked, with a reserved SIP port and RTP block.

    `sip_port` is reserved at construction, so a test can write it into config before `start()`.
    """

    # The image's role argument (`entrypoint.sh carrier`); None: the default role, the PBX.
    role: str | None = None

    def __init__(
        self,
        purpose: str,
        *,
        image: str = IMAGE,
        name_prefix: str = "test",
        managed_tmpfs_bytes: int | None = None,
    ) -> None:
        self.purpose = purpose
        self.image = image
        self.name = f"{name_prefix}-{purpose}-{secrets.token_hex(4)}"
        self.sip_port: int = ports.reserve_port()
        # AMI (asterisk/ami-setup.sh) on 127.0.0.1 at a port of its own: two Asterisks on one
        # port would fail silently, as SIP does.
        self.ami_port: int = ports.reserve_port()
        self.rtp_range: tuple[int, int] = ports.reserve_rtp_range()
        self._files: dict[str, bytes] = {}
        self._volumes: list[tuple[str, str, str]] = []
        self._container: DockerContainer | None = None
        # A small managed volume that can be filled up: a tmpfs-backed named volume, kept mounted
        # across `docker restart` by a second, idle container (a tmpfs is emptied when its last
        # user stops).
        self.managed_tmpfs_bytes = managed_tmpfs_bytes
        self.managed_volume: str | None = None
        self._keeper: docker.models.containers.Container | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def _labels(self) -> dict[str, str]:
        # who started it: lets a later run remove what a killed run (no finally) left behind
        return {LABEL: self.purpose, OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}"}

    def with_managed_file(self, name: str, text: str) -> Self:
        """Put `text` into `<managed dir>/<name>` before Asterisk starts (readable by asterisk)."""
        self._files[name] = text.encode()
        return self

    def with_read_only_file(self, host_path: Path, container_path: str) -> Self:
        """Bind-mount a host file read-only, e.g. an /etc/resolv.conf that sends lookups to 127.0.0.1."""
        self._volumes.append((str(host_path), container_path, "ro"))
        return self

    def with_volume(self, source: str, container_path: str) -> Self:
        """Mount a named volume (or host directory) read-write, e.g. /var/run/asterisk shared with
        a sidecar reconciler (its control socket)."""
        self._volumes.append((source, container_path, "rw"))
        return self

    def start(self, boot_timeout_s: float = 30.0) -> Self:
        """Create and start the container, wait until Asterisk is fully booted."""
        if not image_available(self.image):
            raise HarnessError(f"image {self.image} is not built; run `make image` (or .ci/run) first")
        container = (
            DockerContainer(self.image)
            .with_name(self.name)
            .with_env("RTP_START", str(self.rtp_range[0]))
            .with_env("RTP_END", str(self.rtp_range[1]))
            .with_env("AMI_PORT", str(self.ami_port))
        )
        if self.role is not None:
            container.with_command(self.role)
        kwargs: dict[str, object] = {"network_mode": "host", "labels": self._labels()}
        for name, data in self._files.items():
            container.with_copy_into_container(data, f"{MANAGED_DIR}/{name}", 0o644)
        for host_path, container_path, mode in self._volumes:
            container.with_volume_mapping(host_path, container_path, mode)
        self._container = container
        LIVE.add(self)
        try:
            if self.managed_tmpfs_bytes is not None:
                container.with_volume_mapping(self._make_tmpfs_volume(), MANAGED_DIR, "rw")
            container.with_kwargs(**kwargs)
            container.start()
            self.wait_booted(boot_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_tmpfs_volume(self) -> str:
        client = docker.from_env()
        try:
            name = f"{self.name}-managed"
            client.volumes.create(
                name,
                driver="local",
                driver_opts={"type": "tmpfs", "device": "tmpfs", "o": f"size={self.managed_tmpfs_bytes}"},
                labels=self._labels(),
            )
            self.managed_volume = name
            self._keeper = client.containers.run(
                self.image,
                entrypoint=["sleep", "infinity"],
                name=f"{self.name}-keeper",
                network_mode="none",
                volumes={name: {"bind": "/keep", "mode": "rw"}},
                labels=self._labels(),
                detach=True,
            )
        finally:
            client.close()
        return name

    def stop(self) -> None:
        """Remove the container (and its anonymous volumes) and release its ports. Idempotent."""
        container, self._container = self._container, None
        LIVE.discard(self)
        if container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                container.stop(force=True, delete_volume=True)
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            with contextlib.suppress(docker.errors.NotFound):
                keeper.remove(force=True, v=True)  # the image declares VOLUMEs: no orphans
        volume, self.managed_volume = self.managed_volume, None
        if volume is not None:
            client = docker.from_env()
            try:
                with contextlib.suppress(docker.errors.NotFound):
                    client.volumes.get(volume).remove(force=True)
            finally:
                client.close()
        ports.release_port(self.sip_port)
        ports.release_port(self.ami_port)
        ports.release_rtp_range(self.rtp_range)

    def docker_restart(self, boot_timeout_s: float = 30.0) -> None:
        """`docker restart` the container and wait until Asterisk is fully booted again."""
        self.docker_container.restart(timeout=2)
        self.wait_booted(boot_timeout_s)

    def docker_kill(self) -> None:
        """`docker kill` the container (SIGKILL: every process in it dies at once)."""
        self.docker_container.kill()

    def docker_start(self, boot_timeout_s: float = 30.0) -> None:
        """`docker start` a killed or stopped container and wait until Asterisk is fully booted."""
        self.docker_container.start()
        self.wait_booted(boot_timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def docker_container(self) -> docker.models.containers.Container:
        """The docker SDK container object (for put_archive, logs, …)."""
        if self._container is None:
            raise HarnessError(f"{self.name} is not running")
        return self._container.get_wrapped_container()

    # --- AMI -------------------------------------------------------------------------------------

    def ami_secret(self) -> str:
        """The AMI secret ami-setup.sh generated in this container's managed volume."""
        from reconciler.settings import AMI_CONTAINER_SECRET_PATH

        code, out = self.exec(["cat", AMI_CONTAINER_SECRET_PATH])
        if code != 0 or not out.strip():
            raise HarnessError(f"{self.name} has no AMI secret at {AMI_CONTAINER_SECRET_PATH}: {out[:200]}")
        return out.strip()

    def ami_settings(self, base: Settings) -> Settings:
        """`base` pointed at this container's AMI (port and secret)."""
        return replace(base, ami_host=ports.LOOPBACK, ami_port=self.ami_port, ami_secret=self.ami_secret())

    # --- commands --------------------------------------------------------------------------------

    def exec(self, cmd: str | list[str], user: str = "root") -> tuple[int, str]:
        """Run `cmd` (a shell string or an argv list) in the container; return (exit code, output)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else cmd
        code, out = self.docker_container.exec_run(argv, user=user)
        return code, out.decode(errors="replace")

    def cli(self, *commands: str) -> str:
        """Run Asterisk CLI commands in one `docker exec`; return their output, in order, joined."""
        return "\n".join(self.cli_each(*commands))

    def cli_each(self, *commands: str) -> list[str]:
        """Run Asterisk CLI commands in one `docker exec`; return one output per command."""
        marker = f"CLI-OUTPUT-SPLIT-{secrets.token_hex(4)}"
        script = f"; echo {marker}; ".join(f"asterisk -rx {shlex.quote(c)}" for c in commands)
        _, out = self.exec(script)
        return [part.strip("\n") for part in out.split(f"{marker}\n")]

    def wait_booted(self, timeout_s: float = 30.0) -> None:
        """Wait until `core waitfullybooted` answers (the control socket exists only after start-up)."""
        ok = poll(lambda: "fully booted" in self.exec("asterisk -rx 'core waitfullybooted'")[1], timeout_s)
        if not ok:
            raise HarnessError(
                f"{self.name}: Asterisk did not finish booting in {timeout_s} s:\n{self.log_tail(40)}"
            )

    def log_tail(self, lines: int = 200) -> str:
        """The last `lines` lines of Asterisk's messages.log in the container."""
        return self.exec(f"tail -n {int(lines)} {MESSAGES_LOG}")[1]

    def log_size(self) -> int:
        """Bytes in Asterisk's messages.log now: where the next line will start."""
        return int(self.exec(f"stat -c %s {MESSAGES_LOG}")[1].strip() or 0)

    def log_since(self, offset: int) -> str:
        """What Asterisk logged after byte `offset` of messages.log."""
        return self.exec(f"tail -c +{int(offset) + 1} {MESSAGES_LOG}")[1]

    def read_file(self, path: str) -> str:
        """Text of a file in the container ('' when it does not exist)."""
        code, out = self.exec(["cat", path])
        return out if code == 0 else ""

    # --- checks ----------------------------------------------------------------------------------

    def owns_sip_port(self) -> bool:
        """True when this container's Asterisk is bound to 127.0.0.1:`sip_port` (UDP).

        Two Asterisks on one port fail silently (the loser logs "Address already in use" and still
        boots), so both the transport list and the socket's owning process are checked.
        """
        transports = self.cli("pjsip show transports")
        if not re.search(rf"\s127\.0\.0\.1:{self.sip_port}\s", transports + "\n"):
            return False
        pids = ports.socket_pids(self.sip_port)
        if pids is None:  # cannot see process owners: Asterisk lists only transports it did bind
            return "could not be started" not in self.log_tail(400)
        mine = {int(row[1]) for row in self.docker_container.top()["Processes"]}
        return bool(pids & mine)

    def verify_owns_sip_port(self, timeout_s: float = 10.0) -> None:
        """Raise HarnessError unless this container owns its SIP port within `timeout_s`."""
        if not poll(self.owns_sip_port, timeout_s):
            raise HarnessError(
                f"{self.name} does not own 127.0.0.1:{self.sip_port}/udp "
                f"(another process bound it first, or no transport was configured):\n"
                f"{self.cli('pjsip show transports')}\n{self.log_tail(30)}"
            )

    def contacts(self) -> list[str]:
        """`Aor/ContactUri` of every contact in `pjsip show contacts`."""
        return re.findall(r"^\s*Contact:\s+(\S+/sip:\S+)", self.cli("pjsip show contacts"), re.MULTILINE)

    def channel_count(self) -> int:
        """Number of active channels (`core show channels count`)."""
        match = re.search(r"(\d+) active channels?", self.cli("core show channels count"))
        return int(match.group(1)) if match else 0


class PbxContainer(AsteriskContainer):
    """The PBX under test: starts with an empty managed dir; the reconciler writes into it."""

    def __init__(self, purpose: str = "pbx", **kwargs: Any) -> None:
        super().__init__(purpose, **kwargs)

    def registration_status(self, name_fragment: str = "") -> str:
        """Status column of the first outbound registration (containing `name_fragment`), or ''."""
        for line in self.cli("pjsip show registrations").splitlines():
            if name_fragment in line and re.search(r"\b(Registered|Unregistered|Rejected|Stopp\w+)\b", line):
                return re.search(r"\b(Registered|Unregistered|Rejected|Stopp\w+)\b", line).group(1)  # type: ignore[union-attr]
        return ""

    def wait_registered(self, name_fragment: str = "", timeout_s: float = 20.0) -> bool:
        """Poll `pjsip show registrations` until a registration shows `Registered`."""
        return bool(poll(lambda: self.registration_status(name_fragment) == "Registered", timeout_s, 0.5))


class ProviderContainer(AsteriskContainer):
    """A second Asterisk acting as the SIP provider for the PBX: the product's sandbox carrier.

    It accepts a REGISTER from user `pbxtrunk` with `password`, identifies the PBX's INVITEs by its
    address *and port* (a bare 127.0.0.1 would make every loopback sender the trunk) and still
    challenges them, answers any number, appends each answered call to its calls log
    (`carrier.CALLS_LOG`: `to=<number> from=<caller ID>`) and hangs up after `answer_s` seconds
    unless the caller hangs up first.
    """

    role = "carrier"

    def __init__(self, pbx_port: int, password: str, *, answer_s: int = 60, **kwargs: str) -> None:
        super().__init__("provider", **kwargs)
        self.pbx_port = pbx_port
        self.config = carrier.CarrierConfig(
            sip_port=self.sip_port,
            pbx_port=pbx_port,
            username=PROVIDER_USER,
            password=password,
            provider="fake_provider",
            max_call_s=int(answer_s),
        )
        for name, text in carrier.render_carrier(self.config).items():
            self.with_managed_file(name, text)

    def start(self, boot_timeout_s: float = 30.0) -> Self:
        super().start(boot_timeout_s)
        try:
            self.verify_owns_sip_port()
        except BaseException:
            self.stop()
            raise
        return self

    def received_calls(self) -> list[carrier.CarrierCall]:
        """Every call the provider answered (its calls log), oldest first."""
        return carrier.parse_calls_log(self.read_file(carrier.CALLS_LOG))

    def received_numbers(self) -> list[str]:
        """Every number the provider answered, oldest first."""
        return [call.to for call in self.received_calls()]

    def clear_received(self) -> None:
        """Forget the numbers received so far (empties the log; Asterisk keeps owning the file)."""
        log = shlex.quote(carrier.CALLS_LOG)
        self.exec(f"[ -f {log} ] && : > {log}; true")

    def wait_received(self, count: int, timeout_s: float = 10.0) -> list[str]:
        """Poll until at least `count` numbers were received; return what was received."""
        numbers: list[str] = []

        def enough() -> bool:
            numbers[:] = self.received_numbers()
            return len(numbers) >= count

        poll(enough, timeout_s)
        return numbers

    def trunk_registered(self) -> bool:
        """True when the PBX holds a registered contact on the provider's `pbxtrunk` AOR."""
        return any(c.startswith(f"{PROVIDER_USER}/") for c in self.contacts())


# --- desired state for a PBX + provider pair -------------------------------------------------------


def make_secrets(extensions: Iterable[str] = EXTENSIONS) -> dict[str, str]:
    """Fresh strong random secret values for the test desired state (never written to git)."""

    def strong() -> str:
        while True:
            value = secrets.token_urlsafe(24)
            if re.search(r"[a-z]", value) and re.search(r"[A-Z]", value) and re.search(r"[0-9]", value):
                return value

    values = {"PROVIDER_PASSWORD": strong()}
    for number in extensions:
        values[f"EXT_{number}_PASSWORD"] = strong()
    return values


def desired_yaml(
    pbx_port: int,
    provider_port: int,
    *,
    extensions: Mapping[str, str] | None = None,
    provider_name: str = "fake_provider",
) -> dict[str, str]:
    """File name → YAML text of a desired state for a test PBX and its fake provider.

    `extensions` maps number → display name (default 4000-4005 "Extension N"). Passwords are
    `${EXT_<n>_PASSWORD}` references; the provider password is `${PROVIDER_PASSWORD}`.
    """
    exts = extensions if extensions is not None else {n: f"Extension {n}" for n in EXTENSIONS}
    ext_lines = "".join(
        f'  - number: "{number}"\n'
        f"    name: {name}\n"
        f"    password: ${{EXT_{number}_PASSWORD}}\n"
        f"    voicemail: true\n"
        for number, name in exts.items()
    )
    first = next(iter(exts), "4000")
    return {
        "pbx.yaml": (f"pbx:\n  bind: 127.0.0.1\n  port: {pbx_port}\n  media_address: 127.0.0.1\n"),
        "providers.yaml": (
            "providers:\n"
            f"  - name: {provider_name}\n"
            "    host: 127.0.0.1\n"
            f"    port: {provider_port}\n"
            "    transport: udp\n"
            "    register: true\n"
            f"    username: {PROVIDER_USER}\n"
            "    password: ${PROVIDER_PASSWORD}\n"
        ),
        "extensions.yaml": "extensions:\n" + ext_lines,
        "routes.yaml": (
            "outbound:\n"
            f'  - {{name: external, prefix: "9", strip: 1, provider: {provider_name}}}\n'
            f'  - {{name: emergency, numbers: ["911", "112"], provider: {provider_name}}}\n'
            "inbound:\n"
            f'  - {{provider: {provider_name}, did: "+34910000000", to: "{first}"}}\n'
        ),
    }


def write_desired_dir(
    path: Path,
    pbx: AsteriskContainer,
    provider: AsteriskContainer,
    *,
    extensions: Mapping[str, str] | None = None,
) -> Path:
    """Write the desired YAML for `pbx` + `provider` into `path` (created); return `path`."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.yaml"):
        old.unlink()
    for name, text in desired_yaml(pbx.sip_port, provider.sip_port, extensions=extensions).items():
        (path / name).write_text(text)
    return path


def desired_dir(
    tmp_path: Path,
    pbx: AsteriskContainer,
    provider: AsteriskContainer,
    secret_values: Mapping[str, str] | None = None,
) -> tuple[Path, dict[str, str]]:
    """Write `<tmp_path>/desired` for these containers; return (its path, secret values for the env).

    Pass `secret_values` when the provider was started with `PROVIDER_PASSWORD` already chosen
    (it must be); missing values are generated.
    """
    values = {**make_secrets(), **(secret_values or {})}
    return write_desired_dir(tmp_path / "desired", pbx, provider), values


# --- a PBX with its fake provider, for integration and gitops tests -------------------------------


def isolated_settings(container: str, workdir: Path, secrets: Mapping[str, str]) -> Settings:
    """Settings that point the reconciler at `container`, with `secrets` in `environ` only: no env
    file, no secrets dir and no state of the machine's own (all of it under `workdir`)."""
    from reconciler.settings import REPO_ROOT, Settings

    return Settings(
        templates_dir=REPO_ROOT / "templates",
        container=container,
        state_dir=workdir / "state",
        env_file=workdir / "no.env",
        secrets_dir=workdir / "no-secrets",
        environ=dict(secrets),
    )


@dataclass
class PbxStack:
    """A started PBX (empty managed dir) and fake provider, with secrets and a desired dir for them.

    Nothing is applied yet: call `apply()` (the reconciler's real pipeline) or let a watch loop do it.
    """

    pbx: PbxContainer
    provider: ProviderContainer
    secrets: dict[str, str]
    desired_dir: Path
    workdir: Path

    def settings(self, desired_dir: Path | None = None, templates_dir: Path | None = None) -> Settings:
        """Settings that point the reconciler at this PBX, with the secrets in `environ` only."""
        base = isolated_settings(self.pbx.name, self.workdir, self.secrets)
        # the AMI port of this PBX; its secret is read from the container (as `open_control` does)
        base = replace(base, desired_dir=desired_dir or self.desired_dir, ami_port=self.pbx.ami_port)
        return replace(base, templates_dir=templates_dir) if templates_dir else base

    def client(self) -> AsteriskClient:
        """An AsteriskClient for the PBX container."""
        from reconciler.asterisk.client import AsteriskClient

        return AsteriskClient(self.pbx.name)

    def apply(self, desired_dir: Path | None = None, templates_dir: Path | None = None) -> ApplyResult:
        """Run `reconciler.gitops.apply.apply_desired` for `desired_dir` (default: the stack's own)."""
        from reconciler.gitops.apply import apply_desired

        settings = self.settings(desired_dir, templates_dir)
        return apply_desired(settings, self.client(), settings.desired_dir)

    def password(self, ext: str) -> str:
        """The SIP password of extension `ext`."""
        return self.secrets[f"EXT_{ext}_PASSWORD"]


@contextlib.contextmanager
def pbx_stack(
    workdir: Path, *, name_prefix: str = "test", prepare: Callable[[PbxContainer], None] | None = None
) -> Iterator[PbxStack]:
    """Start a PBX and a fake provider that expects it; write `<workdir>/desired`; always clean up.
    `prepare(pbx)` runs before the PBX starts (e.g. to put a managed file in place)."""
    workdir.mkdir(parents=True, exist_ok=True)
    values = make_secrets()
    pbx = PbxContainer(name_prefix=name_prefix)
    if prepare is not None:
        prepare(pbx)
    provider: ProviderContainer | None = None
    try:
        provider = ProviderContainer(pbx.sip_port, values["PROVIDER_PASSWORD"], name_prefix=name_prefix)
        pbx.start()
        provider.start()
        desired = write_desired_dir(workdir / "desired", pbx, provider)
        yield PbxStack(pbx, provider, values, desired, workdir)
    finally:
        if provider is not None:
            provider.stop()
        pbx.stop()
