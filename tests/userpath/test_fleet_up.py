"""`make fleet-up` / `make fleet-down` on a copy of examples/fleet, as shipped (its ports:
5160/5161/5170/5138/8181 and 5260/5261/5270/5238/8182, RTP 12000-12399), on a single-node swarm.

- fleet-up exits 0; `docker stack ls` lists the fleet; each site's SIP port is owned by that site's
  Asterisk; a SIPp phone registers at each site with the password fleet-up generated; every site
  is live on the desired revision with its trunk registered;
- a second fleet-up changes nothing (no new secret, no service updated, no task replaced);
- fleet-down removes the stack and leaves swarm mode as it was: inactive before -> inactive after
  (fleet-up initialised it), and active before -> still active.

Reusable: `fleet_up(fleet_dir, stack=...)` / `fleet_down(...)` and the `deployed_fleet` fixture
(the integrator's rollout/kill tests use them). The fleet-up times are printed and written to
test-artifacts/userpath-fleet-up.json (measured, never asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.desired.fleet import load_fleet
from reconciler.desired.secrets import read_env_file
from tests.harness import ports, sipp

pytestmark = [pytest.mark.userpath, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "fleet"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO_ROOT / "test-artifacts"))
FLEET_UP_TIMEOUT_S = 1200  # a fresh machine builds the base image and three images first
TIMINGS: dict[str, float] = {}


@dataclass
class Deployed:
    fleet_dir: Path
    stack: str
    up: subprocess.CompletedProcess[str]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def secret(self, site: str, name: str) -> str:
        return read_env_file(self.fleet_dir / ".secrets" / f"{site}.env")[name]


def _env(fleet_dir: Path, stack: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "FLEET", "STACK"))}
    env["FLEET"] = str(fleet_dir)
    env["SHOW_PASSWORDS"] = "0"
    if stack:
        env["STACK"] = stack
    return env


def _make(
    target: str, fleet_dir: Path, stack: str | None, timeout: float, *, purge: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=REPO_ROOT,
        env={**_env(fleet_dir, stack), "PURGE": "1" if purge else "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def fleet_up(fleet_dir: Path, stack: str | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = _make("fleet-up", fleet_dir, stack, FLEET_UP_TIMEOUT_S)
    return done, time.monotonic() - started


def fleet_down(
    fleet_dir: Path, stack: str | None = None, *, purge: bool = False
) -> subprocess.CompletedProcess[str]:
    return _make("fleet-down", fleet_dir, stack, 300, purge=purge)


def swarm_state() -> str:
    return subprocess.run(
        ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def _example_ports_free() -> list[str]:
    fleet = load_fleet(EXAMPLE)
    busy = []
    for site in fleet.sites:
        udp = [site.sip_port] + ([site.carrier.port] if site.carrier else [])
        for port in udp:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    busy.append(f"127.0.0.1:{port}/udp")
        for port in (site.sip_port, site.ami_port, site.http_port):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                # as the servers do: a closed connection's TIME_WAIT does not hold the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    busy.append(f"127.0.0.1:{port}/tcp")
    return busy


def _copy(tmp: Path) -> Path:
    target = tmp / "fleet"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".secrets"))
    return target


def _record(key: str, seconds: float) -> None:
    TIMINGS[key] = round(seconds, 1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "userpath-fleet-up.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
    print(f"\n[timing] {key}: {seconds:.1f}s")


def _services(stack: str) -> dict[str, tuple[str, str]]:
    """service name -> (spec version, the running task ids)."""
    out = {}
    for line in _docker(
        "service", "ls", "--filter", f"label=com.docker.stack.namespace={stack}", "-q"
    ).split():
        info = json.loads(_docker("service", "inspect", line))[0]
        tasks = _docker("service", "ps", "-q", "--filter", "desired-state=running", line).split()
        out[info["Spec"]["Name"]] = (str(info["Version"]["Index"]), ",".join(sorted(tasks)))
    return out


def _status(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{http}/api/status", timeout=5) as resp:
        data: dict[str, Any] = json.load(resp)
        return data


@pytest.fixture(scope="module")
def deployed_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """The example fleet deployed from a temp copy with `make fleet-up`; always torn down."""
    busy = _example_ports_free()
    if busy:
        pytest.fail("the example fleet's ports are in use (another fleet-up?): " + ", ".join(busy))
    before = swarm_state()
    fleet_dir = _copy(tmp_path_factory.mktemp("fleet-up"))
    stack = os.environ.get("TEST_FLEET_STACK") or None
    try:
        up, seconds = fleet_up(fleet_dir, stack)
        _record("fleet_up_fresh_s", seconds)
        print(up.stdout[-6000:])
        deployed = Deployed(fleet_dir, stack or load_fleet(fleet_dir).name, up, seconds)
        deployed.extra["swarm_before"] = before
        yield deployed
    finally:
        down = fleet_down(fleet_dir, stack, purge=True)
        print(down.stdout[-3000:])
        if swarm_state() != before and before == "inactive":
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, check=False)
        sipp.kill_all()


def test_fleet_up_deploys_the_example_stack_and_exits_0(deployed_fleet: Deployed) -> None:
    assert deployed_fleet.up.returncode == 0, deployed_fleet.up.stdout[-8000:]
    assert deployed_fleet.stack in _docker("stack", "ls", "--format", "{{.Name}}").split()
    services = _services(deployed_fleet.stack)
    assert sorted(services) == sorted(
        f"{deployed_fleet.stack}_{site}-{role}"
        for site in ("hq", "branch")
        for role in ("asterisk", "reconciler", "carrier")
    )
    assert "up in" in deployed_fleet.up.stdout


def test_each_sites_sip_port_is_owned_by_that_sites_asterisk(deployed_fleet: Deployed) -> None:
    fleet = load_fleet(deployed_fleet.fleet_dir)
    for site in fleet.sites:
        cid = _docker(
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.swarm.service.name={deployed_fleet.stack}_{site.name}-asterisk",
        ).split()
        assert len(cid) == 1, f"{site.name}: {cid}"
        pid = int(_docker("inspect", "--format", "{{.State.Pid}}", cid[0]).strip())
        owners = ports.socket_pids(site.sip_port, "udp")
        assert owners is not None, "ss is missing (make test-tools installs iproute2)"
        assert pid in owners, f"{site.name}: 127.0.0.1:{site.sip_port} owned by {owners}, Asterisk is {pid}"


def test_a_phone_registers_at_each_site_with_the_generated_password(deployed_fleet: Deployed) -> None:
    for site, number, port in (("hq", "4001", 5160), ("branch", "5000", 5260)):
        result = sipp.register(number, deployed_fleet.secret(site, f"EXT_{number}_PASSWORD"), port)
        assert result.final_status("REGISTER") == 200, f"{site}: {result.describe()}"
        sipp.unregister(number, deployed_fleet.secret(site, f"EXT_{number}_PASSWORD"), port)
    wrong = sipp.register("5000", "not-the-password-1A", 5260)
    assert wrong.final_status("REGISTER") in (401, 403), wrong.describe()


def test_every_site_is_live_on_the_desired_revision_with_its_trunk_registered(
    deployed_fleet: Deployed,
) -> None:
    fleet = load_fleet(deployed_fleet.fleet_dir)
    for site in fleet.sites:
        status = _status(site.http)
        assert status["live"]["revision"] == status["desired"]["revision"], site.name
        (provider,) = [p for p in status["providers"] if p["name"] == "pbx_provider"]
        assert provider["registered"], f"{site.name}: {provider}"
    # `reconciler fleet status --json` (wp-sidecar) when this tree has it
    probe = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "reconciler"), "fleet", "status", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0:
        done = subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "reconciler"), "fleet", "status", "--json", "--fleet",
             str(deployed_fleet.fleet_dir)],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        report = json.loads(done.stdout)
        assert [s["name"] for s in report["sites"]] == ["hq", "branch"]
        for s in report["sites"]:
            assert s["in_sync"] and s["providers_registered"] == s["providers_total"] == 1, s


def test_a_second_fleet_up_changes_nothing(deployed_fleet: Deployed) -> None:
    secrets_before = sorted(_docker("secret", "ls", "--format", "{{.Name}}").split())
    env_before = {p.name: p.read_text() for p in (deployed_fleet.fleet_dir / ".secrets").glob("*.env")}
    services_before = _services(deployed_fleet.stack)
    up, seconds = fleet_up(deployed_fleet.fleet_dir, deployed_fleet.stack)
    _record("fleet_up_again_s", seconds)
    assert up.returncode == 0, up.stdout[-6000:]
    assert "all present, none created" in up.stdout
    assert "nothing to update" in up.stdout  # the same stack file: not redeployed
    assert sorted(_docker("secret", "ls", "--format", "{{.Name}}").split()) == secrets_before
    assert {
        p.name: p.read_text() for p in (deployed_fleet.fleet_dir / ".secrets").glob("*.env")
    } == env_before
    after = _services(deployed_fleet.stack)
    assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in services_before.items()}, (
        "a task was replaced"
    )
    assert "Sandbox carrier unchanged" in up.stdout


def test_fleet_down_after_fleet_up_initialised_the_swarm_leaves_it(deployed_fleet: Deployed) -> None:
    """Last of the fixture's tests: down here, then the fixture's own down is a no-op."""
    before = deployed_fleet.extra["swarm_before"]
    down = fleet_down(deployed_fleet.fleet_dir, deployed_fleet.stack)
    assert down.returncode == 0, down.stdout
    assert deployed_fleet.stack not in (
        _docker("stack", "ls", "--format", "{{.Name}}").split() if swarm_state() == "active" else []
    )
    assert swarm_state() == before
    if before == "inactive":
        assert "leaving the swarm that make fleet-up initialised" in down.stdout
    # and a second fleet-down with nothing deployed works
    again = fleet_down(deployed_fleet.fleet_dir, deployed_fleet.stack)
    assert again.returncode == 0, again.stdout


def test_fleet_down_removes_the_stack_and_leaves_swarm_mode_as_it_was(tmp_path: Path) -> None:
    """Last in the module: the fixture's stack is down by now; this deploys its own copy."""
    deadline = time.monotonic() + 30
    while (busy := _example_ports_free()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not busy, f"the example fleet's ports are still in use: {busy}"
    before = swarm_state()
    fleet_dir = _copy(tmp_path)
    initialised_here = False
    if before == "inactive":
        # the case "active before -> still active": a swarm the user made, fleet-up must not leave it
        _docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
        initialised_here = True
    try:
        up, seconds = fleet_up(fleet_dir)
        _record("fleet_up_in_existing_swarm_s", seconds)
        assert up.returncode == 0, up.stdout[-6000:]
        assert not (fleet_dir / ".secrets" / "swarm-initialised-by-fleet-up").exists()
        down = fleet_down(fleet_dir)
        assert down.returncode == 0, down.stdout
        assert "example" not in _docker("stack", "ls", "--format", "{{.Name}}").split()
        assert swarm_state() == "active", "fleet-down left a swarm it did not create"
        assert not _docker(
            "secret", "ls", "-q", "--filter", "label=com.asterisk-gitops.fleet=example"
        ).split()
        assert not _docker("ps", "-aq", "--filter", "label=com.docker.stack.namespace=example").split()
        # volumes are kept unless PURGE=1
        assert _docker("volume", "ls", "-q", "--filter", "label=com.docker.stack.namespace=example").split()
    finally:
        fleet_down(fleet_dir, purge=True)
        if initialised_here:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, check=False)
