"""Rendering the sample: golden files, PJSIP/dialplan facts, determinism, injection-safe Dial strings.

Regenerate the golden files after an intended template change with
`UPDATE_GOLDEN=1 pytest tests/unit/test_desired_render.py` and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reconciler.desired.confparse import parse_conf
from reconciler.desired.load import load_desired
from reconciler.desired.render import (
    HEADER,
    RENDERED_FILES,
    RenderFailed,
    mailbox_pin,
    render,
    render_desired,
)
from reconciler.settings import REPO_ROOT
from tests.unit.desired_support import (
    FAKE_SECRETS,
    SAMPLE_DIR,
    TEMPLATES_DIR,
    fake_settings,
    use_real_provider,
)

GOLDEN_DIR = REPO_ROOT / "tests" / "fixtures" / "render"
GOLDEN_REVISION = "0123456789abcdef0123456789abcdef01234567"
# The call record keeps the number first dialled; a forward or a menu later does not replace it.
RECORD_DIALLED = "same => n,ExecIf($[${LEN(${CDR(gitops_dialled)})} = 0]?Set(CDR(gitops_dialled)=${EXTEN}))"


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    state = load_desired(SAMPLE_DIR).state
    return render(state, FAKE_SECRETS, GOLDEN_REVISION, TEMPLATES_DIR)


@pytest.mark.parametrize("name", RENDERED_FILES)
def test_the_sample_renders_exactly_like_its_golden_file(files: dict[str, str], name: str) -> None:
    golden = GOLDEN_DIR / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(files[name], encoding="utf-8")
    assert files[name] == golden.read_text(encoding="utf-8")


def test_only_the_pjsip_era_files_are_rendered_and_never_sip_conf(files: dict[str, str]) -> None:
    assert sorted(files) == sorted(RENDERED_FILES)
    assert list(RENDERED_FILES) == [
        *("pjsip.conf", "extensions.conf", "voicemail.conf"),
        *("queues.conf", "musiconhold.conf", "msmtprc"),
    ]
    assert "sip.conf" not in files
    assert "chan_sip" not in "".join(files.values())


def test_every_file_starts_with_the_managed_header_and_the_revision(files: dict[str, str]) -> None:
    for name, text in files.items():
        if name == "msmtprc":  # not an Asterisk file: its comments start with `#`, and no revision
            assert text.splitlines()[0] == "#" + HEADER[1:], name
            continue
        assert text.splitlines()[:2] == [HEADER, f"; revision: {GOLDEN_REVISION}"], name


def test_pjsip_conf_holds_no_extension_object_because_extensions_are_store_rows(
    files: dict[str, str],
) -> None:
    names = {s.name for s in parse_conf(files["pjsip.conf"])}
    for number in ("4000", "4001", "4002", "4003", "4004", "4005"):
        assert number not in names and f"{number}-auth" not in names


def test_the_dialplan_routes_extensions_with_one_pattern_per_first_digit_and_length(
    files: dict[str, str],
) -> None:
    patterns = [line for line in _internal_lines(files) if re.match(r"exten => _\dX+,1,", line)]
    assert [line.split(",")[0] for line in patterns] == ["exten => _4XXX"]


def test_adding_an_extension_of_a_known_pattern_leaves_the_dialplan_unchanged() -> None:
    state = load_desired(SAMPLE_DIR).state
    extra = state.extensions[0].model_copy(update={"number": "4999"})
    more = state.model_copy(update={"extensions": [*state.extensions, extra]})
    secrets = FAKE_SECRETS
    before = render(state, secrets, GOLDEN_REVISION, TEMPLATES_DIR)
    after = render(more, secrets, GOLDEN_REVISION, TEMPLATES_DIR)
    assert after == before
    longer = state.extensions[0].model_copy(update={"number": "40001"})
    grown = render(
        state.model_copy(update={"extensions": [*state.extensions, longer]}),
        secrets,
        GOLDEN_REVISION,
        TEMPLATES_DIR,
    )
    assert "exten => _4XXXX,1," in grown["extensions.conf"]


def test_a_pattern_route_checks_the_endpoint_and_the_mailbox_exist_before_dialling(
    files: dict[str, str],
) -> None:
    lines = _internal_lines(files)
    start = lines.index(next(line for line in lines if line.startswith("exten => _4XXX,1,")))
    assert lines[start + 1] == RECORD_DIALLED
    assert lines[start + 2] == "same => n,Goto(gitops-ext,${EXTEN},1)"
    # What a call to an extension does lives in [gitops-ext], for every kind of target alike.
    route = _context_lines(files, "gitops-ext")
    assert route[0] == "exten => _X.,1,Gosub(gitops-hop,s,1(extension:${EXTEN}))"
    assert route[1] == 'same => n,GotoIf($["${PJSIP_ENDPOINT(${EXTEN},context)}" != "internal"]?missing)'
    check = route.index("same => n,Set(DEVICES=${PJSIP_DIAL_CONTACTS(${EXTEN})})")
    assert route[check + 1] == "same => n,GotoIf($[${LEN(${DEVICES})} = 0]?noanswer)"
    assert route[check + 2] == "same => n,Dial(${DEVICES},20,b(gitops-callee^s^1))"
    mailbox = route.index('same => n(voicemail),GotoIf($["${VM_INFO(${EXTEN}@default,exists)}" != "1"]?done)')
    assert check < mailbox
    assert route[mailbox + 1] == "same => n,VoiceMail(${EXTEN}@default,${VMOPT})"
    assert route[-1] == "same => n(missing),Hangup(1)"


def test_a_provider_name_that_is_also_an_extension_id_is_refused() -> None:
    state = load_desired(SAMPLE_DIR).state
    clash = state.providers[0].model_construct(**{**dict(state.providers[0]), "name": "4001"})
    with pytest.raises(RenderFailed, match="4001"):
        render(state.model_copy(update={"providers": [clash]}), FAKE_SECRETS, GOLDEN_REVISION, TEMPLATES_DIR)


def test_the_model_keeps_numbers_digits_and_provider_names_letters_first() -> None:
    from pydantic import ValidationError

    from reconciler.desired.model import DesiredState

    base = {"name": "A", "password": "${EXT_PASSWORD}"}
    with pytest.raises(ValidationError):
        DesiredState.model_validate({"extensions": [{**base, "number": "40a1"}]})
    with pytest.raises(ValidationError):
        DesiredState.model_validate(
            {"providers": [{"name": "4001", "host": "127.0.0.1", "username": "u", "password": "${P}"}]}
        )


def test_the_real_provider_example_registers_over_tls(sample: Path, tmp_path: Path) -> None:
    use_real_provider(sample)
    files = render_desired(sample, fake_settings(tmp_path), revision=GOLDEN_REVISION).files
    by_name = {(s.name, s.type): s for s in parse_conf(files["pjsip.conf"])}
    reg = by_name[("pbx_provider-reg", "registration")]
    assert reg.get("server_uri") == "sip:pbxonthecloud.com:5061;transport=tls"
    assert reg.get("client_uri") == "sip:fakeuser@pbxonthecloud.com:5061;transport=tls"
    assert reg.get("outbound_auth") == "pbx_provider-auth"
    tls = by_name[("transport-tls", "transport")]
    assert (tls.get("method"), tls.get("verify_server")) == ("tlsv1_2", "yes")
    assert by_name[("pbx_provider-identify", "identify")].get_all("match") == ["pbxonthecloud.com:5061"]
    assert by_name[("pbx_provider", "endpoint")].get("context") == "from-pbx_provider"


def test_the_pjsip_revision_marker_is_an_aor_without_contacts(files: dict[str, str]) -> None:
    [marker] = [s for s in parse_conf(files["pjsip.conf"]) if s.name.startswith("gitops-rev-")]
    assert marker.name == "gitops-rev-0123456789ab"
    assert (marker.type, marker.get("max_contacts")) == ("aor", "0")


def _context_lines(files: dict[str, str], name: str) -> list[str]:
    [context] = [s for s in parse_conf(files["extensions.conf"]) if s.name == name]
    return [f"{k} => {v}" for k, v in context.options]


def _internal_lines(files: dict[str, str]) -> list[str]:
    return _context_lines(files, "internal")


def test_the_dialplan_sends_9_plus_number_out_with_the_9_stripped(files: dict[str, str]) -> None:
    lines = _internal_lines(files)
    start = lines.index(next(line for line in lines if line.startswith("exten => _9X.,1,")))
    route = lines[start + 1 : start + 8]
    assert route[0] == RECORD_DIALLED
    assert route[1] == "same => n,Gosub(gitops-cdr,s,1(route:external,pbx_provider))"
    assert route[2] == "same => n,Set(NUM=${FILTER(0123456789,${EXTEN:1})})"
    assert route[3] == "same => n,GotoIf($[${LEN(${NUM})} != ${LEN(${EXTEN:1})}]?reject)"
    assert route[4] == "same => n,Dial(PJSIP/${NUM}@pbx_provider,60)"


def test_every_way_a_call_starts_records_the_number_dialled(files: dict[str, str]) -> None:
    lines = [line.strip() for line in files["extensions.conf"].splitlines()]
    starts = [
        i
        for i, line in enumerate(lines)
        if re.match(r"exten => (_4XXX|_9X\.|911|112|600|700|\+34910000000|\+34910000001),1,NoOp\(", line)
    ]
    assert len(starts) == 8
    for i in starts:
        assert RECORD_DIALLED in lines[i + 1 : i + 3], lines[i]


def test_emergency_numbers_come_first_as_exact_extensions_dialled_as_is(files: dict[str, str]) -> None:
    lines = _internal_lines(files)
    assert lines[0].startswith("exten => 112,1,")
    assert "same => n,Dial(PJSIP/911@pbx_provider,60)" in lines
    first_911 = lines.index(next(line for line in lines if line.startswith("exten => 911,1,")))
    first_pattern = lines.index(next(line for line in lines if line.startswith("exten => _")))
    assert first_911 < first_pattern


def test_every_extension_line_carries_priority_1_explicitly(files: dict[str, str]) -> None:
    hints = 0
    for line in files["extensions.conf"].splitlines():
        if re.match(r"^exten => [^,]+,hint,", line):  # a hint (BLF state) is no priority
            assert re.fullmatch(r"exten => _\dX+,hint,PJSIP/\$\{EXTEN\}", line), line
            hints += 1
        elif line.startswith("exten"):
            assert re.match(r"^exten => [^,]+,1,\w+\(", line), line
    assert hints == 1  # one per extension pattern (_4XXX)


def test_dial_strings_contain_only_validated_numbers_names_or_the_filtered_variable(
    files: dict[str, str],
) -> None:
    code = "\n".join(line for line in files["extensions.conf"].splitlines() if not line.startswith(";"))
    # The argument up to the Dial's own closing parenthesis: the b(...) option holds one pair.
    dials = re.findall(r"Dial\(((?:[^()]|\([^()]*\))*)\)", code)
    assert dials
    devices = 0
    for target in dials:
        if target.startswith("${DEVICES"):
            # The registered contacts, as PJSIP_DIAL_CONTACTS built them (`:1` drops the leading `&`).
            assert re.fullmatch(r"\$\{DEVICES(:1)?\},(\d+)?,b\(gitops-callee\^s\^1\)", target), target
            devices += 1
            continue
        assert re.fullmatch(r"PJSIP/(\d+|\$\{NUM\}|\$\{EXTEN\})(@[a-z][a-z0-9_]*)?,\d+", target), target
    assert devices >= 3  # an extension, a ring group, a queue member
    for line in code.splitlines():
        if "Set(DEVICES=" in line or "Set(FOUND=" in line:
            assert re.search(
                r"Set\((DEVICES|FOUND)=(\$\{PJSIP_DIAL_CONTACTS\((\$\{EXTEN\}|\$\{ARG1\})\)\}"
                r"|\$\{DEVICES\}&\$\{FOUND\})?\)",
                line,
            ), line


def test_unknown_numbers_from_the_provider_are_refused(files: dict[str, str]) -> None:
    [ctx] = [s for s in parse_conf(files["extensions.conf"]) if s.name == "from-pbx_provider"]
    values = [v for _, v in ctx.options]
    assert "+34910000000,1,NoOp(inbound pbx_provider +34910000000: ${CALLERID(num)} -> 4000)" in values
    assert "n,Goto(gitops-ext,4000,1)" in values
    assert values[-2] == "_[+0-9].,1,NoOp(inbound pbx_provider unknown: ${CALLERID(num)} -> ${EXTEN})"
    assert values[-1] == "n,Hangup(21)"


def test_the_dialplan_revision_marker_is_in_gitops_meta(files: dict[str, str]) -> None:
    [meta] = [s for s in parse_conf(files["extensions.conf"]) if s.name == "gitops-meta"]
    assert meta.options == [("exten", "revision,1,NoOp(0123456789ab)")]


def test_voicemail_conf_names_no_mailbox_because_mailboxes_are_store_rows(files: dict[str, str]) -> None:
    [default] = [s for s in parse_conf(files["voicemail.conf"]) if s.name == "default"]
    assert default.options == []


def test_mailboxes_without_a_pin_get_a_ten_digit_pin_derived_from_the_password() -> None:
    state = load_desired(SAMPLE_DIR).state
    pins = {e.number: mailbox_pin(e, FAKE_SECRETS) for e in state.extensions if e.has_voicemail}
    assert sorted(pins) == ["4000", "4001", "4002", "4003", "4004", "4005"]
    assert all(re.fullmatch(r"\d{10}", pin) for pin in pins.values())
    assert len(set(pins.values())) == 6
    ext = state.extensions[1]
    assert mailbox_pin(ext, {**FAKE_SECRETS, "EXT_4001_PASSWORD": "Another-Pass-77"}) != pins["4001"]


def test_a_semicolon_in_a_secret_is_escaped_so_asterisk_does_not_cut_it() -> None:
    state = load_desired(SAMPLE_DIR).state
    name = state.providers[0].password.name  # type: ignore[union-attr]
    secrets = {**FAKE_SECRETS, name: "Semi;colon-Pass1"}
    files = render(state, secrets, GOLDEN_REVISION, TEMPLATES_DIR)
    assert "password = Semi\\;colon-Pass1" in files["pjsip.conf"]
    [auth] = [s for s in parse_conf(files["pjsip.conf"]) if s.name == f"{state.providers[0].name}-auth"]
    assert auth.get("password") == "Semi;colon-Pass1"


def test_render_desired_twice_gives_identical_files_and_the_values_to_mask(
    sample: Path, tmp_path: Path
) -> None:
    first = render_desired(sample, fake_settings(tmp_path))
    second = render_desired(sample, fake_settings(tmp_path))
    assert first.files == second.files
    assert first.revision.startswith("sha256:") and first.revision == second.revision
    assert set(FAKE_SECRETS.values()) <= first.secret_values
    assert len(first.secret_values) == len(FAKE_SECRETS) + 6  # plus the six derived mailbox PINs


def test_reordering_yaml_entries_changes_nothing_rendered(sample: Path, tmp_path: Path) -> None:
    before = render_desired(sample, fake_settings(tmp_path), revision="r1").files
    text = (sample / "extensions.yaml").read_text()
    head, *blocks = text.split("  - number:")
    (sample / "extensions.yaml").write_text(head + "".join("  - number:" + b for b in reversed(blocks)))
    after = render_desired(sample, fake_settings(tmp_path), revision="r1").files
    assert after == before


def test_a_tcp_provider_gets_a_tcp_transport_and_a_lan_pbx_binds_everywhere(
    sample: Path, tmp_path: Path
) -> None:
    (sample / "pbx.yaml").write_text(
        "pbx:\n  bind: 0.0.0.0\n  media_address: 192.0.2.10\n  external_address: 203.0.113.7\n"
        "  local_net: [192.0.2.0/24]\n"
    )
    text = (sample / "providers.yaml").read_text().replace("transport: udp", "transport: tcp")
    (sample / "providers.yaml").write_text(text)
    pjsip = render_desired(sample, fake_settings(tmp_path), revision="r1").files["pjsip.conf"]
    names = [s.name for s in parse_conf(pjsip) if s.type == "transport"]
    assert names == ["transport-udp", "transport-tcp"]
    [udp] = [s for s in parse_conf(pjsip) if s.name == "transport-udp"]
    assert udp.get("bind") == "0.0.0.0:5060"
    assert udp.get("external_media_address") == "203.0.113.7"
    assert udp.get_all("local_net") == ["192.0.2.0/24"]
    assert "media_address = 192.0.2.10" in pjsip
