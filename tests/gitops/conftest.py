"""Fixtures for the GitOps loop: a real PBX + provider, a bare git remote, `reconciler watch` running.

Everything is shared by the module (containers start once): the tests of a module form one story
in file order (push, break, fix, hand edit, burst), like a person using the product.
"""

from __future__ import annotations

import os

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.observe.server import github_signature
from tests.harness import containers, ports
from tests.harness.containers import PbxContainer, ProviderContainer

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME_PREFIX = "watch"
WEBHOOK_SECRET = "gitops-test-webhook-secret"
INTERVAL_S = 2.0
EXTENSIONS = (*containers.EXTENSIONS, "4006", "4007")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gitops)


def git(*args: str, cwd: Path) -> str:
    """Run git; return stdout."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Remote:
    """A bare repository acting as the remote, and a work clone a person pushes from."""

    bare: Path
    work: Path

    @property
    def desired(self) -> Path:
        return self.work / "desired"

    def commit_and_push(self, message: str, files: dict[str, str] | None = None) -> str:
        """Write `files` under desired/, commit, push to the remote; return the new commit sha."""
        for name, text in (files or {}).items():
            (self.desired / name).write_text(text)
        git("add", "-A", "desired", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@dataclass
class Watcher:
    """`reconciler watch` in a subprocess; its reconcile log lines are read from its stderr file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    state_dir: Path
    http_port: int
    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _offset: int = 0

    def lines(self) -> list[tuple[float, dict[str, Any]]]:
        """Every reconcile line so far, with the monotonic time this test first saw it."""
        with self.log_path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        complete, _, _ = chunk.rpartition(b"\n")
        if complete:
            self._offset += len(complete) + 1
            now = time.monotonic()
            for raw in complete.decode(errors="replace").splitlines():
                start = raw.find('{"event": "reconcile"')
                if start >= 0:
                    self.seen.append((now, json.loads(raw[start:])))
        return list(self.seen)

    def count(self) -> int:
        return len(self.lines())

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float, after: int = 0
    ) -> tuple[float, dict[str, Any]]:
        """Wait (polling the log every 10 ms) for a reconcile line after index `after` that matches."""
        deadline = time.monotonic() + timeout_s
        while True:
            for seen_at, line in self.lines()[after:]:
                if match(line):
                    return seen_at, line
            if self.proc.poll() is not None:
                raise AssertionError(f"watch exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching reconcile within {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.01)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        """POST to the webhook; return the HTTP status."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/hooks/git", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def webhook(self, sha: str, secret: str = WEBHOOK_SECRET) -> int:
        """Send a GitHub-style push event for `sha`, signed with `secret`."""
        body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
        return self.post(
            body, {"X-Hub-Signature-256": github_signature(secret, body), "X-GitHub-Event": "push"}
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Stack:
    pbx: PbxContainer
    provider: ProviderContainer
    remote: Remote
    watcher: Watcher
    secrets: dict[str, str]
    measurements: dict[str, list[float]] = field(default_factory=dict)

    def endpoints(self) -> str:
        return self.pbx.cli("pjsip show endpoints")

    def managed(self, name: str) -> str:
        return self.pbx.read_file(f"{containers.MANAGED_DIR}/{name}")

    def live_revision(self) -> str | None:
        text = self.managed("state.json")
        return json.loads(text).get("revision") if text else None

    def measure(self, what: str, seconds: float) -> None:
        self.measurements.setdefault(what, []).append(seconds)


def _require_docker() -> None:
    if not containers.docker_available():
        pytest.skip("no Docker engine")
    if not containers.wait_for_image(timeout_s=0):
        pytest.skip(f"image {containers.IMAGE} is not built")


@contextlib.contextmanager
def running_stack(
    tmp: Path,
    source_args: Callable[[PbxContainer, ProviderContainer], list[str]],
    interval_s: float = INTERVAL_S,
    extra_args: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """PBX + provider containers and `reconciler watch <source_args>` following their desired state.

    `source_args(pbx, provider)` prepares the source (a remote, a directory) and returns its
    `watch` options; it runs after the containers started, so it can write their ports into YAML.
    """
    _require_docker()
    secrets = containers.make_secrets(EXTENSIONS)
    pbx = PbxContainer("pbx", name_prefix=NAME_PREFIX)
    provider = ProviderContainer(pbx.sip_port, secrets["PROVIDER_PASSWORD"], name_prefix=NAME_PREFIX)
    watcher: Watcher | None = None
    http_port = ports.reserve_port()
    try:
        provider.start()
        pbx.start()
        args = source_args(pbx, provider)
        state_dir = tmp / "state"
        log_path = tmp / "watch.log"
        env = {**os.environ, **secrets, "RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET, "PYTHONUNBUFFERED": "1"}
        # The watcher runs the code of this checkout, whatever is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        # The watcher runs from an empty directory: no .env or desired/ of the checkout leaks in.
        run_dir = tmp / "run"
        run_dir.mkdir()
        with log_path.open("wb") as log_fh:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "reconciler", "watch", *args,
                    "--container", pbx.name,
                    "--interval", str(interval_s),
                    "--http", f"127.0.0.1:{http_port}",
                    "--state-dir", str(state_dir),
                    "--env-file", str(run_dir / "none.env"),
                    *extra_args,
                ],
                cwd=run_dir,
                env=env,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        watcher = Watcher(proc, log_path, state_dir, http_port)
        watcher.wait_for(lambda line: line["result"] == "applied", timeout_s=60)
        stack = Stack(pbx, provider, Remote(tmp / "remote.git", tmp / "work"), watcher, secrets)
        yield stack
        if stack.measurements:
            print("\nmeasured change -> verified live (s):")
            for what, values in stack.measurements.items():
                print(f"  {what}: " + ", ".join(f"{v:.2f}" for v in values))
    finally:
        if watcher is not None:
            watcher.stop()
        pbx.stop()
        provider.stop()
        ports.release_port(http_port)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`watch --repo` following a bare remote; pushes come from a work clone."""
    tmp = tmp_path_factory.mktemp("gitops")

    def remote(pbx: PbxContainer, provider: ProviderContainer) -> list[str]:
        bare, work = tmp / "remote.git", tmp / "work"
        git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp)
        git("init", "-q", "-b", "main", str(work), cwd=tmp)
        git("config", "user.email", "admin@example.invalid", cwd=work)
        git("config", "user.name", "PBX Admin", cwd=work)
        git("remote", "add", "origin", str(bare), cwd=work)
        containers.write_desired_dir(work / "desired", pbx, provider)
        Remote(bare, work).commit_and_push("Initial phone system: 4000-4005 and the provider")
        return ["--repo", str(bare), "--branch", "main", "--path", "desired"]

    with running_stack(tmp, remote) as s:
        yield s


@pytest.fixture(scope="module")
def dir_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`watch --dir` on a local directory (the `make up` loop); `remote.desired` is that directory."""
    tmp = tmp_path_factory.mktemp("gitops-dir")

    def directory(pbx: PbxContainer, provider: ProviderContainer) -> list[str]:
        containers.write_desired_dir(tmp / "work" / "desired", pbx, provider)
        return ["--dir", str(tmp / "work" / "desired")]

    # A long poll interval: every change here must arrive through a filesystem event.
    with running_stack(tmp, directory, interval_s=600) as s:
        yield s


@pytest.fixture(scope="module")
def sipp_installed() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.skip("sipp is not installed")
    return path


@pytest.fixture(scope="module")
def warn_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`watch --dir --drift warn`: drift is reported, never fixed."""
    tmp = tmp_path_factory.mktemp("gitops-warn")

    def directory(pbx: PbxContainer, provider: ProviderContainer) -> list[str]:
        containers.write_desired_dir(tmp / "work" / "desired", pbx, provider)
        return ["--dir", str(tmp / "work" / "desired")]

    with running_stack(tmp, directory, extra_args=("--drift", "warn")) as s:
        yield s
