"""The verbs that need no Asterisk: `validate`, `render`, `plan` and `schema`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from reconciler.asterisk import store as store_mod
from reconciler.desired.load import load_desired
from reconciler.desired.model import DesiredState
from reconciler.desired.render import RENDERED_FILES, render_desired, write_rendered
from reconciler.desired.secrets import resolve_secrets
from reconciler.errors import EXIT_CHANGES, ReconcilerError
from reconciler.gitops import plan as planning
from reconciler.safeio import FileRefused, decode_utf8, read_regular
from reconciler.settings import Settings

DIR_ARG = typer.Argument(None, help="Directory with the desired *.yaml files (default: desired).")
ENV_FILE_OPT = typer.Option(None, "--env-file", help="KEY=VALUE file with secret values (default: .env).")
TEMPLATES_OPT = typer.Option(None, "--templates", help="Directory with the *.conf.j2 templates.")
REVISION_OPT = typer.Option(None, "--revision", help="Revision for the header (default: git/hash).")


def _settings(env_file: Path | None = None, templates: Path | None = None) -> Settings:
    return Settings.from_env(env_file=env_file, templates_dir=templates)


def validate(
    desired_dir: Path | None = DIR_ARG,
    check_secrets: bool = typer.Option(
        False, "--check-secrets", help="Also resolve every secret and refuse missing or weak values."
    ),
    env_file: Path | None = ENV_FILE_OPT,
) -> None:
    """Check the desired state; print every problem as FILE:LINE: field: message. Needs no secrets."""
    settings = _settings(env_file)
    directory = desired_dir or settings.desired_dir
    loaded = load_desired(directory)
    if check_secrets:
        resolve_secrets(loaded, settings)
    state = loaded.state
    typer.echo(
        f"{directory}: valid ({len(state.extensions)} extensions, {len(state.providers)} providers, "
        f"{len(state.outbound)} outbound and {len(state.inbound)} inbound routes)"
    )


def render(
    desired_dir: Path | None = DIR_ARG,
    out: Path = typer.Option(
        ..., "--out", help="Directory to write pjsip.conf, extensions.conf, voicemail.conf."
    ),
    templates: Path | None = TEMPLATES_OPT,
    revision: str | None = REVISION_OPT,
    env_file: Path | None = ENV_FILE_OPT,
) -> None:
    """Render the Asterisk config files into OUT (nothing is written when validation fails). The
    files hold secrets: they are written 0600, and OUT, when created, is 0700."""
    settings = _settings(env_file, templates)
    rendered = render_desired(desired_dir or settings.desired_dir, settings, revision=revision)
    try:
        rows = store_mod.export_rows(store_mod.extension_rows(rendered.state, rendered.secrets))
        write_rendered(out, {**rendered.files, store_mod.EXPORT_FILE: rows})
    except OSError as exc:
        raise ReconcilerError(
            f"cannot write into {out}: {exc.strerror}", "choose a writable --out directory"
        ) from None
    typer.echo(f"rendered {', '.join(rendered.files)} into {out} (revision {rendered.revision})")


def plan(
    desired_dir: Path | None = DIR_ARG,
    against: Path = typer.Option(
        ..., "--against", help="Directory with the live or previously rendered files."
    ),
    output_format: str = typer.Option("text", "--format", help="text or markdown (for a PR comment)."),
    templates: Path | None = TEMPLATES_OPT,
    revision: str | None = REVISION_OPT,
    env_file: Path | None = ENV_FILE_OPT,
) -> None:
    """Show what applying DIR would change compared with AGAINST. Exit 0: no change, 2: changes."""
    if output_format not in ("text", "markdown"):
        raise ReconcilerError(
            f"--format {output_format!r} is not text or markdown", "use --format text or markdown"
        )
    settings = _settings(env_file, templates)
    rendered = render_desired(desired_dir or settings.desired_dir, settings, revision=revision)
    live: dict[str, str] = {}
    live_rows = None
    if against.is_dir():
        for name in RENDERED_FILES:
            text = _read_live(against / name)
            if text is not None:
                live[name] = text
        live_rows = store_mod.parse_export(_read_live(against / store_mod.EXPORT_FILE))
    elif against.exists():
        raise ReconcilerError(
            f"--against {against} is not a directory", "point it at a directory of .conf files"
        )
    result = planning.make_plan(rendered.files, live, rendered.secret_values)
    # Extensions are store rows, not file lines: compare the rows `render --out` wrote beside them.
    rows = store_mod.row_changes(live_rows, store_mod.extension_rows(rendered.state, rendered.secrets))
    result = dataclasses.replace(result, changes=[*rows, *result.changes], store_changes=rows)
    formatter = planning.format_markdown if output_format == "markdown" else planning.format_text
    typer.echo(formatter(result), nl=False)
    if result.has_changes:
        raise typer.Exit(EXIT_CHANGES)


MAX_LIVE_FILE_BYTES = 256 << 20  # 10,000 extensions render to about 4 MiB


def _read_live(path: Path) -> str | None:
    """A live/previously rendered file for `plan --against`: None when absent; a FIFO, a device,
    a huge or non-UTF-8 file is a one-line error naming it, never a hang or a traceback."""
    try:
        return decode_utf8(read_regular(path, MAX_LIVE_FILE_BYTES))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except FileRefused as exc:
        raise ReconcilerError(
            f"--against: {path} {exc.reason}", "point --against at a directory of rendered .conf files"
        ) from None


def json_schema() -> dict[str, object]:
    """JSON Schema of one desired file: any of the top-level keys, nothing else."""
    schema = DesiredState.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "asterisk-gitops desired state file"
    schema["description"] = (
        "One file in desired/: any of the top-level keys pbx, providers, extensions, outbound, inbound "
        "(each key in one file only)."
    )
    schema["additionalProperties"] = False
    schema.pop("required", None)
    return schema


def schema() -> None:
    """Print the JSON Schema of the desired files (for editor completion and checks)."""
    typer.echo(json.dumps(json_schema(), indent=2, sort_keys=False))


def register(app: typer.Typer) -> None:
    """Add validate, render, plan and schema to the CLI."""
    app.command("validate")(validate)
    app.command("render")(render)
    app.command("plan")(plan)
    app.command("schema")(schema)
