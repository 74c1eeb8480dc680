"""Whether the PBX has the sounds the desired state plays: a menu's `prompt`.

A prompt is the name of a sound shipped with Asterisk (`demo-congrats`, `digits/1`). Only the PBX
knows which it has, so the apply's read exec, when the desired state has menus, also asks Asterisk
for its sound index (`core show sounds`: every sound of the sounds directory, one name a line, built
at start; one call whatever the number of prompts), and the apply stops before anything is written
when a prompt is not in it: a menu whose prompt is missing would answer and hang up at once.
"""

from __future__ import annotations

from reconciler.desired.model import DesiredState

SOUNDS_QUERY = "core show sounds"
_HEADER = "Available audio files:"
HINT = "use a sound Asterisk ships (`asterisk -rx 'core show sounds'` in the PBX lists them)"


def prompts(state: DesiredState) -> dict[str, list[tuple[str | int, ...]]]:
    """Each sound the desired state plays → the field paths that name it, e.g.
    `{"demo-congrats": [("menus", 0, "prompt")]}`."""
    found: dict[str, list[tuple[str | int, ...]]] = {}
    for i, menu in enumerate(state.menus):
        found.setdefault(menu.prompt, []).append(("menus", i, "prompt"))
    return found


def parse_sounds(output: str) -> frozenset[str] | None:
    """The sound names `core show sounds` listed; None when the output is no such list (then no
    prompt is judged)."""
    lines = output.splitlines()
    try:
        start = lines.index(_HEADER)
    except ValueError:
        return None
    return frozenset(line.strip() for line in lines[start + 1 :] if line.strip())


def missing_sounds(
    state: DesiredState, available: frozenset[str] | None
) -> list[tuple[tuple[str | int, ...], str]]:
    """(field path, sound name) of every prompt that is not among the `available` sounds (none
    when the PBX's list is unknown)."""
    if available is None:
        return []
    return [
        (path, name)
        for name, paths in sorted(prompts(state).items())
        if name not in available
        for path in paths
    ]
