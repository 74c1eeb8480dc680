"""One provider never holds back the PBX: a provider whose host does not resolve leaves the rest
of a revision live, is reported by apply, status, /metrics and doctor, and comes up by itself once
its host resolves; a real config error in that provider's own identify still rolls back.

The PBX's resolver is 127.0.0.1 (a bind-mounted resolv.conf), where nothing answers: no lookup ever
leaves the machine. The name is made to resolve by a line in the container's /etc/hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.asterisk import providers_health
from reconciler.gitops.apply import ApplyRolledBack
from reconciler.gitops.loop import Reconciler, WatchOptions
from reconciler.gitops.sources import DirectorySource
from reconciler.observe.metrics import render_metrics
from reconciler.observe.status import collect_status
from reconciler.settings import Settings
from tests.harness import containers, ports, sipp
from tests.harness.containers import PbxContainer, PbxStack, ProviderContainer, poll

pytestmark = pytest.mark.integration

HOST = "does-not-exist.invalid"
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
UNRESOLVABLE_PROVIDER = (
    "  - name: pbx_provider\n"
    f"    host: {HOST}\n"
    "    port: 5061\n"
    "    transport: tls\n"
    "    register: true\n"
    "    username: pbxtrunk\n"
    "    password: ${PBX_PROVIDER_PASSWORD}\n"
)
EXT_4006 = (
    '  - number: "4006"\n    name: Extension 4006\n    password: ${EXT_4006_PASSWORD}\n    voicemail: true\n'
)


@pytest.fixture(scope="module")
def stack(
    docker_image: str, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PbxStack]:
    """A PBX whose resolver is 127.0.0.1, its fake provider, and the harness desired state applied."""
    workdir = tmp_path_factory.mktemp("unresolvable")
    resolv = workdir / "resolv.conf"
    resolv.write_text(RESOLV_CONF)
    values = containers.make_secrets((*containers.EXTENSIONS, "4006", "4007"))
    values["PBX_PROVIDER_PASSWORD"] = containers.make_secrets(())["PROVIDER_PASSWORD"]
    pbx = PbxContainer(purpose="dns-pbx").with_read_only_file(resolv, "/etc/resolv.conf")
    provider: ProviderContainer | None = None
    tls_port = ports.reserve_port()
    try:
        provider = ProviderContainer(pbx.sip_port, values["PROVIDER_PASSWORD"])
        pbx.start()
        provider.start()
        desired = containers.write_desired_dir(workdir / "desired", pbx, provider)
        # The TLS transport the unresolvable provider brings must not take 5061 from anyone.
        (desired / "pbx.yaml").write_text((desired / "pbx.yaml").read_text() + f"  tls_port: {tls_port}\n")
        live = PbxStack(pbx, provider, values, desired, workdir)
        live.apply()
        pbx.verify_owns_sip_port()
        assert pbx.wait_registered("fake_provider"), pbx.cli("pjsip show registrations")
        yield live
    finally:
        if provider is not None:
            provider.stop()
        pbx.stop()
        ports.release_port(tls_port)


def variant(stack: PbxStack, name: str, *, provider: bool = False, extension: str | None = None) -> Path:
    """A copy of the stack's desired dir, with the unresolvable provider and/or one more extension."""
    target = stack.workdir / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(stack.desired_dir, target)
    if provider:
        path = target / "providers.yaml"
        path.write_text(path.read_text() + UNRESOLVABLE_PROVIDER)
    if extension:
        path = target / "extensions.yaml"
        text = EXT_4006.replace("4006", extension)
        path.write_text(path.read_text() + text)
    return target


def env_file(stack: PbxStack) -> Path:
    path = stack.workdir / "secrets.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in stack.secrets.items()))
    path.chmod(0o600)
    return path


