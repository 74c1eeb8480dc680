"""Shared constants and helpers of the desired-state tests (imported by conftest and tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.desired.load import load_desired
from reconciler.errors import ValidationFailed
from reconciler.settings import REPO_ROOT, Settings

SAMPLE_DIR = REPO_ROOT / "desired"
# The seed's real provider (TLS, registration), shipped as the example to switch to.
REAL_PROVIDER_EXAMPLE = REPO_ROOT / "examples" / "providers" / "pbxonthecloud.yaml"
TEMPLATES_DIR = REPO_ROOT / "templates"

# Strong fake values: never real secrets, fixed so that golden files are stable.
FAKE_SECRETS: dict[str, str] = {
    **{f"EXT_400{i}_PASSWORD": f"Fake-Phone-Pass-{i}x" for i in range(6)},
    "PBX_PROVIDER_USER": "fakeuser",
    "PBX_PROVIDER_PASSWORD": "Fake-Trunk-Pass-9z",
}


def fake_settings(tmp_path: Path, environ: dict[str, str] | None = None) -> Settings:
    """Settings whose every secret source is under `tmp_path` (nothing from the real machine)."""
    return Settings(
        templates_dir=TEMPLATES_DIR,
        env_file=tmp_path / "no.env",
        secrets_dir=tmp_path / "no-secrets",
        environ=dict(FAKE_SECRETS if environ is None else environ),
    )


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def edit(sample: Path, name: str, old: str, new: str) -> None:
    """Replace the first `old` in `sample/name` with `new` (and fail if `old` is not there)."""
    path = sample / name
    text = path.read_text()
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1))


def use_real_provider(sample: Path) -> None:
    """Switch a sample copy from the sandbox carrier to the real provider, as the README says."""
    (sample / "providers.yaml").write_text(REAL_PROVIDER_EXAMPLE.read_text())


OFFICE_LINE = (
    "  - provider: pbx_provider\n"
    '    did: "+34910000001"\n'
    "    to: {schedule: office, open: menu:main, closed: voicemail:4000}\n"
)


def phones_only(sample: Path) -> Path:
    """Take the office features out of a sample copy: office.yaml (ring group, queue, menu, schedule)
    and the office line's inbound route that uses them. For tests about the phones themselves that
    remove or renumber an extension the office features name (a member, a voicemail target): the
    dangling reference would be a real second problem, but not the one the test is about."""
    (sample / "office.yaml").unlink()
    edit(sample, "routes.yaml", OFFICE_LINE, "")
    return sample


def problems(sample: Path) -> list[str]:
    """The problem lines `load_desired(sample)` raises (fails if it loads)."""
    with pytest.raises(ValidationFailed) as info:
        load_desired(sample)
    return [str(p) for p in info.value.problems]
