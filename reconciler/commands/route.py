"""`reconciler route NUMBER --from EXT`: what a dial does, from the desired files alone."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import typer

from reconciler.desired.fleet import load_tree
from reconciler.desired.route import PROVIDER_PREFIX, Explanation, Ring, Step, TargetStep, explain
from reconciler.errors import ReconcilerError
from reconciler.settings import Settings

DIALLED = re.compile(r"\+?[0-9*#]{1,63}")


def parse_at(text: str) -> datetime.datetime:
    """`--at`: ISO 8601, `2026-12-02T10:30` (in the schedule's time zone) or with an offset."""
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ReconcilerError(
            f"--at {text[:64]!r} is not an ISO 8601 time",
            "e.g. --at 2026-12-02T10:30 (the schedule's own time zone) or --at 2026-12-02T10:30+01:00",
        ) from None


def _ring_line(ring: Ring) -> str:
    devices = f"{ring.devices} device(s)"
    return f"{ring.extension} {ring.name} ({devices}, {ring.seconds} s)"


def _then_line(step: Step) -> str:
    if step.action == "voicemail":
        what = f"voicemail {step.mailbox}"
    elif step.action == "hangup":
        what = "hang up"
    else:
        what = f"{step.target}"
    return f"{what} ({step.when})"


def _step_lines(index: int, step: TargetStep) -> list[str]:
    lines = [f"  {index}. {step.target}: {step.does}"]
    pad = " " * (len(str(index)) + 4)
    if step.rings:
        together = {"ringall": "together", "hunt": "in this order"}.get(step.strategy or "", "")
        how = f" ({together})" if together and len(step.rings) > 1 else ""
        lines.append(f"{pad}rings{how}:")
        lines.extend(f"{pad}  {_ring_line(ring)}" for ring in step.rings)
    for skipped in step.skipped:
        lines.append(f"{pad}skipped: {skipped.extension} {skipped.name}: {skipped.why}".rstrip())
    for option in step.options:
        lines.append(f"{pad}{option.key} → {option.target}: {option.does}")
    for then in step.then:
        lines.append(f"{pad}then: {_then_line(then)}")
    return lines


def explanation_text(result: Explanation, number: str, caller: str) -> str:
    """The text `reconciler route` prints."""
    if caller.startswith(PROVIDER_PREFIX):
        lines = [f"a call from {caller[len(PROVIDER_PREFIX) :]} to {number}: {result.summary}"]
    else:
        lines = [f"extension {caller} dials {number}: {result.summary}"]
    if result.entry:
        where = f"from-{caller[len(PROVIDER_PREFIX) :]}" if result.did else "internal"
        lines.append(f"  dialplan entry: {result.entry} (context {where})")
    if result.target:
        lines.append(f"  target:         {result.target}")
    if result.astdb:
        lines.append(f"  stores:         {result.astdb} (AstDB)")
    if result.schedule:
        s = result.schedule
        lines.append(f"  schedule:       {s.name} ({s.timezone}), local time {s.local_time}: {s.reason}")
        lines.append(f"                  open → {s.open}, closed → {s.closed}")
    if result.provider:
        registers = "registers" if result.registers else "does not register"
        lines.append(f"  provider:       {result.provider} ({result.provider_address}, {registers})")
        lines.append(
            f"  number sent:    {result.sent} (caller ID {result.caller_id}, {result.seconds} s to answer)"
        )
    if result.steps:
        lines.append("  the call goes through:")
        for i, step in enumerate(result.steps, 1):
            lines.extend(_step_lines(i, step))
    else:
        for ring in result.rings:
            lines.append(f"  rings:          {_ring_line(ring)}")
        for then in result.then:
            lines.append(f"  then:           {_then_line(then)}")
    lines.extend(f"  note: {note}" for note in result.notes)
    return "\n".join(lines)


def route(
    number: str = typer.Argument(..., help="The number dialled (or the DID, with --from provider:NAME)."),
    caller: str = typer.Option(
        ..., "--from", help=f"The extension that dials, or {PROVIDER_PREFIX}NAME for a call coming in."
    ),
    directory: Path | None = typer.Option(None, "--dir", help="Desired directory (default: desired)."),
    site: str | None = typer.Option(None, "--site", help="--dir is a fleet: explain at this site."),
    at: str | None = typer.Option(
        None,
        "--at",
        help="When (for schedules): ISO 8601, e.g. 2026-12-02T10:30 (in the schedule's time zone) or "
        "with an offset; default now.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the explanation as JSON."),
) -> None:
    """Explain what dialling NUMBER from an extension does: the dialplan entry, the route or target,
    the provider and the number sent, what rings for how long, the schedule branch, menus, queues,
    forwards and fallbacks, feature codes. Reads no Asterisk."""
    if not DIALLED.fullmatch(number):
        raise ReconcilerError(
            f"{number[:64]!r} is not a dialled number (digits, *, # and a leading + only)",
            "e.g. reconciler route 91234567890 --from 4001",
        )
    when = parse_at(at) if at is not None else None
    settings = Settings.from_env()
    loaded = load_tree(directory or settings.desired_dir, site or settings.site)
    result = explain(loaded.state, number, caller, when)
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2, ensure_ascii=False))
        return
    typer.echo(explanation_text(result, number, caller))


def register(app: typer.Typer) -> None:
    """Add `route` to the CLI."""
    app.command("route")(route)
