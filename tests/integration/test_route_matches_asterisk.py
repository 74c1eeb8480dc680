"""`reconciler route` picks the dialplan entry Asterisk itself picks: for each number, the first
entry `dialplan show NUMBER@internal` lists (Asterisk lists the matches in the order it tries
them) is the one route explains, on a dialplan with competing patterns, ring group and queue numbers
and feature codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.desired.load import load_desired
from reconciler.desired.model import DesiredState, secret_refs
from reconciler.desired.render import render
from reconciler.desired.route import explain
from reconciler.settings import REPO_ROOT, packaged_templates_dir
from tests.harness.containers import AsteriskContainer

pytestmark = pytest.mark.integration

NUMBERS = ["9123", "9300", "95550100", "911", "112", "4002", "4999", "91", "9", "*97", "12"]
# Ring group and queue numbers, feature codes (exact and `_<code>X.`), and ones no code takes.
NUMBERS += ["600", "700", "*8", "**4001", "*724002", "*73", "*78", "*79", "*904000", "*525", "*7"]
_ENTRY = re.compile(r"^\s*'([^']+)' =>", re.M)


def competing_state() -> DesiredState:
    data = load_desired(REPO_ROOT / "desired").state.model_dump(mode="json")
    data["outbound"].append({"name": "national", "prefix": "91", "strip": 2, "provider": "pbx_provider"})
    data["extensions"].append({"number": "9300", "name": "Nine hundreds", "password": "${EXT_9300_PASSWORD}"})
    return DesiredState.model_validate(data)


def test_route_chooses_the_entry_asterisk_chooses_for_every_number(tmp_path: Path) -> None:
    state = competing_state()
    values = {use.ref.name: "Route-Check-7x" + use.ref.name[-4:] for use in secret_refs(state)}
    files = render(state, values, "0" * 40, packaged_templates_dir())
    with AsteriskContainer("route").with_managed_file("extensions.conf", files["extensions.conf"]) as pbx:
        for number in NUMBERS:
            shown = pbx.cli(f"dialplan show {number}@internal")
            entries = _ENTRY.findall(shown)
            asterisk = entries[0] if entries else None
            assert explain(state, number, "4001").entry == asterisk, f"{number}: Asterisk tries {entries}"
