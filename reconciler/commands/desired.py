"""The verbs that need no Asterisk: `validate`, `render`, `plan` and `schema`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from reconciler.asterisk import store as store_mod
from reconciler.desired.fleet import (
    Fleet,
    Site,
    fleet_json_schema,
    is_fleet_dir,
    load_fleet,
    load_site,
    load_tree,
    site_settings,
)
from reconciler.desired.model import DesiredState, state_counts
from reconciler.desired.render import RENDERED_DIR_MODE, Rendered, render_desired, write_rendered
from reconciler.desired.revision import revision_of
from reconciler.desired.secrets import resolve_secrets
from reconciler.errors import EXIT_CHANGES, Problem, ReconcilerError, ValidationFailed
from reconciler.gitops import fleetplan
from reconciler.gitops import plan as planning
from reconciler.settings import Settings

DIR_ARG = typer.Argument(None, help="Directory with the desired *.yaml files (default: desired).")
ENV_FILE_OPT = typer.Option(None, "--env-file", help="KEY=VALUE file with secret values (default: .env).")
TEMPLATES_OPT = typer.Option(None, "--templates", help="Directory with the *.conf.j2 templates.")
REVISION_OPT = typer.Option(None, "--revision", help="Revision for the header (default: git/hash).")


FLEET_OPT = typer.Option(
    None, "--fleet", help="A fleet directory (fleet.yaml): every site, or the one --site names."
)
SITE_OPT = typer.Option(
    None, "--site", help="A site of the fleet (with --fleet, or DIR holding fleet.yaml; env RECONCILER_SITE)."
)


def _settings(env_file: Path | None = None, templates: Path | None = None) -> Settings:
    return Settings.from_env(env_file=env_file, templates_dir=templates)


def _summary(state: DesiredState) -> str:
    return f"valid ({state_counts(state)})"


def _fleet_sites(
    fleet_dir: Path | None, desired_dir: Path | None, site: str | None
) -> tuple[Fleet, list[Site]]:
    """The fleet of `--fleet` and the sites to work on (all, in rollout order, or `--site`)."""
    assert fleet_dir is not None
    if desired_dir is not None:
        raise ReconcilerError(
            f"both a directory ({desired_dir}) and --fleet {fleet_dir} were given",
            "pass one: DIR for one PBX, or --fleet DIR [--site NAME] for a fleet",
        )
    fleet = load_fleet(fleet_dir)
    sites = [fleet.site(site)] if site else [fleet.site(name) for name in fleet.rollout]
    return fleet, sites


def _for_site(settings: Settings, fleet: Fleet, site: Site, env_file: Path | None) -> Settings:
    """The site's settings; an explicit --env-file wins over the site's own env file."""
    if env_file is not None:
        return dataclasses.replace(settings, site=site.name)
    return site_settings(settings, fleet, site)


def _one_site(settings: Settings, directory: Path, site: str | None, env_file: Path | None) -> Settings:
    """Settings for DIR without --fleet: with a site (--site or RECONCILER_SITE) DIR is a fleet
    directory, and the site's env file is used unless --env-file was given."""
    name = site or settings.site
    if name is None or not is_fleet_dir(directory):
        return settings  # load_tree says what is wrong with a site for a plain directory
    fleet = load_fleet(directory)
    return _for_site(settings, fleet, fleet.site(name), env_file)


def validate(
    desired_dir: Path | None = DIR_ARG,
    check_secrets: bool = typer.Option(
        False, "--check-secrets", help="Also resolve every secret and refuse missing or weak values."
    ),
    env_file: Path | None = ENV_FILE_OPT,
    fleet_dir: Path | None = FLEET_OPT,
    site: str | None = SITE_OPT,
) -> None:
    """Check the desired state; print every problem as FILE:LINE: field: message. Needs no secrets."""
    settings = _settings(env_file)
    if fleet_dir is not None:
        _validate_fleet(settings, fleet_dir, desired_dir, site, check_secrets, env_file)
        return
    directory = desired_dir or settings.desired_dir
    settings = _one_site(settings, directory, site, env_file)
    loaded = load_tree(directory, settings.site)
    if check_secrets:
        resolve_secrets(loaded, settings)
    typer.echo(f"{directory}: {_summary(loaded.state)}")


def _validate_fleet(
    settings: Settings,
    fleet_dir: Path,
    desired_dir: Path | None,
    site: str | None,
    check_secrets: bool,
    env_file: Path | None,
) -> None:
    """Every site (or one): a line per valid site, every problem of every site, exit 1 if any."""
    fleet, sites = _fleet_sites(fleet_dir, desired_dir, site)
    problems: list[Problem] = []
    for chosen in sites:
        try:
            loaded = load_site(fleet, chosen.name)
            if check_secrets:
                resolve_secrets(loaded, _for_site(settings, fleet, chosen, env_file))
        except ValidationFailed as exc:
            typer.echo(f"{chosen.name}: {len(exc.problems)} problem(s)")
            problems += exc.problems
            continue
        typer.echo(f"{chosen.name}: {_summary(loaded.state)}")
    if problems:
        raise ValidationFailed(sorted(set(problems)))


