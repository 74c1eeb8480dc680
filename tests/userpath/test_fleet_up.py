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
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.desired.fleet import load_fleet
from tests.harness import ports, sipp
from tests.harness.fleet import (
    REPO_ROOT,
    Deployed,
    copy_example,
    docker_out,
    example_deployed,
    example_ports_busy,
    fleet_down,
    fleet_up,
    record_timing,
    site_status,
    stack_services,
    swarm_state,
)

pytestmark = [pytest.mark.userpath, pytest.mark.integration]


@pytest.fixture(scope="module")
def deployed_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """The example fleet deployed from a temp copy with `make fleet-up`; always torn down."""
    with example_deployed(tmp_path_factory.mktemp("fleet-up"), "fleet_up_fresh_s") as deployed:
        yield deployed


def test_fleet_up_deploys_the_example_stack_and_exits_0(deployed_fleet: Deployed) -> None:
    assert deployed_fleet.up.returncode == 0, deployed_fleet.up.stdout[-8000:]
    assert deployed_fleet.stack in docker_out("stack", "ls", "--format", "{{.Name}}").split()
    services = stack_services(deployed_fleet.stack)
    assert sorted(services) == sorted(
        f"{deployed_fleet.stack}_{site}-{role}"
        for site in ("hq", "branch")
        for role in ("asterisk", "reconciler", "carrier")
    )
    assert "up in" in deployed_fleet.up.stdout


def test_each_sites_sip_port_is_owned_by_that_sites_asterisk(deployed_fleet: Deployed) -> None:
    fleet = load_fleet(deployed_fleet.fleet_dir)
    for site in fleet.sites:
        cid = docker_out(
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.swarm.service.name={deployed_fleet.stack}_{site.name}-asterisk",
        ).split()
        assert len(cid) == 1, f"{site.name}: {cid}"
        pid = int(docker_out("inspect", "--format", "{{.State.Pid}}", cid[0]).strip())
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
        status = site_status(site.http)
        assert status["live"]["revision"] == status["desired"]["revision"], site.name
        (provider,) = [p for p in status["providers"] if p["name"] == "pbx_provider"]
        assert provider["registered"], f"{site.name}: {provider}"
    # as a user asks it: `make fleet-status ... JSON=1` (the CLI from the reconciler image)
    done = subprocess.run(
        ["make", "--no-print-directory", "fleet-status", f"FLEET={deployed_fleet.fleet_dir}", "JSON=1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [s["name"] for s in report["sites"]] == ["hq", "branch"]
    assert report["rollout"]["state"] == "done", report["rollout"]
    for s in report["sites"]:
        assert s["in_sync"] and s["providers_registered"] == s["providers_total"] == 1, s


def test_a_second_fleet_up_changes_nothing(deployed_fleet: Deployed) -> None:
    secrets_before = sorted(docker_out("secret", "ls", "--format", "{{.Name}}").split())
    env_before = {p.name: p.read_text() for p in (deployed_fleet.fleet_dir / ".secrets").glob("*.env")}
    services_before = stack_services(deployed_fleet.stack)
    up, seconds = fleet_up(deployed_fleet.fleet_dir, deployed_fleet.stack)
    record_timing("fleet_up_again_s", seconds)
    assert up.returncode == 0, up.stdout[-6000:]
    assert "all present, none created" in up.stdout
    assert "nothing to update" in up.stdout  # the same stack file: not redeployed
    assert sorted(docker_out("secret", "ls", "--format", "{{.Name}}").split()) == secrets_before
    assert {
        p.name: p.read_text() for p in (deployed_fleet.fleet_dir / ".secrets").glob("*.env")
    } == env_before
    after = stack_services(deployed_fleet.stack)
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
        docker_out("stack", "ls", "--format", "{{.Name}}").split() if swarm_state() == "active" else []
    )
    assert swarm_state() == before
    if before == "inactive":
        assert "leaving the swarm that make fleet-up initialised" in down.stdout
    # a second fleet-down with nothing deployed works, and PURGE=1 still removes the kept volumes
    label = f"label=com.docker.stack.namespace={deployed_fleet.stack}"
    assert docker_out("volume", "ls", "-q", "--filter", label).split(), "fleet-down kept no volume"
    again = fleet_down(deployed_fleet.fleet_dir, deployed_fleet.stack, purge=True)
    assert again.returncode == 0, again.stdout
    assert not docker_out("volume", "ls", "-q", "--filter", label).split(), again.stdout


def test_fleet_down_removes_the_stack_and_leaves_swarm_mode_as_it_was(tmp_path: Path) -> None:
    """Last in the module: the fixture's stack is down by now; this deploys its own copy."""
    deadline = time.monotonic() + 30
    while (busy := example_ports_busy()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not busy, f"the example fleet's ports are still in use: {busy}"
    before = swarm_state()
    fleet_dir = copy_example(tmp_path)
    initialised_here = False
    if before == "inactive":
        # the case "active before -> still active": a swarm the user made, fleet-up must not leave it
        docker_out("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
        initialised_here = True
    try:
        up, seconds = fleet_up(fleet_dir)
        record_timing("fleet_up_in_existing_swarm_s", seconds)
        assert up.returncode == 0, up.stdout[-6000:]
        assert not (fleet_dir / ".secrets" / "swarm-initialised-by-fleet-up").exists()
        down = fleet_down(fleet_dir)
        assert down.returncode == 0, down.stdout
        assert "example" not in docker_out("stack", "ls", "--format", "{{.Name}}").split()
        assert swarm_state() == "active", "fleet-down left a swarm it did not create"
        assert not docker_out(
            "secret", "ls", "-q", "--filter", "label=com.asterisk-gitops.fleet=example"
        ).split()
        assert not docker_out("ps", "-aq", "--filter", "label=com.docker.stack.namespace=example").split()
        # volumes are kept unless PURGE=1
        assert docker_out(
            "volume", "ls", "-q", "--filter", "label=com.docker.stack.namespace=example"
        ).split()
    finally:
        fleet_down(fleet_dir, purge=True)
        if initialised_here:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, check=False)
