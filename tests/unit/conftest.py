"""Fixtures for the desired-state tests: a sample copy in a temp dir, fake secrets, a CLI runner."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.errors import ReconcilerError
from reconciler.settings import REPO_ROOT, Settings

SAMPLE_DIR = REPO_ROOT / "desired"
TEMPLATES_DIR = REPO_ROOT / "templates"

# Strong fake values: never real secrets, fixed so that golden files are stable.
FAKE_SECRETS: dict[str, str] = {
    **{f"EXT_400{i}_PASSWORD": f"Fake-Phone-Pass-{i}x" for i in range(6)},
    "PBX_PROVIDER_USER": "fakeuser",
    "PBX_PROVIDER_PASSWORD": "Fake-Trunk-Pass-9z",
}


def fake_settings(tmp_path: Path, environ: dict[str, str] | None = None) -> Settings:
    """Settings whose every secret source is under `tmp_path` (nothing from the real machine)."""
    return Settings(
        templates_dir=TEMPLATES_DIR,
        env_file=tmp_path / "no.env",
        secrets_dir=tmp_path / "no-secrets",
        environ=dict(FAKE_SECRETS if environ is None else environ),
    )


@pytest.fixture
def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the sample desired/ at `<tmp>/desired`, with the cwd at `<tmp>` so problems
    name files as `desired/<file>` like a user in the repo root would see them."""
    target = tmp_path / "desired"
    shutil.copytree(SAMPLE_DIR, target)
    monkeypatch.chdir(tmp_path)
    return target


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., CliResult]:
    """Run the `reconciler` CLI in-process with a controlled environment, mapping domain errors to
    exit codes exactly like `cli.main()` does."""

    def run(*args: str, secrets: dict[str, str] | None = None) -> CliResult:
        env = {
            "RECONCILER_ENV_FILE": str(tmp_path / "no.env"),
            "RECONCILER_SECRETS_DIR": str(tmp_path / "no-secrets"),
            **{k: None for k in FAKE_SECRETS},  # type: ignore[dict-item]
            **(secrets or {}),
        }
        result = CliRunner().invoke(app, list(args), env=env)
        exc = result.exception
        if isinstance(exc, ReconcilerError):
            return CliResult(exc.exit_code, result.stdout, result.stderr + str(exc))
        if exc is not None and not isinstance(exc, SystemExit):
            raise exc
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run
