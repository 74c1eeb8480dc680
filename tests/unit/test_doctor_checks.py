"""doctor's checks over captured Asterisk output: routes, ports, managed config markers."""

from __future__ import annotations

import json

from reconciler.desired.model import DesiredState
from reconciler.observe.doctor import Verdict, _managed_config_check, _port_checks, _route_checks

STATE = DesiredState.model_validate(
    {
        "pbx": {"port": 18510},
        "providers": [{"name": "p", "host": "127.0.0.1", "username": "u", "password": "${P}"}],
        "outbound": [
            {"name": "external", "prefix": "9", "strip": 1, "provider": "p"},
            {"name": "emergency", "numbers": ["911"], "provider": "p"},
        ],
    }
)

EXACT_911 = """[ Context 'internal' created by 'pbx_config' ]
  '911' =>          1. NoOp(route emergency: ${CALLERID(num)} -> 911) [extensions.conf:13]
                    2. Dial(PJSIP/911@fake_provider,60)           [extensions.conf:14]
  '_9X.' =>         1. NoOp(route external: ${CALLERID(num)} -> ${EXTEN}) [extensions.conf:54]

-= 2 extensions (3 priorities) in 1 context. =-
"""
PATTERN_ONLY = """[ Context 'internal' created by 'pbx_config' ]
  '_9X.' =>         1. NoOp(route external: ${CALLERID(num)} -> ${EXTEN}) [extensions.conf:54]
                    2. Dial(PJSIP/${EXTEN:1}@p,60)                [extensions.conf:55]

-= 1 extension (2 priorities) in 1 context. =-
"""
TRANSPORTS = """
Transport:  <TransportId........>  <Type>  <cos>  <tos>  <BindAddress....................>
==========================================================================================

Transport:  transport-udp             udp      0      0  127.0.0.1:18510

Objects found: 1
"""
RTP = """
General Settings:
----------------
  Port start:      34000
  Port end:        34199
  Checksums:       Yes
"""
META = """[ Context 'gitops-meta' created by 'pbx_config' ]
  'revision' =>     1. NoOp(6f3df4270de0)                         [extensions.conf:69]
"""


def test_emergency_number_that_matches_exactly_first_passes() -> None:
    raw = {"routes": {"911": EXACT_911, "95550100": PATTERN_ONLY}}
    checks = {c.name: c for c in _route_checks(raw, STATE)}
    assert checks["emergency route 911"].verdict is Verdict.PASS
    assert checks["outbound route external"].verdict is Verdict.PASS


def test_emergency_number_falling_through_to_the_9_pattern_fails_with_a_fix() -> None:
    raw = {"routes": {"911": PATTERN_ONLY, "95550100": PATTERN_ONLY}}
    check = next(c for c in _route_checks(raw, STATE) if c.name == "emergency route 911")
    assert check.verdict is Verdict.FAIL
    assert "'_9X.'" in check.detail
    assert "reconciler apply" in (check.fix or "")


def test_bound_sip_port_and_sane_rtp_range_pass() -> None:
    checks = {c.name: c for c in _port_checks({"transports": TRANSPORTS, "rtp": RTP}, STATE)}
    assert checks["SIP port bound"].verdict is Verdict.PASS
    assert checks["RTP port range"].verdict is Verdict.PASS
    assert "34000-34199" in checks["RTP port range"].detail


def test_no_transport_means_the_sip_port_is_not_bound() -> None:
    empty = "\nTransport:  <TransportId...>\n=====\n\nNo objects found.\n"
    check = _port_checks({"transports": empty, "rtp": RTP}, STATE)[0]
    assert check.verdict is Verdict.FAIL and "ss -lunp" in (check.fix or "")


def test_transport_on_another_port_than_desired_fails() -> None:
    other = TRANSPORTS.replace("18510", "5060")
    check = _port_checks({"transports": other, "rtp": RTP}, STATE)[0]
    assert check.verdict is Verdict.FAIL and "restart" in (check.fix or "")


def test_managed_config_needs_state_json_and_matching_markers() -> None:
    state = json.dumps({"revision": "sha256:6f3df4270de0aaaa", "subject": "s"})
    ok = _managed_config_check({"state": state, "meta": META}, "Aor:  gitops-rev-6f3df4270de0  0")
    assert ok.verdict is Verdict.PASS
    stale = _managed_config_check(
        {"state": state, "meta": META}, "Unable to find object gitops-rev-6f3df4270de0."
    )
    assert stale.verdict is Verdict.FAIL and "marker" in stale.detail
    missing = _managed_config_check({"state": "", "meta": ""}, None)
    assert missing.verdict is Verdict.FAIL and "reconciler apply" in (missing.fix or "")


def test_extensions_registered_comes_from_the_contacts_and_configured_from_a_bounded_sample() -> None:
    from reconciler.desired.model import DesiredState
    from reconciler.observe import doctor

    state = DesiredState.model_validate(
        {"extensions": [{"number": str(40000 + i), "name": f"E{i}", "password": "${E}"} for i in range(100)]}
    )
    sample = doctor.existence_sample(state)
    assert len(sample) == doctor.EXISTENCE_SAMPLE
    contacts = (
        "\n  Contact:  <Aor/ContactUri..............................> <Hash....> <Status> <RTT(ms)..>\n"
        + "=" * 90
        + "\n\n  Contact:  40001/sip:40001@127.0.0.1:5091                 60d3445266 NonQual        -nan\n"
        + "\nObjects found: 1\n\n"
    )
    present = {n: f"\n Endpoint:  {n}/{n}    Unavailable   0 of inf\n" for n in sample}
    check = doctor._extension_check({"contacts": contacts, "sample": present}, state)
    assert check.name == "extensions registered" and check.detail.startswith("1 of 100 registered")
    present[sample[3]] = "Unable to find object x.\n"
    check = doctor._extension_check({"contacts": contacts, "sample": present}, state)
    assert check.name == "extensions configured" and sample[3] in check.detail
