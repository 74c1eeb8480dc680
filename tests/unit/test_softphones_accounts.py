"""softphones: account fields per extension, masked passwords, the QR payload."""

from __future__ import annotations

from pathlib import Path

from reconciler.desired.model import DesiredState
from reconciler.observe.softphones import accounts, qr_ascii, server_address, write_qr_svg


def _state(bind: str = "127.0.0.1", external: str | None = None) -> DesiredState:
    return DesiredState.model_validate(
        {
            "pbx": {"bind": bind, "port": 5070, "external_address": external},
            "extensions": [
                {"number": "4001", "name": "Sales", "password": "${EXT_4001_PASSWORD}", "voicemail": True},
                {"number": "4002", "name": "Support", "password": "${EXT_4002_PASSWORD}"},
            ],
        }
    )


def test_each_extension_gets_server_port_transport_and_user() -> None:
    first, second = accounts(_state())
    assert (first.number, first.server, first.port, first.transport) == ("4001", "127.0.0.1", 5070, "udp")
    assert first.username == first.auth_username == "4001"
    assert first.password_ref == "EXT_4001_PASSWORD"
    assert second.voicemail is False


def test_password_is_absent_unless_values_are_given() -> None:
    (account, _) = accounts(_state())
    assert account.password is None
    assert account.uri(with_password=True) == "sip:4001@127.0.0.1:5070;transport=udp"


def test_uri_carries_the_password_only_when_asked_and_escapes_it() -> None:
    (account, _) = accounts(_state(), passwords={"EXT_4001_PASSWORD": "p@ss:w/rd"})
    assert account.uri() == "sip:4001@127.0.0.1:5070;transport=udp"
    assert account.uri(with_password=True) == "sip:4001:p%40ss%3Aw%2Frd@127.0.0.1:5070;transport=udp"
    assert "p@ss" not in repr(account)


def test_unspecified_bind_address_needs_a_server_and_says_so() -> None:
    address, warning = server_address(_state(bind="0.0.0.0"))
    assert address == "<PBX address>" and "--server" in (warning or "")
    assert server_address(_state(bind="0.0.0.0"), "pbx.lan") == ("pbx.lan", None)
    assert server_address(_state(bind="0.0.0.0", external="203.0.113.5"))[0] == "203.0.113.5"


def test_qr_code_is_printable_and_writable_as_svg(tmp_path: Path) -> None:
    text = qr_ascii("sip:4001@127.0.0.1:5070;transport=udp")
    assert len(text.splitlines()) > 10
    assert set(text) <= {"█", "▀", "▄", "\xa0", " ", "\n"}
    svg = write_qr_svg("sip:4001@127.0.0.1:5070;transport=udp", tmp_path / "qr" / "4001.svg")
    assert svg.read_text().lstrip().startswith("<?xml") or "<svg" in svg.read_text()
