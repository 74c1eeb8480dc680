"""`reconciler carrier show|apply|calls`: the sandbox carrier that `make up` runs for offline dials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from reconciler.asterisk import carrier
from reconciler.asterisk.client import AsteriskClient
from reconciler.settings import Settings

carrier_app = typer.Typer(
    help="The sandbox carrier: a local Asterisk that plays the SIP provider (`make up` runs it).",
    no_args_is_help=True,
)

DIR_ARG = typer.Argument(None, help="Directory with the desired *.yaml files (default: desired).")
PORT_OPT = typer.Option(
    carrier.DEFAULT_PORT, "--port", min=1, max=65535, help="UDP port the carrier listens on (127.0.0.1)."
)
CONTAINER_OPT = typer.Option(carrier.DEFAULT_CONTAINER, "--container", help="The carrier's container.")


def _describe(plan: carrier.CarrierPlan | None, port: int, container: str) -> dict[str, Any]:
    if plan is None:
        return {
            "enabled": False,
            "provider": None,
            "address": f"{carrier.CARRIER_HOST}:{port}",
            "container": container,
            "dial": [],
            "calls_log": carrier.CALLS_LOG,
        }
    return {
        "enabled": True,
        "provider": plan.provider.name,
        "address": f"{carrier.CARRIER_HOST}:{port}",
        "pbx": f"{plan.config.pbx_address}:{plan.config.pbx_port}",
        "container": container,
        "dial": list(plan.dial),
        "max_call_s": plan.config.max_call_s,
        "calls_log": carrier.CALLS_LOG,
    }


def show(
    desired_dir: Path | None = DIR_ARG,
    port: int = PORT_OPT,
    container: str = CONTAINER_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print it as JSON ({'enabled': ...})."),
) -> None:
    """Which provider of DIR is the sandbox carrier's (one whose host:port is 127.0.0.1:PORT), and
    what to dial to reach it. Needs no secrets; exit 0 with or without a carrier, 1 when invalid."""
    settings = Settings.from_env()
    plan = carrier.plan_carrier(desired_dir or settings.desired_dir, settings, port, with_secrets=False)
    info = _describe(plan, port, container)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    if plan is None:
        console.print(f"No provider points at the sandbox carrier ({info['address']}/udp): it is not needed.")
        return
    console.print(
        f"[bold]Sandbox carrier[/bold] ({escape(container)} on {info['address']}/udp) plays provider "
        f"[bold]{escape(plan.provider.name)}[/bold]: no internet or account needed."
    )
    for hint in plan.dial:
        console.print(f"  dial {escape(hint)}")
    console.print(f"  it answers with an announcement and hangs up after at most {plan.config.max_call_s} s")
    console.print(
        f"  what it received: one line per answered call (to=number, from=caller ID) in "
        f"{escape(container)}:{carrier.CALLS_LOG}, shown by `reconciler carrier calls`"
    )


def apply(
    desired_dir: Path | None = DIR_ARG,
    port: int = PORT_OPT,
    container: str = CONTAINER_OPT,
    env_file: Path | None = typer.Option(
        None, "--env-file", help="KEY=VALUE file with secret values (default: .env)."
    ),
    max_call_s: int = typer.Option(
        carrier.DEFAULT_MAX_CALL_S, "--max-call-s", min=5, max=3600, help="Longest call the carrier allows."
    ),
    boot_timeout: float = typer.Option(60.0, "--boot-timeout", min=1.0, help="Seconds to wait for boot."),
) -> None:
    """Configure the carrier container for DIR's carrier provider: its account (the provider's
    username/password values), the PBX's address, the dialplan. Writes and reloads nothing when it
    already matches. Exit 0: configured or unchanged (or no carrier provider); 1: invalid or the
    carrier did not take it; 3: the container cannot be reached."""
    settings = Settings.from_env(env_file=env_file)
    directory = desired_dir or settings.desired_dir
    console = Console(highlight=False, soft_wrap=True)
    plan = carrier.plan_carrier(directory, settings, port, max_call_s=max_call_s)
    if plan is None:
        console.print(
            f"No provider of {escape(str(directory))} points at the sandbox carrier: nothing to do."
        )
        return
    client = AsteriskClient(container)
    client.wait_fully_booted(boot_timeout)
    done = carrier.apply_carrier(client, plan.config)
    what = f"provider {escape(plan.provider.name)} on {carrier.CARRIER_HOST}:{port}/udp"
    if done.unchanged:
        console.print(f"[green]Sandbox carrier unchanged[/green]: {what}; nothing reloaded.")
    else:
        how = "restarted" if done.restarted else "reloaded (" + ", ".join(done.reloads) + ")"
        console.print(f"[green]Sandbox carrier configured[/green]: {what}; {', '.join(done.changed)} {how}.")


def calls(
    container: str = CONTAINER_OPT,
    last: int = typer.Option(20, "--last", "-n", min=1, help="Show the last N calls."),
    as_json: bool = typer.Option(False, "--json", help="Print the calls as JSON."),
) -> None:
    """What the carrier received: one line per answered call (time, to=number, from=caller ID)."""
    client = AsteriskClient(container)
    received = carrier.read_calls(client)[-last:]
    if as_json:
        typer.echo(json.dumps([c.__dict__ for c in received], indent=2))
        return
    if not received:
        typer.echo(f"No calls yet in {container}:{carrier.CALLS_LOG}. Dial 9 + a number from a phone.")
        return
    for c in received:
        typer.echo(f"{c.time}  to={c.to}  from={c.caller}")


def register(app: typer.Typer) -> None:
    """Add `carrier show|apply|calls` to the CLI."""
    carrier_app.command("show")(show)
    carrier_app.command("apply")(apply)
    carrier_app.command("calls")(calls)
    app.add_typer(carrier_app, name="carrier")
