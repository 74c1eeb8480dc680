"""status, /api/status, /metrics and the dashboard against the real PBX, fake provider and SIPp phones.

One PBX + provider for the module (applied once by `live_pbx`); `reconciler watch --http` serves the
web side for the whole module, the way a user runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.observe.status import collect_status
from tests.harness import ports, sipp
from tests.harness.containers import EXTENSIONS, PbxStack, poll

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _env(stack: PbxStack) -> dict[str, str]:
    return {
        **os.environ,
        **stack.secrets,
        "RECONCILER_CONTAINER": stack.pbx.name,
        "RECONCILER_STATE_DIR": str(stack.workdir / "state"),
        "RECONCILER_ENV_FILE": str(stack.workdir / "no.env"),
    }


def status_json(stack: PbxStack) -> tuple[int, dict[str, Any]]:
    """Run `reconciler status --json` as a user would; return (exit code, parsed JSON)."""
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "--json", "--dir", str(stack.desired_dir)],
        env=_env(stack),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, json.loads(proc.stdout)


def _extension(status: dict[str, Any], number: str) -> dict[str, Any]:
    return next(e for e in status["extensions"] if e["number"] == number)


def _wait_status(stack: PbxStack, predicate: Any, timeout_s: float = 45.0) -> dict[str, Any]:
    """Poll `collect_status` in-process (cheap) until `predicate` holds; the tests then confirm
    with the real CLI."""
    seen: list[dict[str, Any]] = []
    settings = stack.settings()

    def check() -> bool:
        seen[:] = [collect_status(settings, stack.client())]
        return bool(predicate(seen[0]))

    try:
        poll(check, timeout_s, interval_s=1.0)
    except Exception as exc:  # show what status said last, not just "timed out"
        raise AssertionError(
            f"status never matched; last: {json.dumps(seen[-1] if seen else None)[:2000]}"
        ) from exc
    return seen[0]


@pytest.fixture(scope="module")
def registered_pbx(live_pbx: PbxStack) -> PbxStack:
    assert live_pbx.pbx.wait_registered(timeout_s=20), live_pbx.pbx.registration_status()
    return live_pbx


@pytest.fixture(scope="module")
def watch_http(registered_pbx: PbxStack, artifacts_dir: Path) -> Iterator[str]:
    """`reconciler watch --dir … --http 127.0.0.1:PORT` running for the module; yields its base URL."""
    stack = registered_pbx
    port = ports.reserve_port()
    ports.release_port(port)  # the watch process binds it now; the reservation only picked it
    log = (artifacts_dir / "observe-watch.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "reconciler", "watch", "--dir", str(stack.desired_dir),
            "--http", f"127.0.0.1:{port}", "--interval", "300",
        ],
        # from the stack's workdir, like a user in their repo: the server's ./desired is the watched dir
        env=_env(stack), stdout=log, stderr=subprocess.STDOUT, cwd=stack.workdir,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"watch exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2):
                    return True
            except OSError:
                return False

        poll(up, 30)
        # the loop's first reconcile: the applied head is live, so it is recorded as unchanged
        poll(lambda: (stack.workdir / "state" / "history.jsonl").exists(), 30)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_status_reports_the_provider_registered_and_4001_online_while_a_phone_is_registered(
    registered_pbx: PbxStack,
) -> None:
    stack = registered_pbx
    with sipp.answering_phone("4001", stack.password("4001"), stack.pbx.sip_port) as phone:
        _wait_status(stack, lambda s: _extension(s, "4001")["online"])
        code, status = status_json(stack)
        assert code == 0
        (provider,) = status["providers"]
        assert provider["name"] == "fake_provider"
        assert provider["state"] == "Registered" and provider["registered"] is True
        ext = _extension(status, "4001")
        assert ext["state"] == "online"
        assert ext["contacts"][0]["address"] == f"127.0.0.1:{phone.local_port}"
        assert ext["contacts"][0]["user_agent"] == "sipp-test-phone"
        assert _extension(status, "4002")["online"] is False
        assert status["live"]["revision"] and status["desired"]["pending"] is False


def test_status_reports_4001_offline_after_the_phone_unregisters(registered_pbx: PbxStack) -> None:
    stack = registered_pbx
    with sipp.answering_phone("4001", stack.password("4001"), stack.pbx.sip_port):
        _wait_status(stack, lambda s: _extension(s, "4001")["online"])
    # leaving the block SIGKILLed the phone and sent REGISTER Expires: 0 for its contact
    _wait_status(stack, lambda s: not _extension(s, "4001")["online"], timeout_s=10)
    _, status = status_json(stack)
    assert _extension(status, "4001")["state"] == "offline"
    assert _extension(status, "4001")["contacts"] == []


def test_status_shows_pending_changes_when_the_desired_head_is_not_live(
    registered_pbx: PbxStack, tmp_path: Path
) -> None:
    changed = shutil.copytree(registered_pbx.desired_dir, tmp_path / "desired")
    text = (changed / "extensions.yaml").read_text().replace("Extension 4005", "Reception")
    (changed / "extensions.yaml").write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "--json", "--dir", str(changed)],
        env=_env(registered_pbx), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    status = json.loads(proc.stdout)
    assert status["desired"]["pending"] is True
    assert status["desired"]["revision"] != status["live"]["revision"]


def test_status_exits_3_when_the_container_does_not_exist(registered_pbx: PbxStack) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "--container", "obs-no-such-pbx", "--json"],
        env=_env(registered_pbx), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3
    status = json.loads(proc.stdout)
    assert status["asterisk"]["reachable"] is False
    assert "make up" in status["asterisk"]["hint"]


def test_metrics_page_parses_and_counts_the_registered_provider(watch_http: str) -> None:
    with urllib.request.urlopen(watch_http + "/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {
        s.name: s for family in text_string_to_metric_families(text) for s in family.samples if not s.labels
    }
    assert samples["reconciler_providers_registered"].value == 1
    assert samples["reconciler_extensions"].value == len(EXTENSIONS)
    assert samples["reconciler_asterisk_up"].value == 1
    assert samples["asterisk_gitops_active_channels"].value == 0  # the status's count: no call up
    assert samples["reconciler_reconcile_duration_seconds_count"].value >= 1
    assert "reconciler_live_revision_info{" in text


def test_api_status_is_the_same_shape_as_status_json(watch_http: str, registered_pbx: PbxStack) -> None:
    with urllib.request.urlopen(watch_http + "/api/status", timeout=30) as response:
        api = json.loads(response.read())
    _, cli = status_json(registered_pbx)
    assert set(api) == set(cli)
    assert api["providers"][0]["state"] == "Registered"


def test_dashboard_in_headless_chromium_shows_the_provider_and_extensions_4000_to_4005(
    watch_http: str, registered_pbx: PbxStack, artifacts_dir: Path, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (make test installs it)")
    stack = registered_pbx
    with sipp.answering_phone("4001", stack.password("4001"), stack.pbx.sip_port):
        _wait_status(stack, lambda s: _extension(s, "4001")["online"])
        common = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=8000",
        ]
        dom = subprocess.run(
            [*common, "--dump-dom", watch_http + "/"], capture_output=True, text=True, timeout=90
        ).stdout
        shot = artifacts_dir / "dashboard.png"
        phone_shot = artifacts_dir / "dashboard-phone.png"
        subprocess.run(
            [*common, "--window-size=1200,900", f"--screenshot={shot}", watch_http + "/"],
            capture_output=True, timeout=90,
        )  # fmt: skip
        subprocess.run(
            [*common, "--window-size=390,844", f"--screenshot={phone_shot}", watch_http + "/"],
            capture_output=True, timeout=90,
        )  # fmt: skip
    assert 'data-loaded="true"' in dom, dom[:3000]
    assert 'data-provider="fake_provider"' in dom and 'data-state="Registered"' in dom
    for number in EXTENSIONS:
        assert f'data-extension="{number}"' in dom
    assert 'data-extension="4001" data-online="true"' in dom
    assert 'data-extension="4000" data-online="false"' in dom
    assert 'id="revision" data-pending="false"' in dom  # the watched head is the live revision
    assert shot.stat().st_size > 10_000 and phone_shot.stat().st_size > 5_000
