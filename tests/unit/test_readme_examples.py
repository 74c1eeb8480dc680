"""Every YAML example in the README parses, and every desired-state example validates in context.

A fenced ```yaml block or an inline `key: value` / `{...}` span is a YAML example. A block whose
top-level keys are desired-state keys is validated by the real loader, merged into a copy of the
sample (an item replaces the sample's item of the same name or number, else it is added), so a
snippet that would not work in the user's desired/ fails here. The shipped provider examples are
validated the way the README tells users to switch to them: in place of desired/providers.yaml.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.desired.load import load_desired
from reconciler.desired.model import TOP_LEVEL_KEYS
from reconciler.settings import REPO_ROOT
from tests.unit.desired_support import SAMPLE_DIR

README = REPO_ROOT / "README.md"
PROVIDER_EXAMPLES = sorted((REPO_ROOT / "examples" / "providers").glob("*.yaml"))
_FENCE = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_LOOKS_YAML = re.compile(r"^(?:\{|[a-z_]+: )")
_IDENTITY = {"providers": "name", "extensions": "number", "outbound": "name", "inbound": "did"}


def _without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def yaml_blocks(text: str) -> list[str]:
    return _FENCE.findall(text)


def inline_yaml(text: str) -> list[str]:
    return [span for span in _INLINE.findall(_without_fences(text)) if _LOOKS_YAML.match(span)]


def _line(text: str, snippet: str) -> int:
    return text[: text.index(snippet)].count("\n") + 1


def _merged(sample: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    merged = dict(sample)
    for key, value in example.items():
        if key not in _IDENTITY or not isinstance(value, list):
            merged[key] = value
            continue
        items = list(sample.get(key) or [])
        ident = _IDENTITY[key]
        for item in value:
            at = next((i for i, old in enumerate(items) if old.get(ident) == item.get(ident)), None)
            if at is None:
                items.append(item)
            else:
                items[at] = item
        merged[key] = items
    return merged


def _sample_document() -> dict[str, Any]:
    document: dict[str, Any] = {}
    for path in sorted(SAMPLE_DIR.glob("*.yaml")):
        document.update(yaml.safe_load(path.read_text()) or {})
    return document


TEXT = README.read_text()
BLOCKS = yaml_blocks(TEXT)
DESIRED_BLOCKS = [
    b for b in BLOCKS if isinstance(doc := yaml.safe_load(b), dict) and set(doc) <= set(TOP_LEVEL_KEYS)
]


def test_the_readme_has_yaml_examples_to_check() -> None:
    assert len(BLOCKS) >= 2 and DESIRED_BLOCKS and inline_yaml(TEXT)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"README.md:{_line(TEXT, b)}")
def test_every_yaml_block_in_the_readme_parses(block: str) -> None:
    yaml.safe_load(block)


@pytest.mark.parametrize("span", inline_yaml(TEXT))
def test_every_inline_yaml_example_in_the_readme_parses(span: str) -> None:
    yaml.safe_load(span)


def test_the_unquoted_reference_in_a_flow_mapping_is_what_the_check_catches() -> None:
    # the README's old PIN example: `{` of `${...}` opens a mapping inside the mapping
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load("voicemail: {pin: ${VM_4001_PIN}}")
    assert yaml.safe_load('voicemail: {pin: "${VM_4001_PIN}"}') == {"voicemail": {"pin": "${VM_4001_PIN}"}}


@pytest.mark.parametrize("block", DESIRED_BLOCKS, ids=lambda b: f"README.md:{_line(TEXT, b)}")
def test_every_desired_state_example_in_the_readme_validates_in_the_sample(
    block: str, tmp_path: Path
) -> None:
    document = _merged(_sample_document(), yaml.safe_load(block))
    target = tmp_path / "desired"
    target.mkdir()
    for key, value in document.items():
        (target / f"{key}.yaml").write_text(yaml.safe_dump({key: value}, sort_keys=False))
    load_desired(target)


@pytest.mark.parametrize("example", PROVIDER_EXAMPLES, ids=lambda p: p.name)
def test_a_shipped_provider_example_validates_in_place_of_the_samples_providers(
    example: Path, tmp_path: Path
) -> None:
    target = shutil.copytree(SAMPLE_DIR, tmp_path / "desired")
    shutil.copy(example, target / "providers.yaml")
    state = load_desired(target).state
    assert [p.name for p in state.providers] == ["pbx_provider"]  # the routes keep working
