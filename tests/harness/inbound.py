"""Inbound calls played by SIPp: a SIPp UAC acting as a provider trunk, and a clock for schedules.

`SippTrunk()` reserves one local port for its whole life and describes a provider for the desired
state (`provider_yaml`): host 127.0.0.1, that port, no registration, so the PBX's `identify`
(`match = 127.0.0.1:<port>`, the default) takes every INVITE sent from it as that provider's and runs
it in `from-<name>` with no authentication, as a real trunk's. `trunk.call(did, steps)` then dials
a DID from that port with the steps of `tests.harness.calls` (`Pause`, `Dtmf`, `Play`), so an
inbound caller can press keys in a menu. Calls from one trunk run one after another (one port).
The PBX's OPTIONS (qualify) to the trunk are answered by SIPp (`-aa`) and do not break a call.

`noon_timezone()` names an `Etc/GMT±N` zone whose wall clock is near noon now, so a schedule span
computed from "now" in it (today's weekday, 00:00-23:59) is not crossed by midnight during a test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from tests.harness import calls, ports, sipp
from tests.harness.calls import DtmfMethod, Pause, Step

_FIRST_INVITE_END = '<label id="challenged"/>'


def noon_timezone(now: dt.datetime | None = None) -> str:
    """An IANA `Etc/GMT±N` zone in which the time `now` (default: now) is between 06:00 and 18:00."""
    utc = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    offset = 12 - utc.hour  # hours east of UTC that put the wall clock near noon
    offset = offset - 24 if offset > 14 else offset
    offset = max(-12, min(14, offset))
    # POSIX sign: Etc/GMT-3 is three hours EAST of UTC
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def _trunk_scenario(run_dir: Path, steps: Sequence[Step], dtmf: DtmfMethod) -> Path:
    """calls.py's scenario without the digest challenge: one INVITE (CSeq 2), as a trunk sends it."""
    text = (sipp.SCENARIOS / "call_steps.xml").read_text()
    start = text.index('<send retrans="500">')
    end = text.index(_FIRST_INVITE_END) + len(_FIRST_INVITE_END)
    # the challenged ACK follows the label: drop it with the first INVITE
    ack_end = text.index("</send>", end) + len("</send>")
    text = text[:start] + text[ack_end:]
    text = text.replace("      [authentication]\n", "")
    body, bye_cseq = calls._steps_xml(steps, dtmf)
    text = text.replace(calls._MARKER, body).replace("[bye_cseq]", str(bye_cseq))
    cancel, ack = calls._offsets(text)
    text = text.replace("CANCEL_OFFSET", str(cancel)).replace("ACK_OFFSET", str(ack))
    path = run_dir / "scenario.xml"
    path.write_text(text)
    return path


class TrunkCall(calls.BackgroundCall):
    """One inbound call from the trunk, running in the background; `result()` waits for it. The
    trunk's own port stays reserved: it serves every call of the module."""

    releases_local_port = False


class SippTrunk:
    """A provider trunk played by SIPp from 127.0.0.1:`port` (reserved until `close()`)."""

    def __init__(self, name: str = "sipp_trunk", caller: str = "34600111222") -> None:
        self.name = name
        self.caller = caller
        self.port = ports.reserve_port(also_free=(2,))
        self._current: TrunkCall | None = None

    def provider_yaml(self, password_ref: str, *, indent: str = "  ") -> str:
        """A `providers:` list item for this trunk (no registration; match: the default host:port)."""
        return (
            f"{indent}- name: {self.name}\n"
            f"{indent}  host: 127.0.0.1\n"
            f"{indent}  port: {self.port}\n"
            f"{indent}  transport: udp\n"
            f"{indent}  register: false\n"
            f"{indent}  username: {self.name}\n"
            f"{indent}  password: {password_ref}\n"
        )

    def start_call(
        self,
        did: str,
        pbx_port: int,
        steps: Sequence[Step] = (Pause(1.0),),
        *,
        dtmf: DtmfMethod = "rfc4733",
        media_port: int | None = None,
        hangup: Literal["caller", "pbx"] = "caller",
        timeout_s: float = 30.0,
    ) -> TrunkCall:
        """Send an INVITE for `did` from the trunk's port and run `steps` after the 200; return at once."""
        if self._current is not None and self._current.running:
            raise sipp.SippError(f"trunk {self.name} is already in a call (one port, one call at a time)")
        self._current = calls.spawn_scripted(
            TrunkCall, f"trunk-{did.lstrip('+')}", pbx_port, self.port,
            lambda run_dir, all_steps: _trunk_scenario(run_dir, all_steps, dtmf),
            steps, service=self.caller, dial=did, credentials=None, media_port=media_port,
            hangup=hangup, timeout_s=timeout_s, extra=("-aa",),
        )  # fmt: skip
        return self._current

    @contextlib.contextmanager
    def background_call(
        self, did: str, pbx_port: int, steps: Sequence[Step] = (Pause(1.0),), **kwargs: object
    ) -> Iterator[TrunkCall]:
        """`start_call` as a context manager: the SIPp is SIGKILLed on exit if still running."""
        call = self.start_call(did, pbx_port, steps, **kwargs)  # type: ignore[arg-type]
        try:
            yield call
        finally:
            if call.running:
                sipp._kill(call.process)
            call.result()

    def close(self) -> None:
        """Stop a call still running and release the trunk's port. Idempotent."""
        if self._current is not None:
            if self._current.running:
                sipp._kill(self._current.process)
            self._current.result()
            self._current = None
        ports.release_port(self.port)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
