"""Issue 9, "Input that passes validate changes the PBX": values that broke rendered lines are
refused with one FILE:LINE (or the secret's name) line, or rendered harmlessly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.confparse import parse_conf
from reconciler.desired.load import load_desired
from reconciler.desired.model import Voicemail
from reconciler.desired.render import RenderFailed, render, render_desired
from reconciler.settings import Settings
from tests.unit.desired_support import TEMPLATES_DIR, CliResult, edit
from tests.unit.hostile_support import FULL_SECRETS, problem_lines

Cli = Callable[..., CliResult]

INJECTION = "\\n[anonymous]\\ntype = endpoint\\ncontext = internal\\n"  # YAML escapes in "..."

# (file, the line as written, 1-based line number, field) of every address field.
ADDRESS_FIELDS = [
    ("pbx.yaml", "  bind: 127.0.0.1", 2, "pbx.bind", "  bind: "),
    ("pbx.yaml", "  media_address: 127.0.0.1", 5, "pbx.media_address", "  media_address: "),
    ("pbx.yaml", "  external_address: 203.0.113.7", 6, "pbx.external_address", "  external_address: "),
    ("pbx.yaml", "  local_net: [192.0.2.0/24]", 7, "pbx.local_net[0]", "  local_net: ["),
    ("providers.yaml", "    host: sip.example.com", 3, "providers[0].host", "    host: "),
    ("providers.yaml", "    match: [192.0.2.50:5070]", 9, "providers[0].match[0]", "    match: ["),
    ("providers.yaml", "    from_domain: example.com", 11, "providers[0].from_domain", "    from_domain: "),
]


@pytest.mark.parametrize(("name", "old", "line", "field", "prefix"), ADDRESS_FIELDS)
def test_an_ipv6_zone_id_carrying_a_new_section_is_refused_in_every_address_field(
    full: Path, cli: Cli, name: str, old: str, line: int, field: str, prefix: str
) -> None:
    closing = "]" if prefix.endswith("[") else ""
    edit(full, name, old, f'{prefix}"::1%x{INJECTION}"{closing}')
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem.startswith(f"desired/{name}:{line}: {field}: ")


@pytest.mark.parametrize(("name", "old", "line", "field", "prefix"), ADDRESS_FIELDS)
def test_a_value_ending_in_a_newline_is_refused_in_every_address_field(
    full: Path, cli: Cli, name: str, old: str, line: int, field: str, prefix: str
) -> None:
    value = old.removeprefix(prefix).strip("[]")
    closing = "]" if prefix.endswith("[") else ""
    edit(full, name, old, f'{prefix}"{value}\\n"{closing}')
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem.startswith(f"desired/{name}:{line}: {field}: ")


def test_an_interface_name_is_still_a_valid_ipv6_zone_id(full: Path) -> None:
    edit(full, "pbx.yaml", "  media_address: 127.0.0.1", '  media_address: "fe80::1%eth0"')
    assert load_desired(full).state.pbx.media_address == "fe80::1%eth0"


@pytest.mark.parametrize(
    "email",
    [
        "sales@example.com\x1e[general]\x1emailcmd=/usr/bin/touch\x1e/tmp/pwned",  # passed validate
        "sales@example.com\x1e[general]\x1emailcmd=/bin/sh -c id",
        "sales@example.com\u2028[general]",
        "sales@example.com\x85x",
        "sales@example.com\n",
        "a,b@example.com",
        "a|b@example.com",
        "a;b@example.com",
        "a b@example.com",
    ],
)
def test_a_voicemail_email_with_a_separator_or_line_break_is_refused(
    full: Path, cli: Cli, email: str
) -> None:
    escaped = email.encode("unicode_escape").decode().replace('"', '\\"')
    edit(full, "extensions.yaml", "      email: sales@example.com", f'      email: "{escaped}"')
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem.startswith("desired/extensions.yaml:7: extensions[0].voicemail.email: ")


def test_render_never_splits_lines_where_asterisk_does_not(full: Path, tmp_path: Path) -> None:
    # Even a state built without validation cannot inject: the render guard refuses the value.
    state = load_desired(full).state
    box = Voicemail.model_construct(pin=None, email="a@example.com\x1e[general]\x1emailcmd=touch /tmp/x")
    ext = state.extensions[1].model_copy(update={"voicemail": box})
    hostile = state.model_copy(update={"extensions": [state.extensions[0], ext]})
    with pytest.raises(RenderFailed) as info:
        render(hostile, FULL_SECRETS, "r1", TEMPLATES_DIR)
    assert info.value.message == ("extensions[1].voicemail.email: contains a line break (U+001E)")
    # And config text is read the way Asterisk reads it: \x1e is not a line break.
    assert [s.name for s in parse_conf("[default]\nx = a\x1e[general]\x1emailcmd=id\n")] == ["default"]


SOURCES_AND_CHARS = [
    (source, char)
    for source in ("environment", "env file", "secrets file")
    for char in ("\u2028", "\u2029", "\x85", "\x1e", "\x0b", "\x00", "\u202e")
    if not (source == "environment" and char == "\x00")  # an environment variable cannot hold NUL
]


@pytest.mark.parametrize(("source", "char"), SOURCES_AND_CHARS)
@pytest.mark.parametrize(
    ("name", "line", "field"),
    [
        ("TRUNK_PASSWORD", "desired/providers.yaml:7", "providers[0].password"),
        ("TRUNK_USER", "desired/providers.yaml:6", "providers[0].username"),
        ("VM_4001_PIN", "desired/extensions.yaml:6", "extensions[0].voicemail.pin"),
        ("EXT_4002_PASSWORD", "desired/extensions.yaml:11", "extensions[1].password"),
        ("SMTP_USER", "desired/pbx.yaml:13", "pbx.smtp.username"),
        ("SMTP_PASSWORD", "desired/pbx.yaml:14", "pbx.smtp.password"),
    ],
)
def test_a_secret_value_with_a_line_break_or_control_character_is_refused_by_its_name(
    full: Path, cli: Cli, tmp_path: Path, source: str, char: str, name: str, line: str, field: str
) -> None:
    value = FULL_SECRETS[name] + char + "[anonymous]"
    env = {k: v for k, v in FULL_SECRETS.items() if k != name}
    if source == "environment":
        env[name] = value
    elif source == "env file":
        (tmp_path / "hostile.env").write_text(f"{name}={value}\n", encoding="utf-8")
        env["RECONCILER_ENV_FILE"] = str(tmp_path / "hostile.env")
    else:
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / name).write_text(value + "\n", encoding="utf-8")
        env["RECONCILER_SECRETS_DIR"] = str(tmp_path / "secrets")
    result = cli("render", "desired", "--out", "out", secrets=env)
    [problem] = problem_lines(result)
    assert problem.startswith(f"{line}: {field}: secret {name} is refused: contains ")
    assert f"U+{ord(char):04X}" in problem
    assert FULL_SECRETS[name] not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


def test_an_env_file_line_cannot_become_two_lines_through_a_unicode_separator(tmp_path: Path) -> None:
    from reconciler.desired.secrets import read_env_file

    path = tmp_path / "x.env"
    path.write_text("A=one\u2028B=two\nC=three\x85D=four\n", encoding="utf-8")
    assert read_env_file(path) == {"A": "one\u2028B=two", "C": "three\x85D=four"}


@pytest.mark.parametrize(
    ("name", "old", "new", "where"),
    [
        (
            "extensions.yaml",
            "    name: Sales",
            '    name: "Sales\\n"',
            "desired/extensions.yaml:3: extensions[0].name",
        ),
        (
            "extensions.yaml",
            '  - number: "4001"',
            '  - number: "4001\\n"',
            "desired/extensions.yaml:2: extensions[0].number",
        ),
        (
            "routes.yaml",
            '    did: "+34910000000"',
            '    did: "+34910000000\\n"',
            "desired/routes.yaml:11: inbound[0].did",
        ),
        (
            "providers.yaml",
            '    caller_id: "+34910000001"',
            '    caller_id: "+1\\n"',
            "desired/providers.yaml:12: providers[0].caller_id",
        ),
        (
            "providers.yaml",
            "    from_user: trunkfrom",
            '    from_user: "trunkfrom\\n"',
            "desired/providers.yaml:10: providers[0].from_user",
        ),
        (
            "providers.yaml",
            "    username: ${TRUNK_USER}",
            '    username: "${TRUNK_USER}\\n"',
            "desired/providers.yaml:6: providers[0].username",
        ),
        (
            "extensions.yaml",
            "    password: ${EXT_4001_PASSWORD}",
            '    password: "${EXT_4001_PASSWORD}\\n"',
            "desired/extensions.yaml:4: extensions[0].password",
        ),
        (
            "routes.yaml",
            "    provider: trunk\n  - name: emergency",
            '    provider: "trunk\\n"\n  - name: emergency',
            "desired/routes.yaml:5: outbound[0].provider",
        ),
        (
            "routes.yaml",
            "  - provider: trunk",
            '  - provider: "trunk\\n"',
            "desired/routes.yaml:10: inbound[0].provider",
        ),
    ],
)
def test_a_field_ending_in_a_newline_is_refused(
    full: Path, cli: Cli, name: str, old: str, new: str, where: str
) -> None:
    edit(full, name, old, new)
    lines = problem_lines(cli("validate", "desired"))
    assert lines[0].startswith(where + ": "), lines


def test_a_revision_ending_in_a_newline_is_refused_and_nothing_is_written(
    full: Path, cli: Cli, tmp_path: Path
) -> None:
    result = cli("render", "desired", "--out", "out", "--revision", "abc\n", secrets=FULL_SECRETS)
    assert result.code == 1
    assert "cannot be used in config files" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_full_state_renders_and_every_value_is_where_it_belongs(full: Path, tmp_path: Path) -> None:
    settings = Settings(
        templates_dir=TEMPLATES_DIR,
        env_file=tmp_path / "none",
        secrets_dir=tmp_path / "none",
        environ=FULL_SECRETS,
    )
    files = render_desired(full, settings, revision="r1").files
    sections = {(s.name, s.type): s for s in parse_conf(files["pjsip.conf"])}
    assert (
        sections[("trunk-reg", "registration")].get("client_uri")
        == "sip:fake-trunk-user@sip.example.com:5070"
    )
    assert sections[("transport-udp", "transport")].get_all("local_net") == ["192.0.2.0/24"]
    # Mailboxes are store rows now (tests/unit/test_store_rows.py): voicemail.conf names none.
    assert "4001" not in files["voicemail.conf"]
