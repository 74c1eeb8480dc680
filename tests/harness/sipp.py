"""SIPp as real SIP phones against a PBX on 127.0.0.1.

Every SIPp run has its own reserved local port (and media port), a global `-timeout` with
`-timeout_error`, and a hard wall-clock bound after which it is SIGKILLed (SIPp as a UAS was seen
ignoring SIGTERM and its own timeout). Every process started here is tracked and `kill_all()` SIGKILLs
the ones still alive; fixtures call it in `finally`.

Results come from SIPp's message trace (`-trace_msg`): the status codes received, in order, so a test
can assert "200" or "401/403" exactly, not only "SIPp failed".
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import ports
from tests.harness.waiting import wait_until

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
SCENARIOS = Path(__file__).parent / "scenarios"
LOOPBACK = ports.LOOPBACK

_running: dict[int, subprocess.Popen[bytes]] = {}
_workdir: Path | None = None
_counter = itertools.count(1)


class SippError(RuntimeError):
    """SIPp could not be started or did not reach the state the harness needs."""


def set_workdir(path: Path) -> None:
    """Keep SIPp's message traces and output under `path` (e.g. the test artifacts dir)."""
    global _workdir
    path.mkdir(parents=True, exist_ok=True)
    _workdir = path


def _run_dir(label: str) -> Path:
    base = _workdir or Path(tempfile.mkdtemp(prefix="sipp-"))
    run_dir = base / f"{next(_counter):03d}-{label}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


@dataclass(frozen=True)
class SipMessage:
    """One SIP message from SIPp's trace."""

    direction: str  # "sent" or "received"
    first_line: str
    text: str

    @property
    def status(self) -> int | None:
        """Status code of a response, None for a request."""
        match = re.match(r"SIP/2\.0 (\d{3})", self.first_line)
        return int(match.group(1)) if match else None

    @property
    def method(self) -> str | None:
        """Method of a request (or, for a response, of the CSeq it answers)."""
        if self.status is None:
            return self.first_line.split(" ", 1)[0]
        match = re.search(r"^CSeq:\s*\d+\s+(\w+)", self.text, re.MULTILINE | re.IGNORECASE)
        return match.group(1) if match else None


def parse_trace(text: str) -> list[SipMessage]:
    """SIP messages of a SIPp `-trace_msg` file, in order."""
    messages: list[SipMessage] = []
    for block in re.split(r"^-{10,}.*$", text, flags=re.MULTILINE):
        header = re.search(r"^\s*\w+ message (sent|received)\b.*$", block, re.MULTILINE)
        if not header:
            continue
        body = block[header.end() :].strip("\n")
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        if lines:
            messages.append(SipMessage(header.group(1), lines[0], body))
    return messages


@dataclass(frozen=True)
class SippResult:
    """What one SIPp run did: exit status and every SIP message it exchanged."""

    returncode: int
    messages: list[SipMessage] = field(repr=False)
    run_dir: Path
    local_port: int
    killed: bool = False

    @property
    def ok(self) -> bool:
        """SIPp exited 0: every step of the scenario happened as written."""
        return self.returncode == 0 and not self.killed

    @property
    def statuses(self) -> list[int]:
        """Status codes of all responses received, in order (retransmissions included)."""
        return [m.status for m in self.messages if m.direction == "received" and m.status is not None]

    def final_statuses(self, method: str) -> list[int]:
        """Final (>= 200) status codes received for requests of `method`, in order."""
        return [
            m.status
            for m in self.messages
            if m.direction == "received" and m.status is not None and m.status >= 200 and m.method == method
        ]

    def final_status(self, method: str | None = None) -> int | None:
        """The last final status received (for `method`, when given); None when none came."""
        finals = self.final_statuses(method) if method else [s for s in self.statuses if s >= 200]
        return finals[-1] if finals else None

    @property
    def answered(self) -> bool:
        """A 200 OK to an INVITE was received."""
        return 200 in self.final_statuses("INVITE")

    def requests_received(self, method: str) -> int:
        """How many requests of `method` came from the other side."""
        return sum(
            1 for m in self.messages if m.direction == "received" and m.status is None and m.method == method
        )

    def describe(self) -> str:
        """One line for assertion messages (no credentials: only status codes and the trace path)."""
        return (
            f"sipp rc={self.returncode}{' (killed)' if self.killed else ''}, "
            f"responses={self.statuses}, trace={self.run_dir}"
        )


