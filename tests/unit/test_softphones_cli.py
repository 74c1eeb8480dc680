"""`reconciler softphones` prints account settings and shows passwords only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.cli import app

SECRET = "Phone-Secret-4001x"


@pytest.fixture
def desired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "desired"
    d.mkdir()
    (d / "pbx.yaml").write_text("pbx:\n  bind: 0.0.0.0\n  port: 5070\n")
    (d / "extensions.yaml").write_text(
        'extensions:\n  - number: "4001"\n    name: Sales\n    password: ${EXT_4001_PASSWORD}\n'
    )
    monkeypatch.setenv("EXT_4001_PASSWORD", SECRET)
    monkeypatch.setenv("RECONCILER_ENV_FILE", str(tmp_path / "no.env"))
    return d


def test_passwords_are_masked_by_default_and_the_secret_is_named(desired: Path) -> None:
    result = CliRunner().invoke(app, ["softphones", "--dir", str(desired), "--server", "pbx.lan"])
    assert result.exit_code == 0, result.output
    assert "pbx.lan" in result.output and "5070" in result.output
    assert SECRET not in result.output
    assert "EXT_4001_PASSWORD" in result.output


def test_show_passwords_prints_them_with_a_warning(desired: Path) -> None:
    result = CliRunner().invoke(
        app, ["softphones", "--dir", str(desired), "--server", "pbx.lan", "--show-passwords", "--qr"]
    )
    assert result.exit_code == 0, result.output
    assert SECRET in result.output
    assert "do not paste this output" in result.output
    assert f"sip:4001:{SECRET}@pbx.lan:5070;transport=udp" in result.output


def test_unspecified_bind_without_server_warns_that_phones_cannot_dial_it(desired: Path) -> None:
    result = CliRunner().invoke(app, ["softphones", "--dir", str(desired)])
    assert result.exit_code == 0
    assert "pass --server" in result.output
    assert "<PBX address>" in result.output


def test_qr_dir_writes_one_svg_per_extension(desired: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["softphones", "--dir", str(desired), "--server", "pbx.lan", "--qr-dir", str(tmp_path / "qr")]
    )
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "qr" / "4001.svg").read_text()
    assert "<svg" in svg
