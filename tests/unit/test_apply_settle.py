"""What an apply concludes from one read of the PBX before it plans: is what is on disk verified
(journal, state.json hashes, a pending restart that happened), and what must a restart bring up."""

from __future__ import annotations

from reconciler.asterisk.client import LiveMarkers, LiveRead, sha256_text
from reconciler.asterisk.journal import new_journal, parse_journal
from reconciler.asterisk.parsers import parse_transports
from reconciler.asterisk.restart import PendingRestart, RestartPolicy, active_calls
from reconciler.gitops.checks import Expectations, expected_transports, verification_queries, verify
from reconciler.gitops.decide import observe, unsettled
from reconciler.gitops.livestate import (
    LiveState,
    parse_live_state,
)

PJSIP = "; revision: r1\n[gitops-rev-aaaaaaaaaaaa]\ntype = aor\nmax_contacts = 0\n"
NAMES = ("pjsip.conf",)
BOOT = "2026-12-01 21:00:39.757818369 +0000"
MARKERS = LiveMarkers("aaaaaaaaaaaa", "aaaaaaaaaaaa", None)


def read(
    state: LiveState | None, *, journal: str | None = None, boot: str = BOOT, pjsip: str = PJSIP
) -> LiveRead:
    files = {"pjsip.conf": pjsip}
    if state is not None:
        files["state.json"] = state.to_json()
    return LiveRead(files, MARKERS, journal_text=journal, boot_id=boot)


def recorded(pending: PendingRestart | None = None) -> LiveState:
    return LiveState(
        "r1", None, "2026-12-01T21:00:00+00:00", {"pjsip.conf": sha256_text(PJSIP)}, pending_restart=pending
    )


def test_files_that_state_json_recorded_are_settled() -> None:
    assert unsettled(observe(read(recorded()), NAMES), NAMES) == []


def test_an_interrupted_apply_a_hand_edit_and_a_missing_record_are_not_settled() -> None:
    journal = new_journal("r2", "ci@host pid 7 (reconciler apply)", {"pjsip.conf": "00"}, restart=False)
    interrupted = unsettled(observe(read(recorded(), journal=journal.to_json()), NAMES), NAMES)
    assert interrupted == ["an apply of revision r2 by ci@host pid 7 (reconciler apply) at "
                           f"{journal.started_at} was interrupted before it was recorded"]  # fmt: skip

    edited = unsettled(observe(read(recorded(), pjsip=PJSIP + "; hand edit\n"), NAMES), NAMES)
    assert edited == ["the managed files on disk are not those state.json recorded"]

    # Files carrying revision markers but no state.json: never recorded as verified.
    assert unsettled(observe(read(None), NAMES), NAMES) == [
        "no state.json records the managed files on disk as verified"
    ]
    # The entrypoint's placeholders (no markers) on a fresh PBX are simply old files.
    assert unsettled(observe(read(None, pjsip="; No configuration applied yet\n"), NAMES), NAMES) == []


def test_a_pending_restart_is_settled_only_once_asterisk_has_restarted() -> None:
    pending = PendingRestart("transport transport-udp changed", "2026-12-01T21:00:00+00:00", BOOT)
    assert not pending.done(BOOT) and not pending.done(None)
    assert unsettled(observe(read(recorded(pending)), NAMES), NAMES) == []

    later = "2026-12-01 21:05:00.000000001 +0000"
    assert pending.done(later)
    assert unsettled(observe(read(recorded(pending), boot=later), NAMES), NAMES) == [
        "Asterisk restarted since the restart for revision r1 was pending"
    ]


def test_a_pending_restart_and_the_journal_survive_a_round_trip() -> None:
    pending = PendingRestart("transport transport-udp changed", "t", BOOT, RestartPolicy.IDLE.value)
    assert parse_live_state(recorded(pending).to_json()) == recorded(pending)
    both = LiveState("r1", None, "t", {}, {"pbx_provider": "host x.invalid does not resolve"}, pending)
    assert parse_live_state(both.to_json()) == both  # a degraded provider and a pending restart
    journal = new_journal("r2", "who", {"pjsip.conf": "ab"}, restart=True)
    assert parse_journal(journal.to_json()) == journal
    # A damaged journal still says that an apply was interrupted.
    damaged = parse_journal("{half")
    assert damaged is not None and damaged.revision == "?"


def test_a_restart_verifies_that_every_transport_is_bound_where_pjsip_conf_says() -> None:
    conf = (
        "[transport-udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:5062\n\n"
        "[transport-tls]\ntype = transport\nprotocol = tls\nbind = 0.0.0.0\n"
    )
    transports = expected_transports(conf)
    assert transports == {"transport-udp": "127.0.0.1:5062", "transport-tls": "0.0.0.0:5061"}
    exp = Expectations(None, None, frozenset(), (), frozenset(), transports)
    assert "pjsip show transports" in verification_queries(exp, [], restarted=True)
    assert "pjsip show transports" not in verification_queries(exp, ["pjsip.conf"], restarted=False)

    shown = (
        "Transport:  <TransportId........>  <Type>  <cos>  <tos>  <BindAddress....................>\n"
        "==========================================================================================\n\n"
        "Transport:  transport-udp             udp      0      0  127.0.0.1:5060\n\n"
        "Objects found: 1\n"
    )
    assert [t.bind for t in parse_transports(shown)] == ["127.0.0.1:5060"]
    (check,) = verify(exp, ["pjsip show transports"], [shown])
    assert not check.ok
    assert check.detail == (
        "transport-tls not bound, expected 0.0.0.0:5061; "
        "transport-udp bound to 127.0.0.1:5060, expected 127.0.0.1:5062"
    )


def test_active_calls_are_read_from_core_show_channels_count() -> None:
    assert active_calls("2 active channels\n1 active call\n1 call processed\n") == 1
    assert active_calls("0 active channels\n0 active calls\n4 calls processed\n") == 0
    assert active_calls("Unable to connect to remote asterisk") is None