def _spawn(argv: list[str], run_dir: Path) -> subprocess.Popen[bytes]:
    out = (run_dir / "sipp.out").open("wb")
    try:
        proc = subprocess.Popen(
            argv,
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()
    _running[proc.pid] = proc
    return proc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL one SIPp we started (SIGTERM is not reliably honoured) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    _running.pop(proc.pid, None)


def kill_all() -> None:
    """SIGKILL every SIPp process this harness started that is still running."""
    for proc in list(_running.values()):
        _kill(proc)


def _argv(
    scenario: str,
    pbx_port: int,
    local_port: int,
    media_port: int,
    run_dir: Path,
    *,
    service: str,
    keys: dict[str, str],
    credentials: tuple[str, str] | None,
    timeout_s: float,
    calls: int | None = 1,
    extra: tuple[str, ...] = (),
) -> list[str]:
    argv = [
        SIPP,
        f"{LOOPBACK}:{pbx_port}",
        "-sf", str(SCENARIOS / scenario),
        "-i", LOOPBACK,
        "-bind_local",
        "-p", str(local_port),
        "-mp", str(media_port),
        "-t", "u1",
        "-s", service,
        "-nostdin",
        "-trace_msg", "-message_file", str(run_dir / "messages.log"),
        "-trace_err", "-error_file", str(run_dir / "errors.log"),
        "-timeout", f"{int(timeout_s)}s", "-timeout_error",
        "-max_retrans", "4",
    ]  # fmt: skip
    if calls is not None:
        argv += ["-m", str(calls), "-l", "1"]
    if credentials is not None:
        argv += ["-au", credentials[0], "-ap", credentials[1]]
    for key, value in keys.items():
        argv += ["-key", key, value]
    return argv + list(extra)


def run(
    scenario: str,
    pbx_port: int,
    *,
    service: str,
    keys: dict[str, str] | None = None,
    credentials: tuple[str, str] | None = None,
    timeout_s: float = 15.0,
    local_port: int | None = None,
    extra: tuple[str, ...] = (),
) -> SippResult:
    """Run one SIPp UAC scenario to completion (bounded by `timeout_s`) and return its result."""
    own_port = local_port is None
    port = ports.reserve_port() if local_port is None else local_port
    media = ports.reserve_port(also_free=(2,))
    run_dir = _run_dir(f"{Path(scenario).stem}-{service}")
    argv = _argv(
        scenario, pbx_port, port, media, run_dir,
        service=service, keys=keys or {}, credentials=credentials, timeout_s=timeout_s, extra=extra,
    )  # fmt: skip
    proc = _spawn(argv, run_dir)
    killed = False
    try:
        try:
            proc.wait(timeout=timeout_s + 5)
        except subprocess.TimeoutExpired:
            killed = True
    finally:
        _kill(proc)
        if own_port:
            ports.release_port(port)
        ports.release_port(media)
    trace = run_dir / "messages.log"
    messages = parse_trace(trace.read_text(errors="replace")) if trace.exists() else []
    return SippResult(proc.returncode if proc.returncode is not None else -9, messages, run_dir, port, killed)


def register(
    ext: str,
    password: str,
    pbx_port: int,
    *,
    expires: int = 120,
    local_port: int | None = None,
    timeout_s: float = 15.0,
) -> SippResult:
    """REGISTER `ext` with digest auth. `result.final_status("REGISTER")` is 200 when accepted."""
    return run(
        "register.xml", pbx_port, service=ext, keys={"expires": str(expires)},
        credentials=(ext, password), timeout_s=timeout_s, local_port=local_port,
    )  # fmt: skip


def unregister(
    ext: str, password: str, pbx_port: int, *, local_port: int | None = None, timeout_s: float = 10.0
) -> SippResult:
    """REGISTER with `Expires: 0` for the contact at `local_port` (removes it from the PBX)."""
    return register(ext, password, pbx_port, expires=0, local_port=local_port, timeout_s=timeout_s)


def call(
    ext: str,
    password: str,
    dial: str,
    pbx_port: int,
    *,
    hold_s: float = 1.0,
    timeout_s: float | None = None,
    rtp_echo: bool = False,
) -> SippResult:
    """Call `dial` from `ext` (INVITE with digest auth), hold `hold_s` after the answer, then BYE.

    `result.ok` means: answered with 200, held, our BYE got its 200. `result.final_status("INVITE")`
    is the answer code (e.g. 404, 486) when the call was refused.
    """
    bound = timeout_s if timeout_s is not None else hold_s + 15
    return run(
        "call.xml", pbx_port, service=ext,
        keys={"dial": dial}, credentials=(ext, password), timeout_s=bound,
        extra=("-d", str(int(hold_s * 1000)), *(("-rtp_echo",) if rtp_echo else ())),
    )  # fmt: skip


def invite_without_auth(
    dial: str, pbx_port: int, *, user: str = "hacker", timeout_s: float = 15.0
) -> SippResult:
    """An unknown caller `user` sends one INVITE for `dial` with no credentials.

    `result.ok` means it was refused; `result.final_status("INVITE")` says how (401, 403, 404, …).
    """
    return run("invite_noauth.xml", pbx_port, service=user, keys={"dial": dial}, timeout_s=timeout_s)


class AnsweringPhone:
    """A registered SIPp UAS for one extension. Tells which calls IT answered."""

    def __init__(self, ext: str, local_port: int, events: Path, registration: SippResult) -> None:
        self.ext = ext
        self.local_port = local_port
        self.events_file = events
        self.registration = registration
        self.process: subprocess.Popen[bytes] | None = None

    def _events(self, kind: str) -> list[str]:
        try:
            lines = self.events_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [line.split(" ", 1)[1] for line in lines if line.startswith(f"{kind} ")]

    def answered_calls(self) -> list[str]:
        """Call-IDs of the INVITEs this phone answered (200 sent and ACK received)."""
        return self._events("answered")

    def hung_up_calls(self) -> list[str]:
        """Call-IDs whose BYE this phone received."""
        return self._events("bye")

    def wait_answered(self, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until this phone answered at least `count` calls."""
        return wait_until(lambda: len(self.answered_calls()) >= count, timeout_s, interval_s=0.1)

    @property
    def alive(self) -> bool:
        """The UAS process is still running."""
        return self.process is not None and self.process.poll() is None


@contextlib.contextmanager
def answering_phone(
    ext: str,
    password: str,
    pbx_port: int,
    *,
    expires: int = 300,
    max_life_s: float = 300.0,
    scenario: str = "answer.xml",
) -> Iterator[AnsweringPhone]:
    """Register `ext` from a reserved local port, then answer calls there until the block ends.

    The REGISTER (digest auth) runs first as its own SIPp; then a UAS SIPp listens on the SAME
    port (the contact the PBX now has). The PBX's MWI NOTIFY and OPTIONS are answered 200 and are
    not counted as calls. On exit the UAS is SIGKILLed and the contact unregistered.
    `scenario`: the UAS scenario (`calls.ringing_phone` passes ring.xml: a phone that only rings).
    Raises SippError when the registration is refused.
    """
    port = ports.reserve_port()
    media = ports.reserve_port(also_free=(2,))
    run_dir = _run_dir(f"answer-{ext}")
    events = run_dir / "events.log"
    events.touch()
    phone: AnsweringPhone | None = None
    try:
        registration = register(ext, password, pbx_port, expires=expires, local_port=port)
        if registration.final_status("REGISTER") != 200:
            raise SippError(f"answering phone {ext} could not register: {registration.describe()}")
        phone = AnsweringPhone(ext, port, events, registration)
        argv = _argv(
            scenario, pbx_port, port, media, run_dir,
            service=ext, keys={"events": str(events)}, credentials=None,
            timeout_s=max_life_s, calls=None, extra=("-aa",),
        )  # fmt: skip
        phone.process = _spawn(argv, run_dir)
        # ready when it holds the port (a bind test on it then fails)
        deadline = time.monotonic() + 5
        while ports.port_is_free(port):
            if phone.process.poll() is not None or time.monotonic() >= deadline:
                raise SippError(f"answering phone {ext} did not start; see {run_dir}/sipp.out")
            time.sleep(0.05)
        yield phone
    finally:
        if phone is not None and phone.process is not None:
            _kill(phone.process)
            with contextlib.suppress(Exception):
                unregister(ext, password, pbx_port, local_port=port, timeout_s=5)
        ports.release_port(port)
        ports.release_port(media)
