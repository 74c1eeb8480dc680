"""An Asterisk restart with the realtime store: every extension is still there, the state the
reconciler recorded (files and store) still verifies, and the next apply has nothing to do."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from tests.harness import sipp, storedb
from tests.harness.containers import PbxStack, poll

pytestmark = pytest.mark.integration

NUMBERS = [str(n) for n in range(4000, 4010)]


def uptime_s(stack: PbxStack) -> int | None:
    match = re.search(r"System uptime:\s*(\d+)", stack.pbx.cli("core show uptime seconds"))
    return int(match[1]) if match else None


@pytest.mark.parametrize("how", ["core restart now", "docker restart"])
def test_after_a_restart_every_extension_registers_and_the_next_apply_is_unchanged(
    live_pbx: PbxStack, tmp_path: Path, how: str
) -> None:
    stack = live_pbx
    desired = storedb.desired_with(stack, tmp_path / "ten", NUMBERS)
    stack.apply(desired)
    assert storedb.endpoint_ids(stack.pbx) == set(NUMBERS)
    assert poll(lambda: (uptime_s(stack) or 0) >= 2, timeout_s=10)

    if how == "docker restart":
        stack.pbx.docker_restart()
    else:
        stack.pbx.exec("asterisk -rx 'core restart now'")

        def restarted() -> bool:
            now = uptime_s(stack)
            return now is not None and now < 2

        assert poll(restarted, timeout_s=30, interval_s=0.2)
        stack.pbx.wait_booted()

    # Just after boot Asterisk may drop a request or two: each phone gets a few tries.
    def registers(number: str) -> bool:
        return (
            sipp.register(number, stack.password(number), stack.pbx.sip_port).final_status("REGISTER") == 200
        )

    refused = [n for n in NUMBERS if not poll(functools.partial(registers, n), timeout_s=15)]
    assert refused == [], stack.pbx.log_tail(40)
    assert storedb.endpoint_ids(stack.pbx) == set(NUMBERS)

    status = storedb.cli(stack, "status", "--json", "--dir", str(desired))
    assert status.returncode == 0, status.stdout + status.stderr
    shown = json.loads(status.stdout)
    assert shown["summary"]["problems"] == [], shown["summary"]
    assert shown["summary"]["extensions_total"] == len(NUMBERS), shown["summary"]
    assert shown["desired"]["pending"] is False, shown["desired"]
    result = stack.apply(desired)
    assert result.unchanged, result.changes
