"""The sidecar: `reconciler watch --site hq --dir /fleet --control local` in its own container from
the sidecar image, beside a real Asterisk container, sharing its volumes (managed config, log,
spool, and /var/run/asterisk for the control socket), host network, and NO Docker socket. It
applies the site, a SIPp phone registers, an edit of the fleet directory goes live, and the
sidecar answers /healthz (its own health check, not Asterisk's)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets as _random
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.desired.revision import content_hash
from tests.harness import ports, sipp
from tests.harness.containers import LABEL, PbxContainer, image_available, make_secrets

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTENSIONS = ("4000", "4001", "4002")


def sidecar_image() -> str:
    """SIDECAR_TEST_IMAGE, else the sidecar image of THIS tree (built when missing; `:latest` may
    be another tree's): scripts/build-images.sh reports its content-hash tag."""
    if os.environ.get("SIDECAR_TEST_IMAGE"):
        return os.environ["SIDECAR_TEST_IMAGE"]
    with tempfile.NamedTemporaryFile("r", suffix=".tags") as tags:
        env = {**os.environ, "IMAGE_TAGS_OUT": tags.name}
        script = str(REPO_ROOT / "scripts" / "build-images.sh")
        done = subprocess.run([script, "sidecar"], env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot build the sidecar image: {done.stderr[-400:]}")
        found = re.findall(r"^SIDECAR_IMAGE_TAG=(\w+)$", tags.read(), re.M)
    image = f"asterisk-gitops/sidecar:{found[-1]}"
    assert image_available(image), image
    return image


def write_fleet(
    root: Path, pbx: PbxContainer, tls_port: int, http_port: int, numbers: tuple[str, ...]
) -> None:
    (root / "bases" / "common").mkdir(parents=True, exist_ok=True)
    (root / "sites" / "hq").mkdir(parents=True, exist_ok=True)
    (root / "fleet.yaml").write_text(
        "name: sidecar-test\n"
        "sites:\n"
        "  - name: hq\n"
        "    bases: [common]\n"
        f"    sip_port: {pbx.sip_port}\n"
        f"    tls_port: {tls_port}\n"
        f"    rtp: {{start: {pbx.rtp_range[0]}, end: {pbx.rtp_range[1]}}}\n"
        f"    ami_port: {pbx.ami_port}\n"
        f"    http: 127.0.0.1:{http_port}\n"
    )
    (root / "bases" / "common" / "pbx.yaml").write_text(
        "pbx:\n  bind: 127.0.0.1\n  media_address: 127.0.0.1\n"
    )
    exts = "".join(
        f'  - number: "{n}"\n    name: Phone {n}\n    password: ${{EXT_{n}_PASSWORD}}\n    voicemail: false\n'
        for n in numbers
    )
    (root / "sites" / "hq" / "extensions.yaml").write_text("extensions:\n" + exts)


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_ok_revision(base: str, revision: str, sidecar: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            _, status = get_json(f"{base}/api/status")
            fleet = status.get("fleet") or {}
            if (
                fleet.get("ok_revision") == revision
                and (status.get("live") or {}).get("revision") == revision
            ):
                return dict(status)
        time.sleep(0.5)
    logs = sidecar.logs(tail=40).decode(errors="replace")
    raise AssertionError(f"revision {revision[:19]} not live in time; status {status!r:.600}\n{logs}")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    client = docker.from_env()
    image = sidecar_image()
    run_volume = f"test-sidecar-run-{_random.token_hex(4)}"
    client.volumes.create(run_volume, labels={LABEL: "sidecar"})
    pbx = PbxContainer("sidecar-pbx").with_volume(run_volume, "/var/run/asterisk")
    tls_port, http_port = ports.reserve_port(), ports.reserve_port()
    sidecar = None
    try:
        pbx.start()
        fleet = tmp_path / "fleet"
        write_fleet(fleet, pbx, tls_port, http_port, EXTENSIONS[:2])
        fleet.chmod(0o755)
        values = make_secrets(EXTENSIONS)
        sidecar = client.containers.run(
            image,
            [
                "reconciler",
                "watch",
                "--site",
                "hq",
                "--dir",
                "/fleet",
                "--control",
                "local",
                "--interval",
                "5",
            ],
            name=f"test-sidecar-{_random.token_hex(4)}",
            network_mode="host",
            volumes_from=[pbx.name],  # managed, log, spool and the /var/run/asterisk volume
            volumes={str(fleet): {"bind": "/fleet", "mode": "ro"}},
            environment={
                "RECONCILER_ENV_FILE": "/dev/null",
                "RECONCILER_AMI_PORT": str(pbx.ami_port),
                "RECONCILER_AMI_SECRET_FILE": "/etc/asterisk/managed/.gitops/ami.secret",
                **{k: v for k, v in values.items() if k.startswith("EXT_")},
            },
            labels={LABEL: "sidecar"},
            detach=True,
        )
        yield {"pbx": pbx, "fleet": fleet, "sidecar": sidecar, "http": f"http://127.0.0.1:{http_port}",
               "values": values, "tls_port": tls_port, "http_port": http_port}  # fmt: skip
    finally:
        if sidecar is not None:
            with contextlib.suppress(docker.errors.NotFound):
                sidecar.remove(force=True, v=True)
        pbx.stop()
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(run_volume).remove(force=True)
        ports.release_port(tls_port)
        ports.release_port(http_port)
        client.close()


def test_the_sidecar_applies_a_site_without_a_docker_socket_and_follows_an_edit(site: dict[str, Any]) -> None:
    sidecar, fleet, base, pbx = site["sidecar"], site["fleet"], site["http"], site["pbx"]
    mounts = [m.get("Destination") for m in sidecar.attrs["Mounts"]]
    assert "/var/run/docker.sock" not in mounts and "/var/run/asterisk" in mounts

    status = wait_ok_revision(base, content_hash(fleet), sidecar)
    assert status["control"] == "local"
    assert status["fleet"]["site"] == "hq" and status["fleet"]["rollout"]["state"] == "done"
    assert {e["number"] for e in status["extensions"]} >= {"4000", "4001"}

    values = site["values"]
    assert sipp.register("4000", values["EXT_4000_PASSWORD"], pbx.sip_port).final_status("REGISTER") == 200

    write_fleet(fleet, pbx, site["tls_port"], site["http_port"], EXTENSIONS)  # adds 4002
    wait_ok_revision(base, content_hash(fleet), sidecar)
    assert sipp.register("4002", values["EXT_4002_PASSWORD"], pbx.sip_port).final_status("REGISTER") == 200

    code, health = get_json(f"{base}/healthz")
    assert code == 200, health
    _, view = get_json(f"{base}/api/fleet")
    assert view["fleet"] == "sidecar-test" and view["sites"][0]["in_sync"] is True
    with urllib.request.urlopen(f"{base}/fleet", timeout=5) as page:
        assert b"api/fleet" in page.read()
    # The image's own health check (python3 -m reconciler.observe.healthcheck), never Asterisk's.
    deadline, health_state = time.monotonic() + 40, None
    while time.monotonic() < deadline and health_state != "healthy":
        time.sleep(1)
        sidecar.reload()
        health_state = (sidecar.attrs["State"].get("Health") or {}).get("Status")
    assert health_state == "healthy", sidecar.attrs["State"].get("Health")
    logs = sidecar.logs().decode(errors="replace")
    assert "docker" not in " ".join(line for line in logs.splitlines() if "ERROR" in line).lower()
