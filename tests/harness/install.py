"""The package as users install it: a clean export of the repository, built and installed into a
fresh virtualenv, and the installed `reconciler` run from a directory outside the checkout.

The export holds the tracked files only (`git ls-files`), as `pip install git+...` would see them:
a file nobody `git add`ed is not in the package, and the test says so instead of the checkout
hiding it. Commands run with an environment scrubbed of PYTHONPATH, VIRTUAL_ENV and every
RECONCILER_* variable, so nothing imports the source tree or reads this machine's settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 600


def tracked_export(target: Path, root: Path = REPO_ROOT) -> Path:
    """Copy the tracked files of `root` (their working-tree content) into `target`."""
    names = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z"], check=True, capture_output=True
    ).stdout.split(b"\0")
    for raw in filter(None, names):
        rel = raw.decode()
        source = root / rel
        if not source.exists() and not source.is_symlink():
            continue  # tracked but deleted in the work tree: not part of what would be committed
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest, follow_symlinks=False)
    return target


def git_repository(directory: Path) -> str:
    """Make `directory` a git repository with one commit of everything in it; return the sha."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "export"]):
        subprocess.run(["git", "-C", str(directory), *args], check=True, env=env, capture_output=True)
    return subprocess.run(
        ["git", "-C", str(directory), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def clean_environ(extra: dict[str, str] | None = None, path_first: Path | None = None) -> dict[str, str]:
    """os.environ without what could make a command use the checkout or this machine's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        and not k.startswith(("RECONCILER_", "GITHUB_"))
    }
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **(extra or {})}


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def run(
        self, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """`<venv>/bin/<args[0]> args[1:]` in `cwd` with a clean environment (+ `env`)."""
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=cwd,
            env=clean_environ(env, path_first=self.bin),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def fresh_venv(root: Path, *requirements: str) -> Venv:
    """A new virtualenv at `root` with `requirements` pip-installed (not editable); dependencies
    come from the configured indexes and pip's cache, exactly as for a user."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True)
    venv = Venv(root)
    result = subprocess.run(
        [str(venv.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        cwd=root,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"pip install {' '.join(requirements)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return venv
