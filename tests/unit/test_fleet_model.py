"""fleet.yaml: its grammar, the sites it yields, port collisions and hostile paths, each refused
with `fleet.yaml:LINE: field: message`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.desired.fleet import is_fleet_dir, load_fleet, load_tree, site_settings
from reconciler.errors import ReconcilerError
from reconciler.settings import REPO_ROOT, Settings
from tests.unit.fleet_support import EXAMPLE_FLEET, TWO_SITES, problems_of, small_fleet


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def fleet_with(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    assert old in TWO_SITES, old
    return small_fleet(tmp_path / "f", fleet_yaml=TWO_SITES.replace(old, new, count))


def test_the_example_fleet_loads_with_its_sites_ports_and_rollout() -> None:
    fleet = load_fleet(EXAMPLE_FLEET)
    assert fleet.name == "example"
    assert fleet.rollout == ("hq", "branch")
    hq = fleet.site("hq")
    assert (hq.sip_port, hq.tls_port, hq.ami_port, hq.http, hq.http_port) == (
        5160,
        5161,
        5138,
        "127.0.0.1:8181",
        8181,
    )
    assert (hq.rtp_start, hq.rtp_end, hq.status_url) == (12000, 12099, "http://127.0.0.1:8181")
    assert hq.carrier is not None and (hq.carrier.port, hq.carrier.rtp_start) == (5170, 12100)
    assert hq.dir == EXAMPLE_FLEET / "sites" / "hq" and hq.dir.is_absolute()
    assert hq.env_file == EXAMPLE_FLEET / ".secrets" / "hq.env"
    assert hq.line == 8
    assert fleet.predecessor("hq") is None
    assert fleet.predecessor("branch") == hq
    assert is_fleet_dir(EXAMPLE_FLEET) and not is_fleet_dir(REPO_ROOT / "desired")


def test_rollout_names_sites_once_and_sites_not_listed_follow_in_file_order(tmp_path: Path) -> None:
    fleet = load_fleet(fleet_with(tmp_path, "sites:\n", "rollout: [branch]\nsites:\n"))
    assert fleet.rollout == ("branch", "hq")
    assert fleet.predecessor("hq") is not None and fleet.predecessor("hq").name == "branch"  # type: ignore[union-attr]
    bad = fleet_with(tmp_path, "sites:\n", "rollout: [branch, nosuch, branch]\nsites:\n")
    assert problems_of(load_fleet, bad) == [
        "f/fleet.yaml:2: rollout[1]: 'nosuch' is not a site (sites: hq, branch)",
        "f/fleet.yaml:2: rollout[2]: 'branch' is listed twice",
    ]


def test_an_unknown_site_is_one_error_naming_the_sites(tmp_path: Path) -> None:
    with pytest.raises(ReconcilerError) as info:
        load_fleet(EXAMPLE_FLEET).site("paris")
    assert "no site 'paris'" in str(info.value) and "hq, branch" in str(info.value)


def test_grammar_errors_of_fleet_yaml_carry_the_line_and_field(tmp_path: Path) -> None:
    fleet = small_fleet(
        tmp_path / "f",
        fleet_yaml=TWO_SITES.replace("    sip_port: 41100", "    sip_port: 70000")
        .replace("    ami_port: 41038", "    ami_prot: 41038")
        .replace("rtp: {start: 21100, end: 21199}", "rtp: {start: 21199, end: 21100}")
        .replace("name: hq", "name: HQ"),
    )
    assert problems_of(load_fleet, fleet) == [
        "f/fleet.yaml:3: sites[0].ami_port: required field is missing",
        "f/fleet.yaml:3: sites[0].name: 'HQ' must be lower case letters, digits and -, "
        "starting with a letter, at most 20",
        "f/fleet.yaml:8: sites[0].ami_prot: unknown key 'ami_prot' (did you mean 'ami_port'?)",
        "f/fleet.yaml:12: sites[1].sip_port: should be less than or equal to 65535",
        "f/fleet.yaml:14: sites[1].rtp: start 21199 is above end 21100",
    ]


def test_two_sites_on_one_node_may_not_share_a_port_or_overlap_rtp(tmp_path: Path) -> None:
    fleet = fleet_with(tmp_path, "    ami_port: 41138", "    ami_port: 41000")
    assert problems_of(load_fleet, fleet) == [
        "f/fleet.yaml:15: sites[1].ami_port: AMI port 41000 collides with site hq's SIP port 41000 "
        "(f/fleet.yaml:5) on the same node (node: null)"
    ]
    fleet = fleet_with(tmp_path, "rtp: {start: 21100, end: 21199}", "rtp: {start: 21050, end: 21199}")
    assert problems_of(load_fleet, fleet) == [
        "f/fleet.yaml:14: sites[1].rtp: RTP range 21050-21199 collides with site hq's RTP range 21000-21099 "
        "(f/fleet.yaml:7) on the same node (node: null)"
    ]
    fleet = fleet_with(tmp_path, "    sip_port: 41100", "    sip_port: 21010")
    assert "collides with site hq's RTP range 21000-21099" in problems_of(load_fleet, fleet)[0]


def test_sites_on_different_nodes_may_use_the_same_ports(tmp_path: Path) -> None:
    same_ports = TWO_SITES.split("  - name: branch")[0]
    text = same_ports.replace("name: hq", "name: a") + same_ports.split("sites:\n")[1].replace(
        "name: hq", "name: b"
    )
    text = text.replace("    bases: [common]\n", "    bases: [common]\n    node: n1\n", 1)
    fleet = small_fleet(tmp_path / "f", fleet_yaml=text)
    for name in ("a", "b"):
        (fleet / "sites" / name).mkdir()
    assert [s.node for s in load_fleet(fleet).sites] == ["n1", None]


def test_within_one_site_sip_tls_and_carrier_ports_must_differ(tmp_path: Path) -> None:
    fleet = fleet_with(
        tmp_path,
        "    http: 127.0.0.1:41080\n",
        "    http: 127.0.0.1:41080\n    carrier: {port: 41000, rtp: {start: 21050, end: 21060}}\n",
    )
    text = (fleet / "fleet.yaml").read_text().replace("tls_port: 41001", "tls_port: 41000", 1)
    (fleet / "fleet.yaml").write_text(text)
    assert problems_of(load_fleet, fleet) == [
        "f/fleet.yaml:6: sites[0].tls_port: TLS port 41000 collides with this site's SIP port 41000",
        "f/fleet.yaml:10: sites[0].carrier.port: carrier port 41000 collides with this site's SIP port 41000",
        "f/fleet.yaml:10: sites[0].carrier.rtp: carrier RTP range 21050-21060 collides with this site's RTP "
        "range 21000-21099",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    bases: [common]\n",
            "    bases: [common]\n    dir: ../outside\n",
            "sites[0].dir: '../outside' must be a relative path",
        ),
        (
            "    bases: [common]\n",
            "    bases: [common]\n    dir: /etc\n",
            "sites[0].dir: '/etc' must be a relative path",
        ),
        (
            "bases: [common]",
            "bases: ['..']",
            "sites[0].bases[0]: '..' must be the name of a folder under bases/",
        ),
        (
            "bases: [common]",
            "bases: [common/../../x]",
            "sites[0].bases[0]: 'common/../../x' must be the name",
        ),
        (
            "bases: [common]",
            "bases: [providers.yaml]",
            "sites[0].bases[0]: bases/providers.yaml is not a directory",
        ),
        ("bases: [common]", "bases: [nosuch]", "sites[0].bases[0]: bases/nosuch does not exist"),
    ],
)
def test_hostile_paths_in_fleet_yaml_are_refused_with_a_line(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    fleet = fleet_with(tmp_path, old, new)
    (fleet / "bases" / "providers.yaml").write_text("providers: []\n")
    found = problems_of(load_fleet, fleet)
    assert len(found) == 1 and found[0].startswith("f/fleet.yaml:") and expected in found[0], found


def test_a_site_dir_or_base_that_is_a_symlink_out_of_the_fleet_is_refused_unread(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "extensions.yaml").write_text("this: is not read\n")
    fleet = small_fleet(tmp_path / "f")
    os.rmdir(fleet / "sites" / "hq")
    (fleet / "sites" / "hq").symlink_to(outside)
    (fleet / "bases" / "evil").symlink_to(outside)
    text = (fleet / "fleet.yaml").read_text().replace("bases: [common]", "bases: [common, evil]", 1)
    (fleet / "fleet.yaml").write_text(text)
    assert problems_of(load_fleet, fleet) == [
        "f/fleet.yaml:3: sites[0].name: sites/hq is a symbolic link that leaves the "
        "fleet directory (its target "
        "is not read)",
        "f/fleet.yaml:4: sites[0].bases[1]: bases/evil is a symbolic link that leaves "
        "the fleet directory (its "
        "target is not read)",
    ]


def test_load_tree_needs_a_site_for_a_fleet_and_refuses_one_for_a_plain_directory() -> None:
    with pytest.raises(ReconcilerError) as info:
        load_tree(EXAMPLE_FLEET, None)
    assert "is a fleet (fleet.yaml)" in info.value.message and "hq, branch" in info.value.message
    assert "--site" in str(info.value.hint)
    with pytest.raises(ReconcilerError) as info:
        load_tree(REPO_ROOT / "desired", "hq")
    assert "has no fleet.yaml" in info.value.message
    assert load_tree(EXAMPLE_FLEET, "branch").state.pbx.port == 5260
    assert len(load_tree(REPO_ROOT / "desired", None).state.extensions) == 6


def test_site_settings_name_the_site_and_its_env_file() -> None:
    fleet = load_fleet(EXAMPLE_FLEET)
    settings = site_settings(Settings(), fleet, "branch")
    assert (settings.site, settings.env_file) == ("branch", EXAMPLE_FLEET / ".secrets" / "branch.env")
    assert Settings.from_env().site is None or os.environ.get("RECONCILER_SITE")
