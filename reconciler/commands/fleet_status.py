"""Verbs of `reconciler fleet` (see reconciler.commands.fleet): `status`.

`reconciler fleet status --fleet DIR [--json]` asks every site's `status_url` + `/api/status` at
once (each with a timeout) and shows one table, or the contract JSON of docs/fleet.md. Exit 0 when
every site answers, runs its desired revision and is healthy; 1 otherwise (a site unreachable, not
in sync, or with a problem); 2 is kept for bad input (as everywhere: reconciler.errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from reconciler.commands.fleet import fleet_app
from reconciler.markers import rev12

STATE_STYLE = {"done": "green", "waiting": "yellow", "held": "red", "failed": "red", "rolling": "yellow"}


def _rev(value: object) -> str:
    return rev12(value) if isinstance(value, str) and value else "-"


def _table(view: dict[str, Any], console: Console) -> None:
    rollout = view["rollout"]
    style = STATE_STYLE.get(rollout["state"], "white")
    console.print(
        f"fleet [bold]{view['fleet']}[/]: rollout {' → '.join(rollout['order'])}, "
        f"revision {_rev(rollout['revision'])} [{style}]{rollout['state']}[/]",
        highlight=False,
    )
    table = Table(show_lines=False)
    for column in ("site", "live", "desired", "sync", "providers", "extensions", "rollout", "problem"):
        table.add_column(column, overflow="fold")
    for site in view["sites"]:
        if not site["reachable"]:
            table.add_row(site["name"], "-", "-", "[red]unreachable[/]", "", "", "", str(site["error"]))
            continue
        state = site["rollout"].get("state") or "-"
        wait = site["rollout"].get("reason")
        problem = site.get("error") or "; ".join(site.get("problems") or [])
        table.add_row(
            site["name"],
            _rev(site["live_revision"]),
            _rev(site["desired_revision"]),
            "[green]yes[/]" if site["in_sync"] else "[yellow]no[/]",
            f"{site['providers_registered']}/{site['providers_total']}",
            f"{site['extensions_online']}/{site['extensions_total']}",
            f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"
            + (f" ({wait})" if wait and state != "done" else ""),
            problem or ("" if site["healthy"] else "[red]unhealthy[/]"),
        )
    console.print(table)


@fleet_app.command("status")
def status_cmd(
    fleet_dir: Path = typer.Option(..., "--fleet", help="The fleet directory (holds fleet.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print the fleet view as JSON (docs/fleet.md)."),
    timeout: float = typer.Option(3.0, "--timeout", min=0.1, help="Seconds to wait for each site."),
) -> None:
    """Every site of the fleet, asked over its status_url: revisions, sync, health, rollout.

    Exit 0 when every site is reachable, in sync and healthy; 1 otherwise.
    """
    from reconciler.desired.fleet import load_fleet
    from reconciler.observe.fleet import fleet_ok, gather_fleet, peers_of

    fleet = load_fleet(fleet_dir)
    view = gather_fleet(fleet.name, list(fleet.rollout), peers_of(fleet), timeout_s=timeout)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
    else:
        _table(view, Console())
    raise typer.Exit(0 if fleet_ok(view) else 1)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to `reconciler fleet` (they register on import, on `fleet_app`)."""
    del app
    assert fleet_app is not None
