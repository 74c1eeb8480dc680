"""Whether the PBX has the sounds the desired state plays: a menu's `prompt`.

A prompt is the name of a sound shipped with Asterisk (`demo-congrats`, `digits/1`). Only the PBX
knows which it has, so the apply's read exec asks Asterisk's sound index (`core show sound NAME`,
built from the sounds directory at start) for each prompt, and the apply stops before anything is
written when one is missing: a menu whose prompt is not there would answer and hang up at once.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping

from reconciler.desired.model import DesiredState

SOUND_QUERY = "core show sound"
_TAG = "gitops-sound"
_LINE = re.compile(rf"^{_TAG} (?P<name>\S+) (?P<found>yes|no)\s*$", re.M)
# `core show sound NAME` prints this header when the index has NAME (in any language).
_FOUND = "Indexed Information for"
_NOT_FOUND = "not found in index"
HINT = "use a sound Asterisk ships (`asterisk -rx 'core show sounds'` in the PBX lists them)"


def prompts(state: DesiredState) -> dict[str, list[tuple[str | int, ...]]]:
    """Each sound the desired state plays → the field paths that name it, e.g.
    `{"demo-congrats": [("menus", 0, "prompt")]}`."""
    found: dict[str, list[tuple[str | int, ...]]] = {}
    for i, menu in enumerate(state.menus):
        found.setdefault(menu.prompt, []).append(("menus", i, "prompt"))
    return found


def sound_step(names: Iterable[str]) -> str:
    """Shell that asks Asterisk for each sound of `names` and prints `gitops-sound NAME yes|no`.
    Any other answer (Asterisk unreachable) is printed as it came, so the read exec sees it."""
    checks = []
    for name in sorted(set(names)):
        query, tag = shlex.quote(f"{SOUND_QUERY} {name}"), f"{_TAG} {shlex.quote(name)}"
        checks.append(
            f'O=$(asterisk -rx {query} 2>&1); case "$O" in '
            f"*{shlex.quote(_FOUND)}*) echo {tag} yes;; *{shlex.quote(_NOT_FOUND)}*) echo {tag} no;; "
            "*) printf '%s\\n' \"$O\";; esac"
        )
    return "; ".join(checks) or "true"


def parse_sound_step(output: str) -> dict[str, bool]:
    """The output of `sound_step` → sound name → whether Asterisk has it."""
    return {m["name"]: m["found"] == "yes" for m in _LINE.finditer(output)}


def missing_sounds(state: DesiredState, found: Mapping[str, bool]) -> list[tuple[tuple[str | int, ...], str]]:
    """(field path, sound name) of every prompt Asterisk said it does not have. A name the read
    did not ask about (an older Asterisk answer) is not judged."""
    return [
        (path, name)
        for name, paths in sorted(prompts(state).items())
        if found.get(name) is False
        for path in paths
    ]
