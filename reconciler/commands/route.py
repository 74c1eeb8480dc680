"""`reconciler route NUMBER --from EXT`: what a dial does, from the desired files alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from reconciler.desired.fleet import load_tree
from reconciler.desired.route import PROVIDER_PREFIX, explain
from reconciler.errors import ReconcilerError
from reconciler.settings import Settings

DIALLED = re.compile(r"\+?[0-9*#]{1,63}")


def route(
    number: str = typer.Argument(..., help="The number dialled (or the DID, with --from provider:NAME)."),
    caller: str = typer.Option(
        ..., "--from", help=f"The extension that dials, or {PROVIDER_PREFIX}NAME for a call coming in."
    ),
    directory: Path | None = typer.Option(None, "--dir", help="Desired directory (default: desired)."),
    site: str | None = typer.Option(None, "--site", help="--dir is a fleet: explain at this site."),
    as_json: bool = typer.Option(False, "--json", help="Print the explanation as JSON."),
) -> None:
    """Explain what dialling NUMBER from an extension does: the route or extension it reaches, the
    provider and the number sent, what rings and what happens after. Reads no Asterisk."""
    if not DIALLED.fullmatch(number):
        raise ReconcilerError(
            f"{number[:64]!r} is not a dialled number (digits, *, # and a leading + only)",
            "e.g. reconciler route 91234567890 --from 4001",
        )
    settings = Settings.from_env()
    loaded = load_tree(directory or settings.desired_dir, site or settings.site)
    result = explain(loaded.state, number, caller)
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    if caller.startswith(PROVIDER_PREFIX):
        lines = [f"a call from {caller[len(PROVIDER_PREFIX) :]} to {number}: {result.summary}"]
    else:
        lines = [f"extension {caller} dials {number}: {result.summary}"]
    if result.entry:
        lines.append(f"  dialplan entry: {result.entry}")
    if result.provider:
        registers = "registers" if result.registers else "does not register"
        lines.append(f"  provider:       {result.provider} ({result.provider_address}, {registers})")
        lines.append(
            f"  number sent:    {result.sent} (caller ID {result.caller_id}, {result.seconds} s to answer)"
        )
    for ring in result.rings:
        lines.append(
            f"  rings:          {ring.extension} {ring.name} ({ring.devices} device(s), {ring.seconds} s)"
        )
    for step in result.then:
        what = f"voicemail {step.mailbox}" if step.action == "voicemail" else "hang up"
        lines.append(f"  then:           {what} ({step.when})")
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    """Add `route` to the CLI."""
    app.command("route")(route)
