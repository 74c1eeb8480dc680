"""`reconciler apply`: make the running Asterisk match a desired directory, once."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from reconciler.asterisk.client import client_for
from reconciler.asterisk.lease import DEFAULT_LOCK_WAIT_S
from reconciler.asterisk.restart import DEFAULT_RESTART_WAIT_S, RestartPolicy
from reconciler.errors import ReconcilerError
from reconciler.gitops.apply import ApplyOptions, ApplyResult, apply_desired
from reconciler.markers import rev12
from reconciler.settings import Settings

RESTART_HELP = (
    "When a transport change needs an Asterisk restart: idle = restart once no call is up "
    "(new calls are still answered meanwhile), now = restart at once (drops calls), "
    "refuse = apply nothing while calls are up."
)


def restart_policy(value: str) -> RestartPolicy:
    """`--restart` value → policy, with a clear error for anything else."""
    try:
        return RestartPolicy(value)
    except ValueError:
        raise ReconcilerError(
            f"--restart {value!r} is not idle, now or refuse", "use --restart idle (default), now or refuse"
        ) from None


def restart_option() -> str:
    return typer.Option(RestartPolicy.IDLE.value, "--restart", help=RESTART_HELP)


def restart_wait_option() -> float:
    return typer.Option(
        DEFAULT_RESTART_WAIT_S,
        "--restart-wait",
        min=0.0,
        help="With --restart idle: seconds to wait for the calls to end; then the restart stays "
        "scheduled in Asterisk and `status` shows it as pending.",
    )


def lock_wait_option() -> float:
    return typer.Option(
        DEFAULT_LOCK_WAIT_S,
        "--lock-wait",
        min=0.0,
        help="Seconds to wait while another apply holds the PBX's lock (then exit 4).",
    )


def _print_result(console: Console, result: ApplyResult, dry_run: bool) -> None:
    rev = escape(rev12(result.revision))
    if result.subject:
        rev += f" ({escape(result.subject)})"
    if result.unchanged:
        note = " (recorded as live)" if result.recorded else ""
        console.print(f"[green]No changes[/green]: revision {rev} is live{note}; nothing reloaded.")
    else:
        verb = "Would change" if dry_run else "Changed"
        console.print(f"{verb} {', '.join(result.changed_files)}:")
    for change in result.changes:
        console.print(f"  ~ {escape(change)}")
    if result.reloads:
        verb = "Would run" if dry_run else "Ran"
        for command in result.reloads:
            console.print(f"  {verb}: asterisk -rx '{escape(command)}'")
    for check in result.checks:
        mark = "[green]ok[/green]" if check.ok else "[red]FAILED[/red]"
        detail = f" ({escape(check.detail)})" if check.detail else ""
        console.print(f"  {mark} {escape(check.name)}{detail}")
    if result.settled:
        console.print(f"[yellow]Settled[/yellow]: {escape(result.settled)}")
    if not dry_run and not result.unchanged:
        how = "restarted Asterisk" if result.restarted else "reloaded"
        console.print(f"[green]Applied[/green] revision {rev}: {how}, verified.")
    if result.restart_pending and not dry_run:
        console.print(
            f"[yellow]Restart pending[/yellow]: {escape(result.restart_pending)}. Everything else is live "
            "and verified; Asterisk restarts once no call is up, and the next apply (or the watch loop) "
            "verifies the transports then (`reconciler status` shows it; `--restart now` forces it)."
        )
    for warning in result.warnings:
        # soft_wrap: a warning stays one line, whole, for people and for grep
        console.print(f"[yellow]warning[/yellow]: {escape(warning)}", soft_wrap=True)
    if result.warnings and not dry_run:
        console.print(
            "  [dim]everything else of the revision is live; such a provider comes up by itself once "
            "its host resolves (`reconciler watch`), or on the next `reconciler apply`[/dim]"
        )
    if result.lock_waited_s > 0:
        console.print(f"[dim]waited {result.lock_waited_s:.2f} s for the PBX's lock[/dim]")
    console.print(
        f"[dim]{result.duration_s:.2f} s, {result.execs} docker exec(s), {result.transfers} upload(s)[/dim]"
    )


def apply(
    desired_dir: Path | None = typer.Argument(
        None, help="Directory with the desired *.yaml files (default: desired)."
    ),
    container: str | None = typer.Option(
        None, "--container", help="Asterisk container (default: $RECONCILER_CONTAINER or gitops-pbx)."
    ),
    env_file: Path | None = typer.Option(
        None, "--env-file", help="KEY=VALUE file with secret values (default: .env)."
    ),
    revision: str | None = typer.Option(
        None, "--revision", help="Revision to record (default: git commit, else content hash)."
    ),
    subject: str | None = typer.Option(None, "--subject", help="Commit subject to record with it."),
    templates: Path | None = typer.Option(
        None, "--templates", help="Directory with the *.conf.j2 templates."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Compare with the live config and stop: write and reload nothing."
    ),
    restart: str = restart_option(),
    restart_wait: float = restart_wait_option(),
    lock_wait: float = lock_wait_option(),
) -> None:
    """Render DIR, write the changed files into the Asterisk container atomically, reload only what
    changed (restart if a transport changed), verify by asking Asterisk, record the live revision.

    Exit 0: applied (or nothing to do; a restart may be pending), also when a provider's host
    does not resolve (a warning names it; the rest of the revision is live); 1: refused by Asterisk
    or verification failed (the previous config was restored), or a write into the volume failed
    (nothing changed); 3: Docker or Asterisk cannot be reached (also mid-apply: the next apply
    settles it); 4: another apply held the PBX's lock for --lock-wait seconds.
    """
    options = ApplyOptions(restart_policy(restart), restart_wait, lock_wait)
    settings = Settings.from_env(env_file=env_file, templates_dir=templates, container=container)
    client = client_for(settings)
    console = Console()
    directory = desired_dir or settings.desired_dir
    with console.status(f"applying {directory} to {settings.container}") as status:

        def progress(message: str) -> None:
            status.update(escape(message))

        result = apply_desired(
            settings,
            client,
            directory,
            revision=revision,
            subject=subject,
            dry_run=dry_run,
            progress=progress,
            options=options,
        )
    _print_result(console, result, dry_run)


def register(app: typer.Typer) -> None:
    """Add `apply` to the CLI."""
    app.command("apply")(apply)
