#!/usr/bin/env python3
"""Add a strong random value to the env file for every `${NAME}` that the desired dir references
and the env file does not define yet. Existing values are never changed; no value is printed.

Usage: scripts/gen-secrets.py DESIRED_DIR ENV_FILE [EXTRA_NAME...]
       scripts/gen-secrets.py --fleet FLEET_DIR PLAN_JSON

EXTRA_NAMEs are generated too (e.g. RECONCILER_WEBHOOK_SECRET, which no desired file references).

With --fleet (`make fleet-up`): PLAN_JSON (a file, or - for standard input) is the output of
`reconciler fleet secrets --fleet DIR --json`, which knows each site's merged state; every site gets
the names it needs in its env file (`env_file`, relative to FLEET_DIR, default .secrets/<site>.env),
created 0600 in a 0700 directory. Stdlib only here too: the merging stays in the reconciler.

Stdlib only: `make up` runs it before any virtualenv exists. The kind of value comes from the name,
matching what reconciler.desired.secrets accepts: `*_PIN` -> 8 digits (not a run, not the extension
number), `*_USER`/`*_USERNAME` -> a random user name, anything else -> a 24-character password.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import sys
from pathlib import Path

REFERENCE = re.compile(r"\$\{([A-Z0-9_]+)\}")
COMMENT = re.compile(r"\s#")
KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def _without_comment(line: str) -> str:
    # YAML comments start at a '#' that begins the line or follows whitespace; the samples explain
    # "${NAME} references" in comments, which are not references.
    if line.lstrip().startswith("#"):
        return ""
    return COMMENT.split(line, maxsplit=1)[0]


def referenced_names(desired: Path) -> list[str]:
    """Every NAME in `${NAME}` of desired/*.yaml and *.yml outside comments, sorted, unique."""
    names: set[str] = set()
    for path in sorted([*desired.glob("*.yaml"), *desired.glob("*.yml")]):
        for line in path.read_text(encoding="utf-8").splitlines():
            names.update(REFERENCE.findall(_without_comment(line)))
    return sorted(names)


def _value_of(line: str, match: re.Match[str]) -> str:
    return line[match.end() :].strip().strip("'\"")


def defined_names(env_file: Path) -> set[str]:
    """Keys the env file gives a value (a missing file has none). `NAME=` with nothing after it,
    as left by copying .env.example, is not a value: the reconciler treats it as not set."""
    if not env_file.exists():
        return set()
    return {
        m.group(1)
        for line in env_file.read_text(encoding="utf-8").splitlines()
        if (m := KEY.match(line)) and _value_of(line, m)
    }


def fill_empty(env_file: Path, names: set[str]) -> set[str]:
    """Give a value to each `NAME=` line with no value for a NAME in `names`, in place; return
    the names filled."""
    if not env_file.exists():
        return set()
    filled: set[str] = set()
    lines = env_file.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if m and m.group(1) in names and m.group(1) not in filled and not _value_of(line, m):
            lines[i] = f"{m.group(1)}={new_value(m.group(1))}\n"
            filled.add(m.group(1))
    if filled:
        tmp = env_file.with_name(env_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(lines)
        os.replace(tmp, env_file)
    return filled


def _owner_digits(name: str) -> list[str]:
    return re.findall(r"\d{3,}", name)


def new_pin(name: str) -> str:
    """8 random digits that are not one repeated digit, not a sequential run and do not contain the
    extension number named in NAME."""
    while True:
        pin = "".join(secrets.choice(string.digits) for _ in range(8))
        if len(set(pin)) == 1 or pin in "01234567890" or pin in "09876543210":
            continue
        if any(owner in pin for owner in _owner_digits(name)):
            continue
        return pin


def new_password(name: str) -> str:
    """24 characters of letters, digits, '-' and '_' with at least lower, upper and digit."""
    while True:
        value = secrets.token_urlsafe(18)
        if not (re.search(r"[a-z]", value) and re.search(r"[A-Z]", value) and re.search(r"[0-9]", value)):
            continue
        if any(owner in value for owner in _owner_digits(name)):
            continue
        return value


def new_value(name: str) -> str:
    if name.endswith("_PIN"):
        return new_pin(name)
    if name.endswith(("_USER", "_USERNAME")):
        return "gitops-" + secrets.token_hex(4)
    return new_password(name)


def ensure(env_file: Path, wanted: list[str], header: str) -> list[str]:
    """Give every name of `wanted` a value in `env_file` (0600), keeping every existing value;
    return the names that got one."""
    missing = [n for n in wanted if n not in defined_names(env_file)]
    filled = fill_empty(env_file, set(missing))
    missing = [n for n in missing if n not in filled]
    created = not env_file.exists()
    fd = os.open(env_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        if created:
            out.write(header)
        for name in missing:
            out.write(f"{name}={new_value(name)}\n")
    os.chmod(env_file, 0o600)
    names = sorted({*missing, *filled})
    if names:
        print(
            f"[secrets] generated {len(names)} new secret(s) into {env_file}: {', '.join(names)}",
            file=sys.stderr,
        )
    return names


SITE_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")


def fleet_main(fleet_dir: Path, plan_arg: str) -> int:
    """Per-site env files from the reconciler's plan (see the module docstring)."""
    if not (fleet_dir / "fleet.yaml").is_file():
        print(f"[secrets] ERROR: {fleet_dir} has no fleet.yaml", file=sys.stderr)
        return 1
    text = sys.stdin.read() if plan_arg == "-" else Path(plan_arg).read_text(encoding="utf-8")
    try:
        plan = json.loads(text)
        sites = plan["sites"]
    except (ValueError, KeyError, TypeError):
        print("[secrets] ERROR: the plan is not `reconciler fleet secrets --json` output", file=sys.stderr)
        return 1
    root = fleet_dir.resolve()
    for site in sites:
        name = str(site.get("name", ""))
        if not SITE_NAME.fullmatch(name):
            print(f"[secrets] ERROR: bad site name {name!r} in the plan", file=sys.stderr)
            return 1
        env_file = (root / str(site.get("env_file") or f".secrets/{name}.env")).resolve()
        if root not in env_file.parents:
            print(f"[secrets] ERROR: site {name}: env file {env_file} is outside {root}", file=sys.stderr)
            return 1
        env_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        wanted = sorted({str(s["name"]) for s in site.get("secrets", [])})
        ensure(
            env_file,
            wanted,
            f"# Secrets of site {name}. Generated by `make fleet-up`; never commit this file.\n",
        )
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] == "--fleet":
        if len(argv) != 4:
            print(__doc__, file=sys.stderr)
            return 2
        return fleet_main(Path(argv[2]), argv[3])
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    desired, env_file = Path(argv[1]), Path(argv[2])
    if not desired.is_dir():
        print(f"[secrets] ERROR: desired dir {desired} does not exist", file=sys.stderr)
        return 1
    wanted = sorted({*referenced_names(desired), *argv[3:]})
    ensure(
        env_file, wanted, "# Secrets for the desired state. Generated by `make up`; never commit this file.\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
