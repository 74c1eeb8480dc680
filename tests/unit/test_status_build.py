"""status.py turns Asterisk 22 CLI output (captured from a real PBX) into the status shape."""

from __future__ import annotations

from reconciler.asterisk import parsers
from reconciler.commands.observe import status_exit_code
from reconciler.desired.model import DesiredState
from reconciler.observe.status import (
    build_extensions,
    build_providers,
    contact_address,
    parse_contact_detail,
    summarize,
)

# Captured from the image's Asterisk 22.10.1 with the harness desired state (4001 registered by SIPp).
REGISTRATIONS = """
 <Registration/ServerURI..............................>  <Auth....................>  <Status.......>
==========================================================================================

 fake_provider-reg/sip:127.0.0.1:18520                   fake_provider-auth          """ + (
    """Registered        (exp. 3586s)

Objects found: 1
"""
)

REJECTED = REGISTRATIONS.replace("Registered        (exp. 3586s)", "Rejected          (exp. 3s ago)")

ENDPOINTS = """
 Endpoint:  <Endpoint/CID.....................................>  <State.....>  <Channels.>
==========================================================================================

 Endpoint:  4000/4000                                            Unavailable   0 of inf
     InAuth:  4000-auth/4000
        Aor:  4000                                               1

 Endpoint:  4001/4001                                            Not in use    0 of inf
     InAuth:  4001-auth/4001
        Aor:  4001                                               1
      Contact:  4001/sip:4001@127.0.0.1:18530              952ac68caa Avail         0.554

 Endpoint:  4002/4002                                            Unavailable   0 of inf
     InAuth:  4002-auth/4002
        Aor:  4002                                               1
      Contact:  4002/sip:4002@127.0.0.1:18532              12ac68caa0 Unavail        -nan

 Endpoint:  fake_provider                                        Not in use    0 of inf
    OutAuth:  fake_provider-auth/pbxtrunk
        Aor:  fake_provider                                      0
      Contact:  fake_provider/sip:127.0.0.1:18520          4db258f89f Avail         1.387
  Transport:  transport-udp             udp      0      0  127.0.0.1:18510
   Identify:  fake_provider-identify/fake_provider
        Match: 127.0.0.1:18520/32


Objects found: 4
"""

CONTACT_DETAIL = """
  Contact:  <Aor/ContactUri..............................> <Hash....> <Status> <RTT(ms)..>
==========================================================================================

  Contact:  4001/sip:4001@127.0.0.1:18530                  952ac68caa Avail         0.554

 ParameterName        : ParameterValue
 ===============================================
 authenticate_qualify : no
 call_id              : 1-31815@127.0.0.1
 endpoint             : 4001
 uri                  : sip:4001@127.0.0.1:18530
 user_agent           : sipp-test-phone
 via_addr             : 127.0.0.1
"""


def _status(registrations: str = REGISTRATIONS, last_reconcile: dict | None = None) -> dict:
    endpoints = parsers.parse_endpoints(ENDPOINTS)
    providers = build_providers(endpoints, parsers.parse_registrations(registrations), None)
    agents = {"4001/sip:4001@127.0.0.1:18530": "sipp-test-phone"}
    extensions = build_extensions(endpoints, {p["name"] for p in providers}, agents, None)
    status = {
        "asterisk": {"reachable": True, "uptime_s": 10, "error": None},
        "providers": providers,
        "extensions": extensions,
        "last_reconcile": last_reconcile,
    }
    status["summary"] = summarize(status)
    return status


def test_registered_provider_is_reported_with_its_state_and_qualify_rtt() -> None:
    (provider,) = _status()["providers"]
    assert provider["name"] == "fake_provider"
    assert provider["registered"] is True
    assert provider["state"] == "Registered"
    assert provider["detail"] == "exp. 3586s"
    assert provider["rtt_ms"] == 1.387
    assert provider["hint"] is None


def test_extension_with_an_available_contact_is_online_with_address_agent_and_rtt() -> None:
    by_number = {e["number"]: e for e in _status()["extensions"]}
    ext = by_number["4001"]
    assert ext["online"] is True and ext["state"] == "online"
    assert ext["contacts"][0]["address"] == "127.0.0.1:18530"
    assert ext["contacts"][0]["user_agent"] == "sipp-test-phone"
    assert ext["contacts"][0]["rtt_ms"] == 0.554


def test_extension_without_contact_is_offline_and_one_failing_qualify_is_unreachable() -> None:
    by_number = {e["number"]: e for e in _status()["extensions"]}
    assert by_number["4000"]["state"] == "offline" and by_number["4000"]["online"] is False
    assert by_number["4002"]["state"] == "unreachable" and by_number["4002"]["online"] is False


def test_providers_are_not_listed_as_extensions() -> None:
    numbers = [e["number"] for e in _status()["extensions"]]
    assert numbers == ["4000", "4001", "4002"]


def test_desired_state_decides_which_endpoints_are_providers_and_names_extensions() -> None:
    state = DesiredState.model_validate(
        {
            "providers": [
                {
                    "name": "fake_provider",
                    "host": "127.0.0.1",
                    "username": "u",
                    "password": "${P}",
                    "register": True,
                }
            ],
            "extensions": [{"number": "4001", "name": "Sales", "password": "${E}"}],
        }
    )
    endpoints = parsers.parse_endpoints(ENDPOINTS)
    providers = build_providers(endpoints, parsers.parse_registrations(REGISTRATIONS), state)
    extensions = build_extensions(endpoints, {"fake_provider"}, {}, state)
    assert [p["name"] for p in providers] == ["fake_provider"]
    assert {e["number"]: e["name"] for e in extensions}["4001"] == "Sales"


def test_rejected_registration_is_a_problem_that_points_at_check_provider() -> None:
    status = _status(REJECTED)
    (provider,) = status["providers"]
    assert provider["registered"] is False
    assert provider["expires_s"] == -3
    assert "reconciler check-provider fake_provider" in provider["hint"]
    assert status["summary"]["healthy"] is False
    assert status_exit_code(status) == 1


def test_failed_last_reconcile_makes_status_unhealthy() -> None:
    status = _status(last_reconcile={"result": "failed", "reason": "Asterisk refused pjsip.conf"})
    assert status["summary"]["problems"] == ["last reconcile failed: Asterisk refused pjsip.conf"]
    assert status_exit_code(status) == 1


def test_healthy_status_exits_zero_and_counts_online_extensions() -> None:
    status = _status(last_reconcile={"result": "applied"})
    assert status_exit_code(status) == 0
    assert status["summary"]["extensions_online"] == 1
    assert status["summary"]["providers_registered"] == 1


def test_unreachable_asterisk_exits_three() -> None:
    status = {"asterisk": {"reachable": False, "error": "down"}, "providers": [], "extensions": []}
    status["summary"] = summarize(status)
    assert status_exit_code(status) == 3


def test_contact_detail_gives_the_user_agent() -> None:
    assert parse_contact_detail(CONTACT_DETAIL)["user_agent"] == "sipp-test-phone"


def test_contact_address_is_host_and_port_of_the_uri() -> None:
    assert contact_address("sip:4001@127.0.0.1:5091;transport=udp") == "127.0.0.1:5091"
    assert contact_address("sip:[::1]:5060") == "[::1]:5060"
    assert contact_address("sip:127.0.0.1:5070") == "127.0.0.1:5070"
