"""What Asterisk logs about a rendered line, section or object is traced back to the desired item
(file, line, field) that rendered it: on real captures and the project's own render."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.asterisk import sourcemap
from reconciler.asterisk.parsers import LogProblem, parse_reload_log
from reconciler.desired.load import LoadedState, load_desired
from reconciler.desired.render import render
from reconciler.settings import REPO_ROOT

CLI = Path(__file__).resolve().parents[1] / "fixtures" / "cli"
SECRETS = {"EXT_4001_PASSWORD": "Fake-Phone-Pass-1x", "EXT_4002_PASSWORD": "Fake-Phone-Pass-2x"}
SECRETS |= {"PROVIDER_PASSWORD": "Fake-Trunk-Pass-9z"}

# The desired state capture_provider_health.sh renders its configs from (provider on 127.0.0.1).
DESIRED = {
    "pbx.yaml": "pbx:\n  bind: 127.0.0.1\n  port: 5060\n  tls_port: 5061\n",
    "extensions.yaml": "extensions:\n"
    + "".join(
        f'  - number: "{n}"\n    name: Extension {n}\n'
        f"    password: ${{EXT_{n}_PASSWORD}}\n    voicemail: true\n"
        for n in ("4001", "4002")
    ),
    "providers.yaml": (
        "providers:\n  - name: pbx_provider\n    host: 127.0.0.1\n    port: 5070\n    transport: udp\n"
        "    register: true\n    username: pbxtrunk\n    password: ${PROVIDER_PASSWORD}\n"
    ),
    "routes.yaml": (
        "outbound:\n"
        '  - {name: external, prefix: "9", strip: 1, provider: pbx_provider}\n'
        '  - {name: emergency, numbers: ["911", "112"], provider: pbx_provider}\n'
        "inbound:\n"
        '  - {provider: pbx_provider, did: "+34910000000", to: "4001"}\n'
    ),
}


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedState:
    desired = tmp_path / "desired"
    desired.mkdir()
    for name, text in DESIRED.items():
        (desired / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    return load_desired(desired)


def problems(log_name: str) -> list[LogProblem]:
    return parse_reload_log((CLI / log_name).read_text().splitlines())


def pjsip(name: str) -> dict[str, str]:
    return {"pjsip.conf": (CLI / "config" / name).read_text()}


def test_an_unknown_option_at_a_line_of_pjsip_conf_points_at_the_extension_that_rendered_it(
    loaded: LoadedState,
) -> None:
    option, created = problems("boot_endpoint_unknown_option.messages.log")[:2]
    located = sourcemap.locate(option, pjsip("health_bogus_endpoint_pjsip.conf"), loaded)
    assert located.rendered == "pjsip.conf:23"
    assert located.section == "4001"
    assert located.prefix() == "desired/extensions.yaml:2: extensions[0] (extension 4001): "
    # "Could not create ... 'endpoint' with id '4001'" names no line: the section header is used
    located = sourcemap.locate(created, pjsip("health_bogus_endpoint_pjsip.conf"), loaded)
    assert (located.rendered, located.field) == ("pjsip.conf:13", "extensions[0]")


def test_an_object_of_a_provider_points_at_the_provider(loaded: LoadedState) -> None:
    found = [p for p in problems("boot_endpoint_unknown_option.messages.log") if p.category == "pbx_provider"]
    located = sourcemap.locate(found[0], pjsip("health_bogus_endpoint_pjsip.conf"), loaded)
    assert located.source == ("desired/providers.yaml", 2)
    assert located.what == "provider pbx_provider"


def test_a_section_header_without_its_bracket_points_at_the_extension_whose_auth_it_opens(
    loaded: LoadedState,
) -> None:
    parse_error = problems("boot_pjsip_broken_section.messages.log")[0]
    assert parse_error.line == 30
    located = sourcemap.locate(parse_error, pjsip("health_broken_section_pjsip.conf"), loaded)
    assert located.section == "4001-auth"
    assert located.prefix() == "desired/extensions.yaml:4: extensions[0].password (extension 4001): "


def test_a_problem_no_line_or_object_can_place_keeps_only_what_asterisk_said(loaded: LoadedState) -> None:
    unparsable = problems("boot_pjsip_broken_section.messages.log")[1]
    located = sourcemap.locate(unparsable, pjsip("health_broken_section_pjsip.conf"), loaded)
    assert located.source is None and located.prefix() == ""


@pytest.fixture
def rendered(loaded: LoadedState) -> dict[str, str]:
    return render(loaded.state, SECRETS, "sourcemap-1", REPO_ROOT / "templates")


def line_of(text: str, start: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if line.startswith(start))


def at(file: str, line: int) -> LogProblem:
    return LogProblem("WARNING", "pbx_config.c", f"something at line {line} of {file}", file, line)


@pytest.mark.parametrize(
    ("start", "offset", "field", "what"),
    [
        ("exten => 911,", 0, "outbound[1].numbers[0]", "route emergency"),
        ("exten => 112,", 2, "outbound[1].numbers[1]", "route emergency"),
        ("exten => _9X.,", 3, "outbound[0].prefix", "route external"),
        ("exten => _4XXX,", 2, "extensions", "the extensions _4XXX routes"),
        ("exten => +34910000000,", 1, "inbound[0]", "DID +34910000000"),
    ],
)
def test_a_dialplan_line_points_at_the_route_or_extension_whose_lines_it_belongs_to(
    loaded: LoadedState, rendered: dict[str, str], start: str, offset: int, field: str, what: str
) -> None:
    line = line_of(rendered["extensions.conf"], start) + offset
    located = sourcemap.locate(at("extensions.conf", line), rendered, loaded)
    assert (located.field, located.what) == (field, what)


def test_the_revision_marker_and_the_general_section_belong_to_no_desired_item(
    loaded: LoadedState, rendered: dict[str, str]
) -> None:
    marker = line_of(rendered["pjsip.conf"], "[gitops-rev-")
    located = sourcemap.locate(at("pjsip.conf", marker + 1), rendered, loaded)
    assert located.section == "gitops-rev-sourcemap-1" and located.item is None
    general = line_of(rendered["extensions.conf"], "static =")
    assert sourcemap.locate(at("extensions.conf", general), rendered, loaded).item is None
