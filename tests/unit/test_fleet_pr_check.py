"""`reconciler pr-check` on a fleet repository: every site validated, planned against the base and
reported in one comment that names the sites a change touches (a throwaway git repository per test;
verify never here: the integration test boots the render)."""

from __future__ import annotations

import shutil
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.gitops.fleetcheck import format_fleet_report, run_fleet_pr_check
from reconciler.gitops.prcheck import PrCheckOptions
from tests.unit.fleet_support import commit, fleet_repo


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> git.Repo:
    """A fleet repository: `main` holds a copy of the example fleet, the cwd is its root."""
    handle = fleet_repo(tmp_path / "pbx-fleet")
    handle.git.checkout("-q", "-b", "change")
    monkeypatch.chdir(tmp_path / "pbx-fleet")
    return handle


def edit(relative: str, old: str, new: str) -> None:
    path = Path("fleet") / relative
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def check(base: str | None = "main") -> str:
    options = PrCheckOptions(desired_dir=Path("fleet"), base=base, verify="never")
    report = run_fleet_pr_check(options, environ={})
    return format_fleet_report(report)


def test_a_change_to_one_sites_file_is_reported_at_that_site_only(repo: git.Repo) -> None:
    edit("sites/branch/extensions.yaml", "name: Branch sales", "name: Branch sales desk")
    commit(repo, "rename")
    body = check()
    assert "changes at branch" in body
    assert "Sites changed: branch; unchanged: hq." in body
    assert "extension 5001" in body and "## Site `branch`" in body and "## Site `hq`" not in body


def test_a_base_change_is_reported_at_every_site_that_uses_the_base(repo: git.Repo) -> None:
    edit("bases/common/routes.yaml", '["911", "112"]', '["911", "112", "999"]')
    commit(repo, "999")
    body = check()
    assert "changes at hq, branch" in body
    assert "## Site `hq`" in body and "## Site `branch`" in body


def test_a_new_site_is_planned_against_nothing(repo: git.Repo) -> None:
    shutil.copytree(Path("fleet/sites/branch"), Path("fleet/sites/lab"))
    fleet_yaml = Path("fleet/fleet.yaml")
    fleet_yaml.write_text(
        fleet_yaml.read_text()
        + "  - name: lab\n    bases: [common]\n    sip_port: 5360\n    tls_port: 5361\n"
        "    rtp: {start: 12400, end: 12499}\n    ami_port: 5338\n    http: 127.0.0.1:8183\n"
    )
    commit(repo, "a lab")
    body = check()
    assert "| lab |" in body and "new site (not in the base)" in body


def test_an_invalid_site_fails_the_check_with_its_file_and_line_and_no_secret_shows(
    repo: git.Repo,
) -> None:
    edit("sites/hq/extensions.yaml", "name: Sales\n", "name: Sales\n    codecs: [not-a-codec]\n")
    commit(repo, "typo")
    result = CliRunner().invoke(
        app, ["pr-check", "fleet", "--base", "main", "--no-comment", "--verify", "never"]
    )
    assert result.exit_code == 1, result.output
    assert "fleet/sites/hq/extensions.yaml:" in result.output
    assert "❌ 1 problem(s)" in result.output


def test_the_report_never_holds_a_throwaway_secret_value(
    repo: git.Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.gitops import fleetcheck

    seen: dict[str, str] = {}

    def capture(states: object) -> dict[str, str]:
        values = prcheck_throwaway(states)
        seen.update(values)
        return values

    prcheck_throwaway = fleetcheck.throwaway_secrets
    monkeypatch.setattr(fleetcheck, "throwaway_secrets", capture)
    edit("bases/common/providers.yaml", "port: 5170", "port: 5171")
    commit(repo, "carrier port")
    body = check()
    assert "changes at hq" in body  # branch overrides the provider: unchanged there
    assert "unchanged: branch" in body
    assert "```diff" in body  # pjsip.conf lines changed, shown masked
    assert seen and not [name for name, value in seen.items() if value in body]
