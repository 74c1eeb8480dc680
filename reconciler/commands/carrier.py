"""`reconciler carrier show|apply|calls`: the sandbox carrier that `make up` runs for offline dials."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from reconciler.asterisk import carrier
from reconciler.asterisk.client import AsteriskClient
from reconciler.desired.fleet import load_fleet, site_settings
from reconciler.errors import ReconcilerError
from reconciler.settings import Settings

carrier_app = typer.Typer(
    help="The sandbox carrier: a local Asterisk that plays the SIP provider (`make up` runs it).",
    no_args_is_help=True,
)

DIR_ARG = typer.Argument(None, help="Directory with the desired *.yaml files (default: desired).")
PORT_OPT = typer.Option(
    None,
    "--port",
    min=1,
    max=65535,
    help=f"UDP port the carrier listens on (127.0.0.1; default {carrier.DEFAULT_PORT}, with --site the "
    "site's carrier.port of fleet.yaml).",
)
CONTAINER_OPT = typer.Option(carrier.DEFAULT_CONTAINER, "--container", help="The carrier's container.")
FLEET_OPT = typer.Option(None, "--fleet", help="A fleet directory (fleet.yaml); needs --site.")
SITE_OPT = typer.Option(None, "--site", help="The site of --fleet whose carrier this is.")


@dataclass(frozen=True)
class _Target:
    """What a carrier command works on: a desired dir or a fleet site, the port, the settings."""

    directory: Path
    port: int
    settings: Settings
    site: str | None = None


def _target(
    desired_dir: Path | None,
    fleet_dir: Path | None,
    site_name: str | None,
    port: int | None,
    env_file: Path | None = None,
) -> _Target:
    settings = Settings.from_env(env_file=env_file) if env_file else Settings.from_env()
    if fleet_dir is None and site_name is None:
        return _Target(desired_dir or settings.desired_dir, port or carrier.DEFAULT_PORT, settings)
    if fleet_dir is None or site_name is None or desired_dir is not None:
        raise ReconcilerError(
            "--fleet and --site go together, and replace the DIR argument",
            "e.g. `reconciler carrier apply --fleet examples/fleet --site hq`",
        )
    fleet = load_fleet(fleet_dir)
    site = fleet.site(site_name)
    if site.carrier is None:
        raise ReconcilerError(
            f"site {site.name} has no carrier in {fleet_dir}/fleet.yaml",
            f"add `carrier: {{port: ..., rtp: {{start: ..., end: ...}}}}` to site {site.name}, "
            "or drop --site",
        )
    site_env = settings if env_file else site_settings(settings, fleet, site)
    return _Target(fleet_dir, port or site.carrier.port, site_env, site.name)


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
    port: int | None = PORT_OPT,
    container: str = CONTAINER_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print it as JSON ({'enabled': ...})."),
    fleet_dir: Path | None = FLEET_OPT,
    site: str | None = SITE_OPT,
) -> None:
    """Which provider of DIR (or of a fleet's site) is the sandbox carrier's (one whose host:port
    is 127.0.0.1:PORT), and what to dial to reach it. Needs no secrets; exit 0 with or without a
    carrier, 1 when invalid."""
    target = _target(desired_dir, fleet_dir, site, port)
    port = target.port
    plan = carrier.plan_carrier(target.directory, target.settings, port, with_secrets=False, site=target.site)
    info = _describe(plan, port, container)
    info["site"] = target.site
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
    port: int | None = PORT_OPT,
    container: str = CONTAINER_OPT,
    env_file: Path | None = typer.Option(
        None, "--env-file", help="KEY=VALUE file with secret values (default: .env)."
    ),
    max_call_s: int = typer.Option(
        carrier.DEFAULT_MAX_CALL_S, "--max-call-s", min=5, max=3600, help="Longest call the carrier allows."
    ),
    boot_timeout: float = typer.Option(60.0, "--boot-timeout", min=1.0, help="Seconds to wait for boot."),
    fleet_dir: Path | None = FLEET_OPT,
    site: str | None = SITE_OPT,
) -> None:
    """Configure the carrier container for DIR's carrier provider: its account (the provider's
    username/password values), the PBX's address, the dialplan. Writes and reloads nothing when it
    already matches. Exit 0: configured or unchanged (or no carrier provider); 1: invalid or the
    carrier did not take it; 3: the container cannot be reached. With `--fleet DIR --site NAME`:
    that site's merged state, its carrier port and its env file (.secrets/<site>.env)."""
    target = _target(desired_dir, fleet_dir, site, port, env_file)
    directory, port = target.directory, target.port
    console = Console(highlight=False, soft_wrap=True)
    plan = carrier.plan_carrier(directory, target.settings, port, max_call_s=max_call_s, site=target.site)
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
