"""Changes to a running PBX: a change Asterisk refuses leaves the previous config live, and a call in
progress survives an apply that changes another extension."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.errors import ApplyFailed
from reconciler.settings import Settings
from tests.harness import sipp
from tests.harness.containers import PbxStack, poll

pytestmark = pytest.mark.integration

TEMPLATES = Settings().templates_dir


def renamed_4005(stack: PbxStack, tmp_path: Path, name: str) -> Path:
    """A copy of the stack's desired dir in which extension 4005 has display name `name`."""
    desired = tmp_path / "desired"
    shutil.copytree(stack.desired_dir, desired)
    path = desired / "extensions.yaml"
    text = path.read_text()
    assert "    name: Extension 4005\n" in text
    path.write_text(text.replace("    name: Extension 4005\n", f"    name: {name}\n"))
    return desired


def broken_templates(tmp_path: Path, defect: str) -> Path:
    """A copy of the project's templates whose pjsip.conf Asterisk refuses."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    path = templates / "pjsip.conf.j2"
    text = path.read_text()
    if defect == "invalid option value":
        assert "dtmf_mode = rfc4733" in text
        text = text.replace("dtmf_mode = rfc4733", "dtmf_mode = not_a_dtmf_mode")
    else:  # a section header without its closing bracket: Asterisk ignores the whole file
        text += "\n[gitops-broken-section\ntype = aor\n"
    path.write_text(text)
    return templates


def callerid_of(stack: PbxStack, endpoint: str) -> str:
    """The callerid line of `pjsip show endpoint <endpoint>`."""
    out = stack.pbx.cli(f"pjsip show endpoint {endpoint}")
    return next((line.strip() for line in out.splitlines() if line.strip().startswith("callerid ")), "")


def assert_4001_registers_and_calls_out(stack: PbxStack) -> None:
    registered = sipp.register("4001", stack.password("4001"), stack.pbx.sip_port)
    assert registered.final_status("REGISTER") == 200, registered.describe()
    stack.provider.clear_received()
    called = sipp.call("4001", stack.password("4001"), "91234567890", stack.pbx.sip_port, hold_s=0.5)
    assert called.ok, called.describe()
    assert stack.provider.received_numbers() == ["1234567890"]


@pytest.mark.parametrize(
    ("defect", "asterisk_says"),
    [
        ("invalid option value", "Error parsing dtmf_mode=not_a_dtmf_mode"),
        ("unclosed section header", "no closing ']'"),
    ],
)
def test_a_change_asterisk_refuses_leaves_the_previous_config_live(
    live_pbx: PbxStack, tmp_path: Path, defect: str, asterisk_says: str
) -> None:
    before = callerid_of(live_pbx, "4005")
    desired = renamed_4005(live_pbx, tmp_path, "Refused Rename")

    with pytest.raises(ApplyFailed) as refused:
        live_pbx.apply(desired, templates_dir=broken_templates(tmp_path, defect))

    assert asterisk_says in str(refused.value)  # Asterisk itself refused it, and the error says so

    assert callerid_of(live_pbx, "4005") == before
    assert "Refused Rename" not in live_pbx.pbx.read_file("/etc/asterisk/managed/pjsip.conf")
    assert_4001_registers_and_calls_out(live_pbx)


def test_a_call_in_progress_survives_an_apply_that_changes_another_extension(
    live_pbx: PbxStack, tmp_path: Path
) -> None:
    stack = live_pbx
    desired = renamed_4005(stack, tmp_path, "Renamed During Call")
    stack.provider.clear_received()

    password, port = stack.password("4001"), stack.pbx.sip_port
    applying = threading.Event()
    channel_counts: list[int] = []

    def sample_channels_while_applying() -> None:
        while applying.is_set():
            channel_counts.append(stack.pbx.channel_count())

    with ThreadPoolExecutor(max_workers=2) as pool:
        call = pool.submit(sipp.call, "4001", password, "95550100", port, hold_s=8)
        # both legs up (4001 -> PBX -> provider) before the apply starts
        assert poll(lambda: stack.pbx.channel_count() == 2 or call.done(), timeout_s=10)
        assert not call.done(), call.result().describe()

        applying.set()
        sampler = pool.submit(sample_channels_while_applying)
        try:
            result = stack.apply(desired)
        finally:
            applying.clear()
            sampler.result(timeout=10)
        channel_counts.append(stack.pbx.channel_count())
        finished = call.result(timeout=40)

    assert not result.unchanged and not result.restarted, result
    assert "Renamed During Call" in callerid_of(stack, "4005")
    assert channel_counts and set(channel_counts) == {2}, channel_counts
    # the call went on until 4001 hung up: its BYE was answered 200 and SIPp exited 0
    assert finished.ok, finished.describe()
    assert finished.final_statuses("BYE") == [200], finished.describe()
    assert stack.provider.received_numbers() == ["5550100"]
