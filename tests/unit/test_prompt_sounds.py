"""A menu's prompt must be a sound the PBX has: which sounds are asked about, how Asterisk's answer
is read, and the FILE:LINE problem a missing one gives. The live check (a real Asterisk refusing a
missing prompt before anything is written) is in tests/integration/test_office_inbound.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.asterisk.sounds import HINT, missing_sounds, parse_sound_step, prompts, sound_step
from reconciler.desired.load import load_desired
from reconciler.desired.model import OWN_SOUNDS_HELP
from reconciler.desired.render import Rendered
from reconciler.errors import ValidationFailed
from reconciler.gitops.apply import _refuse_missing_sounds
from tests.unit.desired_support import edit, problems

# What Asterisk 22 prints for `core show sound NAME` (observed in the project's image).
FOUND = "Indexed Information for demo-congrats:\n  Language en:\n    Format: gsm"
NOT_FOUND = "ERROR: File nosuch not found in index\nCommand 'core show sound nosuch' failed."
UNREACHABLE = "Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)"


def _run_step(tmp_path: Path, names: list[str], answers: dict[str, str]) -> str:
    """Run `sound_step(names)` with an `asterisk` on PATH that answers like Asterisk does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in answers.items():
        (bin_dir / name.replace("/", "_")).write_text(text + "\n")
    stub = bin_dir / "asterisk"
    stub.write_text(f'#!/bin/sh\nf=$(echo "${{2#core show sound }}" | tr / _)\ncat "{bin_dir}/$f"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", sound_step(names)], capture_output=True, text=True, env=env).stdout


def test_a_sound_asterisk_indexes_is_found_and_one_it_does_not_is_missing(tmp_path: Path) -> None:
    out = _run_step(tmp_path, ["demo-congrats", "nosuch"], {"demo-congrats": FOUND, "nosuch": NOT_FOUND})
    assert parse_sound_step(out) == {"demo-congrats": True, "nosuch": False}


def test_an_unreachable_asterisk_is_neither_found_nor_missing_its_words_come_through(
    tmp_path: Path,
) -> None:
    out = _run_step(tmp_path, ["demo-congrats"], {"demo-congrats": UNREACHABLE})
    assert parse_sound_step(out) == {}
    assert "Unable to connect to remote asterisk" in out  # the read exec raises AsteriskWentAway on it


def test_the_sample_asks_for_its_menu_prompt_with_the_field_that_names_it(sample: Path) -> None:
    assert prompts(load_desired(sample).state) == {"demo-congrats": [("menus", 0, "prompt")]}


def _rendered(sample: Path) -> Rendered:
    loaded = load_desired(sample)
    return Rendered("0" * 40, {}, loaded.state, frozenset(), {}, loaded)


def test_a_prompt_the_pbx_lacks_stops_the_apply_at_its_file_and_line(sample: Path) -> None:
    edit(sample, "office.yaml", "prompt: demo-congrats", "prompt: welcome-to-acme")
    with pytest.raises(ValidationFailed) as caught:
        _refuse_missing_sounds(_rendered(sample), {"welcome-to-acme": False}, "gitops-pbx")
    assert [str(p) for p in caught.value.problems] == [
        f"desired/office.yaml:26: menus[0].prompt: no sound 'welcome-to-acme' in the PBX (gitops-pbx): {HINT}"
    ]


def test_a_prompt_the_pbx_has_or_was_not_asked_about_passes(sample: Path) -> None:
    rendered = _rendered(sample)
    _refuse_missing_sounds(rendered, {"demo-congrats": True}, "gitops-pbx")
    assert missing_sounds(rendered.state, {}) == []


@pytest.mark.parametrize("prompt", ["vm-INBOX", "digits/1", "demo-congrats"])
def test_asterisk_sound_names_with_capitals_and_folders_are_valid_prompts(sample: Path, prompt: str) -> None:
    edit(sample, "office.yaml", "prompt: demo-congrats", f"prompt: {prompt}")
    assert load_desired(sample).state.menus[0].prompt == prompt


@pytest.mark.parametrize("prompt", ["/etc/passwd", "../secret", "a b", "digits//1", "x.wav"])
def test_a_prompt_that_is_a_path_or_a_file_name_is_refused(sample: Path, prompt: str) -> None:
    edit(sample, "office.yaml", "prompt: demo-congrats", f"prompt: {prompt!r}")
    found = problems(sample)
    assert len(found) == 1 and found[0].startswith("desired/office.yaml:26: menus[0].prompt:"), found


def test_a_prompt_naming_a_recording_of_ones_own_says_those_are_not_supported_yet(sample: Path) -> None:
    edit(sample, "office.yaml", "prompt: demo-congrats", "prompt: sounds/welcome")
    assert problems(sample) == [f"desired/office.yaml:26: menus[0].prompt: {OWN_SOUNDS_HELP}"]
