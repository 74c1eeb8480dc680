"""The Kubernetes render is valid as the API server would see it, checked offline: `kubectl
kustomize` renders every overlay and `kubernetes-validate --strict` accepts every document. A
deliberately broken overlay is rejected, so the check can fail. Not a real cluster (README).

kubectl is required, not optional: `make test-tools` installs it (Debian's kubernetes-client)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reconciler.deploy import k8s
from tests.unit.deploy_support import fleet_copy, run_cli

VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: run `make test-tools` (Debian package kubernetes-client)")
    return found


def _kustomize(overlay: Path) -> str:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _validate(manifest: Path) -> subprocess.CompletedProcess[str]:
    assert VALIDATE.exists(), f"{VALIDATE} missing: `make venv` installs the test extras"
    return subprocess.run(
        [str(VALIDATE), "--strict", "-k", k8s.VALIDATED_KUBERNETES_VERSION, str(manifest)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        # offline: no proxy, nothing to reach; the schemas ship inside the package
        env={"PATH": "/usr/bin:/bin", "HOME": str(manifest.parent), "no_proxy": "*"},
    )


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    out = tmp_path / "k8s"
    result = run_cli("fleet", "render-k8s", "--fleet", str(fleet_copy(tmp_path)), "--out", str(out))
    assert result.code == 0, result.stderr
    return out


def test_every_overlay_renders_with_kubectl_kustomize_and_passes_strict_validation(rendered: Path) -> None:
    for site in ("hq", "branch"):
        text = _kustomize(rendered / "overlays" / site)
        docs = [d for d in yaml.safe_load_all(text) if d]
        assert [d["kind"] for d in docs] == ["Service", "StatefulSet"]
        assert all(d["metadata"]["name"] == f"example-{site}-pbx" for d in docs)
        manifest = rendered / f"{site}.yaml"
        manifest.write_text(text)
        done = _validate(manifest)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("passed for resource") == 2, done.stdout


def test_a_typo_in_an_overlay_patch_is_rejected_by_the_strict_validation(rendered: Path) -> None:
    patch = rendered / "overlays" / "hq" / k8s.PATCH_FILE
    text = patch.read_text()
    assert "      - name: reconciler\n        args:" in text
    patch.write_text(
        text.replace("      - name: reconciler\n        args:", "      - name: reconciler\n        argz:")
    )
    manifest = rendered / "broken.yaml"
    manifest.write_text(_kustomize(rendered / "overlays" / "hq"))  # kustomize itself lets it through
    done = _validate(manifest)
    assert done.returncode != 0
    assert "argz" in done.stdout + done.stderr


def test_a_wrong_type_in_an_overlay_patch_is_rejected_too(rendered: Path) -> None:
    patch = rendered / "overlays" / "branch" / k8s.PATCH_FILE
    doc = yaml.safe_load(patch.read_text())
    doc["spec"]["replicas"] = "one"
    patch.write_text(yaml.safe_dump(doc))
    manifest = rendered / "broken.yaml"
    manifest.write_text(_kustomize(rendered / "overlays" / "branch"))
    done = _validate(manifest)
    assert done.returncode != 0, done.stdout
