"""ControlChannel: AMI events and CLI text give the same dataclasses; open_control falls back."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.asterisk import control
from reconciler.asterisk.ami import parse_message
from reconciler.asterisk.control import (
    AmiChannel,
    ControlChannel,
    ExecChannel,
    endpoint_from_events,
    open_control,
    registration_from_event,
)
from reconciler.settings import Settings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cli"


def _event(text: str) -> control.AmiMessage:
    return parse_message(text.replace("\n", "\r\n").encode())


# Abridged from a real PJSIPShowEndpoint of Asterisk 22.10 (endpoint 4001, one registered contact).
ENDPOINT_EVENTS = [
    _event(
        "Event: EndpointDetail\nActionID: 4\nObjectType: endpoint\nObjectName: 4001\nAors: 4001\n"
        'Auth: 4001-auth\nOutboundAuth: \nTransport: transport-udp\nCallerid: "Sales" <4001>\n'
        "DeviceStateBusyAt: 0\nDeviceState: Not in use\nActiveChannels: 0"
    ),
    _event(
        "Event: AuthDetail\nActionID: 4\nObjectType: auth\nObjectName: 4001-auth\nUsername: 4001\n"
        "Password: secret4001\nEndpointName: 4001"
    ),
    _event(
        "Event: ContactStatusDetail\nActionID: 4\nAOR: 4001\nURI: sip:4001@127.0.0.1:54423\n"
        "Status: NonQualified\nRoundtripUsec: N/A\nID: 4001;@c5e0a0638996c97866fc4719c1518251"
    ),
]


def test_an_endpoints_ami_events_become_the_same_endpointinfo_the_cli_parser_gives() -> None:
    ep = endpoint_from_events(ENDPOINT_EVENTS)
    assert ep is not None
    assert (ep.name, ep.callerid, ep.state, ep.channels_in_use, ep.channel_limit) == (
        "4001",
        "4001",
        "Not in use",
        0,
        None,
    )
    assert ep.aors == ("4001",) and ep.in_auths == ("4001-auth",) and ep.out_auths == ()
    assert ep.transports == ("transport-udp",)
    [contact] = ep.contacts
    assert (contact.uri, contact.hash, contact.status, contact.rtt_ms) == (
        "sip:4001@127.0.0.1:54423",
        "c5e0a06389",
        "NonQual",
        None,
    )


def test_the_auths_password_from_pjsipshowendpoint_is_not_kept() -> None:
    assert "secret4001" not in repr(endpoint_from_events(ENDPOINT_EVENTS))


def test_an_outbound_registration_event_becomes_a_registration() -> None:
    reg = registration_from_event(
        _event(
            "Event: OutboundRegistrationDetail\nObjectName: provider-reg\nServerUri: sip:127.0.0.1:5070\n"
            "OutboundAuth: provider-auth\nStatus: Registered\nNextReg: 107"
        )
    )
    assert reg is not None and reg.registered and reg.auth == "provider-auth" and reg.expires_s == 107


class FakeRunner:
    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def run(self, *commands: str) -> list[str]:
        self.calls.append(commands)
        return [self.answers.get(c, f"No such command '{c}'\n") for c in commands]


def test_the_exec_channel_parses_the_cli_text_of_the_same_questions() -> None:
    runner = FakeRunner(
        {
            "pjsip show contacts": (FIXTURES / "pjsip_show_contacts.txt").read_text(),
            "pjsip show endpoint 4001": (FIXTURES / "pjsip_show_endpoint_4001.txt").read_text(),
            "pjsip show endpoint nosuch": "Unable to find object nosuch.\n\n",
            "core waitfullybooted": "Asterisk has fully booted.\n",
        }
    )
    channel = ExecChannel(runner)
    assert isinstance(channel, ControlChannel)
    assert {c.aor for c in channel.contacts()} >= {"4001"}
    endpoint = channel.endpoint("4001")
    assert endpoint is not None and endpoint.name == "4001"
    assert channel.endpoint("nosuch") is None
    assert channel.fully_booted()
    assert channel.commands(["a", "b"]) == ["No such command 'a'\n", "No such command 'b'\n"]
    assert runner.calls[-1] == ("a", "b")  # one exec for the batch


def test_open_control_falls_back_to_exec_with_a_note_when_ami_does_not_answer(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, ami_port=1, ami_secret="x" * 32, environ={})
    channel = open_control(settings, FakeRunner({}))
    assert channel.kind == "exec"
    assert channel.note is not None and "using docker exec" in channel.note
    assert "x" * 32 not in channel.note


def test_open_control_with_ami_off_uses_exec_and_says_so(tmp_path: Path) -> None:
    channel = open_control(Settings(state_dir=tmp_path, ami_enabled=False, environ={}), FakeRunner({}))
    assert channel.kind == "exec" and "AMI is off" in (channel.note or "")


def test_the_ami_channel_satisfies_the_protocol_without_importing_docker() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import reconciler.asterisk.control as c; "
        "assert 'docker' not in sys.modules, 'docker imported'; print(c.AmiChannel.kind)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == AmiChannel.kind


def test_settings_read_the_ami_port_and_secret_source_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECONCILER_AMI_PORT", "45038")
    monkeypatch.setenv("RECONCILER_AMI_SECRET_FILE", "/run/secrets/ami_secret")
    monkeypatch.delenv("RECONCILER_AMI_SECRET", raising=False)
    settings = Settings.from_env()
    assert settings.ami_port == 45038
    assert settings.ami_secret_file == Path("/run/secrets/ami_secret")
    assert settings.ami_secret is None


def test_the_secret_is_not_in_the_settings_repr() -> None:
    assert "topsecret-value" not in repr(Settings(ami_secret="topsecret-value", environ={}))
