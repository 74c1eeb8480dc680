"""The pure parts of apply: which queries verify a reload, how their answers are judged, and the
live-state record. Outputs are verbatim Asterisk 22.10 replies."""

from __future__ import annotations

from reconciler.asterisk.client import LiveMarkers, aor_found, dialplan_revision
from reconciler.gitops.apply import (
    Expectations,
    LiveState,
    declared_dialplan_rev12,
    declared_pjsip_rev12,
    parse_live_state,
    rev12,
    runs_files_on_disk,
    verification_queries,
    verify,
)

EXP = Expectations(
    pjsip_rev12="17699fbd6da8",
    dialplan_rev12="17699fbd6da8",
    endpoints=frozenset({"trunk"}),  # the file's endpoints: extensions are verified as store rows
    emergency=("112", "911"),
    mailboxes=frozenset(),  # mailboxes are store rows
)
TRUNK = """
 Endpoint:  <Endpoint/CID.....................................>  <State.....>  <Channels.>
==========================================================================================

 Endpoint:  trunk                                                Not in use    0 of inf

 ParameterName                      : ParameterValue
 context                            : from-trunk
"""

AOR_FOUND = """
      Aor:  <Aor..............................................>  <MaxContact>
    Contact:  <Aor/ContactUri............................> <Hash....> <Status> <RTT(ms)..>
==========================================================================================

      Aor:  gitops-rev-17699fbd6da8                              0

 ParameterName        : ParameterValue
 ==================================================
 max_contacts         : 0
"""
AOR_MISSING = "Unable to find object gitops-rev-17699fbd6da8.\n"
ENDPOINTS = """
 Endpoint:  <Endpoint/CID.....................................>  <State.....>  <Channels.>
==========================================================================================

 Endpoint:  4000/4000                                            Unavailable   0 of inf
 Endpoint:  4001/4001                                            Not in use    0 of inf
 Endpoint:  trunk                                                Not in use    0 of inf

Objects found: 3

"""
META = """[ Context 'gitops-meta' created by 'pbx_config' ]
  'revision' =>     1. NoOp(17699fbd6da8)                         [extensions.conf:72]

-= 1 extension (1 priority) in 1 context. =-
"""
E911_OK = """[ Context 'internal' created by 'pbx_config' ]
  '911' =>          1. NoOp(route emergency: ${CALLERID(num)} -> 911) [extensions.conf:15]
                    2. Dial(PJSIP/911@trunk,60)                   [extensions.conf:16]
                    3. Hangup()                                   [extensions.conf:17]
  '_9X.' =>         1. NoOp(route external: ${CALLERID(num)} -> ${EXTEN}) [extensions.conf:40]

-= 2 extensions (4 priorities) in 1 context. =-
"""
E112_FALLS_THROUGH = """[ Context 'internal' created by 'pbx_config' ]
  '_1XX' =>         1. NoOp(something else)                       [extensions.conf:50]

-= 1 extension (1 priority) in 1 context. =-
"""
# notes §6: `exten => 911` without priority; the following `same => n` lines become 5 and 6.
E911_LOST_PRIORITY = """[ Context 'internal' created by 'pbx_config' ]
  '911' =>          5. Dial(PJSIP/911@trunk,60)                   [extensions.conf:16]
                    6. Hangup()                                   [extensions.conf:17]
  '_9X.' =>         1. NoOp(route external: ${CALLERID(num)} -> ${EXTEN}) [extensions.conf:40]

-= 2 extensions (3 priorities) in 1 context. =-
"""
VOICEMAIL = """Context    Mbox  User                      Zone       NewMsg
default    4000  Extension 4000                            0
2 voicemail users configured.
"""


def test_a_changed_pjsip_conf_is_verified_by_its_marker_and_each_provider_endpoint_never_a_list() -> None:
    assert verification_queries(EXP, ["pjsip.conf"], restarted=False) == [
        "pjsip show aor gitops-rev-17699fbd6da8",
        "pjsip show endpoint trunk",
    ]


