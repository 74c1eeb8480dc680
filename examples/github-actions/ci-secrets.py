"""Print KEY=VALUE lines of throwaway secret values for every `${NAME}` the given desired dirs use.

Kept for workflows copied from an older release, which call `python .github/ci-secrets.py DIRS`.
The logic now lives in the package (`reconciler.gitops.prcheck.throwaway_secrets`) and
`reconciler pr-check` uses it by itself: a new workflow needs no copy of this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from reconciler.desired.load import load_desired
from reconciler.errors import ValidationFailed
from reconciler.gitops.prcheck import throwaway_secrets


def main(dirs: list[str]) -> int:
    states = []
    for name in dirs:
        if not Path(name).is_dir():
            continue
        try:
            states.append(load_desired(Path(name)).state)
        except ValidationFailed:
            continue  # `reconciler validate` reports it; the base may predate a schema change
    for key, value in sorted(throwaway_secrets(states).items()):
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