def _render_fleet(
    settings: Settings,
    fleet_dir: Path,
    desired_dir: Path | None,
    site: str | None,
    revision: str | None,
    env_file: Path | None,
) -> tuple[Fleet, dict[str, Rendered]]:
    """Every site (or one) rendered at one revision (of the fleet directory); all problems of
    all sites in one `ValidationFailed`."""
    fleet, sites = _fleet_sites(fleet_dir, desired_dir, site)
    rev = revision or revision_of(fleet.dir)
    rendered: dict[str, Rendered] = {}
    problems: list[Problem] = []
    for chosen in sites:
        try:
            rendered[chosen.name] = render_desired(
                fleet.dir, _for_site(settings, fleet, chosen, env_file), revision=rev
            )
        except ValidationFailed as exc:
            problems += exc.problems
    if problems:
        raise ValidationFailed(sorted(set(problems)))
    return fleet, rendered


def _write(out: Path, rendered: Rendered) -> None:
    try:
        rows = store_mod.export_rows(store_mod.extension_rows(rendered.state, rendered.secrets))
        write_rendered(out, {**rendered.files, store_mod.EXPORT_FILE: rows})
    except OSError as exc:
        raise ReconcilerError(
            f"cannot write into {out}: {exc.strerror}", "choose a writable --out directory"
        ) from None


def render(
    desired_dir: Path | None = DIR_ARG,
    out: Path = typer.Option(
        ..., "--out", help="Directory to write pjsip.conf, extensions.conf, voicemail.conf."
    ),
    templates: Path | None = TEMPLATES_OPT,
    revision: str | None = REVISION_OPT,
    env_file: Path | None = ENV_FILE_OPT,
    fleet_dir: Path | None = FLEET_OPT,
    site: str | None = SITE_OPT,
) -> None:
    """Render the Asterisk config files into OUT (nothing is written when validation fails). The
    files hold secrets: they are written 0600, and OUT, when created, is 0700. With --fleet, each
    site goes into OUT/<site>/."""
    settings = _settings(env_file, templates)
    if fleet_dir is not None:
        _, rendered_sites = _render_fleet(settings, fleet_dir, desired_dir, site, revision, env_file)
        if not out.is_dir():
            _write_dir(out)
        for name, one in rendered_sites.items():
            _write(out / name, one)
            typer.echo(f"rendered {', '.join(one.files)} into {out / name} (revision {one.revision})")
        return
    directory = desired_dir or settings.desired_dir
    settings = _one_site(settings, directory, site, env_file)
    rendered = render_desired(directory, settings, revision=revision)
    _write(out, rendered)
    typer.echo(f"rendered {', '.join(rendered.files)} into {out} (revision {rendered.revision})")


def _write_dir(out: Path) -> None:
    """OUT for a fleet: 0700 like every directory `write_rendered` creates."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir(mode=RENDERED_DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise ReconcilerError(
            f"cannot create {out}: {exc.strerror}", "choose a writable --out directory"
        ) from None


def plan(
    desired_dir: Path | None = DIR_ARG,
    against: Path = typer.Option(
        ..., "--against", help="Directory with the live or previously rendered files."
    ),
    output_format: str = typer.Option("text", "--format", help="text or markdown (for a PR comment)."),
    templates: Path | None = TEMPLATES_OPT,
    revision: str | None = REVISION_OPT,
    env_file: Path | None = ENV_FILE_OPT,
    fleet_dir: Path | None = FLEET_OPT,
    site: str | None = SITE_OPT,
) -> None:
    """Show what applying DIR would change compared with AGAINST. Exit 0: no change, 2: changes.
    With --fleet, each site is compared with AGAINST/<site>/, in one report."""
    if output_format not in ("text", "markdown"):
        raise ReconcilerError(
            f"--format {output_format!r} is not text or markdown", "use --format text or markdown"
        )
    settings = _settings(env_file, templates)
    if fleet_dir is not None:
        if against.exists() and not against.is_dir():
            raise ReconcilerError(
                f"--against {against} is not a directory", "point it at the --out of render --fleet"
            )
        fleet, rendered_sites = _render_fleet(settings, fleet_dir, desired_dir, site, revision, env_file)
        report = fleetplan.make_fleet_plan(fleet.name, rendered_sites, against)
        if site:  # one site asked for: the others in OUT are not "removed"
            report = dataclasses.replace(report, removed=[])
        fleet_formatter = (
            fleetplan.format_fleet_markdown if output_format == "markdown" else fleetplan.format_fleet_text
        )
        typer.echo(fleet_formatter(report), nl=False)
        if report.has_changes:
            raise typer.Exit(EXIT_CHANGES)
        return
    directory = desired_dir or settings.desired_dir
    settings = _one_site(settings, directory, site, env_file)
    rendered = render_desired(directory, settings, revision=revision)
    result = fleetplan.plan_against(rendered, against)
    formatter = planning.format_markdown if output_format == "markdown" else planning.format_text
    typer.echo(formatter(result), nl=False)
    if result.has_changes:
        raise typer.Exit(EXIT_CHANGES)


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


def schema(
    fleet: bool = typer.Option(False, "--fleet", help="The schema of fleet.yaml instead."),
) -> None:
    """Print the JSON Schema of the desired files (for editor completion and checks)."""
    typer.echo(json.dumps(fleet_json_schema() if fleet else json_schema(), indent=2, sort_keys=False))


def register(app: typer.Typer) -> None:
    """Add validate, render, plan and schema to the CLI."""
    app.command("validate")(validate)
    app.command("render")(render)
    app.command("plan")(plan)
    app.command("schema")(schema)
