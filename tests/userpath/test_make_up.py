"""A newcomer's first hour, as CI: `make up` from a clean clone, the seed's calls, a second `make up`.

The repository is cloned into a temp dir (HEAD, plus the uncommitted changes of tracked files, so
the test runs what a developer is about to commit) and `make up` runs there with the sample exactly
as shipped: no `.env`, no volumes, nothing repointed. The sample binds 127.0.0.1:5060 (PBX), 5070
(carrier) and 8088 (dashboard) and the containers have fixed names, so the test first checks that
those are free and fails, naming what is in the way, rather than touching a user's stack. Only the
compose project name is the test's own, so its volumes are fresh and removed at the end whatever
happens, and a user's `asterisk-gitops_*` volumes are never touched.

The SIP traffic is SIPp on 127.0.0.1 playing phones 4001 and 4002 with the passwords `make up`
wrote into the clone's `.env`. The times of the fresh and of the second `make up` are printed and
written to `test-artifacts/userpath-make-up.json` (measured, never asserted).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from reconciler.asterisk import carrier
from reconciler.desired.secrets import read_env_file
from tests.harness import containers, ports, sipp
from tests.harness.containers import poll

pytestmark = [pytest.mark.userpath, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO_ROOT / "test-artifacts"))
PBX, RECONCILER, CARRIER = "gitops-pbx", "gitops-reconciler", "gitops-carrier"
SIP_PORT, CARRIER_PORT, HTTP_PORT = 5060, carrier.DEFAULT_PORT, 8088
MAKE_UP_TIMEOUT_S = 900  # a fresh machine builds the base image and both images first
# Variables the Makefile, up.sh or compose would take from the environment: the sample runs as shipped.
OVERRIDES = re.compile(
    r"^(DESIRED|DESIRED_DIR|ENV_FILE|SHOW_PASSWORDS|PBX_CONTAINER|RECONCILER_NAME|CARRIER_\w+|RTP_\w+"
    r"|RECONCILER_\w+|ASTERISK_IMAGE_TAG|RECONCILER_IMAGE_TAG|COMPOSE_\w+)$"
)


@dataclass
class Stack:
    """The clone, the environment its `make` runs with, and what the fresh `make up` did."""

    clone: Path
    env: dict[str, str]
    project: str
    up: subprocess.CompletedProcess[str] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def make(self, *targets: str, timeout_s: float = MAKE_UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", *targets],
            cwd=self.clone,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # interleaved, as the user sees it
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def secret(self, name: str) -> str:
        return read_env_file(self.clone / ".env")[name]


def _free_problems() -> list[str]:
    problems = []
    for port in (SIP_PORT, CARRIER_PORT):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                problems.append(f"127.0.0.1:{port}/udp is in use")
    for port in (SIP_PORT, CARRIER_PORT, HTTP_PORT):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                problems.append(f"127.0.0.1:{port}/tcp is in use")
    client = docker.from_env()
    try:
        for name in (PBX, RECONCILER, CARRIER):
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(name)
                problems.append(f"a container named {name} exists")
    finally:
        client.close()
    return problems


def _clean_clone(target: Path) -> Path:
    """`git clone` of this repository's HEAD into `target`, plus uncommitted changes of tracked files."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO_ROOT), str(target)], check=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", head], cwd=target, check=True)
    diff = subprocess.run(
        ["git", "diff", "HEAD", "--binary"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=target, input=diff, check=True)
    return target


def _remove_project(project: str) -> None:
    """Remove what the test's compose project left: containers (ours by label), volumes."""
    client = docker.from_env()
    label = f"com.docker.compose.project={project}"
    try:
        for container in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
    finally:
        client.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`make up` in a clean clone (once for the module); `make down` and volumes removed after."""
    if not containers.docker_available():
        pytest.skip("SKIPPED LOUDLY: no Docker engine answers; `make up` needs one (.ci/run starts it)")
    if shutil.which("sipp") is None:
        pytest.fail("SIPp is not installed: `make test-tools` (or apt-get install sip-tester)", pytrace=False)
    problems = _free_problems()
    if problems:
        pytest.fail(
            "`make up` binds 127.0.0.1:5060/5070/8088 and uses fixed container names, and "
            f"{'; '.join(problems)}. Stop that stack first (`make down` in its checkout); this test "
            "never stops a stack it did not start.",
            pytrace=False,
        )
    project = f"gitops-userpath-{secrets.token_hex(3)}"
    env = {k: v for k, v in os.environ.items() if not OVERRIDES.match(k)}
    env["COMPOSE_PROJECT_NAME"] = project
    result = Stack(_clean_clone(tmp_path_factory.mktemp("userpath") / "clone"), env, project)
    assert not (result.clone / ".env").exists()
    try:
        started = time.monotonic()
        result.up = result.make("up")
        result.timings["fresh_make_up_s"] = round(time.monotonic() - started, 1)
        yield result
    finally:
        sipp.kill_all()
        with contextlib.suppress(Exception):
            result.make("down", timeout_s=120)
        _remove_project(project)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "userpath-make-up.json").write_text(json.dumps(result.timings, indent=2) + "\n")
        if result.up is not None:
            # make up prints the SIP passwords for the newcomer; a CI artifact must not keep them
            (ARTIFACTS / "userpath-make-up.log").write_text(_masked(result.up.stdout, result.clone))
        print(f"\nuserpath timings: {result.timings}")


def _masked(text: str, clone: Path) -> str:
    for value in read_env_file(clone / ".env").values():
        if value:
            text = text.replace(value, "********")
    return text


def _container(name: str) -> docker.models.containers.Container:
    client = docker.from_env()
    try:
        return client.containers.get(name)
    finally:
        client.close()


def _exec(name: str, command: str) -> str:
    _, out = _container(name).exec_run(["sh", "-c", command])
    return out.decode(errors="replace")


def _calls() -> list[carrier.CarrierCall]:
    return carrier.parse_calls_log(_exec(CARRIER, f"cat {carrier.CALLS_LOG} 2>/dev/null; true"))


def _owns_udp_port(name: str, port: int) -> bool:
    pids = ports.socket_pids(port)
    if pids is None:  # not root: Asterisk lists only the transports it did bind
        return f"127.0.0.1:{port}" in _exec(name, "asterisk -rx 'pjsip show transports'")
    mine = {int(row[1]) for row in _container(name).top()["Processes"]}
    return bool(pids & mine)


def test_a_fresh_make_up_exits_0_with_the_pbx_the_watch_loop_and_the_carrier_running(stack: Stack) -> None:
    assert stack.up is not None
    output = stack.up.stdout
    assert stack.up.returncode == 0, output[-4000:]
    for name in (PBX, RECONCILER, CARRIER):
        assert _container(name).status == "running", name
    assert _owns_udp_port(PBX, SIP_PORT) and _owns_udp_port(CARRIER, CARRIER_PORT)
    assert (stack.clone / ".env").stat().st_mode & 0o777 == 0o600
    # what the newcomer reads at the end: phones, a registered trunk, what to dial, where to look
    tail = output[output.index("8/8") :]
    assert "4001" in tail and stack.secret("EXT_4001_PASSWORD") in tail
    assert re.search(r"pbx_provider\s*│\s*Registered", tail), tail
    assert "dial 9 + number: it receives the number without the 9" in tail
    assert "make carrier-log" in tail and carrier.CALLS_LOG in tail


def test_phones_4001_and_4002_register_with_the_passwords_make_up_wrote_into_env(stack: Stack) -> None:
    for ext in ("4001", "4002"):
        result = sipp.register(ext, stack.secret(f"EXT_{ext}_PASSWORD"), SIP_PORT)
        assert result.final_status("REGISTER") == 200, result.describe()
        sipp.unregister(ext, stack.secret(f"EXT_{ext}_PASSWORD"), SIP_PORT, local_port=result.local_port)


def test_4001_calling_4002_is_answered_by_4002s_own_phone(stack: Stack) -> None:
    with sipp.answering_phone("4002", stack.secret("EXT_4002_PASSWORD"), SIP_PORT) as phone:
        result = sipp.call("4001", stack.secret("EXT_4001_PASSWORD"), "4002", SIP_PORT, hold_s=1)

        assert result.ok, result.describe()
        # the phone itself answered: a 200 from voicemail would leave answered_calls() empty
        assert len(phone.answered_calls()) == 1


@pytest.mark.parametrize(("dialled", "received"), [("91234567890", "1234567890"), ("911", "911")])
def test_a_dial_out_is_answered_by_the_carrier_which_logs_the_number_it_received(
    stack: Stack, dialled: str, received: str
) -> None:
    before = len(_calls())

    result = sipp.call("4001", stack.secret("EXT_4001_PASSWORD"), dialled, SIP_PORT, hold_s=1)

    assert result.ok, result.describe()
    new = poll(lambda: _calls()[before:], timeout_s=5)
    assert [(c.to, c.caller) for c in new] == [(received, "4001")]


def test_make_carrier_log_shows_what_the_carrier_received(stack: Stack) -> None:
    result = stack.make("carrier-log", timeout_s=60)
    assert result.returncode == 0, result.stdout
    assert "to=1234567890 from=4001" in result.stdout and "to=911 from=4001" in result.stdout


def test_status_json_shows_the_carrier_as_an_ordinary_registered_provider(stack: Stack) -> None:
    code, out = _container(RECONCILER).exec_run(["reconciler", "status", "--json"])
    status = json.loads(out.decode())
    [provider] = status["providers"]
    assert (provider["name"], provider["registered"], provider["server_uri"]) == (
        "pbx_provider",
        True,
        f"sip:127.0.0.1:{CARRIER_PORT}",
    )
    assert code == 0, status["summary"]


def _asterisk_starts_and_reloads(name: str) -> tuple[int, int]:
    """(uptime in s, number of start/restart/reload lines in its log) of the Asterisk in `name`."""
    uptime = _exec(name, "asterisk -rx 'core show uptime seconds'")
    match = re.search(r"System uptime:\s*(\d+)", uptime)
    assert match, uptime
    pattern = "Asterisk Ready|Reloading module|Dialplan reloaded"
    events = _exec(name, f"grep -c -E '{pattern}' /var/log/asterisk/messages.log")
    return int(match[1]), int(events.strip() or 0)


def test_a_second_make_up_regenerates_no_secret_and_restarts_or_reloads_nothing(stack: Stack) -> None:
    env_before = (stack.clone / ".env").read_bytes()
    started = {n: _container(n).attrs["State"]["StartedAt"] for n in (PBX, RECONCILER, CARRIER)}
    asterisk = {n: _asterisk_starts_and_reloads(n) for n in (PBX, CARRIER)}

    begin = time.monotonic()
    again = stack.make("up")
    stack.timings["second_make_up_s"] = round(time.monotonic() - begin, 1)

    assert again.returncode == 0, again.stdout[-4000:]
    assert (stack.clone / ".env").read_bytes() == env_before
    assert {n: _container(n).attrs["State"]["StartedAt"] for n in started} == started
    for name, (uptime, events) in asterisk.items():
        uptime_now, events_now = _asterisk_starts_and_reloads(name)
        assert uptime_now >= uptime, f"{name} restarted"  # `core restart` keeps the container
        assert events_now == events, f"{name} was restarted or reloaded"
    assert "Sandbox carrier unchanged" in again.stdout and "No changes" in again.stdout
