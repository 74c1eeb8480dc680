"""`reconciler calls`: the call records Asterisk wrote (CDR), newest first."""

from __future__ import annotations

import json
import os

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconciler.errors import EXIT_OK
from reconciler.settings import Settings

# A command line that cannot be run as given (as click's own usage errors).
EXIT_USAGE = 2
DISPOSITION_STYLE = {"ANSWERED": "green", "NO ANSWER": "yellow", "BUSY": "yellow"}


def calls(
    since: str | None = typer.Option(
        None,
        "--since",
        help="Only calls since then: a duration back from now (30m, 1h, 2d, 1w) or an ISO 8601 "
        "time (2026-12-02T09:00; UTC unless it has an offset).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the calls as a JSON list."),
    container: str | None = typer.Option(None, "--container", help="Asterisk container name."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="At most this many calls (newest)."),
    control: str | None = typer.Option(
        None,
        "--control",
        help="docker (exec in --container; default) or local (beside Asterisk: the sidecar). "
        "Default: $RECONCILER_CONTROL, else docker.",
    ),
) -> None:
    """The calls Asterisk recorded, newest first: when, from, dialled, what the call went to
    (target), the provider of a call out, how long and how it ended. Exit 3 when Asterisk cannot
    be reached."""
    from reconciler.asterisk.client import client_for
    from reconciler.asterisk.executor import CONTROL_ENV, CONTROL_MODES
    from reconciler.observe.calls import (
        NO_CALLS_NOTE,
        TABLE_COLUMNS,
        SinceError,
        parse_since,
        read_calls,
        sql_time,
        table_rows,
    )

    err = Console(stderr=True, highlight=False)
    try:
        since_at = parse_since(since) if since is not None else None
    except SinceError as exc:
        err.print("error: " + str(exc), style="bold red", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    mode = control or os.environ.get(CONTROL_ENV) or "docker"
    if mode not in CONTROL_MODES:
        err.print(
            f"error: --control {mode!r} is not {' or '.join(CONTROL_MODES)}",
            style="bold red",
            markup=False,
        )
        raise typer.Exit(EXIT_USAGE)

    settings = Settings.from_env(container=container)
    client = client_for(settings, "local" if mode == "local" else "docker")
    found = read_calls(client, since=since_at, limit=limit)
    note = None
    if not found.records:
        note = (
            f"no calls since {sql_time(since_at)} UTC"
            if since_at is not None and found.recorded
            else NO_CALLS_NOTE
        )
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in found.records], indent=2))
        if note:
            err.print(note, style="dim", markup=False)
        raise typer.Exit(EXIT_OK)
    console = Console(highlight=False)
    if note:
        console.print(note, style="dim", markup=False)
        raise typer.Exit(EXIT_OK)
    table = Table(title=f"Calls ({len(found.records)}, newest first)", title_justify="left")
    for col in TABLE_COLUMNS:
        table.add_column(col, no_wrap=col in ("time (UTC)", "duration"))
    for row in table_rows(found.records):
        *rest, disposition = row
        table.add_row(
            *(Text(c) for c in rest), Text(disposition, style=DISPOSITION_STYLE.get(disposition, "red"))
        )
    console.print(table)
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add `calls` to the CLI."""
    app.command("calls")(calls)
