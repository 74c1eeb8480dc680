"""The AMI control channel against the project's real Asterisk (PBX + provider, desired state applied).

AMI answers must equal what the exec path (`asterisk -rx` through Docker) says, the session must
survive `core restart now` by logging in again, and AMI must refuse whoever lacks the secret. The
restart test runs last: it restarts the module's PBX.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from reconciler.asterisk.ami import AmiClient, AmiLoginRefused, AmiUnavailable, encode_action, parse_message
from reconciler.asterisk.control import AmiChannel, ExecChannel, open_control
from reconciler.asterisk.sipready import sip_answers, wait_sip_ready
from reconciler.settings import AMI_CONTAINER_SECRET_PATH
from tests.harness import ports
from tests.harness.containers import PbxStack
from tests.harness.waiting import poll

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def channels(live_pbx: PbxStack) -> Iterator[tuple[AmiChannel, ExecChannel]]:
    ami = open_control(live_pbx.settings(), live_pbx.client())
    assert isinstance(ami, AmiChannel), f"AMI expected, got {ami.kind}: {ami.note}"
    yield ami, ExecChannel(live_pbx.client())
    ami.close()


def test_open_control_logs_in_with_the_secret_read_once_from_the_container(
    channels: tuple[AmiChannel, ExecChannel],
) -> None:
    ami, _ = channels
    assert ami.kind == "ami" and ami.client.stats.logins == 1
    assert ami.fully_booted()


def test_command_output_over_ami_equals_the_exec_paths_output(
    channels: tuple[AmiChannel, ExecChannel],
) -> None:
    ami, exe = channels
    for cli in ("core show version", "dialplan show 911@internal", "pjsip show transports"):
        assert ami.command(cli) == exe.command(cli), cli
    assert ami.commands(["core show version", "no such command"]) == exe.commands(
        ["core show version", "no such command"]
    )


def test_pjsipshowendpoint_gives_the_same_endpoint_as_the_cli(
    live_pbx: PbxStack, channels: tuple[AmiChannel, ExecChannel]
) -> None:
    ami, exe = channels
    provider = "fake_provider"
    for name in ("4001", provider):
        over_ami, over_exec = ami.endpoint(name), exe.endpoint(name)
        assert over_ami is not None and over_exec is not None, name
        for attr in ("name", "aors", "in_auths", "out_auths", "state", "channels_in_use", "channel_limit"):
            assert getattr(over_ami, attr) == getattr(over_exec, attr), (name, attr)
        assert [c.uri for c in over_ami.contacts] == [c.uri for c in over_exec.contacts]
    assert ami.endpoint("nosuch") is None and exe.endpoint("nosuch") is None
    assert live_pbx.password("4001") not in repr(ami.endpoint("4001"))


def test_registrations_over_ami_match_the_cli(channels: tuple[AmiChannel, ExecChannel]) -> None:
    ami, exe = channels
    reads: list[tuple[set[tuple[str, str]], set[tuple[str, str]]]] = []

    def agree() -> bool:
        over_ami = {(r.name, r.status) for r in ami.registrations()}
        reads.append((over_ami, {(r.name, r.status) for r in exe.registrations()}))
        return reads[-1][0] == reads[-1][1]

    # The two reads are a moment apart and a registration may change state between them (a
    # re-registration): they must agree once it settles, and never would if one parser were wrong.
    poll(agree, 15.0)
    over_ami, over_exec = reads[-1]
    assert over_ami == over_exec and over_ami


def test_a_wrong_secret_is_refused_with_a_clear_error(live_pbx: PbxStack) -> None:
    wrong = "0" * 64
    with pytest.raises(AmiLoginRefused) as caught:
        AmiClient("127.0.0.1", live_pbx.pbx.ami_port, wrong).command("core show version")
    assert "refused the login" in caught.value.message and wrong not in str(caught.value)


def test_without_logging_in_ami_does_nothing(live_pbx: PbxStack) -> None:
    with socket.create_connection(("127.0.0.1", live_pbx.pbx.ami_port), timeout=5) as sock:
        sock.settimeout(5)
        data = b""
        sock.sendall(encode_action("Command", "1", {"Command": "core show version"}))
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = parse_message(data.partition(b"\r\n")[2].partition(b"\r\n\r\n")[0])
    assert reply.get("Response") == "Error" and "Asterisk" not in (reply.get("Output") or "")


def test_ami_listens_on_loopback_only_and_its_secret_is_root_only(live_pbx: PbxStack) -> None:
    pbx = live_pbx.pbx
    _, listening = pbx.exec(f"ss -Hltn 'sport = :{pbx.ami_port}'")
    addresses = {line.split()[3] for line in listening.splitlines() if line.strip()}
    assert addresses == {f"127.0.0.1:{pbx.ami_port}"}
    _, mode = pbx.exec(["stat", "-c", "%a %U", AMI_CONTAINER_SECRET_PATH])
    assert mode.split() == ["600", "root"]
    _, conf = pbx.exec("grep -E '^(deny|permit|bindaddr)' /etc/asterisk/manager.conf")
    assert "deny = 0.0.0.0/0.0.0.0" in conf and "permit = 127.0.0.1/255.255.255.255" in conf


def test_nothing_answers_ami_on_a_port_no_asterisk_was_given() -> None:
    port = ports.reserve_port()
    try:
        with pytest.raises(AmiUnavailable):
            AmiClient("127.0.0.1", port, "x" * 64, connect_timeout_s=1).command("core show version")
    finally:
        ports.release_port(port)


def test_the_pbx_answers_sip_options_on_its_own_transport(live_pbx: PbxStack) -> None:
    assert sip_answers("127.0.0.1", live_pbx.pbx.sip_port, 5.0) is not None


def test_the_kept_session_logs_in_again_after_core_restart_now(
    live_pbx: PbxStack, channels: tuple[AmiChannel, ExecChannel]
) -> None:
    ami, _ = channels
    before = ami.client.stats.logins
    # the session may break before the reply: either way the command must not be sent twice
    with contextlib.suppress(AmiUnavailable):
        ami.command("core restart now")
    live_pbx.client().wait_fully_booted(60)
    waited = wait_sip_ready("127.0.0.1", live_pbx.pbx.sip_port, 30.0)
    assert waited >= 0
    assert "Asterisk" in ami.command("core show version")
    assert ami.client.stats.logins == before + 1
    assert ami.endpoint("4001") is not None