def cli(stack: PbxStack, *args: str) -> subprocess.CompletedProcess[str]:
    """`reconciler ARGS` as a user runs it, in a directory of its own (no stray .env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env |= {"RECONCILER_STATE_DIR": str(stack.workdir / "state"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=stack.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def endpoints(stack: PbxStack) -> str:
    return stack.pbx.cli("pjsip list endpoints")


def test_a_real_config_error_in_a_providers_own_identify_still_rolls_back(stack: PbxStack) -> None:
    templates = stack.workdir / "bogus-identify-templates"
    shutil.copytree(Settings().templates_dir, templates, dirs_exist_ok=True)
    path = templates / "pjsip.conf.j2"
    path.write_text(path.read_text().replace("type = identify\n", "type = identify\nnot_an_option = yes\n"))
    with pytest.raises(ApplyRolledBack) as refused:
        stack.apply(variant(stack, "bogus-identify", extension="4007"), templates_dir=templates)
    assert "fake_provider-identify" in refused.value.message
    assert "not_an_option" in refused.value.message
    assert "4007" not in endpoints(stack)


def test_apply_with_an_unresolvable_provider_exits_zero_names_the_host_and_everything_else_is_live(
    stack: PbxStack,
) -> None:
    desired = variant(stack, "unresolvable", provider=True, extension="4006")
    applied = cli(
        stack, "apply", str(desired), "--container", stack.pbx.name, "--env-file", str(env_file(stack))
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"pbx_provider: host {HOST} does not resolve" in applied.stdout, applied.stdout
    assert "Unable to find object" in stack.pbx.cli("pjsip show identify pbx_provider-identify")

    registered = sipp.register("4006", stack.password("4006"), stack.pbx.sip_port)
    assert registered.final_status("REGISTER") == 200, registered.describe()
    assert stack.pbx.wait_registered("fake_provider"), stack.pbx.cli("pjsip show registrations")
    stack.provider.clear_received()
    called = sipp.call("4006", stack.password("4006"), "91234567890", stack.pbx.sip_port, hold_s=0.5)
    assert called.ok, called.describe()
    assert stack.provider.wait_received(1) == ["1234567890"]
    sipp.unregister("4006", stack.password("4006"), stack.pbx.sip_port, local_port=registered.local_port)

    state = json.loads(stack.pbx.read_file(f"{containers.MANAGED_DIR}/state.json"))
    assert state["degraded"] == {"pbx_provider": f"host {HOST} does not resolve"}

    again = cli(
        stack, "apply", str(desired), "--container", stack.pbx.name, "--env-file", str(env_file(stack))
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout
    assert f"pbx_provider: host {HOST} does not resolve" in again.stdout, "named even when nothing changed"


def test_status_metrics_and_doctor_show_the_providers_problem(stack: PbxStack) -> None:
    desired = stack.workdir / "unresolvable"
    status = cli(stack, "status", "--json", "--container", stack.pbx.name, "--dir", str(desired))
    shown = json.loads(status.stdout)
    by_name = {p["name"]: p for p in shown["providers"]}
    assert by_name["pbx_provider"]["problem"] == f"host {HOST} does not resolve"
    assert by_name["fake_provider"]["problem"] is None and by_name["fake_provider"]["registered"]
    assert f"provider pbx_provider: host {HOST} does not resolve" in shown["summary"]["problems"]

    settings = stack.settings(desired)
    metrics = render_metrics(collect_status(settings, stack.client()), [])
    assert 'reconciler_provider_degraded{provider="pbx_provider"} 1' in metrics
    assert 'reconciler_provider_degraded{provider="fake_provider"} 0' in metrics

    doctor = cli(stack, "doctor", "--container", stack.pbx.name, "--dir", str(desired))
    line = next(line for line in doctor.stdout.splitlines() if "pbx_provider host resolves" in line)
    assert "FAIL" in line and HOST in doctor.stdout, doctor.stdout


def test_the_watch_loop_brings_the_provider_up_once_its_host_resolves_without_a_new_revision(
    stack: PbxStack,
) -> None:
    desired = stack.workdir / "unresolvable"
    settings = stack.settings(desired)
    source = DirectorySource(desired, cache_dir=stack.workdir / "watch-cache")
    reconciler = Reconciler(settings, source, stack.client(), WatchOptions(interval_s=1.0))
    live_before = json.loads(stack.pbx.read_file(f"{containers.MANAGED_DIR}/state.json"))

    first = reconciler.reconcile("startup")
    assert first.result == "unchanged", first
    still = reconciler.reconcile("poll")  # the host still does not resolve: nothing to do
    assert still.result == "unchanged", still
    assert "Unable to find object" in stack.pbx.cli("pjsip show identify pbx_provider-identify")

    code, out = stack.pbx.exec(f"echo '127.0.0.1 {HOST}' >> /etc/hosts")
    assert code == 0, out
    healed = reconciler.reconcile("poll")
    assert healed.result == "drift-fixed", healed
    assert healed.changes == providers_health.came_back(["pbx_provider"])
    identify = stack.pbx.cli("pjsip show identify pbx_provider-identify")
    assert "127.0.0.1:5061" in identify, identify

    live_after = json.loads(stack.pbx.read_file(f"{containers.MANAGED_DIR}/state.json"))
    assert live_after["revision"] == live_before["revision"]
    assert "degraded" not in live_after
    assert poll(lambda: reconciler.reconcile("poll").result == "unchanged", 5.0)
