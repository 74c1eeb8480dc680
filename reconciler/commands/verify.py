"""`reconciler verify`: does Asterisk take this render? Asked of a throwaway, network-less Asterisk."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console
from rich.markup import escape

from reconciler.commands.desired import DIR_ARG, ENV_FILE_OPT, REVISION_OPT, TEMPLATES_OPT
from reconciler.desired.fleet import load_fleet, site_settings
from reconciler.errors import ReconcilerError
from reconciler.gitops.verify import DEFAULT_IMAGE, Finding, VerifyFailed, VerifyResult, verify_desired
from reconciler.markers import rev12
from reconciler.settings import Settings

FORMATS = ("text", "json", "github")


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so the sandbox container is removed."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (e.g. an in-process test runner)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _github_escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github_line(kind: str, finding: Finding) -> str:
    """A GitHub Actions workflow command: `::error file=F,line=L,title=T::message`."""
    where = finding.annotation()
    props = ([f"file={where[0]}", f"line={where[1]}"] if where else []) + ["title=reconciler verify"]
    return f"::{kind} {','.join(props)}::{_github_escape(finding.text)}"


def _print_text(console: Console, result: VerifyResult) -> None:
    for finding in result.problems:
        console.print(f"[red]problem[/red]: {escape(finding.text)}", soft_wrap=True)
    for finding in result.notes:
        console.print(f"[dim]note: {escape(finding.text)}[/dim]", soft_wrap=True)
    for check in result.checks:
        if not check.ok:
            detail = f" ({escape(check.detail)})" if check.detail else ""
            console.print(f"[red]FAILED[/red] {escape(check.name)}{detail}", soft_wrap=True)
    if result.placeholders:
        console.print(
            f"[dim]generated stand-in values for {len(result.placeholders)} secret(s) not set here: "
            f"{', '.join(result.placeholders)}[/dim]",
            soft_wrap=True,
        )
    if result.ok:
        passed = sum(1 for c in result.checks if c.ok)
        console.print(
            f"[green]Asterisk takes revision {escape(rev12(result.revision))}[/green]: no error or warning "
            f"about the managed files, {passed} check(s) passed "
            f"(booted in {result.boot_s:.1f} s, {result.duration_s:.1f} s in all, "
            f"image {escape(result.image)})."
        )


def verify(
    desired_dir: Path | None = DIR_ARG,
    env_file: Path | None = ENV_FILE_OPT,
    templates: Path | None = TEMPLATES_OPT,
    revision: str | None = REVISION_OPT,
    image: str = typer.Option(DEFAULT_IMAGE, "--image", help="Asterisk image to boot the render in."),
    placeholder_secrets: bool = typer.Option(
        False,
        "--placeholder-secrets",
        help="Give every secret that is not set a generated stand-in (a pull request has no secrets).",
    ),
    output_format: str = typer.Option("text", "--format", help="text, json, or github (annotations)."),
    site: str | None = typer.Option(
        None, "--site", help="DIR is a fleet (fleet.yaml): verify this site (its bases and files)."
    ),
) -> None:
    """Boot the render of DIR in a throwaway Asterisk (no network, nothing bound on the host) and
    fail on any error or warning it logs about the managed files, each mapped to FILE:LINE.

    Exit 0: Asterisk takes it; 1: Asterisk reported problems (or DIR is invalid); 3: Docker or the
    image is not available.
    """
    if output_format not in FORMATS:
        raise ReconcilerError(
            f"--format {output_format!r} is not one of {', '.join(FORMATS)}", "use --format text"
        )
    settings = Settings.from_env(env_file=env_file, templates_dir=templates)
    directory = desired_dir or settings.desired_dir
    if site is not None:
        fleet = load_fleet(directory)
        settings = site_settings(settings, fleet, site)
        if env_file is not None:  # an explicit --env-file wins over the site's own
            settings = replace(settings, env_file=env_file)
    out = Console(soft_wrap=output_format != "text")
    err = Console(stderr=True)
    with _terminate_as_interrupt(), err.status(f"verifying {directory}") as status:

        def progress(message: str) -> None:
            status.update(escape(message))

        result = verify_desired(
            settings,
            directory,
            revision=revision,
            image=image,
            placeholders=placeholder_secrets,
            progress=progress,
        )
    if output_format == "json":
        typer.echo(json.dumps(result.to_json(), indent=2))
    elif output_format == "github":
        for finding in result.problems:
            typer.echo(_github_line("error", finding))
        for finding in result.notes:
            typer.echo(_github_line("notice", finding))
        for check in result.checks:
            if not check.ok:
                typer.echo(f"::error title=reconciler verify::{_github_escape(str(check))}")
    else:
        _print_text(out, result)
    if not result.ok:
        failed = sum(1 for c in result.checks if not c.ok)
        raise VerifyFailed(
            f"Asterisk does not take revision {rev12(result.revision)}: {len(result.problems)} problem(s)"
            + (f", {failed} failed check(s)" if failed else ""),
            "fix the lines above (desired file or template); `reconciler render DIR --out out/` shows "
            "the rendered lines Asterisk names",
        )


def register(app: typer.Typer) -> None:
    """Add `verify` to the CLI."""
    app.command("verify")(verify)
