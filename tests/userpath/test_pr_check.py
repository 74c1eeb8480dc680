"""The pull-request check as the shipped workflow runs it: the reconciler installed with
`pip install "asterisk-gitops @ git+..."` into a fresh virtualenv, then `reconciler pr-check desired`
in a throwaway desired-state repository, with the environment GitHub Actions gives a step and a fake
GitHub API on 127.0.0.1 standing in for api.github.com.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.harness import containers
from tests.harness.fake_github import TOKEN, FakeGitHub, fake_github
from tests.harness.install import Venv, fresh_venv, git_repository, tracked_export
from tests.unit.desired_support import SAMPLE_DIR

PR_NUMBER = 42
MARKER = "<!-- asterisk-gitops:pr-check desired -->"
WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "github-actions" / "validate-plan.yml"


@pytest.fixture(scope="module")
def from_git_url(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The reconciler installed the way the example workflow installs it: from a git URL."""
    export = tracked_export(tmp_path_factory.mktemp("asterisk-gitops"))
    sha = git_repository(export)
    # file://localhost/...: pip's URL check wants a host; git reads it as a local path.
    url = f"git+file://localhost{export}@{sha}"
    return fresh_venv(tmp_path_factory.mktemp("venv") / "ci", f"asterisk-gitops @ {url}")


@pytest.fixture
def api() -> Iterator[FakeGitHub]:
    with fake_github() as state:
        yield state


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class PbxRepo:
    root: Path
    base_sha: str

    def extensions_file(self) -> Path:
        for path in sorted((self.root / "desired").glob("*.y*ml")):
            if "extensions" in (yaml.safe_load(path.read_text()) or {}):
                return path
        raise AssertionError("the sample has no file with extensions")

    def add_extension(self, number: str, password_key: str = "password") -> int:
        """Append an extension to the sample's extensions (YAML-edited, comments dropped); return
        the line of its password key."""
        path = self.extensions_file()
        doc = yaml.safe_load(path.read_text())
        doc["extensions"].append(
            {"number": number, "name": "Lab", password_key: f"${{EXT_{number}_PASSWORD}}"}
        )
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        lines = path.read_text().splitlines()
        return next(i for i, text in enumerate(lines, 1) if text.strip().startswith(f"{password_key}:"))

    def push(self, message: str) -> str:
        git(self.root, "add", "-A")
        git(
            self.root,
            "-c",
            "user.name=dev",
            "-c",
            "user.email=dev@example.invalid",
            "commit",
            "-q",
            "-m",
            message,
        )
        return git(self.root, "rev-parse", "HEAD")


@pytest.fixture
def pbx_repo(tmp_path: Path) -> PbxRepo:
    """A desired-state repository: `main` holds the sample, the pull request's branch is checked out."""
    root = tmp_path / "pbx-config"
    root.mkdir()
    shutil.copytree(SAMPLE_DIR, root / "desired")
    git(root, "init", "-q", "-b", "main")
    repo = PbxRepo(root, "")
    repo.base_sha = repo.push("the office")
    git(root, "checkout", "-q", "-b", "add-lab-phone")
    return repo


