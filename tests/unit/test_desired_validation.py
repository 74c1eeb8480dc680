"""Every validation rule of the desired state, each with the exact `FILE:LINE: field: message`."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired.load import load_desired
from reconciler.desired.model import TOP_LEVEL_KEYS
from reconciler.errors import ValidationFailed
from tests.unit.desired_support import edit, phones_only, problems


def test_the_sample_is_valid_without_any_secret_values(sample: Path) -> None:
    loaded = load_desired(sample)
    assert [e.number for e in loaded.state.extensions] == ["4000", "4001", "4002", "4003", "4004", "4005"]
    assert loaded.state.providers[0].register is True
    assert loaded.state.pbx.media_address == "127.0.0.1"


def test_locate_points_at_the_file_and_line_of_a_field(sample: Path) -> None:
    loaded = load_desired(sample)
    assert loaded.locate(("extensions", 1, "password")) == ("desired/extensions.yaml", 9)
    assert loaded.locate(("outbound", 1, "numbers", 0)) == ("desired/routes.yaml", 10)
    assert loaded.locate(("providers", 0, "from_user")) == ("desired/providers.yaml", 3)


def test_a_misspelled_key_is_refused_with_a_suggestion(sample: Path) -> None:
    edit(sample, "extensions.yaml", "    password: ${EXT_4001_PASSWORD}", "    pasword: ${EXT_4001_PASSWORD}")
    assert problems(sample) == [
        "desired/extensions.yaml:7: extensions[1].password: required field is missing",
        "desired/extensions.yaml:9: extensions[1].pasword: unknown key 'pasword' (did you mean 'password'?)",
    ]


def test_an_unknown_top_level_key_is_refused(sample: Path) -> None:
    (sample / "extra.yaml").write_text("# extra\ntrunks: []\n")
    assert problems(sample) == [
        f"desired/extra.yaml:2: trunks: unknown key 'trunks' (allowed: {', '.join(TOP_LEVEL_KEYS)})"
    ]
    assert list(TOP_LEVEL_KEYS) == [
        *("pbx", "providers", "extensions", "outbound", "inbound"),
        *("ring_groups", "schedules", "menus", "queues"),
    ]


def test_a_wrong_type_is_refused(sample: Path) -> None:
    edit(sample, "providers.yaml", "register: true", "register: sometimes")
    assert problems(sample) == ["desired/providers.yaml:9: providers[0].register: must be true or false"]


def test_an_unquoted_extension_number_asks_for_quotes(sample: Path) -> None:
    edit(sample, "extensions.yaml", 'number: "4002"', "number: 4002")
    assert problems(sample) == [
        'desired/extensions.yaml:11: extensions[2].number: must be a quoted string of digits, e.g. "4002" '
        "(YAML reads 4002 as a number)"
    ]


def test_an_extension_number_must_be_digits_only(sample: Path) -> None:
    edit(sample, "extensions.yaml", 'number: "4002"', 'number: "40a2"')
    assert problems(sample) == [
        "desired/extensions.yaml:11: extensions[2].number: '40a2' must be digits only (1-15)"
    ]


def test_a_duplicated_extension_number_is_refused(sample: Path) -> None:
    # 4002 is a queue member and the queue's voicemail: renumbered, those references dangle too.
    phones_only(sample)
    edit(sample, "extensions.yaml", 'number: "4002"', 'number: "4001"')
    assert problems(sample) == [
        "desired/extensions.yaml:11: extensions[2].number: duplicate extension number '4001' "
        "(first at extensions[1].number)"
    ]


def test_a_duplicated_provider_name_is_refused(sample: Path) -> None:
    text = (sample / "providers.yaml").read_text()
    block = text[text.index("  - name:") :]
    (sample / "providers.yaml").write_text(text + block)
    assert problems(sample) == [
        "desired/providers.yaml:10: providers[1].name: duplicate provider name 'pbx_provider' "
        "(first at providers[0].name)"
    ]


def test_a_route_to_a_provider_that_does_not_exist_is_refused(sample: Path) -> None:
    edit(
        sample,
        "routes.yaml",
        "    provider: pbx_provider\n  - name: emergency",
        "    provider: nosuch\n  - name: emergency",
    )
    assert problems(sample) == [
        "desired/routes.yaml:8: outbound[0].provider: no provider named 'nosuch' (known: pbx_provider)"
    ]


def test_an_inbound_route_must_ring_an_existing_extension(sample: Path) -> None:
    edit(sample, "routes.yaml", 'to: "4000"', 'to: "4999"')
    assert problems(sample) == ["desired/routes.yaml:16: inbound[0].to: no extension '4999'"]


def test_an_inbound_route_must_come_from_an_existing_provider(sample: Path) -> None:
    edit(sample, "routes.yaml", "  - provider: pbx_provider\n    did:", "  - provider: other\n    did:")
    assert problems(sample) == [
        "desired/routes.yaml:14: inbound[0].provider: no provider named 'other' (known: pbx_provider)"
    ]


def test_transport_must_be_udp_tcp_or_tls(sample: Path) -> None:
    edit(sample, "providers.yaml", "transport: udp", "transport: sctp")
    assert problems(sample) == [
        "desired/providers.yaml:6: providers[0].transport: must be 'udp', 'tcp' or 'tls'"
    ]


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_ports_must_be_between_1_and_65535(sample: Path, port: str) -> None:
    edit(sample, "providers.yaml", "port: 5070", f"port: {port}")
    [problem] = problems(sample)
    assert problem.startswith("desired/providers.yaml:5: providers[0].port: should be ")


def test_a_pbx_port_out_of_range_is_refused(sample: Path) -> None:
    edit(sample, "pbx.yaml", "port: 5060", "port: 70000")
    assert problems(sample) == ["desired/pbx.yaml:11: pbx.port: should be less than or equal to 65535"]


def test_a_literal_password_is_refused_because_secrets_never_live_in_git(sample: Path) -> None:
    edit(sample, "extensions.yaml", "password: ${EXT_4001_PASSWORD}", "password: ext4001pass")
    [problem] = problems(sample)
    assert problem.startswith(
        "desired/extensions.yaml:9: extensions[1].password: a literal secret is not allowed in desired/"
    )
    assert "${EXT_4001_PASSWORD}" in problem


def test_a_literal_provider_password_is_refused(sample: Path) -> None:
    edit(sample, "providers.yaml", "password: ${PBX_PROVIDER_PASSWORD}", "password: hunter2hunter2")
    [problem] = problems(sample)
    assert problem.startswith(
        "desired/providers.yaml:8: providers[0].password: a literal secret is not allowed"
    )


def test_a_malformed_secret_reference_is_refused(sample: Path) -> None:
    edit(sample, "extensions.yaml", "${EXT_4001_PASSWORD}", "${ext_4001_password}")
    assert problems(sample) == [
        "desired/extensions.yaml:9: extensions[1].password: a secret reference is written ${NAME} "
        "with NAME in upper case letters, digits and _"
    ]


def test_a_literal_voicemail_pin_is_refused(sample: Path) -> None:
    edit(sample, "extensions.yaml", "voicemail: true", "voicemail: {pin: '1234'}")
    [problem] = problems(sample)
    assert problem.startswith("desired/extensions.yaml:6: extensions[0].voicemail.pin: a literal secret")


def test_broken_yaml_names_the_file_and_line_of_the_error(sample: Path) -> None:
    edit(sample, "routes.yaml", '    did: "+34910000000"', '    did "+34910000000"')
    assert problems(sample) == [
        "desired/routes.yaml:15: -: malformed YAML: while scanning a simple key could not find expected ':'"
    ]


def test_a_tab_in_yaml_is_reported_at_its_line(sample: Path) -> None:
    edit(sample, "routes.yaml", '    to: "4000"', '\tto: "4000"')
    [problem] = problems(sample)
    assert problem.startswith("desired/routes.yaml:16: -: malformed YAML:")


def test_bad_indentation_is_reported_at_its_line(sample: Path) -> None:
    edit(sample, "providers.yaml", "    host: 127.0.0.1", "   host: 127.0.0.1")
    [problem] = problems(sample)  # and no follow-up "no provider named" from routes.yaml
    assert problem.startswith("desired/providers.yaml:4: -: malformed YAML:")


def test_a_top_level_key_in_two_files_is_refused(sample: Path) -> None:
    (sample / "more.yaml").write_text("# more phones\nextensions: []\n")
    assert problems(sample) == [
        "desired/more.yaml:2: extensions: top-level key 'extensions' is already defined in "
        "desired/extensions.yaml:2"
    ]


def test_a_prefix_that_would_swallow_an_extension_is_refused(sample: Path) -> None:
    edit(sample, "routes.yaml", 'prefix: "9"', 'prefix: "40"')
    edit(sample, "routes.yaml", "strip: 1", "strip: 2")
    found = problems(sample)
    assert found[0] == "desired/routes.yaml:6: outbound[0].prefix: prefix '40' would swallow extension 4000"
    assert len(found) == 6  # 4000-4005


def test_an_emergency_number_that_is_an_extension_is_refused(sample: Path) -> None:
    edit(sample, "routes.yaml", 'numbers: ["911", "112"]', 'numbers: ["911", "4003"]')
    assert problems(sample) == [
        "desired/routes.yaml:10: outbound[1].numbers[1]: number 4003 is also an extension number"
    ]


def test_an_exact_number_in_two_routes_is_refused(sample: Path) -> None:
    (sample / "routes.yaml").write_text(
        (sample / "routes.yaml")
        .read_text()
        .replace(
            "# Inbound:", '  - name: emergency2\n    numbers: ["112"]\n    provider: pbx_provider\n# Inbound:'
        )
    )
    assert problems(sample) == [
        "desired/routes.yaml:13: outbound[2].numbers[0]: number 112 is already routed by "
        "outbound[1].numbers[1]"
    ]


def test_the_sample_prefix_9_and_emergency_911_overlap_on_purpose_and_are_valid(sample: Path) -> None:
    state = load_desired(sample).state
    assert state.outbound[0].prefix == "9"
    assert "911" in (state.outbound[1].numbers or [])


def test_a_route_needs_exactly_one_of_prefix_or_numbers(sample: Path) -> None:
    edit(
        sample,
        "routes.yaml",
        '    numbers: ["911", "112"]\n',
        '    numbers: ["911", "112"]\n    prefix: "8"\n',
    )
    assert problems(sample) == ["desired/routes.yaml:9: outbound[1]: give exactly one of prefix or numbers"]


def test_strip_cannot_exceed_the_prefix(sample: Path) -> None:
    edit(sample, "routes.yaml", "strip: 1", "strip: 2")
    assert problems(sample) == [
        "desired/routes.yaml:5: outbound[0]: strip (2) must not exceed the prefix length (1)"
    ]


def test_a_bare_loopback_identify_match_is_refused(sample: Path) -> None:
    edit(sample, "providers.yaml", "    register: true", "    register: true\n    match: [127.0.0.1]")
    [problem] = problems(sample)
    assert problem.startswith(
        "desired/providers.yaml:10: providers[0].match[0]: a loopback match without a port makes every "
        "local phone the trunk"
    )


def test_every_problem_is_reported_at_once_across_files(sample: Path) -> None:
    edit(sample, "extensions.yaml", "    password: ${EXT_4001_PASSWORD}", "    pasword: ${EXT_4001_PASSWORD}")
    edit(sample, "extensions.yaml", 'number: "4003"', 'number: "4002"')
    edit(sample, "routes.yaml", 'to: "4000"', 'to: "4999"')
    edit(sample, "providers.yaml", "transport: udp", "transport: sctp")
    found = problems(sample)
    assert [p.split(": ")[0] for p in found] == [
        "desired/extensions.yaml:7",
        "desired/extensions.yaml:9",
        "desired/extensions.yaml:15",
        "desired/office.yaml:17",  # the queue's member 4003 is gone (renumbered to 4002)
        "desired/providers.yaml:6",
        "desired/routes.yaml:16",
    ]
    assert found[3] == "desired/office.yaml:17: queues[0].members[1]: no extension '4003'"


def test_a_provider_name_must_be_a_valid_endpoint_name(sample: Path) -> None:
    edit(sample, "providers.yaml", "name: pbx_provider", "name: Pbx-Provider")
    found = problems(sample)
    assert found[0] == (
        "desired/providers.yaml:3: providers[0].name: 'Pbx-Provider' must be lower case letters, digits "
        "and _, starting with a letter"
    )
    # the routes still name pbx_provider, which no longer exists
    assert found[1].startswith(
        "desired/routes.yaml:8: outbound[0].provider: no provider named 'pbx_provider'"
    )


def test_an_empty_file_is_allowed(sample: Path) -> None:
    (sample / "empty.yaml").write_text("# nothing yet\n")
    assert len(load_desired(sample).state.extensions) == 6


def test_a_missing_directory_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as info:
        load_desired(tmp_path / "nope")
    assert [p.message for p in info.value.problems] == ["not a directory"]
