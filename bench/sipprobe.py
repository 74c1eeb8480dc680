"""REGISTERs from other phones while applies run: time from sending one to its first answer.

A small UDP client on 127.0.0.1 (its port reserved with tests/harness/ports.py) sends an
unauthenticated REGISTER for one of several users in turn and waits for the first response (401
or 200, whichever comes); a REGISTER unanswered after `timeout_s` counts as `timeout_s`. It never
retransmits: the wait is the whole stall a phone would see behind a reload.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Sequence

from tests.harness import ports


class RegisterProbe:
    def __init__(self, pbx_port: int, users: Sequence[str], timeout_s: float = 5.0, gap_s: float = 0.02):
        self.pbx_port, self.users, self.timeout_s, self.gap_s = pbx_port, list(users), timeout_s, gap_s
        self.samples: list[tuple[bool, float]] = []  # (sent while an apply ran, seconds to answer)
        self.active = threading.Event()  # set by the caller around each apply
        self._stop = threading.Event()
        self._port = ports.reserve_port()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RegisterProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 2)
        ports.release_port(self._port)

    def _message(self, user: str, call_id: str) -> bytes:
        host = f"127.0.0.1:{self.pbx_port}"
        return (
            f"REGISTER sip:{host} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self._port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{host}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{user}@{host}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{self._port}>\r\n"
            "Expires: 60\r\nUser-Agent: bench-probe\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", self._port))
            n = 0
            while not self._stop.is_set():
                user = self.users[n % len(self.users)]
                n += 1
                call_id = f"{secrets.token_hex(8)}@bench"
                active = self.active.is_set()
                sent = time.perf_counter()
                sock.sendto(self._message(user, call_id), ("127.0.0.1", self.pbx_port))
                took = self.timeout_s
                while (left := sent + self.timeout_s - time.perf_counter()) > 0:
                    sock.settimeout(left)
                    try:
                        data = sock.recv(65535)
                    except TimeoutError:
                        break
                    if call_id.encode() in data:  # a late answer to an earlier REGISTER is skipped
                        took = time.perf_counter() - sent
                        break
                self.samples.append((active or self.active.is_set(), took))
                time.sleep(self.gap_s)

    def p99_active_s(self) -> float | None:
        during = sorted(took for active, took in self.samples if active)
        if not during:
            return None
        return during[min(len(during) - 1, int(0.99 * len(during)))]

    def count_active(self) -> int:
        return sum(1 for active, _ in self.samples if active)
