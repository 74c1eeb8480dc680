"""`reconciler check-provider` against the fake provider (a second Asterisk), through the real CLI.

The module's PBX is started but never applied, so it keeps no registration and the restore step
has nothing to do; test_observe_check_provider_restore.py checks the restore against an applied PBX.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ports
from tests.harness.containers import PbxStack

pytestmark = pytest.mark.integration


def check_provider(
    stack: PbxStack, desired: Path, container: str | None = None, **secrets: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **stack.secrets,
        **secrets,
        "RECONCILER_ENV_FILE": str(stack.workdir / "no.env"),
        "RECONCILER_SECRETS_DIR": str(stack.workdir / "no-secrets"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "check-provider",
            "fake_provider",
            "--dir",
            str(desired),
            "--timeout",
            "3",
            "--container",
            container or stack.pbx.name,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _line(output: str, step: str) -> str:
    return next(line for line in output.splitlines() if line.split()[1:2] == [step])


def test_good_credentials_pass_every_step(pbx_stack: PbxStack) -> None:
    proc = check_provider(pbx_stack, pbx_stack.desired_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for step in ("DNS", "connect", "OPTIONS", "REGISTER", "unregister"):
        assert _line(proc.stdout, step).startswith("PASS"), proc.stdout
    assert "no lookup needed" in _line(proc.stdout, "DNS")
    assert "200 OK after digest authentication" in _line(proc.stdout, "REGISTER")
    # the test binding is gone again: the provider holds no contact for the trunk user
    assert not pbx_stack.provider.trunk_registered()
    restore = _line(proc.stdout, "restore")
    assert restore.startswith("SKIP") and "keeps no registration fake_provider-reg" in restore, restore


def test_an_unreachable_pbx_container_is_a_warning_that_says_how_to_re_register(pbx_stack: PbxStack) -> None:
    missing = f"{pbx_stack.pbx.name}-missing"
    proc = check_provider(pbx_stack, pbx_stack.desired_dir, container=missing)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    restore = _line(proc.stdout, "restore")
    assert restore.startswith("WARN") and f"{missing!r} does not exist" in restore, proc.stdout
    assert "one binding per account" in restore
    assert 'asterisk -rx "pjsip send register fake_provider-reg"' in proc.stdout


def test_wrong_password_fails_at_the_register_step_and_names_the_secret(pbx_stack: PbxStack) -> None:
    proc = check_provider(pbx_stack, pbx_stack.desired_dir, PROVIDER_PASSWORD="Wrong-Passw0rd-for-test")
    assert proc.returncode == 1
    assert _line(proc.stdout, "OPTIONS").startswith("PASS")
    assert _line(proc.stdout, "REGISTER").startswith("FAIL")
    assert "after authentication" in _line(proc.stdout, "REGISTER")
    assert "the password for fake_provider is wrong: check PROVIDER_PASSWORD" in proc.stdout
    assert _line(proc.stdout, "restore").startswith("SKIP")  # a REGISTER was sent: restore was tried
    assert "Wrong-Passw0rd-for-test" not in proc.stdout + proc.stderr


def test_closed_port_fails_at_the_connect_step(pbx_stack: PbxStack, tmp_path: Path) -> None:
    closed = ports.reserve_port()  # reserved and free: nothing listens there
    try:
        desired = shutil.copytree(pbx_stack.desired_dir, tmp_path / "desired")
        text = (desired / "providers.yaml").read_text()
        port_line = f"port: {pbx_stack.provider.sip_port}"
        assert port_line in text
        (desired / "providers.yaml").write_text(text.replace(port_line, f"port: {closed}"))
        proc = check_provider(pbx_stack, desired)
    finally:
        ports.release_port(closed)
    assert proc.returncode == 1
    assert _line(proc.stdout, "DNS").startswith("PASS")
    connect = _line(proc.stdout, "connect")
    assert connect.startswith("FAIL") and "nothing listens" in connect, proc.stdout
    assert _line(proc.stdout, "OPTIONS").startswith("SKIP")
    assert _line(proc.stdout, "REGISTER").startswith("SKIP")
    assert "restore" not in proc.stdout  # no REGISTER was sent: nothing to restore


def test_unknown_provider_name_is_an_error_with_the_known_names(pbx_stack: PbxStack) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "check-provider", "nosuch", "--dir", str(pbx_stack.desired_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "known: fake_provider" in proc.stderr
