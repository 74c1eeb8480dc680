# ruff: noqa: E501  (verbatim Asterisk output is wider than our line length)
"""The CLI parsers, fed with the verbatim Asterisk 22.10 samples of asterisk-notes.md §5/§6."""

from __future__ import annotations

import pytest

from reconciler.asterisk.parsers import (
    PRIORITY_HINT,
    parse_channels_concise,
    parse_contacts,
    parse_dialplan,
    parse_endpoint_list,
    parse_endpoints,
    parse_registrations,
    parse_reload_log,
    parse_voicemail_users,
)

RULE = "=" * 90

REGISTRATIONS = f"""
 <Registration/ServerURI..............................>  <Auth....................>  <Status.......>
{RULE}

 provider-reg/sip:127.0.0.1:5070                         provider-auth               Registered        (exp. 107s)
 other_trunk-reg/sips:127.0.0.1:5061                     n/a                         Rejected          (exp. 29s ago)
 third/sip:127.0.0.1:5099                                third-auth                  Unregistered

Objects found: 3

"""

CONTACTS = f"""
  Contact:  <Aor/ContactUri..............................> <Hash....> <Status> <RTT(ms)..>
{RULE}

  Contact:  4001/sip:4001@127.0.0.1:5091                   60d3445266 NonQual        -nan
  Contact:  4002/sip:4002@127.0.0.1:5093                   780103546a Avail         0.509
  Contact:  provider/sip:127.0.0.1:5070                    b0e9390783 NonQual        -nan

Objects found: 3

"""

ENDPOINTS = f"""
 Endpoint:  <Endpoint/CID.....................................>  <State.....>  <Channels.>
    I/OAuth:  <AuthId/UserName...........................................................>
        Aor:  <Aor............................................>  <MaxContact>
      Contact:  <Aor/ContactUri..........................> <Hash....> <Status> <RTT(ms)..>
  Transport:  <TransportId........>  <Type>  <cos>  <tos>  <BindAddress..................>
   Identify:  <Identify/Endpoint.........................................................>
        Match:  <criteria.........................>
    Channel:  <ChannelId......................................>  <State.....>  <Time.....>
        Exten: <DialedExten...........>  CLCID: <ConnectedLineCID.......>
{RULE}

 Endpoint:  4001/4001                                            Not in use    0 of inf
     InAuth:  4001/4001
        Aor:  4001                                               1
      Contact:  4001/sip:4001@127.0.0.1:5091               60d3445266 NonQual        -nan
  Transport:  transport-udp             udp      0      0  127.0.0.1:5060

 Endpoint:  4003                                                 Unavailable   0 of inf
     InAuth:  4003/4003
        Aor:  4003                                               1
  Transport:  transport-udp             udp      0      0  127.0.0.1:5060

 Endpoint:  provider                                             Not in use    0 of inf
    OutAuth:  provider-auth/pbxtrunk
        Aor:  provider                                           0
      Contact:  provider/sip:127.0.0.1:5070                b0e9390783 NonQual        -nan
  Transport:  transport-udp             udp      0      0  127.0.0.1:5060
   Identify:  provider/provider
        Match: 127.0.0.1:5070/32


Objects found: 3

"""

DIALPLAN = """[ Context 'internal' created by 'pbx_config' ]
  '*97' =>          1. VoiceMailMain(${CALLERID(num)}@default)    [extensions.conf:28]
                    2. Hangup()                                   [extensions.conf:29]
  '911' =>          1. NoOp(EMERGENCY call from ${CALLERID(num)}) [extensions.conf:18]
                    2. Dial(PJSIP/911@${TRUNK},60)                [extensions.conf:19]
                    3. Hangup()                                   [extensions.conf:20]
  '_4XXX' =>        1. NoOp(Internal call ${CALLERID(num)} -> ${EXTEN}) [extensions.conf:12]
                    2. Dial(PJSIP/${EXTEN},20)                    [extensions.conf:13]
                    3. VoiceMail(${EXTEN}@default,u)              [extensions.conf:14]
                    4. Hangup()                                   [extensions.conf:15]
  '_9X.' =>         1. NoOp(Outbound call ${CALLERID(num)} -> ${EXTEN:1}) [extensions.conf:23]
                    2. Dial(PJSIP/${EXTEN:1}@${TRUNK},60)         [extensions.conf:24]
                    3. Hangup()                                   [extensions.conf:25]

-= 4 extensions (12 priorities) in 1 context. =-"""

VOICEMAIL = """Context    Mbox  User                      Zone       NewMsg
default    4000  Extension 4000                            0
default    4001  Sales Team Lead           european        3
default    4005  Extension 4005                            0
3 voicemail users configured.
"""

