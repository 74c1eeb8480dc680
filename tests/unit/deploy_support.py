"""Shared by the tests of the deployments (tests/unit/test_deploy_*.py): a copy of the example
fleet with generated secrets, and the CLI run in-process the way `cli.main()` maps errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.errors import ReconcilerError
from reconciler.settings import REPO_ROOT

EXAMPLE_FLEET = REPO_ROOT / "examples" / "fleet"
GEN_SECRETS = REPO_ROOT / "scripts" / "gen-secrets.py"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None) -> Run:
    """`reconciler ARGS` in-process; secrets only from the fleet's env files (no environment)."""
    base = {"RECONCILER_SECRETS_DIR": "/nonexistent-secrets", "RECONCILER_ENV_FILE": None}
    result = CliRunner().invoke(app, list(args), env={**base, **(env or {})})  # type: ignore[dict-item]
    exc = result.exception
    if isinstance(exc, ReconcilerError):
        return Run(exc.exit_code, result.stdout, result.stderr + str(exc))
    if exc is not None and not isinstance(exc, SystemExit):
        raise exc
    return Run(result.exit_code, result.stdout, result.stderr)


def fleet_copy(tmp_path: Path, *, with_secrets: bool = True) -> Path:
    """A copy of examples/fleet at `<tmp>/fleet`; with generated .secrets/<site>.env when asked
    (through the same two steps as `make fleet-up`: `fleet secrets --json` | gen-secrets.py)."""
    target = tmp_path / "fleet"
    shutil.copytree(EXAMPLE_FLEET, target, ignore=shutil.ignore_patterns(".secrets"))
    if with_secrets:
        plan = run_cli("fleet", "secrets", "--fleet", str(target), "--json")
        assert plan.code == 0, plan.stderr
        done = subprocess.run(
            [sys.executable, str(GEN_SECRETS), "--fleet", str(target), "-"],
            input=plan.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    return target


def env_values(fleet_dir: Path) -> dict[str, dict[str, str]]:
    """site -> NAME -> value of every generated env file."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted((fleet_dir / ".secrets").glob("*.env")):
        values = {}
        for line in path.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key] = value
        out[path.stem] = values
    return out
