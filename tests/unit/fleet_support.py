"""Helpers of the fleet tests: small fleets written from text, a copy of the example fleet, and
throwaway secrets for it (generated per test, never real)."""

from __future__ import annotations

import secrets
import shutil
import textwrap
from pathlib import Path

import git
import pytest

from reconciler.desired.fleet import FLEET_FILE, load_fleet, load_site
from reconciler.desired.model import secret_refs
from reconciler.errors import ValidationFailed
from reconciler.settings import REPO_ROOT

EXAMPLE_FLEET = REPO_ROOT / "examples" / "fleet"

# Two sites on one node, ports apart; `{hq_extra}` / `{branch_extra}` add keys to an entry.
TWO_SITES = """\
name: test
sites:
  - name: hq
    bases: [common]
    sip_port: 41000
    tls_port: 41001
    rtp: {start: 21000, end: 21099}
    ami_port: 41038
    http: 127.0.0.1:41080
  - name: branch
    bases: [common]
    sip_port: 41100
    tls_port: 41101
    rtp: {start: 21100, end: 21199}
    ami_port: 41138
    http: 127.0.0.1:41180
"""

PROVIDER = """\
providers:
  - name: trunk
    host: 127.0.0.1
    port: 41070
    username: ${TRUNK_USER}
    password: ${TRUNK_PASSWORD}
"""


def write(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path → text, dedented) under `root`; directories as needed."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def small_fleet(root: Path, files: dict[str, str] | None = None, fleet_yaml: str = TWO_SITES) -> Path:
    """A fleet at `root`: fleet.yaml, bases/common with the trunk, empty site dirs, plus `files`."""
    (root / "sites" / "hq").mkdir(parents=True, exist_ok=True)
    (root / "sites" / "branch").mkdir(parents=True, exist_ok=True)
    return write(root, {FLEET_FILE: fleet_yaml, "bases/common/providers.yaml": PROVIDER, **(files or {})})


def problems_of(call: object, *args: object) -> list[str]:
    """The problem lines the call raises (fails when it does not raise `ValidationFailed`)."""
    with pytest.raises(ValidationFailed) as info:
        call(*args)  # type: ignore[operator]
    return [str(p) for p in info.value.problems]


def copy_example(target: Path) -> Path:
    shutil.copytree(EXAMPLE_FLEET, target, ignore=shutil.ignore_patterns(".secrets"))
    return target


def commit(repo: git.Repo, message: str) -> str:
    """Commit everything in the work tree; the new commit's sha."""
    repo.git.add("-A")
    repo.git.commit("-q", "-m", message, "--allow-empty")
    return repo.head.commit.hexsha


def fleet_repo(root: Path, message: str = "two offices") -> git.Repo:
    """A git repository at `root` whose `main` holds a copy of the example fleet at `root/fleet`,
    committed with `message`."""
    copy_example(root / "fleet")
    repo = git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "test")
        config.set_value("user", "email", "test@example.invalid")
    commit(repo, message)
    return repo


def throwaway_secrets(fleet_dir: Path) -> dict[str, dict[str, str]]:
    """Write `.secrets/<site>.env` with fresh strong values for every reference of every site;
    returns site → name → value."""
    fleet = load_fleet(fleet_dir)
    out: dict[str, dict[str, str]] = {}
    (fleet_dir / ".secrets").mkdir(exist_ok=True)
    for site in fleet.sites:
        names = sorted({use.name for use in secret_refs(load_site(fleet, site.name).state)})
        values = {name: f"Tw-{secrets.token_hex(8)}-z" for name in names}
        if "PBX_PROVIDER_USER" in values:
            values["PBX_PROVIDER_USER"] = f"user{secrets.token_hex(4)}"
        site.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        out[site.name] = values
    return out
