"""The PBX's realtime store as a test sees it: SQL run by the real `sqlite3` shell in the container,
as the asterisk user (the -wal/-shm files must stay Asterisk's), and desired states that add,
re-password or remove extensions of a `PbxStack`.

Only for tests: the reconciler itself writes the store through `reconciler.asterisk.store`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.asterisk import store
from reconciler.desired.render import RENDERED_FILES
from tests.harness.containers import MANAGED_DIR, AsteriskContainer, PbxStack, make_secrets, write_desired_dir

# What Asterisk logs when a module (res_pjsip, app_voicemail, ...) reloads. `dialplan reload`
# logs nothing at the image's log levels: `managed_files` proves extensions.conf did not change.
# The client's log barrier reloads udptl; it is not a reload of the config.
RELOAD_LOG = re.compile(r"Reloading module '(?!udptl')[^']+'")
MANAGED_FILES = RENDERED_FILES


def sql(container: AsteriskContainer, query: str) -> str:
    """Run `query` with the sqlite3 shell against the store as the asterisk user; its output.
    Raises AssertionError when sqlite3 fails (the test then shows what it said)."""
    code, out = container.exec(
        f"printf '%s\\n' {shlex.quote('.timeout 2000')} {shlex.quote(query)} | "
        f"setpriv --reuid={store.DB_USER} --regid={store.DB_USER} --init-groups "
        f"sqlite3 -bail {shlex.quote(store.DB_PATH)}"
    )
    assert code == 0, f"sqlite3 failed ({code}): {out}"
    return out


def endpoint_ids(container: AsteriskContainer) -> set[str]:
    """The ids of every endpoint row of the store."""
    return set(sql(container, f"SELECT id FROM {store.ENDPOINTS};").split())


def password_row(container: AsteriskContainer, number: str) -> str:
    """The password column of extension `number`'s auth row ('' when there is no row)."""
    return sql(container, f"SELECT password FROM {store.AUTHS} WHERE id='{store.auth_id(number)}';").strip()


def managed_files(container: AsteriskContainer) -> dict[str, str]:
    """sha256 of each rendered file in the managed dir (the files an apply would reload)."""
    code, out = container.exec(f"cd {MANAGED_DIR} && sha256sum {' '.join(MANAGED_FILES)}")
    assert code == 0, out
    return {name: digest for digest, name in (line.split() for line in out.splitlines())}


def reloads_logged(log: str) -> list[str]:
    """Every reload Asterisk logged in `log` (empty: nothing was reloaded)."""
    return RELOAD_LOG.findall(log)


def desired_with(stack: PbxStack, directory: Path, numbers: Iterable[str]) -> Path:
    """A desired dir for `stack` with exactly the extensions `numbers` (each `Extension N`, with
    voicemail); a password is generated into `stack.secrets` for any number that has none."""
    numbers = list(numbers)
    for number in numbers:
        stack.secrets.setdefault(f"EXT_{number}_PASSWORD", make_secrets([number])[f"EXT_{number}_PASSWORD"])
    if directory.exists():
        shutil.rmtree(directory)
    return write_desired_dir(
        directory, stack.pbx, stack.provider, extensions={n: f"Extension {n}" for n in numbers}
    )


def new_password(stack: PbxStack, number: str) -> tuple[str, str]:
    """Give extension `number` a fresh password in `stack.secrets`: returns (old, new)."""
    old = stack.password(number)
    new = make_secrets([number])[f"EXT_{number}_PASSWORD"]
    stack.secrets[f"EXT_{number}_PASSWORD"] = new
    return old, new


def set_passwords(stack: PbxStack, passwords: Mapping[str, str]) -> None:
    """Put these passwords (number → password) back into `stack.secrets`."""
    for number, password in passwords.items():
        stack.secrets[f"EXT_{number}_PASSWORD"] = password


def cli_env(stack: PbxStack) -> dict[str, str]:
    """The environment `reconciler` needs to work on `stack` as a user runs it (no env file, no
    secrets dir, the state under the stack's workdir, this PBX's AMI port)."""
    return {
        **os.environ,
        **stack.secrets,
        "RECONCILER_CONTAINER": stack.pbx.name,
        "RECONCILER_ENV_FILE": str(stack.workdir / "no.env"),
        "RECONCILER_SECRETS_DIR": str(stack.workdir / "no-secrets"),
        "RECONCILER_STATE_DIR": str(stack.workdir / "state"),
        "RECONCILER_AMI_PORT": str(stack.pbx.ami_port),
        "COLUMNS": "200",
    }


def cli(stack: PbxStack, *args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
    """`python -m reconciler ARGS` against `stack`, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        env=cli_env(stack),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
