"""Fixtures for the desired-state tests: a sample copy in a temp dir, fake secrets, a CLI runner."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.errors import ReconcilerError
from tests.unit.desired_support import FAKE_SECRETS, SAMPLE_DIR, CliResult
from tests.unit.hostile_support import FULL_SECRETS, write_full


@pytest.fixture
def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the sample desired/ at `<tmp>/desired`, with the cwd at `<tmp>` so problems
    name files as `desired/<file>` like a user in the repo root would see them."""
    target = tmp_path / "desired"
    shutil.copytree(SAMPLE_DIR, target)
    monkeypatch.chdir(tmp_path)
    return target


@pytest.fixture
def full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The full desired state (every optional field set) at `<tmp>/desired`, cwd at `<tmp>`."""
    monkeypatch.chdir(tmp_path)
    return write_full(tmp_path / "desired")


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., CliResult]:
    """Run the `reconciler` CLI in-process with a controlled environment, mapping domain errors to
    exit codes exactly like `cli.main()` does."""

    def run(*args: str, secrets: dict[str, str] | None = None) -> CliResult:
        env = {
            "RECONCILER_ENV_FILE": str(tmp_path / "no.env"),
            "RECONCILER_SECRETS_DIR": str(tmp_path / "no-secrets"),
            **{k: None for k in (*FAKE_SECRETS, *FULL_SECRETS)},  # type: ignore[dict-item]
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
