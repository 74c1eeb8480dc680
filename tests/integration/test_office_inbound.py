"""Office features on the real Asterisk, driven by SIPp: a DID follows its schedule, a menu takes a key,
a queue plays hold music until a member answers, a voicemail arrives as e-mail, and `reconciler calls`
lists what these calls did.

One PBX stack for the module, with a desired state of its own: the fake provider (which calls the
schedule DID), a second provider played by SIPp (`tests.harness.inbound.SippTrunk`, it calls the menu
DID and presses keys), pbx.smtp pointing at an `SmtpSink` that requires a login, a menu, a ring group,
a queue and a schedule whose hours are computed from now (`inbound.noon_timezone`).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
import sys
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from reconciler.errors import ValidationFailed
from reconciler.observe.status import collect_status
from reconciler.settings import REPO_ROOT
from tests.harness import calls, sipp
from tests.harness.calls import Dtmf, Pause, Play
from tests.harness.containers import EXTENSIONS, PROVIDER_USER, PbxStack
from tests.harness.inbound import SippTrunk, noon_timezone
from tests.harness.rtp import RtpReceiver
from tests.harness.smtp_sink import SmtpSink, attachments
from tests.harness.waiting import poll

pytestmark = pytest.mark.integration

SCHEDULE_DID = "+34910000100"
MENU_DID = "+34910000200"
MAILBOX_EMAIL = "accounts@office.test"
MAIL_FROM = "pbx@office.test"
SMTP_USER = "pbx-mailer"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _strong() -> str:
    return f"{secrets.token_urlsafe(18)}Aa1"


@dataclass
class Office:
    stack: PbxStack
    trunk: SippTrunk
    sink: SmtpSink
    timezone: str

    @property
    def port(self) -> int:
        return self.stack.pbx.sip_port

    def today(self) -> dt.date:
        return dt.datetime.now(zoneinfo.ZoneInfo(self.timezone)).date()

    def write_schedule(self, *, open_spans: list[str], closed_dates: list[str] | None = None) -> None:
        (self.stack.desired_dir / "schedules.yaml").write_text(
            "schedules:\n"
            "  - name: office\n"
            f"    timezone: {self.timezone}\n"
            f"    open: {json.dumps(open_spans)}\n"
            f"    closed_dates: {json.dumps(closed_dates or [])}\n"
        )

    def closed_by_weekday(self) -> None:
        """Open only on the weekday after tomorrow: never today, nor after a midnight during the test."""
        other = WEEKDAYS[(self.today().weekday() + 2) % 7]
        self.write_schedule(open_spans=[f"{other} 00:00-23:59"])

    def apply(self) -> None:
        result = self.stack.apply()
        assert not result.unchanged, "the desired state changed: the apply must change something"


def _write_desired(stack: PbxStack, trunk: SippTrunk, sink: SmtpSink) -> None:
    desired = stack.desired_dir
    (desired / "pbx.yaml").write_text(
        "pbx:\n"
        "  bind: 127.0.0.1\n"
        f"  port: {stack.pbx.sip_port}\n"
        "  media_address: 127.0.0.1\n"
        "  smtp:\n"
        "    host: 127.0.0.1\n"
        f"    port: {sink.port}\n"
        "    tls: none\n"
        f"    username: {SMTP_USER}\n"
        "    password: ${SMTP_PASSWORD}\n"
        f"    from: {MAIL_FROM}\n"
    )
    (desired / "providers.yaml").write_text(
        "providers:\n"
        "  - name: fake_provider\n"
        "    host: 127.0.0.1\n"
        f"    port: {stack.provider.sip_port}\n"
        "    transport: udp\n"
        "    register: true\n"
        f"    username: {PROVIDER_USER}\n"
        "    password: ${PROVIDER_PASSWORD}\n" + trunk.provider_yaml("${SIPP_TRUNK_PASSWORD}")
    )
    lines = ["extensions:"]
    for number in EXTENSIONS:
        box = f'{{email: "{MAILBOX_EMAIL}"}}' if number == "4003" else "true"
        lines += [
            f'  - number: "{number}"',
            f"    name: Extension {number}",
            f"    password: ${{EXT_{number}_PASSWORD}}",
            f"    voicemail: {box}",
        ]
    (desired / "extensions.yaml").write_text("\n".join(lines) + "\n")
    (desired / "routes.yaml").write_text(
        "outbound:\n"
        '  - {name: external, prefix: "9", strip: 1, provider: fake_provider}\n'
        "inbound:\n"
        '  - {provider: fake_provider, did: "+34910000000", to: "4000"}\n'
        f'  - {{provider: fake_provider, did: "{SCHEDULE_DID}", '
        "to: {schedule: office, open: extension:4001, closed: extension:4002}}\n"
        f'  - {{provider: {trunk.name}, did: "{MENU_DID}", to: menu:main}}\n'
    )
    (desired / "office.yaml").write_text(
        "ring_groups:\n"
        '  - {number: "600", name: Sales, members: ["4004"], ring_seconds: 15}\n'
        "queues:\n"
        '  - {number: "700", name: support, members: ["4002"], ring_seconds: 10, max_wait_seconds: 60}\n'
        "menus:\n"
        "  - name: main\n"
        "    prompt: demo-congrats\n"
        '    options: {"1": extension:4001, "2": ring_group:600}\n'
        "    wait_seconds: 5\n"
        "    timeout: hangup\n"
        "    invalid: extension:4002\n"
    )


@pytest.fixture(scope="module")
def office(pbx_stack: PbxStack) -> Iterator[Office]:
    """The module's PBX with the office desired state applied (schedule closed now)."""
    password = _strong()
    pbx_stack.secrets["SMTP_PASSWORD"] = password
    pbx_stack.secrets["SIPP_TRUNK_PASSWORD"] = _strong()
    with SmtpSink(credentials=(SMTP_USER, password)) as sink, SippTrunk() as trunk:
        office = Office(pbx_stack, trunk, sink, noon_timezone())
        _write_desired(pbx_stack, trunk, sink)
        office.closed_by_weekday()
        office.apply()
        pbx_stack.pbx.verify_owns_sip_port()
        yield office


