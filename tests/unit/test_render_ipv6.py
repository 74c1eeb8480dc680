"""IPv6 addresses are bracketed wherever a port follows them (checked against Asterisk 22: it binds
`[::1]:5060` and matches `[::1]:5070/128`; a bare `::1:5060` is one address without a port)."""

from __future__ import annotations

from pathlib import Path

from reconciler.desired.load import load_desired
from reconciler.desired.model import host_port
from reconciler.desired.render import render
from tests.unit.desired_support import TEMPLATES_DIR

SECRETS = {"TRUNK_PASSWORD": "Fake-Trunk-Pass-9z", "EXT_4001_PASSWORD": "Fake-Phone-Pass-1x"}


def test_host_port_brackets_an_ipv6_address_and_leaves_names_and_ipv4_alone() -> None:
    assert host_port("::1", 5060) == "[::1]:5060"
    assert host_port("2001:db8::7", 5061) == "[2001:db8::7]:5061"
    assert host_port("127.0.0.1", 5070) == "127.0.0.1:5070"
    assert host_port("sip.example.net", 5060) == "sip.example.net:5060"


def test_an_ipv6_pbx_and_provider_render_bracketed_binds_uris_and_matches(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(
        'pbx: {bind: "::1", port: 5160, media_address: "::1"}\n'
        "providers:\n"
        '  - {name: v6trunk, host: "2001:db8::7", port: 5170, username: trunkuser,\n'
        '     password: "${TRUNK_PASSWORD}", register: true}\n'
        'extensions:\n  - {number: "4001", name: Sales, password: "${EXT_4001_PASSWORD}"}\n'
    )
    pjsip = render(load_desired(tmp_path).state, SECRETS, "v6test", TEMPLATES_DIR)["pjsip.conf"]
    lines = pjsip.split("\n")
    assert "bind = [::1]:5160" in lines
    assert "contact = sip:[2001:db8::7]:5170" in lines
    assert "server_uri = sip:[2001:db8::7]:5170" in lines
    assert "client_uri = sip:trunkuser@[2001:db8::7]:5170" in lines
    assert "match = [2001:db8::7]:5170" in lines
    assert not [line for line in lines if "::1:5160" in line and "[::1]" not in line]
