"""`reconciler fleet render-k8s`: the kustomize tree's structure, secrets by reference only, the
per-site overlays, determinism."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from reconciler.deploy import k8s
from reconciler.deploy.layout import Images
from reconciler.desired.fleet import load_fleet
from tests.unit.deploy_support import env_values, fleet_copy, run_cli


def _render(fleet_dir: Path, out: Path, *extra: str) -> dict[str, str]:
    result = run_cli("fleet", "render-k8s", "--fleet", str(fleet_dir), "--out", str(out), *extra)
    assert result.code == 0, result.stderr
    return {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


def _pod(files: dict[str, str]) -> dict[str, Any]:
    sts = yaml.safe_load(files["base/statefulset.yaml"])
    assert sts["kind"] == "StatefulSet"
    return sts


def test_render_k8s_writes_a_base_and_one_overlay_per_site(tmp_path: Path) -> None:
    files = _render(fleet_copy(tmp_path), tmp_path / "k8s")
    assert sorted(files) == [
        "base/kustomization.yaml",
        "base/service.yaml",
        "base/statefulset.yaml",
        "overlays/branch/kustomization.yaml",
        "overlays/branch/statefulset-patch.yaml",
        "overlays/hq/kustomization.yaml",
        "overlays/hq/statefulset-patch.yaml",
    ]
    hq = yaml.safe_load(files["overlays/hq/kustomization.yaml"])
    assert hq["resources"] == ["../../base"]
    assert hq["namePrefix"] == "example-hq-"
    assert hq["labels"][0]["pairs"] == {"asterisk-gitops/fleet": "example", "asterisk-gitops/site": "hq"}
    assert hq["patches"] == [{"path": "statefulset-patch.yaml"}]


def test_the_pod_holds_asterisk_and_the_sidecar_sharing_the_socket_and_the_config(tmp_path: Path) -> None:
    sts = _pod(_render(fleet_copy(tmp_path), tmp_path / "k8s"))
    spec = sts["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    asterisk, sidecar = spec["containers"]
    assert (asterisk["name"], sidecar["name"]) == ("asterisk", "reconciler")
    mounts = {m["name"]: m["mountPath"] for m in asterisk["volumeMounts"]}
    assert mounts == {
        "managed": "/etc/asterisk/managed",
        "spool": "/var/spool/asterisk",
        "logs": "/var/log/asterisk",
        "run": "/var/run/asterisk",
    }
    sidecar_mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert sidecar_mounts.items() >= mounts.items()
    assert sidecar_mounts["secrets"] == "/run/secrets"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["run"] == {"name": "run", "emptyDir": {}}
    assert "managed" not in volumes and "spool" not in volumes  # claims, not pod volumes
    claims = [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]]
    assert claims == ["managed", "spool", "state"]
    # probes: Asterisk's own script by exec; the sidecar's /healthz
    assert asterisk["livenessProbe"]["exec"]["command"] == ["/usr/local/bin/healthcheck.sh"]
    assert "/healthz" in sidecar["livenessProbe"]["exec"]["command"][-1]
    assert "healthcheck.sh" not in str(sidecar)
    assert sidecar["args"][:4] == ["reconciler", "watch", "--site", "hq"]
    assert "--control" in sidecar["args"] and "local" in sidecar["args"]


def test_secrets_are_only_referenced_and_no_value_is_written(tmp_path: Path) -> None:
    fleet_dir = fleet_copy(tmp_path)
    files = _render(fleet_dir, tmp_path / "k8s")
    text = "\n".join(files.values())
    for values in env_values(fleet_dir).values():
        for value in values.values():
            assert value not in text
    assert "kind: Secret\n" not in text
    for site in ("hq", "branch"):
        patch = yaml.safe_load(files[f"overlays/{site}/statefulset-patch.yaml"])
        (volume,) = patch["spec"]["template"]["spec"]["volumes"]
        assert volume == {"name": "secrets", "secret": {"secretName": f"example-{site}-secrets"}}


def test_each_overlay_patches_its_sites_ports_rtp_and_site_argument(tmp_path: Path) -> None:
    files = _render(fleet_copy(tmp_path), tmp_path / "k8s")
    patch = yaml.safe_load(files["overlays/branch/statefulset-patch.yaml"])
    asterisk, sidecar = patch["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in asterisk["env"]}
    assert env == {"RTP_START": "12200", "RTP_END": "12299", "AMI_PORT": "5238"}
    assert sidecar["args"][:4] == ["reconciler", "watch", "--site", "branch"]
    assert "127.0.0.1:8182" in sidecar["args"]
    sidecar_env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert sidecar_env["RECONCILER_AMI_PORT"] == "5238"
    assert "8182/healthz" in sidecar["readinessProbe"]["exec"]["command"][-1]


def test_render_k8s_follows_the_repo_given_and_pins_the_image_tags(tmp_path: Path) -> None:
    tags = tmp_path / "images.env"
    tags.write_text("ASTERISK_IMAGE_TAG=111111111111\nSIDECAR_IMAGE_TAG=222222222222\n")
    files = _render(
        fleet_copy(tmp_path),
        tmp_path / "k8s",
        "--repo", "https://git.example.invalid/pbx.git", "--branch", "prod", "--path", "fleet",
        "--images-from", str(tags),
    )  # fmt: skip
    patch = yaml.safe_load(files["overlays/hq/statefulset-patch.yaml"])
    args = patch["spec"]["template"]["spec"]["containers"][1]["args"]
    assert args[args.index("--repo") + 1] == "https://git.example.invalid/pbx.git"
    assert args[args.index("--path") + 1] == "fleet"
    assert args[args.index("--branch") + 1] == "prod"
    base = files["base/statefulset.yaml"]
    assert "asterisk-gitops/asterisk:111111111111" in base
    assert "asterisk-gitops/sidecar:222222222222" in base


def test_the_k8s_render_is_deterministic(tmp_path: Path) -> None:
    fleet_dir = fleet_copy(tmp_path)
    assert _render(fleet_dir, tmp_path / "a") == _render(fleet_dir, tmp_path / "b")
    fleet = load_fleet(fleet_dir)
    assert k8s.render_k8s(fleet, images=Images()) == k8s.render_k8s(fleet, images=Images())


def test_a_node_in_fleet_yaml_becomes_a_node_selector(tmp_path: Path) -> None:
    fleet_dir = fleet_copy(tmp_path)
    path = fleet_dir / "fleet.yaml"
    path.write_text(path.read_text().replace("  - name: hq\n", "  - name: hq\n    node: pbx-node-1\n"))
    files = _render(fleet_dir, tmp_path / "k8s")
    hq = yaml.safe_load(files["overlays/hq/statefulset-patch.yaml"])["spec"]["template"]["spec"]
    branch = yaml.safe_load(files["overlays/branch/statefulset-patch.yaml"])["spec"]["template"]["spec"]
    assert hq["nodeSelector"] == {"kubernetes.io/hostname": "pbx-node-1"}
    assert "nodeSelector" not in branch
