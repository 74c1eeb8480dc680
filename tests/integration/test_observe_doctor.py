"""`reconciler doctor` on a healthy PBX, then on the same PBX container stopped."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness.containers import PbxStack

pytestmark = pytest.mark.integration


def doctor(stack: PbxStack) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RECONCILER_CONTAINER": stack.pbx.name,
        "RECONCILER_STATE_DIR": str(stack.workdir / "state"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "doctor", "--dir", str(stack.desired_dir)],
        env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def _verdict(output: str, check: str) -> str:
    line = next(line for line in output.splitlines() if line[5:].startswith(check))
    return line[:4]


def test_doctor_passes_every_check_on_the_applied_pbx(live_pbx: PbxStack) -> None:
    assert live_pbx.pbx.wait_registered(timeout_s=20)
    proc = doctor(live_pbx)
    assert proc.returncode == 0, proc.stdout
    for check in (
        "Docker engine reachable",
        "container exists",
        "container running",
        "managed config loaded",
        "provider fake_provider registered",
        "emergency route 911",
        "emergency route 112",
        "outbound route external",
        "SIP port bound",
        "RTP port range",
    ):
        assert _verdict(proc.stdout, check) == "PASS", proc.stdout
    assert f"127.0.0.1:{live_pbx.pbx.sip_port}" in proc.stdout
    rtp = f"{live_pbx.pbx.rtp_range[0]}-{live_pbx.pbx.rtp_range[1]}"
    assert rtp in proc.stdout


def test_doctor_on_a_stopped_container_says_so_and_how_to_start_it(live_pbx: PbxStack) -> None:
    live_pbx.pbx.docker_container.stop(timeout=5)
    proc = doctor(live_pbx)
    assert proc.returncode == 1
    assert _verdict(proc.stdout, "container running") == "FAIL"
    assert f"{live_pbx.pbx.name} is exited" in proc.stdout
    assert f"docker start {live_pbx.pbx.name}" in proc.stdout and "make up" in proc.stdout
    assert _verdict(proc.stdout, "managed config loaded") == "SKIP"