def test_a_restart_verifies_every_file() -> None:
    queries = verification_queries(EXP, [], restarted=True)
    assert "pjsip show endpoint trunk" in queries and "pjsip list endpoints" not in queries
    assert "dialplan show 911@internal" in queries and "dialplan show 112@internal" in queries


def test_answers_of_a_good_reload_pass_every_check() -> None:
    queries = verification_queries(EXP, ["pjsip.conf", "extensions.conf"], restarted=False)
    outputs = [AOR_FOUND, TRUNK, META, E911_OK.replace("911", "112"), E911_OK]
    checks = verify(EXP, queries, outputs)
    assert [c.ok for c in checks] == [True] * 5, checks


def test_missing_marker_missing_endpoint_and_lost_emergency_number_fail() -> None:
    queries = verification_queries(EXP, ["pjsip.conf", "extensions.conf", "voicemail.conf"], restarted=False)
    outputs = [
        AOR_MISSING,
        "Unable to find object trunk.\n",
        META.replace("17699fbd6da8", "aaaaaaaaaaaa"),
        E112_FALLS_THROUGH,
        E911_LOST_PRIORITY,
    ]
    failed = {c.name: c.detail for c in verify(EXP, queries, outputs) if not c.ok}
    assert failed == {
        "pjsip.conf live (aor gitops-rev-17699fbd6da8)": "not found",
        "endpoint trunk": "not found",
        "dialplan live (revision 17699fbd6da8)": "found aaaaaaaaaaaa",
        "emergency 112 dials as 112": "matches pattern '_1XX' first",
        "emergency 911 dials as 911": "has no priority 1 (starts at 5)",
    }


def test_markers_are_read_from_the_rendered_files_and_from_asterisk() -> None:
    pjsip = "; revision: x\n[gitops-rev-17699fbd6da8]\ntype = aor\nmax_contacts = 0\n"
    dialplan = "[gitops-meta]\nexten => revision,1,NoOp(17699fbd6da8)\n"
    assert declared_pjsip_rev12(pjsip) == declared_dialplan_rev12(dialplan) == "17699fbd6da8"
    assert declared_pjsip_rev12("") is None and declared_dialplan_rev12(None) is None
    assert aor_found(AOR_FOUND, "17699fbd6da8") and not aor_found(AOR_MISSING, "17699fbd6da8")
    assert dialplan_revision(META) == "17699fbd6da8"
    assert dialplan_revision("There is no existence of 'gitops-meta' context\n") is None
    assert rev12("sha256:17699fbd6da8eb6b9bb7") == "17699fbd6da8"


def test_asterisk_runs_the_files_on_disk_only_when_both_markers_match() -> None:
    a, b = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
    files = {
        "pjsip.conf": f"[gitops-rev-{a}]\ntype = aor\n",
        "extensions.conf": f"exten => revision,1,NoOp({b})\n",
    }
    live = LiveMarkers(pjsip_rev12=a, pjsip_declared=a, dialplan_rev12=b)
    assert runs_files_on_disk(live, files)
    stale_pjsip = LiveMarkers(pjsip_rev12=None, pjsip_declared=a, dialplan_rev12=b)
    assert not runs_files_on_disk(stale_pjsip, files)
    no_dialplan = LiveMarkers(pjsip_rev12=a, pjsip_declared=a, dialplan_rev12=None)
    assert not runs_files_on_disk(no_dialplan, files)
    assert not runs_files_on_disk(LiveMarkers(None, None, None), {})


def test_live_state_round_trips_and_garbage_reads_as_never_applied() -> None:
    state = LiveState("sha256:abc", "Add 4006", "2026-11-26T15:10:51+00:00", {"pjsip.conf": "00ff"})
    assert parse_live_state(state.to_json()) == state
    assert parse_live_state("") is None
    assert parse_live_state("{not json") is None
    assert parse_live_state('{"subject": "no revision"}') is None
