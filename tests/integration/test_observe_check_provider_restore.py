"""check-provider must not leave the PBX's trunk unregistered (a real PBX, applied, and its fake provider).

The fake provider keeps one binding per account (`max_contacts = 1`, `remove_existing`), like many
real ones: check-provider's test REGISTER replaces the PBX's binding and its unregister removes it,
while the PBX still shows `Registered` until its next refresh (an hour). The restore step makes the
PBX register again; `--no-restore` shows what happens without it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.containers import PROVIDER_USER, PbxStack, poll

pytestmark = pytest.mark.integration

REGISTRATION = "fake_provider-reg"


def provider_holds_pbx_binding(stack: PbxStack) -> bool:
    """True when the provider's trunk AOR has a contact at the PBX's own SIP address."""
    pbx_address = f"@127.0.0.1:{stack.pbx.sip_port}"
    return any(
        contact.startswith(f"{PROVIDER_USER}/") and pbx_address in contact
        for contact in stack.provider.contacts()
    )


def make_pbx_register_again(stack: PbxStack) -> None:
    stack.pbx.cli(f"pjsip send register {REGISTRATION}")
    assert poll(lambda: provider_holds_pbx_binding(stack), 15, 0.5), stack.provider.cli("pjsip show contacts")
    assert stack.pbx.wait_registered(REGISTRATION, 15)


@pytest.fixture
def registered_trunk(live_pbx: PbxStack) -> Iterator[PbxStack]:
    """The applied PBX, registered with the provider, which holds the PBX's binding; restored after."""
    assert live_pbx.pbx.wait_registered(REGISTRATION, 20), live_pbx.pbx.cli("pjsip show registrations")
    if not poll(lambda: provider_holds_pbx_binding(live_pbx), 5, 0.5):
        make_pbx_register_again(live_pbx)  # an earlier test left the binding gone
    yield live_pbx
    if not provider_holds_pbx_binding(live_pbx):
        make_pbx_register_again(live_pbx)


def run_check_provider(stack: PbxStack, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`reconciler check-provider fake_provider` against the stack, secrets from an env file."""
    env_file = tmp_path / "secrets.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in stack.secrets.items()))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RECONCILER_") and key not in stack.secrets
    }
    env |= {"RECONCILER_SECRETS_DIR": str(tmp_path / "no-secrets"), "COLUMNS": "200"}
    command = [sys.executable, "-m", "reconciler", "check-provider", "fake_provider"]
    command += ["--dir", str(stack.desired_dir), "--env-file", str(env_file), "--timeout", "3"]
    command += ["--container", stack.pbx.name, *options]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)


def step_line(output: str, step: str) -> str:
    return next(line for line in output.splitlines() if line.split()[1:2] == [step])


def test_check_provider_re_registers_the_pbx_so_the_provider_holds_its_binding_again(
    registered_trunk: PbxStack, tmp_path: Path
) -> None:
    stack = registered_trunk
    assert provider_holds_pbx_binding(stack)

    proc = run_check_provider(stack, tmp_path)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert step_line(proc.stdout, "REGISTER").startswith("PASS"), proc.stdout
    assert step_line(proc.stdout, "unregister").startswith("PASS"), proc.stdout
    restore = step_line(proc.stdout, "restore")
    assert re.match(r"PASS\s+restore\s+the PBX re-registered to fake_provider \(\d+\.\d s\)$", restore), (
        restore
    )
    assert stack.pbx.registration_status(REGISTRATION) == "Registered"
    assert provider_holds_pbx_binding(stack), stack.provider.cli("pjsip show contacts")
    assert stack.secrets["PROVIDER_PASSWORD"] not in proc.stdout + proc.stderr


def test_without_restore_the_provider_drops_the_pbx_binding_while_the_pbx_still_shows_registered(
    registered_trunk: PbxStack, tmp_path: Path
) -> None:
    stack = registered_trunk
    assert provider_holds_pbx_binding(stack)

    proc = run_check_provider(stack, tmp_path, "--no-restore")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    restore = step_line(proc.stdout, "restore")
    assert restore.startswith("SKIP") and "pjsip send register fake_provider-reg" in restore, restore
    # the hazard the restore step exists for: the trunk is gone at the provider, and Asterisk
    # does not know (it refreshes only when the registration nears its expiry)
    assert not provider_holds_pbx_binding(stack), stack.provider.cli("pjsip show contacts")
    assert stack.pbx.registration_status(REGISTRATION) == "Registered"
