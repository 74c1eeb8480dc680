"""Merging a site (docs/fleet.md): bases in order, then the site, then fleet.yaml's ports; every
problem at the file and line that holds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired.fleet import load_site
from tests.unit.fleet_support import problems_of, small_fleet

EXTENSIONS = """\
extensions:
  - number: "4000"
    name: Reception
    password: ${EXT_4000_PASSWORD}
  - number: "4001"
    name: Sales
    password: ${EXT_4001_PASSWORD}
"""
ROUTES = "outbound:\n  - name: external\n    prefix: '9'\n    provider: trunk\n"
RECEPTION_ONLY = EXTENSIONS.split('  - number: "4001"')[0]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # problems name files relative to the fleet's parent


def test_bases_merge_in_order_then_the_site_adds_its_own_entries(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {
            "bases/common/extensions.yaml": EXTENSIONS,
            "bases/extra/routes.yaml": ROUTES,
            "sites/hq/extensions.yaml": 'extensions:\n  - number: "4100"\n    name: Lab\n'
            "    password: ${EXT_4100_PASSWORD}\n",
        },
    )
    text = (fleet / "fleet.yaml").read_text().replace("bases: [common]", "bases: [common, extra]", 1)
    (fleet / "fleet.yaml").write_text(text)
    loaded = load_site(fleet, "hq")
    assert [e.number for e in loaded.state.extensions] == ["4000", "4001", "4100"]
    assert [r.name for r in loaded.state.outbound] == ["external"]
    assert loaded.locate(("extensions", 2, "name")) == ("f/sites/hq/extensions.yaml", 3)
    assert loaded.locate(("extensions", 1, "name")) == ("f/bases/common/extensions.yaml", 6)
    assert [e.number for e in load_site(fleet, "branch").state.extensions] == ["4000", "4001"]


def test_a_site_entry_with_the_same_identity_replaces_the_whole_base_entry(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {
            "bases/common/extensions.yaml": EXTENSIONS.replace(
                "    name: Sales\n", "    name: Sales\n    voicemail: true\n"
            ),
            "sites/hq/extensions.yaml": 'extensions:\n  - number: "4001"\n    name: Front desk\n'
            "    password: ${EXT_4001_PASSWORD}\n",
        },
    )
    loaded = load_site(fleet, "hq")
    replaced = loaded.state.extensions[1]
    assert (replaced.number, replaced.name, replaced.has_voicemail) == ("4001", "Front desk", False)
    assert loaded.locate(("extensions", 1, "password")) == ("f/sites/hq/extensions.yaml", 4)


def test_remove_true_in_a_site_drops_the_base_entry(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {
            "bases/common/extensions.yaml": EXTENSIONS,
            "sites/hq/extensions.yaml": 'extensions:\n  - {number: "4000", remove: true}\n',
        },
    )
    assert [e.number for e in load_site(fleet, "hq").state.extensions] == ["4001"]
    assert [e.number for e in load_site(fleet, "branch").state.extensions] == ["4000", "4001"]


def test_removing_what_no_base_defines_is_an_error_at_the_site_files_line(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {
            "bases/common/extensions.yaml": EXTENSIONS,
            "sites/hq/extensions.yaml": '# hq\nextensions:\n  - number: "4000"\n    remove: true\n'
            '  - {number: "4999", remove: true}\n',
        },
    )
    assert problems_of(load_site, fleet, "hq") == [
        "f/sites/hq/extensions.yaml:5: extensions[1]: removes extension '4999', which no "
        "base of site hq defines"
    ]


def test_remove_with_other_fields_or_in_a_base_is_refused_with_its_line(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {
            "bases/common/extensions.yaml": EXTENSIONS + '  - {number: "4002", remove: true}\n',
            "sites/hq/extensions.yaml": 'extensions:\n  - number: "4000"\n    remove: true\n    name: X\n',
        },
    )
    assert problems_of(load_site, fleet, "hq") == [
        "f/bases/common/extensions.yaml:8: extensions[2].remove: remove is only for a "
        "site's own files, not a base",
        "f/sites/hq/extensions.yaml:4: extensions[0].name: remove: true takes only the number: drop 'name'",
    ]


def test_the_same_identity_in_two_bases_is_an_error_naming_both_files_and_lines(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {"bases/common/extensions.yaml": EXTENSIONS, "bases/other/extensions.yaml": RECEPTION_ONLY},
    )
    text = (fleet / "fleet.yaml").read_text().replace("bases: [common]", "bases: [common, other]")
    (fleet / "fleet.yaml").write_text(text)
    assert problems_of(load_site, fleet, "hq") == [
        "f/bases/other/extensions.yaml:2: extensions[0].number: extension '4000' is also defined in "
        "f/bases/common/extensions.yaml:2: ambiguous for site hq; define it in one base, "
        "or override it in the site"
    ]
    # ... and the site settles it by overriding the entry
    (fleet / "sites/hq/extensions.yaml").write_text(RECEPTION_ONLY)
    (fleet / "sites/branch/extensions.yaml").write_text('extensions:\n  - {number: "4000", remove: true}\n')
    assert [e.number for e in load_site(fleet, "hq").state.extensions] == ["4000", "4001"]
    assert [e.number for e in load_site(fleet, "branch").state.extensions] == ["4001"]


def test_the_same_identity_twice_in_one_layer_is_an_error_pointing_at_the_second(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {
            "sites/hq/routes.yaml": "inbound:\n  - {provider: trunk, did: '+100', to: '4000'}\n"
            "  - {provider: trunk, did: '+200', to: '4000'}\n  - {provider: trunk, did: '+100', to: '4000'}\n"
        },
    )
    found = problems_of(load_site, fleet, "hq")
    assert (
        "f/sites/hq/routes.yaml:4: inbound[2].provider: inbound route 'trunk' '+100' is twice in one layer "
        "(first at f/sites/hq/routes.yaml:2)"
    ) in found


def test_pbx_merges_key_by_key_and_fleet_yaml_sets_the_sip_ports(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {
            "bases/common/pbx.yaml": "pbx:\n  bind: 127.0.0.1\n  codecs: [alaw]\n",
            "sites/hq/pbx.yaml": "pbx:\n  codecs: [g722, ulaw]\n",
        },
    )
    loaded = load_site(fleet, "hq")
    assert (loaded.state.pbx.port, loaded.state.pbx.tls_port) == (41000, 41001)
    assert loaded.state.pbx.codecs == ["g722", "ulaw"]
    assert loaded.state.pbx.bind == "127.0.0.1"
    assert loaded.locate(("pbx", "port")) == ("f/fleet.yaml", 5)
    assert loaded.locate(("pbx", "codecs", 1)) == ("f/sites/hq/pbx.yaml", 2)


def test_a_pbx_port_in_a_desired_file_that_disagrees_with_fleet_yaml_is_an_error(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {"bases/common/pbx.yaml": "pbx:\n  bind: 127.0.0.1\n  port: 41000\n  tls_port: 5061\n"},
    )
    assert problems_of(load_site, fleet, "hq") == [
        "f/bases/common/pbx.yaml:4: pbx.tls_port: is 5061 here, but f/fleet.yaml:6 sets tls_port 41001 for "
        "site hq: leave pbx.tls_port to fleet.yaml"
    ]


def test_cross_checks_point_at_the_base_or_site_file_that_holds_the_entry(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        {
            "bases/common/routes.yaml": ROUTES,
            "sites/hq/providers.yaml": "providers:\n  - {name: trunk, remove: true}\n",
            "sites/hq/extensions.yaml": EXTENSIONS.replace('"4001"', "4001x"),
        },
    )
    found = problems_of(load_site, fleet, "hq")
    assert "f/bases/common/routes.yaml:4: outbound[0].provider: " in "\n".join(found)
    assert any(p.startswith("f/sites/hq/extensions.yaml:5: extensions[1].number:") for p in found), found
    assert len(found) == 2, found


def test_a_symlinked_desired_file_in_a_site_that_leaves_its_folder_is_refused(tmp_path: Path) -> None:
    fleet = small_fleet(tmp_path / "f", {"bases/common/extensions.yaml": EXTENSIONS})
    (fleet / "sites/hq/extensions.yaml").symlink_to(fleet / "bases/common/extensions.yaml")
    found = problems_of(load_site, fleet, "hq")
    assert found == [
        "f/sites/hq/extensions.yaml:1: -: is a symbolic link that leaves the desired "
        "directory (its target is not read)"
    ]
