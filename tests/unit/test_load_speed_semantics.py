"""The YAML semantics of the fast loader (PyYAML/libyaml with the YAML 1.2 core schema): what a
scalar means, duplicate keys, anchors, and that a large state loads with every line right."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from reconciler.desired.load import load_desired
from tests.unit.desired_support import edit, phones_only, problems


@pytest.mark.parametrize("word", ["yes", "No", "on", "OFF", "y", "n"])
def test_yes_no_on_off_stay_strings_where_a_string_is_expected(sample: Path, word: str) -> None:
    edit(sample, "extensions.yaml", "    name: Sales", f"    name: {word}")
    assert load_desired(sample).state.extensions[1].name == word


def test_a_word_that_is_no_boolean_fails_as_a_boolean_with_its_line(sample: Path) -> None:
    edit(sample, "providers.yaml", "register: true", "register: sometimes")
    assert problems(sample) == ["desired/providers.yaml:9: providers[0].register: must be true or false"]


@pytest.mark.parametrize(
    ("word", "value"), [("true", True), ("True", True), ("TRUE", True), ("FALSE", False)]
)
def test_true_and_false_in_any_of_their_three_spellings_are_booleans(
    sample: Path, word: str, value: bool
) -> None:
    edit(sample, "providers.yaml", "register: true", f"register: {word}")
    assert load_desired(sample).state.providers[0].register is value


@pytest.mark.parametrize("word", ["1:30", "190:20:30", "0o17x", "1_000x"])
def test_sexagesimal_and_number_like_words_stay_the_text_that_was_written(sample: Path, word: str) -> None:
    edit(sample, "extensions.yaml", 'number: "4002"', f"number: {word}")
    assert problems(sample) == [
        f"desired/extensions.yaml:11: extensions[2].number: {word!r} must be digits only (1-15)"
    ]


def test_a_leading_zero_is_decimal_not_octal(sample: Path) -> None:
    edit(sample, "providers.yaml", "port: 5070", "port: 05070")
    assert load_desired(sample).state.providers[0].port == 5070


def test_underscores_and_hex_are_ints_as_in_yaml_1_2(sample: Path) -> None:
    edit(sample, "pbx.yaml", "port: 5060", "port: 5_062")
    edit(sample, "providers.yaml", "port: 5070", "port: 0x13CE")
    state = load_desired(sample).state
    assert (state.pbx.port, state.providers[0].port) == (5062, 0x13CE)


def test_an_unquoted_number_is_still_refused_with_a_hint_to_quote_it(sample: Path) -> None:
    edit(sample, "extensions.yaml", 'number: "4002"', "number: 4002")
    assert problems(sample) == [
        'desired/extensions.yaml:11: extensions[2].number: must be a quoted string of digits, e.g. "4002" '
        "(YAML reads 4002 as a number)"
    ]


def test_an_explicit_str_tag_makes_digits_a_string(sample: Path) -> None:
    edit(sample, "extensions.yaml", 'number: "4002"', "number: !!str 4002")
    assert load_desired(sample).state.extensions[2].number == "4002"


def test_null_and_an_empty_value_are_none(sample: Path) -> None:
    edit(sample, "pbx.yaml", "  media_address: 127.0.0.1", "  media_address: ~")
    assert load_desired(sample).state.pbx.media_address is None


def test_a_duplicate_key_is_reported_at_the_second_key_with_the_line_of_the_first(sample: Path) -> None:
    edit(sample, "routes.yaml", "  - name: external\n", "  - name: external\n    name: again\n")
    assert problems(sample) == [
        'desired/routes.yaml:6: -: malformed YAML: while constructing a mapping found duplicate key "name" '
        "(first at line 5)"
    ]


def test_a_duplicate_key_never_shows_either_value_because_it_may_be_a_secret(sample: Path) -> None:
    edit(
        sample,
        "extensions.yaml",
        "    password: ${EXT_4001_PASSWORD}\n",
        "    password: first-Secret-1\n    password: second-Secret-2\n",
    )
    [problem] = problems(sample)
    assert problem.startswith("desired/extensions.yaml:10: -: malformed YAML: while constructing a mapping")
    assert "Secret" not in problem


def test_a_duplicate_top_level_key_in_one_file_is_a_duplicate_key(sample: Path) -> None:
    (sample / "routes.yaml").write_text("inbound: []\n" + (sample / "routes.yaml").read_text())
    assert problems(sample) == [
        "desired/routes.yaml:14: -: malformed YAML: while constructing a mapping found duplicate key "
        '"inbound" (first at line 1)'
    ]


def test_a_malformed_file_names_the_character_that_broke_it(sample: Path) -> None:
    edit(sample, "routes.yaml", '    to: "4000"', '\tto: "4000"')
    assert problems(sample) == [
        "desired/routes.yaml:16: -: malformed YAML: while scanning for the next token "
        "found character '\\t' that cannot start any token"
    ]


def test_merge_keys_fill_in_defaults_and_problems_point_at_the_item(sample: Path) -> None:
    # Three phones only: the office features' members and mailboxes (4003, 4005, ...) would dangle.
    phones_only(sample)
    (sample / "extensions.yaml").write_text(
        "extensions:\n"
        "  - &phone\n"
        '    number: "4000"\n'
        "    name: Reception\n"
        "    password: ${EXT_4000_PASSWORD}\n"
        "  - <<: *phone\n"
        '    number: "4001"\n'
        "  - <<: *phone\n"
        '    number: "4002"\n'
        "    voicemail: maybe\n"
    )
    assert problems(sample) == [
        "desired/extensions.yaml:10: extensions[2].voicemail: must be true or false",
    ]
    edit(sample, "extensions.yaml", "    voicemail: maybe\n", "")
    extensions = load_desired(sample).state.extensions
    assert [(e.number, e.name) for e in extensions] == [
        ("4000", "Reception"),
        ("4001", "Reception"),
        ("4002", "Reception"),
    ]


def test_an_anchor_may_be_defined_again_as_yaml_1_2_allows(sample: Path) -> None:
    edit(sample, "pbx.yaml", "  codecs: [ulaw, alaw]", "  codecs: &c [ulaw, alaw]\n  local_net: &c []")
    assert load_desired(sample).state.pbx.local_net == []


def test_a_recursive_alias_is_malformed_yaml_not_a_crash(sample: Path) -> None:
    (sample / "routes.yaml").write_text("outbound: &loop\n  - *loop\n")
    [problem] = problems(sample)
    assert problem.startswith("desired/routes.yaml:")
    assert "malformed YAML: found a recursive alias" in problem


def test_loading_leaves_the_garbage_collector_on_even_when_it_fails(sample: Path) -> None:
    assert gc.isenabled()
    load_desired(sample)
    assert gc.isenabled()
    edit(sample, "providers.yaml", "register: true", "register: sometimes")
    problems(sample)
    assert gc.isenabled()


def test_a_large_state_loads_with_every_item_and_line(sample: Path) -> None:
    # Other numbers than the sample's: the office features' members and mailboxes would dangle.
    phones_only(sample)
    count = 5000
    numbers = [str(10000 + i) for i in range(count)]
    (sample / "extensions.yaml").write_text(
        "extensions:\n"
        + "".join(
            f'  - number: "{n}"\n    name: Phone {n}\n'
            f"    password: ${{EXT_{n}_PASSWORD}}\n    voicemail: true\n"
            for n in numbers
        )
    )
    edit(sample, "routes.yaml", 'to: "4000"', f'to: "{numbers[-1]}"')
    loaded = load_desired(sample)
    assert [e.number for e in loaded.state.extensions] == numbers
    assert all(e.voicemail is True for e in loaded.state.extensions)
    # item i starts at line 2 + 4 i; its password is two lines further down
    assert loaded.locate(("extensions", count - 1, "password")) == ("desired/extensions.yaml", 4 * count)
    assert loaded.locate(("extensions", 1234)) == ("desired/extensions.yaml", 2 + 4 * 1234)


def test_a_problem_deep_in_a_large_state_names_its_line(sample: Path) -> None:
    # Other numbers than the sample's: the office features' members and mailboxes would dangle.
    phones_only(sample)
    count = 5000
    lines = [
        f'  - number: "{10000 + i}"\n    name: Phone {i}\n    password: ${{EXT_{10000 + i}_PASSWORD}}\n'
        for i in range(count)
    ]
    lines[4321] = lines[4321].replace("    name:", "    nmae:")
    (sample / "extensions.yaml").write_text("extensions:\n" + "".join(lines))
    edit(sample, "routes.yaml", 'to: "4000"', 'to: "10000"')
    assert problems(sample) == [
        "desired/extensions.yaml:12965: extensions[4321].name: required field is missing",
        "desired/extensions.yaml:12966: extensions[4321].nmae: unknown key 'nmae' (did you mean 'name'?)",
    ]