def run_check(
    venv: Venv, repo: PbxRepo, api: FakeGitHub, head_sha: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`reconciler pr-check desired` with the environment a GitHub Actions step has."""
    event = repo.root.parent / "event.json"
    event.write_text(
        json.dumps(
            {
                "action": "synchronize",
                "number": PR_NUMBER,
                "pull_request": {
                    "number": PR_NUMBER,
                    "base": {"sha": repo.base_sha, "ref": "main"},
                    "head": {"sha": head_sha, "ref": "add-lab-phone"},
                },
            }
        )
    )
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REPOSITORY": "acme/pbx-config",
        "GITHUB_API_URL": api.url,
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_WORKSPACE": str(repo.root),
        "GITHUB_SHA": head_sha,
        "GITHUB_BASE_REF": "main",
        "GITHUB_HEAD_REF": "add-lab-phone",
        "GITHUB_STEP_SUMMARY": str(repo.root.parent / "summary.md"),
    }
    return venv.run("reconciler", "pr-check", "desired", *args, cwd=repo.root, env=env)


def commands_outside_stop_blocks(stdout: str) -> list[str]:
    """The workflow commands the runner would act on (lines inside ::stop-commands:: are not)."""
    active, token = [], None
    for line in stdout.splitlines():
        if token is not None:
            if line == f"::{token}::":
                token = None
            continue
        match = re.fullmatch(r"::stop-commands::(\S+)", line)
        if match:
            token = match[1]
        elif line.startswith("::"):
            active.append(line)
    return active


def test_the_example_workflow_is_a_thin_wrapper_around_the_shipped_command() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"]["pull-requests"] == "write"
    steps = workflow["jobs"]["pr-check"]["steps"]
    setup = next(s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python"))
    assert "cache" not in setup.get("with", {})
    runs = [s["run"] for s in steps if "run" in s]
    assert any("pip install" in r and "RECONCILER_PIP_SPEC" in r for r in runs)
    assert runs[-1].strip() == "reconciler pr-check desired"
    assert "git+https://" in workflow["env"]["RECONCILER_PIP_SPEC"]


def test_a_good_change_gets_one_comment_that_the_next_push_updates_in_place(
    from_git_url: Venv, pbx_repo: PbxRepo, api: FakeGitHub
) -> None:
    pbx_repo.add_extension("4006")
    first = run_check(from_git_url, pbx_repo, api, pbx_repo.push("add the lab phone"), "--verify", "never")
    assert first.returncode == 0, first.stdout + first.stderr
    assert commands_outside_stop_blocks(first.stdout) == []
    (comment,) = api.on(PR_NUMBER)
    assert comment["body"].startswith(MARKER)
    assert "extension 4006 added" in comment["body"] and "✅ valid, 1 change(s)" in comment["body"]
    assert f"against the base `{pbx_repo.base_sha[:12]}`" in comment["body"]
    assert "created the check's comment" in first.stderr

    pbx_repo.add_extension("4007")
    second = run_check(from_git_url, pbx_repo, api, pbx_repo.push("and a second one"), "--verify", "never")
    assert second.returncode == 0, second.stdout + second.stderr
    (again,) = api.on(PR_NUMBER)
    assert again["id"] == comment["id"]
    assert "extension 4007 added" in again["body"] and "2 change(s)" in again["body"]
    assert (api.count("POST"), api.count("PATCH")) == (1, 1)
    assert "updated the check's comment" in second.stderr


def test_a_broken_change_fails_with_an_annotation_on_its_line_and_the_comment_names_the_problem(
    from_git_url: Venv, pbx_repo: PbxRepo, api: FakeGitHub
) -> None:
    line = pbx_repo.add_extension("4006", password_key="pasword")
    result = run_check(from_git_url, pbx_repo, api, pbx_repo.push("typo"))
    assert result.returncode == 1, result.stdout + result.stderr
    annotations = commands_outside_stop_blocks(result.stdout)
    expected = (
        f"::error file=desired/{pbx_repo.extensions_file().name},line={line},title=reconciler validate::"
        "extensions[6].pasword: unknown key 'pasword' (did you mean 'password'?)"
    )
    assert expected in annotations
    assert all(a.startswith("::error file=desired/") for a in annotations)
    (comment,) = api.on(PR_NUMBER)
    assert "❌ 2 problem(s)" in comment["body"] and "unknown key 'pasword'" in comment["body"]
    assert "pr-check FAILED" in result.stderr


def test_without_permission_to_comment_the_plan_goes_to_the_job_summary_with_a_warning(
    from_git_url: Venv, pbx_repo: PbxRepo, api: FakeGitHub
) -> None:
    api.refuse_writes = True
    pbx_repo.add_extension("4006")
    result = run_check(from_git_url, pbx_repo, api, pbx_repo.push("from a fork"), "--verify", "never")
    assert result.returncode == 0, result.stdout + result.stderr
    (warning,) = commands_outside_stop_blocks(result.stdout)
    assert warning.startswith(
        "::warning title=reconciler pr-check::cannot comment on pull request #42 (HTTP 403"
    )
    assert "extension 4006 added" in (pbx_repo.root.parent / "summary.md").read_text()
    assert api.on(PR_NUMBER) == []


def test_the_check_verifies_the_head_in_a_throwaway_asterisk_when_docker_is_there(
    from_git_url: Venv, pbx_repo: PbxRepo, api: FakeGitHub
) -> None:
    if from_git_url.run("reconciler", "verify", "--help", cwd=pbx_repo.root).returncode != 0:
        pytest.skip("SKIPPED LOUDLY: this build has no `reconciler verify` command (wp6-provider adds it)")
    if not containers.docker_available() or not containers.image_available(containers.IMAGE):
        pytest.skip(f"SKIPPED LOUDLY: no Docker engine or no image {containers.IMAGE}; verify cannot run")
    pbx_repo.add_extension("4006")
    head = pbx_repo.push("add the lab phone")
    good = run_check(from_git_url, pbx_repo, api, head, "--verify", "always", "--image", containers.IMAGE)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "| verify | ✅ passed" in api.on(PR_NUMBER)[0]["body"]

    templates = pbx_repo.root.parent / "my-templates"
    templates.mkdir()
    for source in (Path(__file__).resolve().parents[2] / "templates").glob("*.j2"):
        shutil.copy(source, templates / source.name)
    pjsip = templates / "pjsip.conf.j2"
    pjsip.write_text(
        pjsip.read_text().replace("type = endpoint\n", "type = endpoint\nnot_an_option = 1\n", 1)
    )
    bad = run_check(
        from_git_url,
        pbx_repo,
        api,
        head,
        "--verify",
        "always",
        "--image",
        containers.IMAGE,
        "--templates",
        str(templates),
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    body = api.on(PR_NUMBER)[0]["body"]
    assert "| verify | ❌ failed" in body and "not_an_option" in body
