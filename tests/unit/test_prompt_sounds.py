"""A menu's prompt must be a sound the PBX has: which sounds are asked about, how Asterisk's answer
is read, and the FILE:LINE problem a missing one gives. The live check (a real Asterisk refusing a
missing prompt before anything is written) is in tests/integration/test_office_inbound.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.asterisk.sounds import HINT, missing_sounds, parse_sounds, prompts
from reconciler.desired.load import load_desired
from reconciler.desired.model import OWN_SOUNDS_HELP
from reconciler.desired.render import Rendered
from reconciler.errors import ValidationFailed
from reconciler.gitops.apply import _refuse_missing_sounds
from tests.unit.desired_support import edit, problems

# What Asterisk 22 prints for `core show sounds` (observed in the project's image, shortened).
SOUNDS = "Available audio files:\nactivated\ndemo-congrats\ndigits/1\nvm-INBOX\n"
UNREACHABLE = "Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)"


def test_the_sound_list_is_read_one_name_a_line_after_its_header() -> None:
    noisy = "No ethernet interface found for seeding global EID. You will have to set it manually.\n" + SOUNDS
    assert parse_sounds(noisy) == {"activated", "demo-congrats", "digits/1", "vm-INBOX"}


def test_an_answer_that_is_no_sound_list_judges_no_prompt(sample: Path) -> None:
    assert parse_sounds(UNREACHABLE) is None and parse_sounds("") is None
    assert missing_sounds(load_desired(sample).state, None) == []


def test_the_sample_asks_for_its_menu_prompt_with_the_field_that_names_it(sample: Path) -> None:
    assert prompts(load_desired(sample).state) == {"demo-congrats": [("menus", 0, "prompt")]}


def _rendered(sample: Path) -> Rendered:
    loaded = load_desired(sample)
    return Rendered("0" * 40, {}, loaded.state, frozenset(), {}, loaded)


def test_a_prompt_the_pbx_lacks_stops_the_apply_at_its_file_and_line(sample: Path) -> None:
    edit(sample, "office.yaml", "prompt: demo-congrats", "prompt: welcome-to-acme")
    with pytest.raises(ValidationFailed) as caught:
        _refuse_missing_sounds(_rendered(sample), parse_sounds(SOUNDS), "gitops-pbx")
    assert [str(p) for p in caught.value.problems] == [
        f"desired/office.yaml:26: menus[0].prompt: no sound 'welcome-to-acme' in the PBX (gitops-pbx): {HINT}"
    ]


def test_a_prompt_the_pbx_has_passes(sample: Path) -> None:
    _refuse_missing_sounds(_rendered(sample), parse_sounds(SOUNDS), "gitops-pbx")


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
