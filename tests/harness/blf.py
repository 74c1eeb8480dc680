"""Busy-lamp field: a phone SUBSCRIBEd to another extension's state, and the NOTIFYs it gets.

`watching(ext, password, target, port)` runs scenario subscribe.xml in the background: a SUBSCRIBE
from `ext` (digest auth) for `target`, with `Event: dialog` / `Accept: application/dialog-info+xml`
(or `event="presence"`: `application/pidf+xml`). Every NOTIFY is answered 200 and recorded as a
`Notify` (its Subscription-State, the dialog-info `<state>` - Asterisk 22 sends `terminated` for
idle, `early` while ringing, `confirmed` in a call - and the PIDF `<basic>`/`<note>`: `open` with
"Ready", "Ringing", "On the phone"). The PBX needs a hint for the target (a pattern hint
`exten => _4XXX,hint,PJSIP/${EXTEN}` in the watcher's subscribe context works) and the modules
res_pjsip_pubsub, res_pjsip_outbound_publish (res_pjsip_exten_state needs its symbols),
res_pjsip_exten_state and the body generators (dialog_info, pidf). The subscription is not refreshed
(`expires`, default 120 s, bounds a test); on exit SIPp is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.harness import ports, sipp
from tests.harness.waiting import wait_until

Event = Literal["dialog", "presence"]
ACCEPT: dict[str, str] = {"dialog": "application/dialog-info+xml", "presence": "application/pidf+xml"}


@dataclass(frozen=True)
class Notify:
    """One NOTIFY the watcher received (None: the body had no such element)."""

    subscription_state: str  # active, pending, terminated
    dialog_state: str | None  # dialog-info: terminated (idle), early (ringing), confirmed (in a call)
    basic: str | None  # PIDF: open / closed
    note: str | None  # PIDF: Ready, Ringing, On the phone, Unavailable, ...

    @classmethod
    def parse(cls, line: str) -> Notify:
        """One `notify sub|dialog|basic|note` line of the events file."""
        fields = [*line.split(" ", 1)[1].split("|"), "", "", "", ""][:4]
        sub, dialog, basic, note = (f.strip() for f in fields)
        return cls(sub, dialog or None, basic or None, note or None)


class Watcher:
    """A running subscription of `ext` to `target`: what the PBX has NOTIFYed so far."""

    def __init__(self, ext: str, target: str, events: Path, process: subprocess.Popen[bytes]) -> None:
        self.ext = ext
        self.target = target
        self.events_file = events
        self.process = process

    def _lines(self) -> list[str]:
        try:
            return self.events_file.read_text().splitlines()
        except FileNotFoundError:
            return []

    @property
    def refused(self) -> bool:
        """The PBX refused the SUBSCRIBE (403/404/489, or a second 401)."""
        return "refused" in self._lines()

    def notifies(self) -> list[Notify]:
        """Every NOTIFY received, in order (the first is the state at subscription time)."""
        return [Notify.parse(line) for line in self._lines() if line.startswith("notify ")]

    def dialog_states(self) -> list[str | None]:
        """The dialog-info `<state>` of each NOTIFY, in order."""
        return [n.dialog_state for n in self.notifies()]

    def notes(self) -> list[str | None]:
        """The PIDF `<note>` of each NOTIFY, in order."""
        return [n.note for n in self.notifies()]

    def wait_for(self, predicate: Callable[[list[Notify]], bool], timeout_s: float = 10.0) -> list[Notify]:
        """Wait until `predicate(notifies)` holds (or `timeout_s`); return the NOTIFYs seen so far."""
        wait_until(lambda: predicate(self.notifies()), timeout_s, interval_s=0.05)
        return self.notifies()

    def wait_state(self, state: str, *, after: int = 0, timeout_s: float = 10.0) -> bool:
        """Wait for a NOTIFY after the first `after` ones whose dialog state (or PIDF note) is `state`."""
        seen = self.wait_for(lambda ns: any(state in (n.dialog_state, n.note) for n in ns[after:]), timeout_s)
        return any(state in (n.dialog_state, n.note) for n in seen[after:])

    @property
    def alive(self) -> bool:
        """The subscribing SIPp is still running."""
        return self.process.poll() is None


@contextlib.contextmanager
def watching(
    ext: str,
    password: str,
    target: str,
    pbx_port: int,
    *,
    event: Event = "dialog",
    expires: int = 120,
    max_life_s: float = 180.0,
    first_notify_s: float = 5.0,
) -> Iterator[Watcher]:
    """Subscribe `ext` to `target`'s state; yield once the first NOTIFY (the current state) came.

    Raises SippError when the PBX refuses the subscription or sends no NOTIFY in `first_notify_s`.
    """
    port = ports.reserve_port()
    media = ports.reserve_port(also_free=(2,))
    run_dir = sipp._run_dir(f"subscribe-{ext}-{target}-{event}")
    events = run_dir / "events.log"
    events.touch()
    argv = sipp._argv(
        "subscribe.xml", pbx_port, port, media, run_dir,
        service=ext,
        keys={
            "target": target, "event": event, "accept": ACCEPT[event],
            "expires": str(expires), "events": str(events),
        },
        credentials=(ext, password), timeout_s=max_life_s,
    )  # fmt: skip
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = sipp._spawn(argv, run_dir)
        watcher = Watcher(ext, target, events, proc)
        watcher.wait_for(lambda ns: bool(ns) or watcher.refused or not watcher.alive, first_notify_s)
        if not watcher.notifies():
            reason = "refused" if watcher.refused else "no NOTIFY"
            raise sipp.SippError(f"subscription {ext} -> {target} ({event}): {reason}; see {run_dir}")
        yield watcher
    finally:
        if proc is not None:
            sipp._kill(proc)
        ports.release_port(port)
        ports.release_port(media)
