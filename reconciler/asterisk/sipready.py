"""Does the PBX answer SIP? One OPTIONS to its own transport, and a bounded wait for that.

`core waitfullybooted` is not "serves phones": at 10,000 extensions (realtime or file) Asterisk
reports fully booted and then drops REGISTERs for some seconds while MWI and qualify load every
object. Any SIP response to an OPTIONS (200, 401, 404...) shows the SIP stack takes requests again.
UDP only: the transport every rendered PBX has; nothing but the target address is contacted.
"""

from __future__ import annotations

import contextlib
import socket
import time

from reconciler.asterisk.sip import T1, SipDialog, SipTarget, parse_response
from reconciler.errors import AsteriskUnavailable

USER_AGENT = "asterisk-gitops sip-ready probe"


def answers_to(data: bytes, call_id: str) -> bool:
    """Is `data` a SIP response to our request (any status, 1xx to 6xx)?"""
    response = parse_response(data)
    return response is not None and 100 <= response.status <= 699 and response.header("call-id") == call_id


def sip_answers(host: str, port: int, timeout_s: float = 2.0) -> float | None:
    """Seconds until the first response to one OPTIONS (retransmitted as UDP does), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    start = time.monotonic()
    deadline = start + timeout_s
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        target = SipTarget("pbx", host, port, "udp", username="gitops-probe", password="")
        dialog = SipDialog(target, sock.getsockname()[:2], USER_AGENT)
        message, call_id = dialog.request("OPTIONS", []), dialog.call_id
        interval, next_send = T1, start
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
