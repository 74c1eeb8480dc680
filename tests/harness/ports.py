"""Free ports on 127.0.0.1 for test PBXs, fake providers and SIPp phones.

Several helpers (and several pytest sessions) run Asterisks on this machine at once, all with host
networking, and two Asterisks on one port fail silently. So a port is only handed out when

* a UDP and a TCP bind on 127.0.0.1 both succeed right now, and
* no other process of ours holds it: each handed-out port or RTP block is reserved with an
  exclusive `flock` on a file in a shared lock directory, held until released or until the process
  dies (the kernel drops the lock then, so a crashed run never leaks a reservation).

After a container starts, `socket_pids()` lets the caller prove the port is really bound by *that*
container's Asterisk (see `containers.AsteriskContainer.verify_owns_sip_port`).
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

LOOPBACK = "127.0.0.1"
# SIP ports and SIPp ports: above the helpers' manual blocks and the RTP ranges below. This is
# inside the kernel's ephemeral range, so the bind test and the post-start check still matter.
# Both ranges can be narrowed by the environment (`TEST_PORT_RANGE=17000-17999`) to stay inside a
# block assigned for manual experiments.


def _range_from_env(name: str, default: tuple[int, int]) -> tuple[int, int]:
    value = os.environ.get(name)
    if not value:
        return default
    low, _, high = value.partition("-")
    return int(low), int(high)


PORT_RANGE = _range_from_env("TEST_PORT_RANGE", (40000, 49999))
# RTP ranges handed to containers: blocks of RTP_BLOCK ports inside this range.
RTP_RANGE = _range_from_env("TEST_RTP_RANGE", (20000, 29999))
RTP_BLOCK = int(os.environ.get("TEST_RTP_BLOCK", "200"))

_LOCK_DIR = Path(tempfile.gettempdir()) / "asterisk-gitops-test-ports"
_held: dict[str, int] = {}  # lock name -> open fd holding the flock


class NoFreePort(RuntimeError):
    """No free port (or RTP block) was found after the allowed attempts."""


def _can_bind(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def port_is_free(port: int) -> bool:
    """True when both a UDP and a TCP socket can bind `port` on 127.0.0.1 right now."""
    return _can_bind(port, socket.SOCK_DGRAM) and _can_bind(port, socket.SOCK_STREAM)


def _bound_udp_ports() -> set[int]:
    """UDP ports bound on any address of this network namespace (the host: containers use host net)."""
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local = line.split()[1]
            ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _lock(name: str) -> bool:
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(_LOCK_DIR / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held[name] = fd
    return True


def _unlock(name: str) -> None:
    fd = _held.pop(name, None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def reserve_port(*, attempts: int = 200, also_free: tuple[int, ...] = ()) -> int:
    """Reserve a port that is free for UDP and TCP on 127.0.0.1 and held by no other test process.

    `also_free` are offsets that must be free as well (SIPp binds its media port + 2 for video).
    The reservation lasts until `release_port(port)` or the end of this process.
    """
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randint(*PORT_RANGE)
        if not all(port_is_free(port + offset) for offset in (0, *also_free)):
            continue
        if _lock(f"port-{port}"):
            return port
    raise NoFreePort(f"no free port in {PORT_RANGE} after {attempts} attempts")


def release_port(port: int) -> None:
    """Give a reserved port back (no-op when it was not reserved here)."""
    _unlock(f"port-{port}")


def reserve_rtp_range(*, size: int = RTP_BLOCK, attempts: int = 100) -> tuple[int, int]:
    """Reserve an RTP port range `(start, end)` that no socket uses and no other test process holds."""
    blocks = list(range(RTP_RANGE[0], RTP_RANGE[1] - size + 2, size))
    random.SystemRandom().shuffle(blocks)
    for start in blocks[:attempts]:
        end = start + size - 1
        if any(start <= port <= end for port in _bound_udp_ports()):
            continue
        if _lock(f"rtp-{start}-{size}"):
            return start, end
    raise NoFreePort(f"no free RTP block of {size} ports in {RTP_RANGE}")


def release_rtp_range(rtp_range: tuple[int, int]) -> None:
    """Give a reserved RTP range back."""
    start, end = rtp_range
    _unlock(f"rtp-{start}-{end - start + 1}")


def socket_pids(port: int, proto: str = "udp") -> set[int] | None:
    """Host PIDs of the processes listening on 127.0.0.1:`port`, by the host's `ss -p`.

    Containers use host networking, so the host's `ss` sees their sockets and (as root) names the
    owning process by its host PID; compare with `docker top`. None when that cannot be known
    (no `ss`, or not root, so no process names).
    """
    ss = shutil.which("ss")
    if ss is None or os.geteuid() != 0:
        return None
    flag = "-lunpH" if proto == "udp" else "-ltnpH"
    out = subprocess.run([ss, flag, f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}
