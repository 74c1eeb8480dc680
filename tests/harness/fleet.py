"""The example fleet on a single-node swarm, for the userpath tests: `make fleet-up` /
`make fleet-down` as a user runs them, on a temp copy of examples/fleet (its ports as shipped),
and small readers of what the stack runs (services, task containers, each site's /api/status)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.desired.fleet import load_fleet
from reconciler.desired.secrets import read_env_file
from tests.harness import sipp

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "fleet"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO_ROOT / "test-artifacts"))
FLEET_UP_TIMEOUT_S = 1200  # a fresh machine builds the base image and three images first


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


def docker_out(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def example_ports_busy() -> list[str]:
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


def copy_example(tmp: Path) -> Path:
    target = tmp / "fleet"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".secrets"))
    return target


def record_timing(key: str, seconds: float) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "userpath-fleet-up.json"
    try:
        timings = json.loads(path.read_text())
    except (OSError, ValueError):
        timings = {}
    timings[key] = round(seconds, 1)
    path.write_text(json.dumps(timings, indent=2) + "\n")
    print(f"\n[timing] {key}: {seconds:.1f}s")


def stack_services(stack: str) -> dict[str, tuple[str, str]]:
    """service name -> (spec version, the running task ids)."""
    out = {}
    for line in docker_out(
        "service", "ls", "--filter", f"label=com.docker.stack.namespace={stack}", "-q"
    ).split():
        info = json.loads(docker_out("service", "inspect", line))[0]
        tasks = docker_out("service", "ps", "-q", "--filter", "desired-state=running", line).split()
        out[info["Spec"]["Name"]] = (str(info["Version"]["Index"]), ",".join(sorted(tasks)))
    return out


def site_status(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{http}/api/status", timeout=5) as resp:
        data: dict[str, Any] = json.load(resp)
        return data


@contextmanager
def example_deployed(tmp: Path, timing_key: str | None = None) -> Iterator[Deployed]:
    """A temp copy of examples/fleet deployed with `make fleet-up` (whose exit code the caller
    judges), torn down with `make fleet-down PURGE=1` whatever happens, leaving swarm mode as it
    was found."""
    busy = example_ports_busy()
    if busy:
        raise AssertionError("the example fleet's ports are in use (another fleet-up?): " + ", ".join(busy))
    before = swarm_state()
    fleet_dir = copy_example(tmp)
    stack = os.environ.get("TEST_FLEET_STACK") or None
    try:
        up, seconds = fleet_up(fleet_dir, stack)
        if timing_key:
            record_timing(timing_key, seconds)
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
