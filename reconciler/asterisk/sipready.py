"""Does the PBX answer SIP? One OPTIONS to its own transport, and a bounded wait for that.

`core waitfullybooted` is not "serves phones": at 10,000 extensions (realtime or file) Asterisk
reports fully booted and then drops REGISTERs for some seconds while MWI and qualify load every
object. Any SIP response to an OPTIONS (200, 401, 404...) shows the SIP stack takes requests again.
UDP only: the transport every rendered PBX has; nothing but the target address is contacted.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import time

from reconciler.errors import AsteriskUnavailable

T1_S = 0.5  # RFC 3261 Timer T1: the first retransmission interval
_STATUS_LINE = re.compile(rb"^SIP/2\.0 [1-6]\d\d ")
_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)\s*:\s*(\S+)\s*$")


def options_request(host: str, port: int, local: tuple[str, int], call_id: str) -> bytes:
    """An out-of-dialog OPTIONS to sip:host:port from this socket's address."""
    uri_host = f"[{host}]" if ":" in host else host
    lhost, lport = local
    lines = [
        f"OPTIONS sip:{uri_host}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: <sip:gitops-probe@{uri_host}>;tag={secrets.token_hex(6)}",
        f"To: <sip:{uri_host}:{port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "User-Agent: asterisk-gitops sip-ready probe",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answers_to(data: bytes, call_id: str) -> bool:
    """Is `data` a SIP response to our request (any status)?"""
    if not _STATUS_LINE.match(data):
        return False
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _CALL_ID.search(head)
    return bool(match and match[1].decode("utf-8", "replace") == call_id)


def sip_answers(host: str, port: int, timeout_s: float = 2.0) -> float | None:
    """Seconds until the first response to one OPTIONS (retransmitted as UDP does), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    start = time.monotonic()
    deadline = start + timeout_s
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        call_id = secrets.token_hex(12) + "@asterisk-gitops"
        message = options_request(host, port, sock.getsockname()[:2], call_id)
        interval, next_send = T1_S, start
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                # ICMP from an earlier send (nothing listens yet) surfaces here: keep trying
                with contextlib.suppress(ConnectionRefusedError):
                    sock.send(message)
                next_send, interval = now + interval, min(interval * 2, 4.0)
            sock.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()))
            try:
                if answers_to(sock.recv(65535), call_id):
                    return time.monotonic() - start
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    return None


def wait_sip_ready(host: str, port: int, timeout_s: float) -> float:
    """Wait until the PBX answers SIP on host:port/udp; return the seconds waited.

    For the apply's restart wait, after `core waitfullybooted`. Raises AsteriskUnavailable when no
    answer came within `timeout_s`."""
    start = time.monotonic()
    deadline = start + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if sip_answers(host, port, min(left, 2.0)) is not None:
            return time.monotonic() - start
    raise AsteriskUnavailable(
        f"the PBX did not answer SIP on {host}:{port}/udp within {timeout_s:g} s",
        "it may still be loading its endpoints (large configs take ~30 s after a restart); "
        "if it persists, check `pjsip show transports` and the Asterisk log for a transport error",
    )
