"""`reconciler fleet render-swarm` and the stack generator: services, pinning, versioned secrets
(names only), ports and RTP per site, determinism; and `fleet secrets`/gen-secrets.py for a fleet."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.deploy import layout, swarm
from reconciler.deploy.layout import Images
from reconciler.desired.fleet import load_fleet
from reconciler.errors import ReconcilerError
from tests.unit.deploy_support import GEN_SECRETS, env_values, fleet_copy, run_cli

IMAGES = Images("asterisk-gitops/asterisk:aaaaaaaaaaaa", "asterisk-gitops/sidecar:bbbbbbbbbbbb")


def _render(fleet_dir: Path, *extra: str) -> tuple[str, dict[str, Any]]:
    tags = fleet_dir.parent / "images.env"
    tags.write_text(
        "ASTERISK_IMAGE_TAG=aaaaaaaaaaaa\nSIDECAR_IMAGE_TAG=bbbbbbbbbbbb\nRECONCILER_IMAGE_TAG=c\n"
    )
    out = fleet_dir.parent / "stack.yml"
    result = run_cli(
        "fleet",
        "render-swarm",
        "--fleet",
        str(fleet_dir),
        "--out",
        str(out),
        "--node",
        "node-1",
        "--images-from",
        str(tags),
        *extra,
    )
    assert result.code == 0, result.stderr
    text = out.read_text()
    return text, yaml.safe_load(text)


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    return fleet_copy(tmp_path)


def test_the_example_stack_has_asterisk_reconciler_and_carrier_for_each_site(fleet_dir: Path) -> None:
    _, stack = _render(fleet_dir)
    assert list(stack["services"]) == [
        "hq-asterisk",
        "hq-reconciler",
        "hq-carrier",
        "branch-asterisk",
        "branch-reconciler",
        "branch-carrier",
    ]
    assert stack["networks"] == {"host": {"external": True, "name": "host"}}
    for name, service in stack["services"].items():
        assert service["networks"] == ["host"], name
        assert service["deploy"]["placement"]["constraints"] == ["node.hostname == node-1"], name
        assert service["deploy"]["restart_policy"]["condition"] == "any", name
        assert service["deploy"]["replicas"] == 1
        image = IMAGES.sidecar if name.endswith("-reconciler") else IMAGES.asterisk
        assert service["image"] == image, name


def test_each_site_gets_its_own_ports_rtp_ranges_and_volumes(fleet_dir: Path) -> None:
    _, stack = _render(fleet_dir)
    s = stack["services"]
    assert s["hq-asterisk"]["environment"] == {"RTP_START": "12000", "RTP_END": "12099", "AMI_PORT": "5138"}
    assert s["branch-asterisk"]["environment"] == {
        "RTP_START": "12200",
        "RTP_END": "12299",
        "AMI_PORT": "5238",
    }
    assert s["hq-carrier"]["environment"] == {"RTP_START": "12100", "RTP_END": "12199"}
    assert s["branch-carrier"]["environment"] == {"RTP_START": "12300", "RTP_END": "12399"}
    assert s["hq-carrier"]["command"] == ["carrier"]
    assert s["hq-asterisk"]["volumes"] == [
        "hq_managed:/etc/asterisk/managed",
        "hq_spool:/var/spool/asterisk",
        "hq_logs:/var/log/asterisk",
        "hq_run:/var/run/asterisk",
    ]
    # the sidecar shares all four with its Asterisk, has its state, and the fleet read-only
    sidecar = s["branch-reconciler"]
    assert sidecar["volumes"][:4] == [v.replace("hq_", "branch_") for v in s["hq-asterisk"]["volumes"]]
    assert "branch_state:/state" in sidecar["volumes"]
    assert {"type": "bind", "source": str(fleet_dir.resolve()), "target": "/fleet", "read_only": True} in (
        sidecar["volumes"]
    )
    assert not any("carrier" in str(v) for v in s["hq-asterisk"]["volumes"])
    assert all(v.startswith("hq_carrier_") for v in s["hq-carrier"]["volumes"])
    assert set(stack["volumes"]) >= {"hq_managed", "hq_run", "hq_state", "branch_carrier_spool"}


def test_the_sidecar_watches_its_site_with_local_control_and_its_own_healthcheck(
    fleet_dir: Path,
) -> None:
    _, stack = _render(fleet_dir)
    sidecar = stack["services"]["hq-reconciler"]
    assert sidecar["command"] == [
        "reconciler",
        "watch",
        "--site",
        "hq",
        "--dir",
        "/fleet",
        "--control",
        "local",
        "--http",
        "127.0.0.1:8181",
    ]
    env = sidecar["environment"]
    assert env["RECONCILER_SECRETS_DIR"] == "/run/secrets"
    assert env["RECONCILER_ENV_FILE"] == "/dev/null"
    assert env["RECONCILER_AMI_PORT"] == "5138"
    assert env["RECONCILER_AMI_SECRET_FILE"] == "/etc/asterisk/managed/.gitops/ami.secret"
    test = sidecar["healthcheck"]["test"]
    assert test[0] == "CMD" and "http://127.0.0.1:8181/healthz" in test[-1]
    assert "healthcheck.sh" not in str(test)
    # Asterisk's own check stays on the Asterisk services
    assert stack["services"]["hq-asterisk"]["healthcheck"]["test"] == ["CMD", "/usr/local/bin/healthcheck.sh"]
    assert "docker.sock" not in str(stack)


def test_secrets_are_external_versioned_by_value_and_no_value_is_in_the_file(fleet_dir: Path) -> None:
    text, stack = _render(fleet_dir)
    values = env_values(fleet_dir)
    for site, names in values.items():
        for name, value in names.items():
            assert value not in text, f"{site}:{name} value leaked into the stack"
            wanted = f"{'example'}_{site}_{name}_{layout.secret_version(value)}"
            assert stack["secrets"][wanted] == {"external": True, "name": wanted}
    hq_targets = {s["target"]: s["source"] for s in stack["services"]["hq-reconciler"]["secrets"]}
    assert set(hq_targets) == {
        "EXT_4000_PASSWORD",
        "EXT_4001_PASSWORD",
        "EXT_4002_PASSWORD",
        "PBX_PROVIDER_USER",
        "PBX_PROVIDER_PASSWORD",
    }
    for target, source in hq_targets.items():
        assert re.fullmatch(rf"example_hq_{target}_[0-9a-f]{{10}}", source)
    # only the sidecar gets secrets; branch gets branch's, not hq's
    assert "secrets" not in stack["services"]["hq-asterisk"]
    branch = {s["source"] for s in stack["services"]["branch-reconciler"]["secrets"]}
    assert all(b.startswith("example_branch_") for b in branch)


def test_a_changed_value_changes_only_that_secrets_name(fleet_dir: Path) -> None:
    before, _ = _render(fleet_dir)
    env = fleet_dir / ".secrets" / "branch.env"
    old = env_values(fleet_dir)["branch"]["EXT_5001_PASSWORD"]
    env.write_text(env.read_text().replace(old, "Another-Strong-Value-12345"))
    after, _ = _render(fleet_dir)
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed and all("EXT_5001_PASSWORD" in a for a, _ in changed)
    assert layout.secret_version("Another-Strong-Value-12345") in after


def test_the_render_is_deterministic(fleet_dir: Path) -> None:
    first, _ = _render(fleet_dir)
    second, _ = _render(fleet_dir)
    assert first == second
    fleet = load_fleet(fleet_dir)
    versions = {"hq": {"X_PASSWORD": "0123456789"}}
    a = swarm.dump_stack(swarm.render_stack(fleet, images=IMAGES, secret_versions=versions, node="n"), fleet)
    b = swarm.dump_stack(swarm.render_stack(fleet, images=IMAGES, secret_versions=versions, node="n"), fleet)
    assert a == b


def test_a_site_without_node_needs_the_node_option(fleet_dir: Path) -> None:
    fleet = load_fleet(fleet_dir)
    with pytest.raises(ReconcilerError, match=r"no node in fleet\.yaml and no --node"):
        swarm.render_stack(fleet, images=IMAGES, secret_versions={})


def test_a_site_node_in_fleet_yaml_wins_over_the_node_option(fleet_dir: Path) -> None:
    path = fleet_dir / "fleet.yaml"
    path.write_text(path.read_text().replace("  - name: branch\n", "  - name: branch\n    node: edge-2\n"))
    _, stack = _render(fleet_dir)
    assert stack["services"]["branch-carrier"]["deploy"]["placement"]["constraints"] == [
        "node.hostname == edge-2"
    ]
    assert stack["services"]["hq-asterisk"]["deploy"]["placement"]["constraints"] == [
        "node.hostname == node-1"
    ]


def test_render_swarm_refuses_when_a_secret_has_no_value(tmp_path: Path) -> None:
    bare = fleet_copy(tmp_path, with_secrets=False)
    result = run_cli("fleet", "render-swarm", "--fleet", str(bare), "--out", "-", "--node", "n")
    assert result.code == 1
    assert "have no value: hq:EXT_4000_PASSWORD" in result.stderr
    assert "make fleet-up" in result.stderr


def test_gen_secrets_for_a_fleet_writes_0600_files_and_never_changes_a_value(tmp_path: Path) -> None:
    fleet_dir = fleet_copy(tmp_path)
    first = env_values(fleet_dir)
    assert set(first) == {"hq", "branch"}
    assert set(first["branch"]) == {
        "EXT_5000_PASSWORD",
        "EXT_5001_PASSWORD",
        "PBX_PROVIDER_USER",
        "PBX_PROVIDER_PASSWORD",
    }
    for path in (fleet_dir / ".secrets").glob("*.env"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(fleet_dir / ".secrets").st_mode) == 0o700
    # the same two steps again (what a second `make fleet-up` does): nothing changes
    fleet_copy_again = run_cli("fleet", "secrets", "--fleet", str(fleet_dir), "--json")
    assert '"swarm": "example_hq_EXT_4000_PASSWORD_' in fleet_copy_again.stdout
    assert first["hq"]["EXT_4000_PASSWORD"] not in fleet_copy_again.stdout
    subprocess.run(
        [sys.executable, str(GEN_SECRETS), "--fleet", str(fleet_dir), "-"],
        input=fleet_copy_again.stdout,
        text=True,
        check=True,
    )
    assert env_values(fleet_dir) == first


def test_gen_secrets_refuses_an_env_file_outside_the_fleet(tmp_path: Path) -> None:
    fleet_dir = fleet_copy(tmp_path, with_secrets=False)
    plan = {"fleet": "example", "sites": [{"name": "hq", "env_file": "../outside.env", "secrets": []}]}
    done = subprocess.run(
        [sys.executable, str(GEN_SECRETS), "--fleet", str(fleet_dir), "-"],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "outside" in done.stderr
    assert not (tmp_path / "outside.env").exists()
