"""A transport change while a call is up: everything reloadable goes live at once, the restart waits
for the call to end (new calls are still answered meanwhile), `status` shows why the PBX waits, and
a restart that outlasts the wait stays pending until the next apply verifies it.

The change moves the PBX's SIP port. The calls in these tests are placed on the old port, which
stays bound until the restart: PJSIP does not reload transports.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.asterisk.restart import RestartPolicy
from reconciler.errors import RestartRefused
from reconciler.gitops.apply import ApplyOptions, ApplyResult, apply_desired, read_live_state
from reconciler.observe.status import collect_status
from tests.harness import ports, sipp
from tests.harness.containers import PbxStack, desired_yaml, poll

pytestmark = pytest.mark.integration


@pytest.fixture
def moved(live_pbx: PbxStack, tmp_path: Path) -> Iterator[tuple[PbxStack, Path, int]]:
    """A desired dir that moves the PBX to another SIP port; the original is live again afterwards."""
    new_port = ports.reserve_port()
    directory = tmp_path / "moved"
    directory.mkdir()
    for name, text in desired_yaml(new_port, live_pbx.provider.sip_port).items():
        (directory / name).write_text(text)
    try:
        yield live_pbx, directory, new_port
    finally:
        sipp.kill_all()
        back = apply_desired(
            live_pbx.settings(),
            live_pbx.client(),
            live_pbx.desired_dir,
            options=ApplyOptions(restart=RestartPolicy.NOW),
        )
        assert back.unchanged or back.restarted, back
        ports.release_port(new_port)


def start_call(stack: PbxStack, hold_s: float) -> tuple[threading.Thread, dict[str, object]]:
    """4001 calls out through the provider and hangs up after `hold_s`; returns (thread, result)."""
    out: dict[str, object] = {}

    def run() -> None:
        out["result"] = sipp.call(
            "4001", stack.password("4001"), "95550100", stack.pbx.sip_port, hold_s=hold_s
        )
        out["ended"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    assert poll(lambda: stack.pbx.channel_count() >= 2, timeout_s=15, interval_s=0.1), (
        "the call did not come up"
    )
    return thread, out


def bound_ports(stack: PbxStack) -> list[int]:
    return [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", stack.pbx.cli("pjsip show transports"))]


def test_a_transport_change_during_a_call_restarts_when_it_ends_and_new_calls_are_answered_meanwhile(
    moved: tuple[PbxStack, Path, int],
) -> None:
    stack, directory, new_port = moved
    call, call_out = start_call(stack, hold_s=10)
    applied: dict[str, object] = {}

    def run_apply() -> None:
        result = apply_desired(
            stack.settings(directory),
            stack.client(),
            directory,
            options=ApplyOptions(restart=RestartPolicy.IDLE, restart_wait_s=60),
        )
        applied["result"], applied["done"] = result, time.monotonic()

    applying = threading.Thread(target=run_apply)
    applying.start()
    try:
        # While it waits, `status` says why, and the PBX still answers new calls.
        def waiting() -> str:
            lock = collect_status(stack.settings(directory), stack.client())["transaction"]["lock"]
            return lock if lock and "waiting for 1 call(s) to end before restarting" in lock else ""

        assert poll(waiting, timeout_s=15, interval_s=0.5), "status never showed the restart waiting"
        second = sipp.call("4002", stack.password("4002"), "95550101", stack.pbx.sip_port, hold_s=1)
        assert second.answered and second.ok, second.describe()
        assert "done" not in applied, "the restart did not wait for the call"
    finally:
        call.join(timeout=40)
        applying.join(timeout=90)

    first = call_out["result"]
    assert first.ok, first.describe()  # type: ignore[attr-defined]
    result = applied["result"]
    assert isinstance(result, ApplyResult)
    assert result.restarted and result.restart_pending is None
    assert all(c.ok for c in result.checks), result.checks
    assert any(c.name.startswith("transports") for c in result.checks)
    delay = float(applied["done"]) - float(call_out["ended"])  # type: ignore[arg-type]
    print(f"apply returned {delay:.2f} s after the call ended (restart, boot, verification, record)")
    assert new_port in bound_ports(stack)


def test_a_restart_that_outlasts_the_wait_stays_pending_until_the_next_apply_verifies_it(
    moved: tuple[PbxStack, Path, int],
) -> None:
    stack, directory, new_port = moved
    call, call_out = start_call(stack, hold_s=8)
    try:
        result = apply_desired(
            stack.settings(directory),
            stack.client(),
            directory,
            options=ApplyOptions(restart=RestartPolicy.IDLE, restart_wait_s=2),
        )
        assert not result.restarted and result.restart_pending, result
        assert "transport" in result.restart_pending and "waiting for 1 call(s)" in result.restart_pending
        assert all(c.ok for c in result.checks), result.checks  # the reloadable part is live and verified
        status = collect_status(stack.settings(directory), stack.client())
        assert status["restart_pending"] and "transport" in status["restart_pending"]["reason"]
        assert new_port not in bound_ports(stack)
    finally:
        call.join(timeout=40)
    assert call_out["result"].ok  # type: ignore[attr-defined]

    # Asterisk restarts by itself once the call is over; the next apply verifies and clears it.
    assert poll(lambda: new_port in bound_ports(stack), timeout_s=20, interval_s=0.2)
    print(f"restart seen {time.monotonic() - float(call_out['ended']):.2f} s after the call ended")  # type: ignore[arg-type]
    settled = apply_desired(stack.settings(directory), stack.client(), directory)
    assert settled.settled and "restarted" in settled.settled, settled
    assert all(c.ok for c in settled.checks) and any(c.name.startswith("transports") for c in settled.checks)
    assert settled.restart_pending is None
    live = read_live_state(stack.client())
    assert live is not None and live.pending_restart is None
    assert collect_status(stack.settings(directory), stack.client())["restart_pending"] is None


def test_restart_refuse_changes_nothing_while_a_call_is_up(moved: tuple[PbxStack, Path, int]) -> None:
    stack, directory, _new_port = moved
    before = stack.pbx.exec("sha256sum /etc/asterisk/managed/*.conf")[1]
    call, call_out = start_call(stack, hold_s=3)
    try:
        with pytest.raises(RestartRefused) as refused:
            apply_desired(
                stack.settings(directory),
                stack.client(),
                directory,
                options=ApplyOptions(restart=RestartPolicy.REFUSE),
            )
        assert "1 call(s) are up" in refused.value.message and refused.value.temporary
        assert stack.pbx.exec("sha256sum /etc/asterisk/managed/*.conf")[1] == before
        assert "lease" not in stack.pbx.exec("ls -A /etc/asterisk/managed/.gitops")[1].split()
    finally:
        call.join(timeout=30)
    assert call_out["result"].ok  # type: ignore[attr-defined]
