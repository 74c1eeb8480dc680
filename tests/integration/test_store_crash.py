"""A reconciler killed between the store's delta and the record (state.json): the next apply
settles it, the PBX runs exactly one revision's rows, and the apply after that has nothing to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import sipp, storedb
from tests.harness.containers import EXTENSIONS, MANAGED_DIR, PbxStack

pytestmark = pytest.mark.integration

CHANGED = ("4001", "4002")

# `reconciler apply` as a user runs it, SIGKILLed by itself at the exact point where the store's
# delta has committed and state.json is about to be written (the record step of the apply).
KILLED_AT_RECORD = """
import os, runpy, sys
import reconciler.gitops.apply as apply_mod
def killed(self, *args, **kwargs):
    os.kill(os.getpid(), 9)
apply_mod._Apply.record = killed
sys.argv = ["reconciler", "apply", sys.argv[1]]
runpy.run_module("reconciler", run_name="__main__")
"""


def test_a_reconciler_killed_after_the_store_delta_leaves_one_revision_after_the_next_apply(
    live_pbx: PbxStack, tmp_path: Path
) -> None:
    stack = live_pbx
    before = stack.apply(storedb.desired_with(stack, tmp_path / "baseline", EXTENSIONS))
    assert before.recorded or before.unchanged
    old = {n: storedb.new_password(stack, n)[0] for n in CHANGED}
    new = {n: stack.password(n) for n in CHANGED}
    target = storedb.desired_with(stack, tmp_path / "changed", EXTENSIONS)
    state_before = stack.pbx.read_file(f"{MANAGED_DIR}/state.json")

    run = subprocess.run(
        [sys.executable, "-c", KILLED_AT_RECORD, str(target)],
        env=storedb.cli_env(stack),
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert run.returncode == -9, run.stdout + run.stderr  # it died at the record, not elsewhere
    # The delta committed, nothing recorded it: the store is ahead of state.json.
    assert {n: storedb.password_row(stack.pbx, n) for n in CHANGED} == new
    assert stack.pbx.read_file(f"{MANAGED_DIR}/state.json") == state_before

    settled = stack.apply(target)
    print(f"the next apply settled it: changes={settled.changes} settled={settled.settled}")

    assert settled.recorded and all(c.ok for c in settled.checks), settled
    rows = {n: storedb.password_row(stack.pbx, n) for n in CHANGED}
    assert rows in (new, old), "the store mixes two revisions' rows"
    live = new if rows == new else old
    for number in CHANGED:
        ok = sipp.register(number, live[number], stack.pbx.sip_port)
        assert ok.final_status("REGISTER") == 200, ok.describe()
    assert stack.apply(target).unchanged
