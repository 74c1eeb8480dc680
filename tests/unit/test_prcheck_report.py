"""`reconciler pr-check`'s check, without GitHub: throwaway secrets, the base from git, the plan,
the verify step's outcomes, and the markdown report (a throwaway git repository per test)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.desired.load import load_desired
from reconciler.desired.model import secret_refs
from reconciler.desired.render import render_desired
from reconciler.desired.secrets import weakness
from reconciler.errors import AsteriskUnavailable, Problem
from reconciler.gitops import prcheck
from reconciler.gitops.prcheck import PrCheckOptions, PrCheckSetupError, run_pr_check
from tests.unit.desired_support import SAMPLE_DIR, edit

NEW_EXTENSION = '  - number: "4006"\n    name: Lab\n    password: ${EXT_4006_PASSWORD}\n'


def commit(repo: git.Repo, message: str) -> str:
    repo.git.add("-A")
    repo.git.commit("-q", "-m", message, "--allow-empty")
    return repo.head.commit.hexsha


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> git.Repo:
    """A desired-state repository: `main` holds a copy of the sample, the cwd is its root."""
    root = tmp_path / "pbx-config"
    root.mkdir()
    handle = git.Repo.init(root, initial_branch="main")
    with handle.config_writer() as config:
        config.set_value("user", "name", "test")
        config.set_value("user", "email", "test@example.invalid")
    shutil.copytree(SAMPLE_DIR, root / "desired")
    commit(handle, "the office")
    handle.git.checkout("-q", "-b", "change")
    monkeypatch.chdir(root)
    return handle


def add_extension(repo: git.Repo, text: str = NEW_EXTENSION) -> None:
    path = Path(repo.working_tree_dir or ".") / "desired" / "extensions.yaml"
    path.write_text(path.read_text().rstrip("\n") + "\n" + text)


def check(**options: object) -> prcheck.PrCheckReport:
    values = {"desired_dir": Path("desired"), "verify": "never", **options}
    return run_pr_check(PrCheckOptions(**values), environ={})  # type: ignore[arg-type]


def test_a_new_extension_is_planned_against_the_base_branch(repo: git.Repo) -> None:
    add_extension(repo)
    commit(repo, "add 4006")
    report = check(base="main")
    assert report.valid and report.exit_code == 0
    assert report.plan is not None and report.plan.changes == ["extension 4006 added"]
    assert report.base_note.startswith("against the base `")
    text = prcheck.format_report(report)
    assert "extension 4006 added" in text and "✅ valid, 1 change(s)" in text


def test_an_unchanged_head_plans_no_change_although_the_revision_differs(repo: git.Repo) -> None:
    commit(repo, "an empty commit: new revision, same files")
    report = check(base="main")
    assert report.plan is not None and not report.plan.has_changes
    assert report.exit_code == 0 and "no change" in prcheck.format_report(report)


def test_a_base_without_the_desired_directory_plans_everything_as_new(repo: git.Repo) -> None:
    root = Path(repo.working_tree_dir or ".")
    repo.git.checkout("-q", "--orphan", "empty")
    repo.git.rm("-r", "-q", "--cached", ".")
    shutil.rmtree(root / "desired")
    (root / "README").write_text("nothing yet\n")
    repo.git.add("README")
    repo.git.commit("-q", "-m", "empty")
    repo.git.checkout("-q", "-f", "change")
    report = check(base="empty")
    assert "has no `desired`: everything is new" in report.base_note
    assert report.plan is not None and "extension 4000 added" in report.plan.changes


def test_an_invalid_base_is_planned_against_nothing_and_says_so(repo: git.Repo) -> None:
    repo.git.checkout("-q", "main")
    edit(Path("desired"), "extensions.yaml", "password:", "pasword:")
    commit(repo, "broken on main")
    repo.git.checkout("-q", "-b", "fix")
    edit(Path("desired"), "extensions.yaml", "pasword:", "password:")
    commit(repo, "fix it")
    report = check(base="main")
    assert report.valid
    assert "does not validate (2 problem(s)): planned against nothing" in report.base_note


def test_a_broken_head_is_invalid_with_every_problem_located_and_nothing_rendered(repo: git.Repo) -> None:
    add_extension(repo, NEW_EXTENSION.replace("password:", "pasword:"))
    lines = Path("desired/extensions.yaml").read_text().splitlines()
    typo_line = next(i for i, text in enumerate(lines, 1) if "pasword:" in text)
    report = check(base="main")
    assert not report.valid and report.exit_code == 1 and report.plan is None
    located = [(p.file, p.line, p.message) for p in report.located]
    assert ("desired/extensions.yaml", typo_line, "unknown key 'pasword' (did you mean 'password'?)") in [
        (file, line, message.split(": ", 1)[1]) for file, line, message in located
    ]
    text = prcheck.format_report(report)
    assert "❌ 2 problem(s)" in text and f"desired/extensions.yaml:{typo_line}:" in text
    assert report.verify.status == "skipped"


def test_a_base_that_is_not_in_the_clone_stops_the_check_with_what_to_do(repo: git.Repo) -> None:
    with pytest.raises(PrCheckSetupError, match="is not a commit of this clone") as info:
        check(base="0" * 40)
    assert "fetch-depth: 0" in (info.value.hint or "")


def test_no_base_plans_everything_as_new(repo: git.Repo) -> None:
    report = check()
    assert report.base_note.startswith("no base given")
    assert report.plan is not None and len(report.plan.changes) > 6


def test_throwaway_secrets_pass_the_reconcilers_own_policy_for_every_use(tmp_path: Path) -> None:
    desired = tmp_path / "desired"
    shutil.copytree(SAMPLE_DIR, desired)
    edit(desired, "extensions.yaml", "    voicemail: true", '    voicemail: {pin: "${VM_4000_PIN}"}')
    state = load_desired(desired).state
    for _ in range(20):
        values = prcheck.throwaway_secrets([state])
        for use in secret_refs(state):
            assert weakness(use, values[use.name]) is None, use.name
    assert values["VM_4000_PIN"].isdigit()


def test_the_check_never_reads_the_runners_own_secrets(
    repo: git.Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = "Real-Production-Secret-4x9"
    monkeypatch.setenv("EXT_4001_PASSWORD", real)
    Path(".env").write_text(f"EXT_4002_PASSWORD={real}\n")
    state = load_desired(Path("desired")).state
    settings = prcheck.throwaway_settings(prcheck.throwaway_secrets([state]), tmp_path, None)
    rendered = render_desired(Path("desired"), settings, revision="test")
    assert real not in rendered.files["pjsip.conf"]


def test_verify_is_skipped_with_a_clear_line_when_the_reconciler_has_no_verify_command(
    repo: git.Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prcheck, "verify_available", lambda: False)
    report = check(base="main", verify="auto")
    assert report.verify.status == "skipped" and "no `verify` command" in report.verify.detail
    assert "| verify | ⏭️ skipped: this reconciler has no `verify` command |" in prcheck.format_report(report)
    with pytest.raises(PrCheckSetupError, match="no `verify` command"):
        check(base="main", verify="always")


def test_verify_exit_codes_map_to_passed_failed_and_skipped() -> None:
    assert prcheck.verify_outcome(0, "", "auto").status == "passed"
    assert prcheck.verify_outcome(1, "x", "auto").status == "failed"
    assert prcheck.verify_outcome(2, "usage", "auto").status == "failed"
    assert prcheck.verify_outcome(3, "no docker", "auto").status == "skipped"
    with pytest.raises(AsteriskUnavailable):
        prcheck.verify_outcome(3, "no docker", "always")


def test_verify_lines_that_name_a_desired_file_become_annotations() -> None:
    output = (
        "checking...\ndesired/providers.yaml:4: pbx_provider: Asterisk: bad option\n"
        "problem: desired/extensions.yaml:9: extensions[1]: ERROR x\npjsip.conf:9: raw\n"
    )
    assert prcheck.located_in(output) == [
        prcheck.Located("desired/providers.yaml", 4, "pbx_provider: Asterisk: bad option", "verify"),
        prcheck.Located("desired/extensions.yaml", 9, "extensions[1]: ERROR x", "verify"),
    ]


def test_verify_json_findings_give_the_report_lines_and_the_annotations() -> None:
    stdout = json.dumps(
        {
            "ok": False,
            "problems": [
                {
                    "text": "desired/extensions.yaml:9: extension 4001: pjsip.conf:44: ERROR bad",
                    "file": "desired/extensions.yaml",
                    "line": 9,
                },
                {"text": "pjsip.conf:3: WARNING somewhere else", "file": None, "line": None},
            ],
            "notes": [{"text": "pbx_provider: host x.invalid does not resolve in the sandbox"}],
            "checks": [
                {"name": "endpoints", "ok": False, "detail": "4001 missing"},
                {"name": "markers", "ok": True},
            ],
        }
    )
    findings = prcheck._json_findings(stdout)
    assert findings is not None
    text, located = findings
    assert text.splitlines() == [
        "problem: desired/extensions.yaml:9: extension 4001: pjsip.conf:44: ERROR bad",
        "problem: pjsip.conf:3: WARNING somewhere else",
        "FAILED endpoints (4001 missing)",
        "note: pbx_provider: host x.invalid does not resolve in the sandbox",
    ]
    assert [(loc.file, loc.line) for loc in located] == [("desired/extensions.yaml", 9)]
    assert prcheck._json_findings("not json") is None


def test_a_failed_verify_fails_the_check_and_shows_asterisks_lines(repo: git.Repo) -> None:
    report = check(base="main")
    report.verify = prcheck.VerifyOutcome("failed", "Asterisk logged problems", "pjsip.conf:12: ERROR bogus")
    assert report.exit_code == 1
    text = prcheck.format_report(report)
    assert "❌ Asterisk rejects it" in text and "pjsip.conf:12: ERROR bogus" in text


def test_a_plan_too_long_for_a_comment_leaves_out_the_diff_but_keeps_the_changes(repo: git.Repo) -> None:
    report = check()
    full = prcheck.format_report(report)
    short = prcheck.format_report(report, max_chars=len(full) - 1)
    assert "diff left out: too long for a comment" in short
    assert "extension 4000 added" in short and len(short) < len(full)


def test_thousands_of_problems_fit_in_a_comment_and_say_how_many_were_left_out() -> None:
    problems = [
        Problem("desired/extensions.yaml", i, f"extensions[{i}].pasword", "unknown key")
        for i in range(1, 3001)
    ]
    report = prcheck.PrCheckReport(desired="desired", problems=problems)
    body = prcheck.format_report(report, max_chars=60_000)
    assert len(body) <= 60_000 and "❌ 3000 problem(s)" in body
    assert "desired/extensions.yaml:1: extensions[1].pasword: unknown key" in body
    assert re.search(r"\.\.\. and \d+ more: the job log lists them all", body)


def test_a_code_fence_is_longer_than_any_backtick_run_in_its_text() -> None:
    fenced = prcheck.fenced("a ```` b", "text")
    assert fenced.startswith("`````text\n") and fenced.endswith("\n`````")


def test_in_github_actions_a_desired_dir_given_from_elsewhere_is_annotated_relative_to_the_workspace(
    repo: git.Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_extension(repo, NEW_EXTENSION.replace("password:", "pasword:"))
    root = Path(repo.working_tree_dir or ".").resolve()
    monkeypatch.chdir(root.parent)  # problems name the files as pbx-config/desired/... from here
    env = {"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(root), "RECONCILER_ENV_FILE": "/dev/null"}
    result = CliRunner().invoke(app, ["pr-check", str(root / "desired"), "--no-comment"], env=env)
    assert result.exit_code == 1
    annotations = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert annotations and all(
        a.startswith("::error file=desired/extensions.yaml,line=") for a in annotations
    )
