"""Secret references resolve from environment, env file and secrets dir; weak values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired.load import load_desired
from reconciler.desired.secrets import read_env_file, resolve_secrets
from reconciler.errors import ValidationFailed
from reconciler.settings import Settings
from tests.unit.desired_support import FAKE_SECRETS, fake_settings


def refused(sample: Path, settings: Settings) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        resolve_secrets(load_desired(sample), settings)
    return [str(p) for p in info.value.problems]


def test_every_reference_resolves_from_the_environment(sample: Path, tmp_path: Path) -> None:
    values = resolve_secrets(load_desired(sample), fake_settings(tmp_path))
    assert values == FAKE_SECRETS


def test_every_missing_secret_is_named_with_the_line_of_its_reference(sample: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in FAKE_SECRETS.items() if k not in {"EXT_4001_PASSWORD", "PBX_PROVIDER_PASSWORD"}}
    found = refused(sample, fake_settings(tmp_path, env))
    assert [p.split(": secret ")[0] for p in found] == [
        "desired/extensions.yaml:9: extensions[1].password",
        "desired/providers.yaml:8: providers[0].password",
    ]
    assert "secret EXT_4001_PASSWORD is not set" in found[0]


def test_the_seed_password_ext4001pass_is_refused_as_a_value(sample: Path, tmp_path: Path) -> None:
    env = {**FAKE_SECRETS, "EXT_4001_PASSWORD": "ext4001pass"}
    found = refused(sample, fake_settings(tmp_path, env))
    assert found == [
        "desired/extensions.yaml:9: extensions[1].password: secret EXT_4001_PASSWORD is refused: "
        "too short: at least 12 characters are needed"
    ]
    assert "ext4001pass" not in " ".join(found)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("abcdefghijklmnop", "uses only one character class"),
        ("Xy-4001-long-enough", "must not contain the extension number 4001"),
        ("short1A", "too short"),
        (" Leading-space-99", "leading/trailing spaces"),
    ],
)
def test_weak_extension_passwords_are_refused_without_showing_them(
    sample: Path, tmp_path: Path, value: str, why: str
) -> None:
    env = {**FAKE_SECRETS, "EXT_4001_PASSWORD": value}
    [problem] = refused(sample, fake_settings(tmp_path, env))
    assert problem.startswith("desired/extensions.yaml:9: extensions[1].password: secret EXT_4001_PASSWORD")
    assert why in problem
    assert value.strip() not in problem


def test_the_env_file_is_used_when_the_environment_lacks_a_name(sample: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text(
        "# comment\n\nexport EXT_4001_PASSWORD='From-Env-File-1x'\n"
        'PBX_PROVIDER_PASSWORD="Quoted-Value-22"\n'
    )
    env = {k: v for k, v in FAKE_SECRETS.items() if k not in {"EXT_4001_PASSWORD", "PBX_PROVIDER_PASSWORD"}}
    settings = Settings(env_file=env_file, secrets_dir=tmp_path / "none", environ=env)
    values = resolve_secrets(load_desired(sample), settings)
    assert values["EXT_4001_PASSWORD"] == "From-Env-File-1x"
    assert values["PBX_PROVIDER_PASSWORD"] == "Quoted-Value-22"


def test_the_environment_wins_over_the_env_file_and_the_env_file_over_secret_files(
    sample: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text("EXT_4001_PASSWORD=From-Env-File-1x\nEXT_4002_PASSWORD=From-Env-File-2x\n")
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "EXT_4002_PASSWORD").write_text("From-Secret-File-2x\n")
    (secrets_dir / "EXT_4003_PASSWORD").write_text("From-Secret-File-3x\n")
    env = {k: v for k, v in FAKE_SECRETS.items() if k not in {"EXT_4002_PASSWORD", "EXT_4003_PASSWORD"}}
    settings = Settings(env_file=env_file, secrets_dir=secrets_dir, environ=env)
    values = resolve_secrets(load_desired(sample), settings)
    assert values["EXT_4001_PASSWORD"] == FAKE_SECRETS["EXT_4001_PASSWORD"]
    assert values["EXT_4002_PASSWORD"] == "From-Env-File-2x"
    assert values["EXT_4003_PASSWORD"] == "From-Secret-File-3x"


def test_a_configured_voicemail_pin_must_be_six_digits_and_not_a_run(sample: Path, tmp_path: Path) -> None:
    text = (sample / "extensions.yaml").read_text()
    (sample / "extensions.yaml").write_text(
        text.replace("voicemail: true", "voicemail: {pin: '${VM_4000_PIN}', email: r@example.com}", 1)
    )
    for pin, why in [("12345", "at least 6 digits"), ("123456", "sequential"), ("12a456", "digits only")]:
        [problem] = refused(sample, fake_settings(tmp_path, {**FAKE_SECRETS, "VM_4000_PIN": pin}))
        assert problem.startswith(
            "desired/extensions.yaml:6: extensions[0].voicemail.pin: secret VM_4000_PIN"
        )
        assert why in problem
    values = resolve_secrets(
        load_desired(sample), fake_settings(tmp_path, {**FAKE_SECRETS, "VM_4000_PIN": "730291"})
    )
    assert values["VM_4000_PIN"] == "730291"


def test_an_empty_value_copied_from_env_example_counts_as_not_set(sample: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "copied.env"
    env_file.write_text("EXT_4001_PASSWORD=\n")
    env = {k: v for k, v in FAKE_SECRETS.items() if k != "EXT_4001_PASSWORD"}
    settings = Settings(env_file=env_file, secrets_dir=tmp_path / "none", environ=env)
    [problem] = refused(sample, settings)
    assert "secret EXT_4001_PASSWORD is not set" in problem


def test_read_env_file_ignores_comments_and_lines_without_equals(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("# A=1\nB = 2 \nnot a pair\nC=a=b\n")
    assert read_env_file(path) == {"B": "2", "C": "a=b"}
    assert read_env_file(tmp_path / "missing.env") == {}
