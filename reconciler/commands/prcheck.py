"""`reconciler pr-check`: the pull-request check the shipped GitHub workflow runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from reconciler.commands.desired import DIR_ARG, REVISION_OPT, TEMPLATES_OPT
from reconciler.desired.fleet import is_fleet_dir
from reconciler.errors import ReconcilerError
from reconciler.gitops import github
from reconciler.gitops.fleetcheck import FleetPrCheckReport, format_fleet_report, run_fleet_pr_check
from reconciler.gitops.prcheck import (
    VERIFY_MODES,
    PrCheckOptions,
    PrCheckReport,
    format_report,
    run_pr_check,
)
from reconciler.settings import Settings


def _base_ref(base: str | None, pr: github.PullRequest | None, environ: dict[str, str]) -> str | None:
    if base:
        return base
    if pr is not None and pr.base_sha:
        return pr.base_sha
    if environ.get("GITHUB_BASE_REF"):
        return f"origin/{environ['GITHUB_BASE_REF']}"
    return None


def _annotation_path(file: str, environ: dict[str, str]) -> str:
    """GitHub places an annotation by a path relative to the repository root (the workspace);
    problems name files relative to the current directory, which may be elsewhere."""
    full = (Path.cwd() / file).resolve()
    root = Path(environ.get("GITHUB_WORKSPACE") or Path.cwd()).resolve()
    return full.relative_to(root).as_posix() if full.is_relative_to(root) else file


def pr_check(
    desired_dir: Path | None = DIR_ARG,
    base: str | None = typer.Option(
        None,
        "--base",
        help="Commit, branch or tag to plan against (default: the pull request's base from "
        "GITHUB_EVENT_PATH, else origin/$GITHUB_BASE_REF; none: everything is new).",
    ),
    templates: Path | None = TEMPLATES_OPT,
    revision: str | None = REVISION_OPT,
    verify: str = typer.Option(
        "auto",
        "--verify",
        help="auto: run `reconciler verify` when Docker and the image are there; always; never.",
    ),
    image: str | None = typer.Option(
        None, "--image", help="Asterisk image for verify (default: verify's own)."
    ),
    comment: bool = typer.Option(
        True, "--comment/--no-comment", help="Post the report as the pull request's one comment (GitHub)."
    ),
) -> None:
    """Validate, plan against the base, verify, and keep one PR comment up to date. Exit 0: valid
    (with or without changes); 1: invalid, or Asterisk rejects the render."""
    if verify not in VERIFY_MODES:
        raise ReconcilerError(
            f"--verify {verify!r} is not one of {', '.join(VERIFY_MODES)}", "use auto, always or never"
        )
    settings = Settings.from_env(templates_dir=templates)
    environ = settings.environ
    in_actions = environ.get("GITHUB_ACTIONS") == "true"
    pr = github.pull_request_from_event(environ)
    directory = desired_dir or settings.desired_dir
    options = PrCheckOptions(
        desired_dir=directory,
        base=_base_ref(base, pr, environ),
        templates_dir=templates,
        revision=revision,
        verify=verify,  # checked against VERIFY_MODES above
        image=image,
    )

    def progress(line: str) -> None:
        typer.echo(line, err=True)

    # A fleet (fleet.yaml): every site in one report (docs/fleet.md); else the one PBX.
    report: PrCheckReport | FleetPrCheckReport
    if is_fleet_dir(directory):
        report = run_fleet_pr_check(options, environ, progress)
        formatted: Callable[..., str] = format_fleet_report
    else:
        report = run_pr_check(options, environ, progress)
        formatted = format_report
    for located in report.located:
        if located.source == "validate":
            typer.echo(f"{located.file}:{located.line}: {located.message}", err=True)
        if in_actions:
            typer.echo(
                github.workflow_command(
                    "error",
                    located.message,
                    file=_annotation_path(located.file, environ),
                    line=located.line,
                    title=f"reconciler {located.source}",
                )
            )
    body = formatted(report, max_chars=github.MAX_COMMENT_CHARS)
    if in_actions:
        # The report quotes desired files: no line of it may act as a workflow command.
        start, text, end = github.without_commands(formatted(report))
        typer.echo(f"{start}\n{text}{end}")
    else:
        typer.echo(formatted(report), nl=False)
    if comment:
        published = github.publish(environ, pr, github.comment_marker(report.desired), body)
        if published.warning and in_actions:
            typer.echo(github.workflow_command("warning", published.message, title="reconciler pr-check"))
        else:
            typer.echo(("warning: " if published.warning else "") + published.message, err=True)
    verdict = "passed" if report.passed else "FAILED"
    typer.echo(f"pr-check {verdict}: {report.desired}", err=True)
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add pr-check to the CLI."""
    app.command("pr-check")(pr_check)
