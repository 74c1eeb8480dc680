"""Print KEY=VALUE lines of throwaway secret values for every `${NAME}` the given desired dirs use.

For CI only (see validate-plan.yml): a plan must render, rendering needs values, and the PBX's real
secrets must not live in CI. Values are random per run and strong enough for the reconciler's
checks (passwords: 24 random characters of several classes; PINs: 8 digits, not a run, not
containing the extension number). Copy to .github/ci-secrets.py in the desired-state repository.
"""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path

from reconciler.errors import ValidationFailed
from reconciler.load import load_desired
from reconciler.model import secret_refs


def password() -> str:
    while True:
        value = secrets.token_urlsafe(24)
        if re.search(r"[a-z]", value) and re.search(r"[A-Z]", value) and re.search(r"[0-9]", value):
            return value


def pin(owner: str) -> str:
    while True:
        value = "".join(secrets.choice("0123456789") for _ in range(8))
        if owner not in value and len(set(value)) > 2:
            return value


def main(dirs: list[str]) -> int:
    values: dict[str, str] = {}
    for name in dirs:
        path = Path(name)
        if not path.is_dir():
            continue
        try:
            uses = secret_refs(load_desired(path).state)
        except ValidationFailed:
            continue  # `reconciler validate` reports it; the base may predate a schema change
        for use in uses:
            if use.name in values:
                continue
            if use.kind == "pin":
                values[use.name] = pin(use.owner)
            elif use.kind == "username":
                values[use.name] = f"ci-{use.owner}"
            else:
                values[use.name] = password()
    for key, value in sorted(values.items()):
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