def _provider_calls(office: Office, did: str) -> None:
    """The fake provider calls `did` on the PBX's registered contact and hangs up after 3 s."""
    assert office.stack.pbx.wait_registered("fake_provider", timeout_s=20)
    office.stack.provider.cli(f"channel originate PJSIP/{did}@{PROVIDER_USER} application Wait 3")


def _rings(office: Office, did: str) -> str:
    """Call `did` from the provider with 4001 and 4002 registered; the extension that answered."""
    stack = office.stack
    with (
        sipp.answering_phone("4001", stack.password("4001"), office.port) as open_phone,
        sipp.answering_phone("4002", stack.password("4002"), office.port) as closed_phone,
    ):
        _provider_calls(office, did)
        phones = {"4001": open_phone, "4002": closed_phone}
        answered = poll(lambda: [n for n, p in phones.items() if p.answered_calls()], timeout_s=15)
        assert answered, stack.pbx.log_tail(40)
        # the provider's Wait 3 ends the call: both sides are gone before the phones unregister
        assert poll(lambda: stack.pbx.channel_count() == 0, timeout_s=15), stack.pbx.cli("core show channels")
        assert [n for n, p in phones.items() if p.answered_calls()] == answered
        return answered[0] if len(answered) == 1 else ",".join(answered)


def test_a_did_out_of_hours_rings_the_closed_target_and_in_hours_the_open_one(office: Office) -> None:
    today = office.today()
    schedule = office.stack.pbx.cli("dialplan show gitops-schedule-office")
    assert "closed" in schedule and office.timezone in schedule, schedule

    assert _rings(office, SCHEDULE_DID) == "4002", "open only on another weekday: the closed target rings"

    office.write_schedule(open_spans=[f"{WEEKDAYS[today.weekday()]} 00:00-23:59"])
    office.apply()
    assert _rings(office, SCHEDULE_DID) == "4001", "open today all day: the open target rings"

    office.write_schedule(open_spans=["daily 00:00-23:59"], closed_dates=[today.isoformat()])
    office.apply()
    assert _rings(office, SCHEDULE_DID) == "4002", "today is a closed date: the closed target rings"


@pytest.mark.parametrize(
    ("key", "rings"),
    [("1", "4001"), ("2", "4004"), ("9", "4002")],
    ids=["option-1-extension", "option-2-ring-group", "no-option-invalid"],
)
def test_a_menu_answers_takes_a_key_and_sends_the_call_to_the_chosen_target(
    office: Office, key: str, rings: str
) -> None:
    stack = office.stack
    with sipp.answering_phone(rings, stack.password(rings), office.port) as phone:
        call = office.trunk.start_call(
            MENU_DID, office.port, [Pause(1.0), Dtmf(key), Pause(4.0)], dtmf="info"
        )
        assert phone.wait_answered(1, timeout_s=12), stack.pbx.log_tail(40)
        result = call.result()

    assert result.answered, result.describe()  # the menu itself answered the trunk's INVITE
    assert result.ok, result.describe()
    assert len(phone.answered_calls()) == 1


