"""The validate, render, plan and schema verbs: exit codes and what they print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from reconciler.desired.render import RENDERED_FILES
from reconciler.settings import REPO_ROOT
from tests.unit.desired_support import FAKE_SECRETS, CliResult

Cli = Callable[..., CliResult]


def test_validate_passes_on_the_sample_without_any_secret_values(sample: Path, cli: Cli) -> None:
    result = cli("validate", "desired")
    assert result.code == 0, result.stderr
    assert "valid (6 extensions, 1 providers" in result.stdout


def test_validate_with_check_secrets_names_every_missing_secret(sample: Path, cli: Cli) -> None:
    result = cli("validate", "desired", "--check-secrets")
    assert result.code == 1
    assert (
        "desired/extensions.yaml:5: extensions[0].password: secret EXT_4000_PASSWORD is not set"
        in result.stderr
    )
    assert result.stderr.count("is not set") == 8


def test_validate_exits_1_with_file_and_line_for_each_defect_of_the_issue(sample: Path, cli: Cli) -> None:
    original = {p.name: p.read_text() for p in sample.iterdir()}
    defects = {
        "misspelled key": (
            "extensions.yaml",
            "    name: Sales",
            "    nmae: Sales",
            "desired/extensions.yaml:8:",
        ),
        "duplicated extension": ("extensions.yaml", '"4002"', '"4001"', "desired/extensions.yaml:11:"),
        "route to nonexistent provider": (
            "routes.yaml",
            "    provider: pbx_provider\n  - name: emergency",
            "    provider: nosuch\n  - name: emergency",
            "desired/routes.yaml:8:",
        ),
        "literal ext4001pass": (
            "extensions.yaml",
            "${EXT_4001_PASSWORD}",
            "ext4001pass",
            "desired/extensions.yaml:9:",
        ),
        "broken YAML": (
            "providers.yaml",
            "    host: 127.0.0.1",
            "    host: [oops",
            "desired/providers.yaml:5:",
        ),
    }
    for what, (name, old, new, where) in defects.items():
        for n, text in original.items():
            (sample / n).write_text(text)
        (sample / name).write_text(original[name].replace(old, new, 1))
        result = cli("validate", "desired")
        assert result.code == 1, what
        assert where in result.stderr, f"{what}: {result.stderr}"


def test_render_writes_every_rendered_file_and_the_store_rows_and_twice_gives_identical_bytes(
    sample: Path, cli: Cli, tmp_path: Path
) -> None:
    first = cli("render", "desired", "--out", "out1", secrets=FAKE_SECRETS)
    second = cli("render", "desired", "--out", "out2", secrets=FAKE_SECRETS)
    assert (first.code, second.code) == (0, 0), first.stderr
    names = sorted(p.name for p in (tmp_path / "out1").iterdir())
    assert names == sorted([*RENDERED_FILES, "store.json"])
    assert (tmp_path / "out1" / "store.json").stat().st_mode & 0o777 == 0o600  # it holds passwords
    for name in names:
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
    assert not (tmp_path / "out1" / "sip.conf").exists()


def test_render_writes_nothing_when_validation_fails(sample: Path, cli: Cli, tmp_path: Path) -> None:
    (sample / "extensions.yaml").write_text(
        (sample / "extensions.yaml").read_text().replace('"4002"', '"4001"')
    )
    result = cli("render", "desired", "--out", "out", secrets=FAKE_SECRETS)
    assert result.code == 1
    assert not (tmp_path / "out").exists()


def test_render_without_secrets_names_them_and_writes_nothing(sample: Path, cli: Cli, tmp_path: Path) -> None:
    result = cli("render", "desired", "--out", "out")
    assert result.code == 1
    assert "PBX_PROVIDER_PASSWORD is not set" in result.stderr
    assert not (tmp_path / "out").exists()


def test_render_uses_the_given_revision_and_templates(sample: Path, cli: Cli, tmp_path: Path) -> None:
    templates = tmp_path / "my-templates"
    templates.mkdir()
    for name in RENDERED_FILES:
        (templates / f"{name}.j2").write_text("; custom {{ rev12 }}\n")
    args = (
        "render",
        "desired",
        "--out",
        "out",
        "--templates",
        str(templates),
        "--revision",
        "abc123def4567890",
    )
    result = cli(*args, secrets=FAKE_SECRETS)
    assert result.code == 0, result.stderr
    assert (tmp_path / "out" / "pjsip.conf").read_text() == "; custom abc123def456\n"


def test_plan_against_its_own_render_exits_0(sample: Path, cli: Cli) -> None:
    assert cli("render", "desired", "--out", "live", secrets=FAKE_SECRETS).code == 0
    result = cli(
        "plan", "desired", "--against", "live", "--revision", "another-revision", secrets=FAKE_SECRETS
    )
    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout.startswith("No changes.")


def test_plan_after_adding_4006_exits_2_names_it_and_prints_no_secret(sample: Path, cli: Cli) -> None:
    assert cli("render", "desired", "--out", "live", secrets=FAKE_SECRETS).code == 0
    with (sample / "extensions.yaml").open("a") as f:
        f.write('  - number: "4006"\n    name: New Hire\n')
        f.write("    password: ${EXT_4006_PASSWORD}\n    voicemail: true\n")
    secrets = {**FAKE_SECRETS, "EXT_4006_PASSWORD": "Fake-Phone-Pass-6x"}
    for fmt in ("text", "markdown"):
        result = cli("plan", "desired", "--against", "live", "--format", fmt, secrets=secrets)
        assert result.code == 2, result.stderr
        assert "extension 4006 added" in result.stdout
        # 4006 is a store row under the existing _4XXX pattern: no file changes, nothing reloads.
        assert "the realtime store" in result.stdout and "nothing is reloaded" in result.stdout
        assert "module reload" not in result.stdout
        for value in secrets.values():
            assert value not in result.stdout + result.stderr


def test_plan_against_a_missing_directory_shows_everything_as_new(sample: Path, cli: Cli) -> None:
    result = cli("plan", "desired", "--against", "nowhere", secrets=FAKE_SECRETS)
    assert result.code == 2
    assert "extension 4000 added" in result.stdout


def test_plan_exits_1_when_the_desired_state_is_invalid(sample: Path, cli: Cli) -> None:
    (sample / "routes.yaml").write_text("outbound: [\n")
    result = cli("plan", "desired", "--against", "nowhere", secrets=FAKE_SECRETS)
    assert result.code == 1
    assert "desired/routes.yaml:2: -: malformed YAML" in result.stderr


def test_schema_is_json_schema_of_a_desired_file(cli: Cli) -> None:
    result = cli("schema")
    assert result.code == 0
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) == {
        *("pbx", "providers", "extensions", "outbound", "inbound"),
        *("ring_groups", "schedules", "menus", "queues"),
    }
    assert schema["additionalProperties"] is False
    assert "required" not in schema
    ext = schema["$defs"]["Extension"]
    assert ext["additionalProperties"] is False
    assert ext["properties"]["password"]["pattern"] == r"^\$\{([A-Z][A-Z0-9_]*)\}$"


def test_the_installed_command_validates_the_sample_from_the_repo_root() -> None:
    env = {k: v for k, v in os.environ.items() if k not in FAKE_SECRETS}
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "desired"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_render_out_writes_files_only_their_owner_can_read(sample: Path, cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "pjsip.conf").write_text("old\n")
    os.chmod(tmp_path / "existing" / "pjsip.conf", 0o644)
    for out in ("fresh/out", "existing"):
        assert cli("render", "desired", "--out", out, secrets=FAKE_SECRETS).code == 0
        for name in RENDERED_FILES:
            assert (tmp_path / out / name).stat().st_mode & 0o777 == 0o600, (out, name)
        assert not [p for p in (tmp_path / out).iterdir() if p.name.startswith(".")]
    assert (tmp_path / "fresh" / "out").stat().st_mode & 0o777 == 0o700


def test_plan_never_shows_an_old_or_new_provider_username(sample: Path, cli: Cli) -> None:
    assert cli("render", "desired", "--out", "live", secrets=FAKE_SECRETS).code == 0
    rotated = {**FAKE_SECRETS, "PBX_PROVIDER_USER": "rotated-user-name"}
    for fmt in ("text", "markdown"):
        result = cli("plan", "desired", "--against", "live", "--format", fmt, secrets=rotated)
        assert result.code == 2, result.stderr
        assert "username" in result.stdout
        assert FAKE_SECRETS["PBX_PROVIDER_USER"] not in result.stdout
        assert "rotated-user-name" not in result.stdout


def test_plan_against_a_file_that_is_not_utf8_or_a_fifo_is_one_error_line(
    sample: Path, cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "pjsip.conf").write_bytes(b"[x]\nkey = \xff\n")
    os.mkfifo(tmp_path / "live" / "extensions.conf")
    result = cli("plan", "desired", "--against", "live", secrets=FAKE_SECRETS)
    assert result.code == 1
    assert "live/pjsip.conf is not UTF-8 text: line 2, column 7 cannot be decoded" in result.stderr
    (tmp_path / "live" / "pjsip.conf").unlink()
    result = cli("plan", "desired", "--against", "live", secrets=FAKE_SECRETS)
    assert result.code == 1
    assert "live/extensions.conf is a named pipe (FIFO), not a regular file" in result.stderr