CHANNELS = (
    "PJSIP/provider-00000001!from-provider!!1!Up!AppDial!(Outgoing Line)!95550100!!!3!2!"
    "d6b14254-b316-48a1-b1bc-11f4bb86b059!refpbx-1795699290.1\n"
    "PJSIP/4001-00000000!internal!95550100!2!Up!Dial!PJSIP/5550100@provider,60!4001!!!3!2!"
    "d6b14254-b316-48a1-b1bc-11f4bb86b059!refpbx-1795699290.0\n"
)


def test_registrations_give_name_uri_auth_status_and_expiry() -> None:
    regs = parse_registrations(REGISTRATIONS)
    assert [(r.name, r.server_uri, r.auth, r.status, r.expires_s) for r in regs] == [
        ("provider-reg", "sip:127.0.0.1:5070", "provider-auth", "Registered", 107),
        ("other_trunk-reg", "sips:127.0.0.1:5061", None, "Rejected", -29),
        ("third", "sip:127.0.0.1:5099", "third-auth", "Unregistered", None),
    ]
    assert regs[0].registered and not regs[1].registered
    assert regs[1].detail == "exp. 29s ago"


def test_registration_table_without_rows_is_empty() -> None:
    assert parse_registrations(f"\n <Registration/ServerURI..>\n{RULE}\n\nNo objects found.\n\n") == []


def test_contacts_read_rtt_and_nan_becomes_none() -> None:
    contacts = parse_contacts(CONTACTS)
    assert [(c.aor, c.uri, c.hash, c.status, c.rtt_ms) for c in contacts] == [
        ("4001", "sip:4001@127.0.0.1:5091", "60d3445266", "NonQual", None),
        ("4002", "sip:4002@127.0.0.1:5093", "780103546a", "Avail", 0.509),
        ("provider", "sip:127.0.0.1:5070", "b0e9390783", "NonQual", None),
    ]


def test_endpoints_carry_their_contacts_aors_transports_and_auths() -> None:
    eps = parse_endpoints(ENDPOINTS)
    assert [e.name for e in eps] == ["4001", "4003", "provider"]
    e4001, e4003, trunk = eps
    assert (e4001.callerid, e4001.state, e4001.channels_in_use, e4001.channel_limit) == (
        "4001",
        "Not in use",
        0,
        None,
    )
    assert e4001.aors == ("4001",) and e4001.transports == ("transport-udp",)
    assert e4001.in_auths == ("4001",) and e4001.contacts[0].uri == "sip:4001@127.0.0.1:5091"
    assert e4003.callerid is None and e4003.state == "Unavailable" and e4003.contacts == ()
    assert trunk.out_auths == ("provider-auth",) and trunk.identify_matches == ("127.0.0.1:5070/32",)


def test_endpoint_list_gives_the_names_from_either_table() -> None:
    listing = f"""
 Endpoint:  <Endpoint/CID.....................................>  <State.....>  <Channels.>
{RULE}

 Endpoint:  4000/4000                                            Unavailable   0 of inf
 Endpoint:  my-trunk_2                                           In use        2 of 4

Objects found: 2

"""
    assert parse_endpoint_list(listing) == ["4000", "my-trunk_2"]
    assert parse_endpoints(listing)[1].channel_limit == 4
    assert parse_endpoint_list(ENDPOINTS) == ["4001", "4003", "provider"]


def test_dialplan_lists_extensions_in_order_with_priorities_and_sources() -> None:
    exts = parse_dialplan(DIALPLAN)
    assert [e.exten for e in exts] == ["*97", "911", "_4XXX", "_9X."]
    e911 = exts[1]
    assert e911.context == "internal" and e911.first_priority == 1
    first = e911.priorities[0]
    assert (first.number, first.app, first.data) == (1, "NoOp", "EMERGENCY call from ${CALLERID(num)}")
    assert (first.source_file, first.source_line) == ("extensions.conf", 18)
    assert e911.priorities[1].data == "PJSIP/911@${TRUNK},60"
    assert [p.number for p in exts[2].priorities] == [1, 2, 3, 4]
    assert exts[3].priorities[0].data == "Outbound call ${CALLERID(num)} -> ${EXTEN:1}"


def test_dialplan_of_a_missing_context_is_empty() -> None:
    text = "There is no existence of 'nosuch' context\nCommand 'dialplan show nosuch' failed.\n"
    assert parse_dialplan(text) == []


