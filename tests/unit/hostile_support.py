"""A desired state with every optional field set (its own provider, on documentation addresses and
example.com, never the sample's; the office features of issue 11 too), and a helper that reads
refusals: the base of the hostile-input tests. Nothing here is ever sent anywhere."""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.desired_support import CliResult

FULL_FILES: dict[str, str] = {
    "pbx.yaml": (
        "pbx:\n"
        "  bind: 127.0.0.1\n"  # 2
        "  port: 5060\n"  # 3
        "  tls_port: 5061\n"  # 4
        "  media_address: 127.0.0.1\n"  # 5
        "  external_address: 203.0.113.7\n"  # 6
        "  local_net: [192.0.2.0/24]\n"  # 7
        "  codecs: [ulaw, alaw]\n"  # 8
        "  smtp:\n"  # 9
        "    host: smtp.example.com\n"  # 10
        "    port: 587\n"  # 11
        "    tls: starttls\n"  # 12
        "    username: ${SMTP_USER}\n"  # 13
        "    password: ${SMTP_PASSWORD}\n"  # 14
        "    from: voicemail@example.com\n"  # 15
    ),
    "providers.yaml": (
        "providers:\n"
        "  - name: trunk\n"  # 2
        "    host: sip.example.com\n"  # 3
        "    port: 5070\n"  # 4
        "    transport: udp\n"  # 5
        "    username: ${TRUNK_USER}\n"  # 6
        "    password: ${TRUNK_PASSWORD}\n"  # 7
        "    register: true\n"  # 8
        "    match: [192.0.2.50:5070]\n"  # 9
        "    from_user: trunkfrom\n"  # 10
        "    from_domain: example.com\n"  # 11
        '    caller_id: "+34910000001"\n'  # 12
        "    codecs: [ulaw]\n"  # 13
        "    expiration: 600\n"  # 14
    ),
    "extensions.yaml": (
        "extensions:\n"
        '  - number: "4001"\n'  # 2
        "    name: Sales\n"  # 3
        "    password: ${EXT_4001_PASSWORD}\n"  # 4
        "    voicemail:\n"  # 5
        "      pin: ${VM_4001_PIN}\n"  # 6
        "      email: sales@example.com\n"  # 7
        "    codecs: [ulaw, alaw]\n"  # 8
        '  - number: "4002"\n'  # 9
        "    name: Support\n"  # 10
        "    password: ${EXT_4002_PASSWORD}\n"  # 11
        "    voicemail: true\n"  # 12
        "    devices: 2\n"  # 13
        "    pickup_group: sales\n"  # 14
        "    dnd: true\n"  # 15
        "    forward:\n"  # 16
        "      always: ring_group:600\n"  # 17
        "      busy: queue:700\n"  # 18
        "      no_answer: menu:main\n"  # 19
    ),
    "routes.yaml": (
        "outbound:\n"
        "  - name: external\n"  # 2
        '    prefix: "9"\n'  # 3
        "    strip: 1\n"  # 4
        "    provider: trunk\n"  # 5
        "  - name: emergency\n"  # 6
        '    numbers: ["112"]\n'  # 7
        "    provider: trunk\n"  # 8
        "inbound:\n"
        "  - provider: trunk\n"  # 10
        '    did: "+34910000000"\n'  # 11
        '    to: "4001"\n'  # 12
        "  - provider: trunk\n"  # 13
        '    did: "+34910000002"\n'  # 14
        "    to:\n"  # 15
        "      schedule: office\n"  # 16
        "      open: menu:main\n"  # 17
        "      closed: voicemail:4001\n"  # 18
    ),
    "office.yaml": (
        "ring_groups:\n"
        '  - number: "600"\n'  # 2
        "    name: Sales\n"  # 3
        '    members: ["4001", "4002"]\n'  # 4
        "    strategy: hunt\n"  # 5
        "    ring_seconds: 15\n"  # 6
        "    fallback: voicemail:4001\n"  # 7
        "queues:\n"
        '  - number: "700"\n'  # 9
        "    name: support\n"  # 10
        '    members: ["4001", "4002"]\n'  # 11
        "    strategy: leastrecent\n"  # 12
        "    music: default\n"  # 13
        "    ring_seconds: 10\n"  # 14
        "    max_wait_seconds: 60\n"  # 15
        "    fallback: ring_group:600\n"  # 16
        "menus:\n"
        "  - name: main\n"  # 18
        "    prompt: demo-congrats\n"  # 19
        "    options:\n"  # 20
        '      "1": ring_group:600\n'  # 21
        '      "2": queue:700\n'  # 22
        '      "0": extension:4001\n'  # 23
        "    wait_seconds: 3\n"  # 24
        "    timeout: extension:4001\n"  # 25
        "    invalid: hangup\n"  # 26
        "schedules:\n"
        "  - name: office\n"  # 28
        "    timezone: Europe/Madrid\n"  # 29
        '    open: ["mon-fri 09:00-18:00", "sat 10:00-14:00"]\n'  # 30
        '    closed_dates: ["2026-12-25"]\n'  # 31
    ),
}

# Fake, strong, fixed values (never real secrets).
FULL_SECRETS: dict[str, str] = {
    "TRUNK_USER": "fake-trunk-user",
    "TRUNK_PASSWORD": "Fake-Trunk-Pass-31",
    "EXT_4001_PASSWORD": "Fake-Phone-Pass-41",
    "EXT_4002_PASSWORD": "Fake-Phone-Pass-42",
    "VM_4001_PIN": "730291",
    "SMTP_USER": "fake-smtp-user",
    "SMTP_PASSWORD": "Fake-Smtp-Pass-51",
}


def write_full(directory: Path) -> Path:
    """Write the full desired state into `directory` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in FULL_FILES.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def without_office(directory: Path) -> Path:
    """Take the office features out of a full state in `directory`: office.yaml (ring group, queue,
    menu, schedule), the inbound route and the forwards that use them. For tests that replace the
    extensions by others: the office features' members would dangle, a real problem but not theirs."""
    (directory / "office.yaml").unlink()
    for name, start in (
        ("routes.yaml", '  - provider: trunk\n    did: "+34910000002"\n'),
        ("extensions.yaml", "    forward:\n"),
    ):
        text = (directory / name).read_text(encoding="utf-8")
        head, found, tail = text.partition(start)
        assert found, (name, start)
        # the block ends where the next line is indented no deeper than its first line
        indent = len(start) - len(start.lstrip(" "))
        rest = tail.split("\n")
        while rest and rest[0] and len(rest[0]) - len(rest[0].lstrip(" ")) > indent:
            rest.pop(0)
        (directory / name).write_text(head + "\n".join(rest), encoding="utf-8")
    return directory


_PROBLEM = re.compile(r"[^\n:]+:\d+: [^\n]+: [^\n]+")
_HEADER = re.compile(r"(\d+) problem\(s\) in the desired state:")


def problem_lines(result: CliResult) -> list[str]:
    """The problem lines of a refused command (exit 1), checked to be `FILE:LINE: field: message`
    lines, exactly as many as the header announces, and no traceback anywhere."""
    assert result.code == 1, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    text = result.stderr
    header = _HEADER.search(text)
    assert header, text
    body = text[header.end() :].split("\n  hint:", 1)[0].strip("\n")
    lines = body.split("\n")
    assert len(lines) == int(header.group(1)), text
    for line in lines:
        assert _PROBLEM.fullmatch(line), line
        assert not line.lstrip().startswith("::") and "##[" not in line
        assert len(line) <= 800
    return lines
