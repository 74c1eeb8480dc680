"""`reconciler verify` as a user (or the PR check) runs it: a real Asterisk of the project's image,
booted without a network, says whether it takes a render; nothing is left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import docker
import pytest

from reconciler.asterisk import store
from reconciler.desired.load import load_desired
from reconciler.desired.model import DesiredState, Extension
from reconciler.gitops.verify import LABEL, verify_desired
from reconciler.settings import REPO_ROOT, Settings
from tests.harness import containers
from tests.harness.containers import poll

pytestmark = pytest.mark.integration

SAMPLE = REPO_ROOT / "desired"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "verify", *args, "--env-file", str(cwd / "no.env")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def verify_containers(pid: int | None = None) -> list[str]:
    """Names of the sandbox containers that exist now (of one verify process, with `pid`)."""
    client = docker.from_env()
    try:
        # the low-level list: no per-container lookup that races with a removal
        rows = client.api.containers(all=True, filters={"label": LABEL})
        names = [name.lstrip("/") for row in rows for name in row.get("Names", [])]
    finally:
        client.close()
    return [n for n in names if pid is None or n.startswith(f"reconciler-verify-{pid}-")]


@pytest.fixture
def desired(tmp_path: Path) -> Path:
    """A desired state of our own (the harness's office); the port numbers do not matter here."""
    target = tmp_path / "desired"
    target.mkdir()
    for name, text in containers.desired_yaml(5060, 5070).items():
        (target / name).write_text(text)
    return target


def templates_with(tmp_path: Path, old: str, new: str) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(Settings().templates_dir, target)
    path = target / "pjsip.conf.j2"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return target


def test_verify_passes_on_the_sample_without_its_secrets(docker_image: str, tmp_path: Path) -> None:
    result = run(str(SAMPLE), "--placeholder-secrets", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is True and verdict["problems"] == []
    assert all(check["ok"] for check in verdict["checks"]) and verdict["checks"]
    # The extensions are rows: the sandbox's store was loaded and each one asked about.
    numbers = [e.number for e in load_desired(SAMPLE).state.extensions][: store.VERIFY_CAP]
    names = {check["name"] for check in verdict["checks"]}
    assert any(n.startswith("realtime store loaded") for n in names), names
    assert {f"extension {n} live in the store" for n in numbers} <= names, names


def test_verify_fails_on_an_unknown_option_naming_the_desired_file_line_and_the_option(
    docker_image: str, tmp_path: Path, desired: Path
) -> None:
    # Extensions are store rows, not template lines: the defect goes into a provider's endpoint.
    templates = templates_with(tmp_path, "send_pai = yes\n", "send_pai = yes\nnot_an_option = yes\n")
    result = run(str(desired), "--templates", str(templates), "--placeholder-secrets", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    file, line = load_desired(desired).locate(("providers", 0))
    expected = f"desired/{Path(file).name}:{line}: providers[0]"  # as seen from the CLI's cwd
    first = next(x for x in result.stdout.splitlines() if x.startswith("problem:"))
    assert expected in first and "not_an_option" in first, result.stdout
    assert "does not take revision" in result.stderr


def test_verify_fails_on_a_broken_section_naming_the_rendered_line(
    docker_image: str, tmp_path: Path, desired: Path
) -> None:
    templates = templates_with(tmp_path, "[{{ p.name }}-auth]\n", "[{{ p.name }}-auth\n")
    result = run(
        str(desired), "--templates", str(templates), "--placeholder-secrets", "--format", "json", cwd=tmp_path
    )
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    parse_error = next(p for p in verdict["problems"] if "no closing ']'" in p["text"])
    assert parse_error["field"] == "providers[0].password"
    assert parse_error["rendered"].startswith("pjsip.conf:")
    assert not next(c for c in verdict["checks"] if c["name"].startswith("pjsip.conf live"))["ok"]


def test_verify_fails_on_an_extension_row_asterisk_cannot_use_naming_the_extension(
    docker_image: str, tmp_path: Path, desired: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No desired file can spell a bad row (validation refuses it): make one row bad on the way
    # into the store, as a bug in the row mapping would, and let Asterisk judge it.
    rows_for = store.rows_for

    def one_bad_row(ext: Extension, state: DesiredState, secrets: Mapping[str, str]) -> dict[str, store.Row]:
        rows = rows_for(ext, state, secrets)
        if ext.number == state.extensions[1].number:
            rows[store.ENDPOINTS]["dtmf_mode"] = "not_a_mode"
        return rows

    monkeypatch.setattr(store, "rows_for", one_bad_row)
    for name in [k for k in os.environ if k.startswith("RECONCILER_")]:
        monkeypatch.delenv(name)  # as `run` does for the CLI: nothing of the caller's setup
    settings = Settings.from_env(env_file=tmp_path / "no.env")
    bad, good = (load_desired(desired).state.extensions[i].number for i in (1, 0))

    result = verify_desired(settings, desired, placeholders=True, image=docker_image)

    assert not result.ok
    failed = {c.name: c.detail for c in result.checks if not c.ok}
    assert failed == {f"extension {bad} live in the store": "endpoint not found"}, result.checks
    assert any("dtmf_mode=not_a_mode" in p.text for p in result.problems), result.problems
    assert next(c for c in result.checks if c.name == f"extension {good} live in the store").ok
    assert next(c for c in result.checks if c.name.startswith("realtime store loaded")).ok


def test_a_bad_row_beyond_the_extensions_asked_about_is_found_by_the_boot_that_builds_every_row(
    docker_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = [str(4100 + i) for i in range(store.VERIFY_CAP + 5)]
    desired = tmp_path / "many"
    desired.mkdir()
    for name, text in containers.desired_yaml(
        5060, 5070, extensions={n: f"Ext {n}" for n in numbers}
    ).items():
        (desired / name).write_text(text)
    rows_for = store.rows_for

    def last_row_bad(ext: Extension, state: DesiredState, secrets: Mapping[str, str]) -> dict[str, store.Row]:
        rows = rows_for(ext, state, secrets)
        if ext.number == numbers[-1]:
            rows[store.ENDPOINTS]["dtmf_mode"] = "not_a_mode"
        return rows

    monkeypatch.setattr(store, "rows_for", last_row_bad)
    for name in [k for k in os.environ if k.startswith("RECONCILER_")]:
        monkeypatch.delenv(name)

    settings = Settings.from_env(env_file=tmp_path / "no.env")
    result = verify_desired(settings, desired, placeholders=True, image=docker_image)

    assert not result.ok
    assert all(c.ok for c in result.checks), [c for c in result.checks if not c.ok]
    assert any(c.name == "5 more changed extension(s) not asked about one by one" for c in result.checks)
    assert any("dtmf_mode=not_a_mode" in p.text for p in result.problems), result.problems


def test_verify_without_the_image_exits_three_with_a_hint(
    docker_image: str, tmp_path: Path, desired: Path
) -> None:
    result = run(
        str(desired), "--placeholder-secrets", "--image", "asterisk-gitops/asterisk:no-such-tag", cwd=tmp_path
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no-such-tag is not on this machine" in result.stderr and "hint:" in result.stderr


def test_verify_removes_its_container_when_it_is_finished_or_terminated(
    docker_image: str, tmp_path: Path, desired: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}

    def start_verify() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", "verify", str(desired), "--placeholder-secrets"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    proc = start_verify()
    try:
        assert poll(lambda: verify_containers(proc.pid), 60.0, 0.05), "verify never started its container"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, "verify should have been interrupted while Asterisk booted"
    assert verify_containers(proc.pid) == []

    finished = start_verify()
    assert finished.wait(timeout=120) == 0
    assert verify_containers(finished.pid) == []
