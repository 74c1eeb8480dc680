"""The check-provider SIP client: digest answers, response parsing, and steps against closed ports."""

from __future__ import annotations

import socket

from reconciler.asterisk.sip import SipTarget, digest_authorization, parse_challenge, parse_response
from reconciler.observe.sipcheck import Verdict, all_passed, check_dns, run_checks


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _target(port: int, transport: str = "udp", host: str = "127.0.0.1") -> SipTarget:
    return SipTarget("pbx_provider", host, port, transport, "pbxtrunk", "x", "PBX_PROVIDER_PASSWORD")


def test_digest_answer_matches_the_rfc_2617_example() -> None:
    challenge = {
        "realm": "testrealm@host.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "qop": "auth,auth-int",
    }
    header = digest_authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", nc=1, cnonce="0a4f113b"
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert "nc=00000001" in header and "qop=auth" in header


def test_digest_without_qop_uses_the_rfc_2069_form() -> None:
    header = digest_authorization({"realm": "asterisk", "nonce": "abc"}, "REGISTER", "sip:h", "u", "p")
    assert "qop" not in header and "cnonce" not in header


def test_challenge_parameters_are_parsed_quoted_or_not() -> None:
    parsed = parse_challenge(
        'Digest realm="asterisk",nonce="1234/abcd",opaque="x", algorithm=MD5, qop="auth"'
    )
    assert parsed == {
        "scheme": "digest",
        "realm": "asterisk",
        "nonce": "1234/abcd",
        "opaque": "x",
        "algorithm": "MD5",
        "qop": "auth",
    }


def test_response_status_line_and_compact_headers_are_parsed() -> None:
    data = b"SIP/2.0 401 Unauthorized\r\ni: abc@h\r\nCSeq: 2 REGISTER\r\nWWW-Authenticate: Digest x=1\r\n\r\n"
    response = parse_response(data)
    assert response is not None
    assert (response.status, response.reason) == (401, "Unauthorized")
    assert response.header("call-id") == "abc@h"
    assert response.header("WWW-Authenticate") == "Digest x=1"
    assert parse_response(b"OPTIONS sip:x SIP/2.0\r\n\r\n") is None


def test_ip_literal_needs_no_dns_lookup() -> None:
    step, address = check_dns(_target(5060))
    assert step.verdict is Verdict.PASS and "no lookup needed" in step.detail
    assert address == ("127.0.0.1", 5060)


def test_localhost_resolves_through_the_hosts_file() -> None:
    step, address = check_dns(_target(5060, host="localhost"))
    assert step.verdict is Verdict.PASS
    assert address is not None


def test_closed_tcp_port_fails_at_the_connect_step() -> None:
    steps = run_checks(_target(_free_port(socket.SOCK_STREAM), "tcp"), timeout=1)
    connect = next(s for s in steps if s.name == "connect")
    assert connect.verdict is Verdict.FAIL and "refused" in connect.detail
    assert "port" in (connect.fix or "")
    assert [s.verdict for s in steps if s.name in ("OPTIONS", "REGISTER")] == [Verdict.SKIP, Verdict.SKIP]
    assert not all_passed(steps)


def test_closed_udp_port_fails_at_the_connect_step() -> None:
    steps = run_checks(_target(_free_port(socket.SOCK_DGRAM), "udp"), timeout=2)
    connect = next(s for s in steps if s.name == "connect")
    assert connect.verdict is Verdict.FAIL
    assert "nothing listens" in connect.detail or "no SIP answer" in connect.detail
    assert not all_passed(steps)


def test_tls_to_a_port_that_is_closed_fails_at_the_connect_step() -> None:
    steps = run_checks(_target(_free_port(socket.SOCK_STREAM), "tls"), timeout=1)
    assert next(s for s in steps if s.name == "connect").verdict is Verdict.FAIL
