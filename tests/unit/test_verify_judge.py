"""How `reconciler verify` judges a boot's log (real captures from network-less containers): which
lines fail the verify, which are expected in its sandbox, and how findings are written for CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.commands.verify import _github_line
from reconciler.desired.load import LoadedState, load_desired
from reconciler.desired.model import secret_refs
from reconciler.desired.secrets import resolve_secrets, weakness
from reconciler.gitops.verify import Finding, judge, placeholder_secrets
from tests.unit.desired_support import fake_settings
from tests.unit.test_sourcemap import DESIRED

CLI = Path(__file__).resolve().parents[1] / "fixtures" / "cli"


def write_desired(tmp_path: Path, **changes: str) -> LoadedState:
    desired = tmp_path / "desired"
    desired.mkdir(exist_ok=True)
    for name, text in {**DESIRED, **changes}.items():
        (desired / name).write_text(text)
    return load_desired(desired)


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedState:
    monkeypatch.chdir(tmp_path)
    return write_desired(tmp_path)


def boot(name: str) -> list[str]:
    return (CLI / name).read_text().splitlines()


def pjsip(name: str) -> dict[str, str]:
    return {"pjsip.conf": (CLI / "config" / name).read_text()}


def test_an_unknown_option_in_a_template_fails_verify_located_at_the_desired_item_and_rendered_line(
    loaded: LoadedState,
) -> None:
    problems, notes = judge(
        boot("boot_endpoint_unknown_option.messages.log"),
        loaded,
        pjsip("health_bogus_endpoint_pjsip.conf"),
        [],
    )
    assert notes == []
    assert len(problems) == 6
    first = problems[0]
    assert first.text.startswith(
        "desired/extensions.yaml:2: extensions[0] (extension 4001): pjsip.conf:23: ERROR"
    )
    assert "not_an_option" in first.text
    assert first.annotation() == ("desired/extensions.yaml", 2)


def test_a_provider_host_that_does_not_resolve_in_the_sandbox_is_a_note(tmp_path: Path) -> None:
    invalid = DESIRED["providers.yaml"].replace("127.0.0.1", "does-not-exist.invalid").replace("5070", "5061")
    loaded = write_desired(tmp_path, **{"providers.yaml": invalid})
    problems, notes = judge(
        boot("boot_identify_unresolvable.messages.log"), loaded, pjsip("health_invalid_pjsip.conf"), []
    )
    assert problems == []
    (note,) = notes
    assert "provider hosts do not resolve" in note.text and "providers[0].host" in note.text


def test_a_bind_address_the_sandbox_lacks_is_a_note_with_the_registrations_that_use_its_transport(
    tmp_path: Path,
) -> None:
    loaded = write_desired(tmp_path, **{"pbx.yaml": DESIRED["pbx.yaml"].replace("127.0.0.1", "192.0.2.10")})
    files = {
        "pjsip.conf": (CLI / "config" / "health_ip_pjsip.conf")
        .read_text()
        .replace("127.0.0.1:5060", "192.0.2.10:5060")
    }
    problems, notes = judge(boot("boot_bind_missing_address.messages.log"), loaded, files, [])
    assert problems == []
    assert len(notes) == 3
    assert all("pbx.bind address" in n.text for n in notes)
    assert any("pbx.bind (transport transport-udp)" in n.text for n in notes)


def test_a_bind_failure_on_a_loopback_address_is_a_real_problem(loaded: LoadedState) -> None:
    # the same log lines, but the transport binds 127.0.0.1: the sandbox has it, so this is no sandbox effect
    problems, _ = judge(
        boot("boot_bind_missing_address.messages.log"), loaded, pjsip("health_ip_pjsip.conf"), []
    )
    assert len(problems) == 3


def test_a_secret_value_in_a_logged_line_is_masked(loaded: LoadedState) -> None:
    lines = boot("boot_endpoint_unknown_option.messages.log")
    problems, _ = judge(lines, loaded, pjsip("health_bogus_endpoint_pjsip.conf"), ["not_an_option"])
    assert all("not_an_option" not in p.text for p in problems)


def test_placeholder_secrets_fill_only_what_no_source_sets_and_pass_the_strength_rules(
    loaded: LoadedState, tmp_path: Path
) -> None:
    settings = fake_settings(tmp_path, environ={"EXT_4001_PASSWORD": "Given-Phone-Pass-1x"})
    filled, names = placeholder_secrets(loaded, settings)
    assert names == ("EXT_4002_PASSWORD", "PROVIDER_PASSWORD")
    values = resolve_secrets(loaded, filled)
    assert values["EXT_4001_PASSWORD"] == "Given-Phone-Pass-1x"
    for use in secret_refs(loaded.state):
        assert weakness(use, values[use.name]) is None


def test_github_annotations_carry_file_and_line_and_escape_newlines() -> None:
    class Where:
        source = ("desired/extensions.yaml", 21)

    line = _github_line("error", Finding("a\nb % c", None, Where()))  # type: ignore[arg-type]
    assert line == "::error file=desired/extensions.yaml,line=21,title=reconciler verify::a%0Ab %25 c"
    assert _github_line("notice", Finding("x")) == "::notice title=reconciler verify::x"