def test_dialplan_reads_labels_hints_includes_and_included_contexts() -> None:
    text = """[ Context 'internal' created by 'pbx_config' ]
  '4001' =>         hint: PJSIP/4001                              [managed/extensions.conf:40]
                    1. Dial(PJSIP/4001)                           [managed/extensions.conf:41]
     [busy]         2. VoiceMail(4001@default,b)                  [managed/extensions.conf:42]
  Include =>        'other'                                       [pbx_config]

[ Included context 'other' created by 'pbx_config' ]
  '911' =>          5. Dial(PJSIP/911@trunk,60)                   [managed/extensions.conf:50]

-= 2 extensions (4 priorities) in 2 contexts. =-"""
    exts = parse_dialplan(text)
    assert [(e.context, e.exten, e.included) for e in exts] == [
        ("internal", "4001", False),
        ("other", "911", True),
    ]
    prios = exts[0].priorities
    assert prios[0].number == PRIORITY_HINT and prios[0].data == "PJSIP/4001"
    assert (prios[2].number, prios[2].label, prios[2].app) == (2, "busy", "VoiceMail")
    assert prios[1].source_file == "managed/extensions.conf"
    # 911 that lost priority 1 (notes §6): the first priority is 5, not 1.
    assert exts[1].first_priority == 5


def test_voicemail_users_read_columns_including_names_with_spaces() -> None:
    users = parse_voicemail_users(VOICEMAIL)
    assert [(u.context, u.mailbox, u.user, u.zone, u.new_messages) for u in users] == [
        ("default", "4000", "Extension 4000", "", 0),
        ("default", "4001", "Sales Team Lead", "european", 3),
        ("default", "4005", "Extension 4005", "", 0),
    ]


def test_concise_channels_split_on_bang_from_both_ends() -> None:
    chans = parse_channels_concise(CHANNELS)
    assert [(c.channel, c.context, c.exten, c.priority, c.state, c.application) for c in chans] == [
        ("PJSIP/provider-00000001", "from-provider", "", 1, "Up", "AppDial"),
        ("PJSIP/4001-00000000", "internal", "95550100", 2, "Up", "Dial"),
    ]
    assert chans[1].data == "PJSIP/5550100@provider,60" and chans[1].callerid == "4001"
    assert chans[1].duration_s == 2 and chans[1].unique_id == "refpbx-1795699290.0"


@pytest.mark.parametrize(
    "prefix",
    ["", "[2026-11-26 13:00:34.767] ", "[Nov 26 13:00:34] "],
    ids=["bare", "iso-date", "syslog-date"],
)
def test_reload_log_keeps_problems_about_managed_files_once(prefix: str) -> None:
    tid = "[123]" if prefix else ""
    lines = [
        f"{prefix}VERBOSE{tid} loader.c: Reloading module 'res_pjsip.so'",
        f"{prefix}WARNING{tid} config.c: parse error: no closing ']', line 155 of /etc/asterisk/managed/pjsip.conf",
        f"{prefix}ERROR{tid} res_sorcery_config.c: Contents of config file 'pjsip.conf' are invalid and cannot be parsed",
        f"{prefix}ERROR{tid} res_sorcery_config.c: Contents of config file 'pjsip.conf' are invalid and cannot be parsed",
        f"{prefix}NOTICE{tid} sorcery.c: Type 'system' is not reloadable, maintaining previous values",
        f"{prefix}WARNING{tid} config.c: parse error in /etc/asterisk/cdr.conf",
        f"{prefix}ERROR{tid} config_options.c: Error parsing dtmf_mode=bogus at line 144 of ",
        f"{prefix}WARNING{tid} pbx_config.c: Invalid priority/label '' at line 18 of extensions.conf",
        f"{prefix}ERROR{tid} res_pjsip/config_transport.c: Transport 'transport-udp' could not be started: "
        "Address already in use",
    ]
    problems = parse_reload_log(lines)
    assert [(p.level, p.module, p.file, p.line) for p in problems] == [
        ("WARNING", "config.c", "pjsip.conf", 155),
        ("ERROR", "res_sorcery_config.c", "pjsip.conf", None),
        ("ERROR", "config_options.c", None, 144),
        ("WARNING", "pbx_config.c", "extensions.conf", 18),
        ("ERROR", "res_pjsip/config_transport.c", None, None),
    ]
    assert str(problems[0]).startswith("pjsip.conf:155: WARNING config.c: parse error")


def test_reload_log_of_a_clean_reload_has_no_problems() -> None:
    lines = [
        "[2026-11-26 13:00:34.767] VERBOSE[1] loader.c: Reloading module 'res_pjsip.so'",
        "[2026-11-26 13:00:34.769] NOTICE[1] sorcery.c: Type 'system' is not reloadable, maintaining previous values",
        "[2026-11-26 13:00:34.770] NOTICE[1] res_pjsip/config_transport.c: Transport 'transport-udp' is not fully "
        "reloadable, not reloading: protocol, bind, TLS, TCP, ToS, or CoS options.",
    ]
    assert parse_reload_log(lines) == []


def test_reload_log_strips_terminal_colours() -> None:
    line = "\x1b[1;31mERROR\x1b[0m[55]: config_options.c: Error parsing max_contacts=abc at line 154 of "
    problems = parse_reload_log([line])
    assert len(problems) == 1 and problems[0].line == 154
