"""validate, render, plan and schema with --fleet, through the CLI, on a copy of examples/fleet with
throwaway secrets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.render import RENDERED_FILES
from reconciler.settings import REPO_ROOT
from tests.unit.desired_support import CliResult
from tests.unit.fleet_support import copy_example, throwaway_secrets

Cli = Callable[..., CliResult]


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, dict[str, str]]]:
    """The example fleet at `<tmp>/fleet` (cwd `<tmp>`), each site with its own throwaway secrets."""
    monkeypatch.chdir(tmp_path)
    target = copy_example(tmp_path / "fleet")
    return target, throwaway_secrets(target)


def every_value(secrets: dict[str, dict[str, str]]) -> list[str]:
    return [v for values in secrets.values() for v in values.values()]


def test_validate_fleet_passes_on_the_example_as_shipped(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    result = cli("validate", "--fleet", "examples/fleet")
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "hq: valid (3 extensions, 1 providers, 2 outbound and 1 inbound routes)",
        "branch: valid (2 extensions, 1 providers, 2 outbound and 1 inbound routes)",
    ]


def test_validate_fleet_reports_every_problem_of_every_site_and_exits_1(
    fleet: tuple[Path, dict], cli: Cli
) -> None:
    root, _ = fleet
    path = root / "bases" / "common" / "routes.yaml"
    path.write_text(
        path.read_text().replace(
            "    provider: pbx_provider\n  - name: emergency", "    provider: nosuch\n  - name: emergency"
        )
    )
    path = root / "sites" / "hq" / "extensions.yaml"
    path.write_text(path.read_text().replace("    name: Sales", "    nmae: Sales"))
    result = cli("validate", "--fleet", "fleet")
    assert result.code == 1
    assert "hq: 3 problem(s)" in result.stdout and "branch: 1 problem(s)" in result.stdout
    assert "fleet/sites/hq/extensions.yaml:8: extensions[1].nmae: unknown key" in result.stderr
    # the base's problem is the same line for both sites: reported once
    assert result.stderr.count("fleet/bases/common/routes.yaml:6: outbound[0].provider:") == 1


def test_validate_fleet_check_secrets_reads_each_sites_env_file(fleet: tuple[Path, dict], cli: Cli) -> None:
    root, _ = fleet
    assert cli("validate", "--fleet", "fleet", "--check-secrets").code == 0
    (root / ".secrets" / "branch.env").write_text("")
    result = cli("validate", "--fleet", "fleet", "--check-secrets", "--site", "branch")
    assert result.code == 1
    assert (
        "fleet/sites/branch/extensions.yaml:5: extensions[0].password: secret EXT_5000_PASSWORD is not set"
        in result.stderr
    )
    assert cli("validate", "--fleet", "fleet", "--check-secrets", "--site", "hq").code == 0


def test_render_fleet_writes_one_directory_per_site_with_the_files_and_modes_of_render(
    fleet: tuple[Path, dict], cli: Cli, tmp_path: Path
) -> None:
    _, secrets = fleet
    result = cli("render", "--fleet", "fleet", "--out", "out")
    assert result.code == 0, result.stderr
    for site in ("hq", "branch"):
        names = sorted(p.name for p in (tmp_path / "out" / site).iterdir())
        assert names == sorted([*RENDERED_FILES, "store.json"])
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "out" / site).iterdir())
        assert (tmp_path / "out" / site).stat().st_mode & 0o777 == 0o700
    hq = (tmp_path / "out" / "hq" / "pjsip.conf").read_text()
    branch = (tmp_path / "out" / "branch" / "pjsip.conf").read_text()
    assert "bind=127.0.0.1:5160" in hq.replace(" ", "") and "bind=127.0.0.1:5260" in branch.replace(" ", "")
    assert (
        secrets["hq"]["PBX_PROVIDER_PASSWORD"] in hq and secrets["hq"]["PBX_PROVIDER_PASSWORD"] not in branch
    )
    only = cli("render", "--fleet", "fleet", "--out", "one", "--site", "branch")
    assert only.code == 0 and sorted(p.name for p in (tmp_path / "one").iterdir()) == ["branch"]


def test_plan_fleet_is_0_against_its_own_render_and_lists_only_the_touched_site(
    fleet: tuple[Path, dict], cli: Cli
) -> None:
    root, secrets = fleet
    assert cli("render", "--fleet", "fleet", "--out", "out").code == 0
    same = cli("plan", "--fleet", "fleet", "--against", "out")
    assert same.code == 0, same.stdout + same.stderr
    assert "sites changed: none; unchanged: hq, branch" in same.stdout
    path = root / "sites" / "hq" / "extensions.yaml"
    path.write_text(path.read_text().replace("    name: Support", "    name: Support desk"))
    result = cli("plan", "--fleet", "fleet", "--against", "out", "--format", "markdown")
    assert result.code == 2
    assert "sites changed: hq; unchanged: branch" in result.stdout
    assert "### site hq" in result.stdout and "### site branch" not in result.stdout
    assert "| branch | no changes |" in result.stdout
    assert not any(value in result.stdout for value in every_value(secrets))


def test_plan_fleet_lists_both_sites_when_a_base_changes_and_masks_every_secret(
    fleet: tuple[Path, dict], cli: Cli
) -> None:
    root, secrets = fleet
    assert cli("render", "--fleet", "fleet", "--out", "out").code == 0
    path = root / "bases" / "common" / "pbx.yaml"
    path.write_text(path.read_text().replace("codecs: [ulaw, alaw]", "codecs: [alaw, ulaw]"))
    # a new secret value: the diff shows changed password lines, masked
    for site in ("hq", "branch"):
        env = root / ".secrets" / f"{site}.env"
        env.write_text(
            env.read_text().replace(secrets[site]["PBX_PROVIDER_PASSWORD"], "Another-Trunk-Pass-7q")
        )
    result = cli("plan", "--fleet", "fleet", "--against", "out", "--format", "markdown")
    assert result.code == 2
    assert "sites changed: hq, branch; unchanged: none" in result.stdout
    assert "### site hq" in result.stdout and "### site branch" in result.stdout
    assert "Another-Trunk-Pass-7q" not in result.stdout
    assert not any(value in result.stdout for value in every_value(secrets))


def test_plan_fleet_shows_a_new_site_as_added_and_a_gone_site_as_removed(
    fleet: tuple[Path, dict], cli: Cli, tmp_path: Path
) -> None:
    assert cli("render", "--fleet", "fleet", "--out", "out", "--site", "hq").code == 0
    (tmp_path / "out" / "hq").rename(tmp_path / "out" / "paris")
    result = cli("plan", "--fleet", "fleet", "--against", "out")
    assert result.code == 2
    first = result.stdout.splitlines()[0]
    assert (
        first == "Fleet example: sites changed: hq, branch; unchanged: none; new: hq, branch; removed: paris"
    )
    assert "extension 5000 added" in result.stdout
    assert "pbx_provider" not in result.stdout.split("== site")[0]  # nothing of paris is shown


def test_a_fleet_dir_without_fleet_flag_or_site_is_one_line_saying_what_to_pass(
    fleet: tuple[Path, dict], cli: Cli
) -> None:
    result = cli("validate", "fleet")
    assert result.code == 1 and "is a fleet (fleet.yaml)" in result.stderr and "--site" in result.stderr
    assert cli("validate", "fleet", "--site", "hq").code == 0
    result = cli("validate", "--fleet", "fleet", "--site", "paris")
    assert result.code == 1 and "no site 'paris'" in result.stderr and "hq, branch" in result.stderr


def test_schema_fleet_prints_the_json_schema_of_fleet_yaml(cli: Cli) -> None:
    result = cli("schema", "--fleet")
    assert result.code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "asterisk-gitops fleet.yaml"
    assert {"name", "rollout", "sites"} <= set(schema["properties"])
