"""What a caller hears, counted: a UDP socket on 127.0.0.1 that receives the PBX's RTP.

Point a call's SDP at `receiver.port` (`calls.scripted_call(..., media_port=receiver.port)`) and the
PBX sends that call's audio here; a thread counts the datagrams that parse as RTP version 2 (packets,
payload bytes, payload types, first and last arrival), so a test can assert "the caller in the queue
hears music on hold": `receiver.wait_packets(50)` (50 packets of 20 ms is one second of audio).
Silence is not "no RTP": Asterisk sends RTP while it plays a prompt or music; a bridged call to a
SIPp phone that sends nothing may send nothing either. The port is reserved for the receiver's life
(the one above it, RTCP, only checked free); nothing is ever sent.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from tests.harness import ports
from tests.harness.waiting import wait_until


@dataclass
class RtpStats:
    """RTP received so far."""

    packets: int = 0
    payload_bytes: int = 0
    payload_types: Counter[int] = field(default_factory=Counter)
    first_at: float | None = None  # time.monotonic() of the first packet
    last_at: float | None = None
    source: tuple[str, int] | None = None  # where the last packet came from (the PBX's RTP port)
    not_rtp: int = 0  # datagrams that were not RTP version 2


class RtpReceiver:
    """Counts RTP packets arriving at 127.0.0.1:`port` (a context manager: binds, then closes)."""

    def __init__(self) -> None:
        self.port = ports.reserve_port(also_free=(1,))
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((ports.LOOPBACK, self.port))
        self._sock.settimeout(0.2)
        self._stats = RtpStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rtp-{self.port}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self._lock:
                stats = self._stats
                if len(data) < 12 or data[0] >> 6 != 2:
                    stats.not_rtp += 1
                    continue
                csrc = data[0] & 0x0F
                stats.packets += 1
                stats.payload_bytes += max(len(data) - 12 - 4 * csrc, 0)
                stats.payload_types[data[1] & 0x7F] += 1
                stats.first_at = stats.first_at if stats.first_at is not None else now
                stats.last_at = now
                stats.source = (source[0], source[1])

    def stats(self) -> RtpStats:
        """A copy of the counts so far."""
        with self._lock:
            s = self._stats
            return RtpStats(
                s.packets,
                s.payload_bytes,
                Counter(s.payload_types),
                s.first_at,
                s.last_at,
                s.source,
                s.not_rtp,
            )

    @property
    def packets(self) -> int:
        """RTP packets received so far."""
        return self.stats().packets

    @property
    def payload_bytes(self) -> int:
        """RTP payload bytes received so far (headers not counted)."""
        return self.stats().payload_bytes

    def reset(self) -> None:
        """Forget what was counted (e.g. before the part of the call a test is about)."""
        with self._lock:
            self._stats = RtpStats()

    def wait_packets(self, count: int, timeout_s: float = 10.0) -> int:
        """Wait until `count` packets arrived (or `timeout_s` passed); return the packets counted."""
        wait_until(lambda: self.packets >= count, timeout_s, interval_s=0.05)
        return self.packets

    def close(self) -> None:
        """Stop counting, close the socket and release the port. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        ports.release_port(self.port)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
