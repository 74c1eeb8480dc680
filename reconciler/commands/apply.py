"""`reconciler apply`: make the running Asterisk match a desired directory, once."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from reconciler.apply import ApplyResult, apply_desired
from reconciler.asterisk import AsteriskClient
from reconciler.markers import rev12
from reconciler.settings import Settings


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
    if not dry_run and not result.unchanged:
        how = "restarted Asterisk" if result.restarted else "reloaded"
        console.print(f"[green]Applied[/green] revision {rev}: {how}, verified.")
    for warning in result.warnings:
        # soft_wrap: a warning stays one line, whole, for people and for grep
        console.print(f"[yellow]warning[/yellow]: {escape(warning)}", soft_wrap=True)
    if result.warnings and not dry_run:
        console.print(
            "  [dim]everything else of the revision is live; such a provider comes up by itself once "
            "its host resolves (`reconciler watch`), or on the next `reconciler apply`[/dim]"
        )
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
) -> None:
    """Render DIR, write the changed files into the Asterisk container atomically, reload only what
    changed (restart if a transport changed), verify by asking Asterisk, record the live revision.

    Exit 0: applied (or nothing to do), also when a provider's host does not resolve (a warning
    names it; the rest of the revision is live); 1: refused by Asterisk or verification failed,
    the previous config was restored; 3: Docker or Asterisk cannot be reached.
    """
    settings = Settings.from_env(env_file=env_file, templates_dir=templates, container=container)
    client = AsteriskClient(settings.container, settings.managed_dir, settings.asterisk_log)
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
        )
    _print_result(console, result, dry_run)


def register(app: typer.Typer) -> None:
    """Add `apply` to the CLI."""
    app.command("apply")(apply)
