"""The parsers on real Asterisk 22.10.1 captures (tests/fixtures/cli/, made by capture.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.asterisk.client import aor_found, dialplan_revision
from reconciler.asterisk.parsers import (
    parse_channels_concise,
    parse_contacts,
    parse_dialplan,
    parse_endpoint_list,
    parse_endpoints,
    parse_registrations,
    parse_reload_log,
    parse_voicemail_users,
)

CLI = Path(__file__).resolve().parents[1] / "fixtures" / "cli"


def capture(name: str) -> str:
    return (CLI / name).read_text()


def test_real_registrations_registered_and_rejected() -> None:
    (reg,) = parse_registrations(capture("pjsip_show_registrations.txt"))
    assert (reg.name, reg.server_uri, reg.auth, reg.status, reg.expires_s) == (
        "pbx_provider-reg",
        "sip:127.0.0.1:15070",
        "pbx_provider-auth",
        "Registered",
        3581,
    )
    (rejected,) = parse_registrations(capture("pjsip_show_registrations_rejected.txt"))
    assert (rejected.status, rejected.expires_s) == ("Rejected", -4)


def test_real_contacts() -> None:
    contacts = parse_contacts(capture("pjsip_show_contacts.txt"))
    assert [(c.aor, c.status, c.rtt_ms) for c in contacts] == [
        ("4001", "NonQual", None),
        ("4002", "Avail", 0.755),
        ("pbx_provider", "NonQual", None),
    ]


def test_real_endpoints_and_endpoint_list_agree() -> None:
    endpoints = parse_endpoints(capture("pjsip_show_endpoints.txt"))
    names = ["4000", "4001", "4002", "pbx_provider"]
    assert [e.name for e in endpoints] == names
    assert parse_endpoint_list(capture("pjsip_list_endpoints.txt")) == names
    by_name = {e.name: e for e in endpoints}
    assert by_name["4000"].state == "Unavailable" and by_name["4000"].contacts == ()
    assert by_name["4002"].contacts[0].rtt_ms == 0.755
    trunk = by_name["pbx_provider"]
    assert trunk.out_auths == ("pbx_provider-auth",) and trunk.identify_matches == ("127.0.0.1:15070/32",)
    assert all(e.transports == ("transport-udp",) for e in endpoints)


def test_real_dialplan_lists_emergency_numbers_before_the_prefix_pattern() -> None:
    exts = parse_dialplan(capture("dialplan_show_911_at_internal.txt"))
    assert [(e.exten, e.first_priority) for e in exts] == [("911", 1), ("_9X.", 1)]
    lost = parse_dialplan(capture("dialplan_show_911_at_internal_priority_lost.txt"))
    assert [(e.exten, e.first_priority) for e in lost] == [("911", 5), ("_9X.", 1)]
    internal = parse_dialplan(capture("dialplan_show_internal.txt"))
    assert [e.exten for e in internal] == ["*97", "112", "911", "_4XXX", "_9X."]
    assert parse_dialplan(capture("dialplan_show_nosuchctx.txt")) == []


def test_real_revision_markers() -> None:
    assert dialplan_revision(capture("dialplan_show_revision_at_gitops_meta.txt")) == "3f9c2a7d81b0"
    assert aor_found(capture("pjsip_show_aor_revision_marker.txt"), "3f9c2a7d81b0")
    assert not aor_found(capture("pjsip_show_aor_nosuch.txt"), "nosuch")


def test_real_voicemail_users_and_channels() -> None:
    users = parse_voicemail_users(capture("voicemail_show_users.txt"))
    assert [(u.mailbox, u.user) for u in users] == [("4000", "Reception"), ("4001", "Sales")]
    channels = parse_channels_concise(capture("core_show_channels_concise_call.txt"))
    assert [(c.channel, c.state) for c in channels] == [
        ("PJSIP/pbx_provider-00000001", "Up"),
        ("PJSIP/4001-00000000", "Up"),
    ]
    assert channels[1].data == "PJSIP/5550100@pbx_provider,60"
    assert parse_channels_concise(capture("core_show_channels_concise_idle.txt")) == []


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("reload_pjsip_ok", []),
        ("reload_dialplan_ok", []),
        ("reload_voicemail_ok", []),
        ("reload_pjsip_transport_changed", []),
        (
            "reload_pjsip_parse_error",
            [("WARNING", "pjsip.conf", 5), ("ERROR", "pjsip.conf", None)],
        ),
        (
            "reload_pjsip_bad_value",
            [("ERROR", None, 63), ("ERROR", "pjsip.conf", None)],
        ),
        ("reload_dialplan_parse_error", [("WARNING", "extensions.conf", 5)]),
        ("reload_dialplan_911_priority_lost", [("WARNING", "extensions.conf", 10)]),
    ],
)
def test_real_reload_logs_give_one_problem_per_distinct_line(
    log: str, expected: list[tuple[str, str | None, int | None]]
) -> None:
    problems = parse_reload_log(capture(f"{log}.messages.log").splitlines())
    assert [(p.level, p.file, p.line) for p in problems] == expected
