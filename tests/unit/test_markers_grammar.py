"""One revision grammar: every revision id that render accepts is found again by every marker parser
(the declared markers in the rendered files, Asterisk's answers, the sed step run in the container)."""

from __future__ import annotations

import ast
import re
import subprocess

import pytest

from reconciler import markers
from reconciler.desired.load import load_desired
from reconciler.desired.render import RenderFailed, render
from reconciler.settings import REPO_ROOT
from tests.unit.desired_support import FAKE_SECRETS, SAMPLE_DIR


def sample_state_and_secrets() -> tuple[object, dict[str, str]]:
    return load_desired(SAMPLE_DIR).state, FAKE_SECRETS


ACCEPTED = [
    "release_7",
    "v1.2-rc",
    "v1.2+build.5",
    "3f9c2a7d81b0e6c4d2a1f0e9d8c7b6a5f4e3d2c1",
    "sha256:17699fbd6da8eb6b9bb7c2d4e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2",
    "7",
    "a" * 100,
]
REFUSED = ["abc\n", "", "-x", "a b", "a;b", "x)y", "a,b", "a" * 101, "sha256:", "ünïcode", "a\u2028b"]


@pytest.mark.parametrize("revision", ACCEPTED)
def test_every_revision_render_accepts_is_found_by_every_marker_parser(revision: str) -> None:
    state, secrets = sample_state_and_secrets()
    files = render(state, secrets, revision, REPO_ROOT / "templates")
    short = markers.rev12(revision)

    assert markers.declared_pjsip_rev12(files["pjsip.conf"]) == short
    assert markers.declared_dialplan_rev12(files["extensions.conf"]) == short
    aor_answer = f"\n      Aor:  {markers.pjsip_marker(short)}                     0\n"
    assert markers.aor_found(aor_answer, short)
    dialplan_answer = (
        f"[ Context '{markers.DIALPLAN_CONTEXT}' created by 'pbx_config' ]\n"
        f"  'revision' =>        1. NoOp({short})                     [extensions.conf:70]\n"
    )
    assert markers.dialplan_revision(dialplan_answer) == short


@pytest.mark.parametrize("revision", ACCEPTED)
def test_the_sed_step_run_in_the_container_reads_the_same_marker(revision: str) -> None:
    state, secrets = sample_state_and_secrets()
    pjsip = render(state, secrets, revision, REPO_ROOT / "templates")["pjsip.conf"]
    out = subprocess.run(
        ["sed", "-n", f"s/{markers.PJSIP_MARKER_SED}/\\1/p"], input=pjsip, text=True, capture_output=True
    ).stdout
    assert out.strip() == markers.rev12(revision)


@pytest.mark.parametrize("revision", REFUSED)
def test_a_revision_outside_the_grammar_is_refused_before_anything_is_rendered(revision: str) -> None:
    state, secrets = sample_state_and_secrets()
    with pytest.raises(RenderFailed) as caught:
        render(state, secrets, revision, REPO_ROOT / "templates")
    assert "\n" not in caught.value.message


def test_no_module_but_markers_spells_a_marker_name_in_code() -> None:
    """The grammar is written once: outside markers.py no string literal in code (docstrings and
    comments aside) names a marker, so no module can keep a stricter copy of the pattern."""
    offenders = []
    for path in (REPO_ROOT / "reconciler").rglob("*.py"):
        if path.name == "markers.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and re.search(r"gitops-rev|gitops-meta|revision@", node.value)
            ):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert offenders == []