def test_a_queue_caller_hears_hold_music_and_then_reaches_a_member(office: Office) -> None:
    stack = office.stack
    with RtpReceiver() as receiver:
        call = calls.start_call(
            "4001", stack.password("4001"), "700", office.port, [Pause(10.0)],
            dtmf="info", media_port=receiver.port, timeout_s=25,
        )  # fmt: skip
        try:
            # nobody of the queue is registered: the caller waits and hears music on hold
            assert receiver.wait_packets(50, timeout_s=8) >= 50, stack.pbx.log_tail(40)
            queue = stack.pbx.cli("queue show support")
            assert "support has 1 calls" in queue, queue
            assert "Local/4002@gitops-queue-member" in queue, queue
            # the waiting caller is a channel up: status (and /metrics' active channels) count it
            assert collect_status(stack.settings(), stack.client())["asterisk"]["channels"] >= 1

            with sipp.answering_phone("4002", stack.password("4002"), office.port) as member:
                assert member.wait_answered(1, timeout_s=10), stack.pbx.log_tail(40)
                result = call.result()
        finally:
            if call.running:
                sipp._kill(call.process)
            call.result()

    assert result.answered and result.ok, result.describe()
    assert len(member.answered_calls()) == 1


def test_a_voicemail_arrives_as_e_mail_with_the_recording_attached(office: Office) -> None:
    stack = office.stack
    before = len(office.sink.messages())

    # 4003 is not registered: the call goes to its mailbox; speak after the greeting and the beep
    result = calls.scripted_call(
        "4001", stack.password("4001"), "4003", office.port, [Pause(12.5), Play()], timeout_s=40
    )
    assert result.answered and result.ok, result.describe()

    received = office.sink.wait_messages(before + 1, timeout_s=20)[before:]
    msmtp_log = stack.pbx.read_file("/var/log/asterisk/msmtp.log")
    assert len(received) == 1, (
        f"auth failures={office.sink.auth_failures}\n{msmtp_log}\n{stack.pbx.log_tail(40)}"
    )
    mail = received[0]
    assert mail.rcpt_tos == (MAILBOX_EMAIL,)
    assert mail.authenticated_as == SMTP_USER
    assert MAIL_FROM in mail.mail_from and MAIL_FROM in str(mail.message["From"])
    files = attachments(mail.message)
    wavs = [f for f in files if (f[0] or "").endswith(".wav")]
    assert len(wavs) == 1, files
    name, content_type, data = wavs[0]
    assert content_type in ("audio/x-wav", "audio/wav"), files
    assert data[:4] == b"RIFF" and len(data) > 8000, (name, len(data))


def reconciler_calls(container: str, *args: str) -> list[dict[str, Any]]:
    """`reconciler calls --json --container NAME ARGS` as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "calls", "--json", "--container", container, *args],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_reconciler_calls_lists_the_calls_with_the_targets_they_passed(office: Office) -> None:
    listed = reconciler_calls(office.stack.pbx.name, "--since", "1h", "--limit", "200")
    print(json.dumps(listed, indent=1))
    chains = [(c["dialled"], c["target"], c["disposition"]) for c in listed]

    menu = [c for c in listed if "menu:main" in (c["target"] or "")]
    assert {c["target"] for c in menu} >= {
        "menu:main > extension:4001",
        "menu:main > ring_group:600",
        "menu:main > extension:4002",
    }, chains
    assert all(c["provider"] == office.trunk.name for c in menu), chains
    # `dialled` is what the caller dialled (the DID), not where the menu sent the call
    assert all(c["dialled"] == MENU_DID for c in menu), chains

    queue = [c for c in listed if (c["target"] or "").startswith("queue:700")]
    assert queue and any(c["dialled"] == "700" and c["disposition"] == "ANSWERED" for c in queue), chains

    schedule = [c for c in listed if c["dialled"] == SCHEDULE_DID]
    assert {c["target"] for c in schedule} >= {"extension:4001", "extension:4002"}, chains
    assert all(c["provider"] == "fake_provider" for c in schedule), chains

    voicemail = [c for c in listed if c["from"] == "4001" and c["dialled"] == "4003"]
    assert voicemail and voicemail[0]["target"] == "extension:4003", chains
    assert voicemail[0]["disposition"] == "ANSWERED", chains


def test_a_menu_prompt_the_pbx_lacks_stops_the_apply_before_anything_is_written(office: Office) -> None:
    stack = office.stack
    office_yaml = stack.desired_dir / "office.yaml"
    good = office_yaml.read_text()
    before = stack.client().read_managed()
    office_yaml.write_text(
        good.replace("prompt: demo-congrats", "prompt: welcome-to-acme").replace(
            "wait_seconds: 5", "wait_seconds: 7"
        )
    )
    try:
        with pytest.raises(ValidationFailed) as caught:
            stack.apply()
        lines = [str(p) for p in caught.value.problems]
        assert len(lines) == 1 and "office.yaml:7: menus[0].prompt: no sound 'welcome-to-acme'" in lines[0], (
            lines
        )
        assert stack.client().read_managed() == before, "nothing may be written"
        assert "WaitExten(7)" not in stack.pbx.cli("dialplan show gitops-menu-main")
    finally:
        office_yaml.write_text(good)
    assert stack.apply().unchanged, "the good state is still the live one"
