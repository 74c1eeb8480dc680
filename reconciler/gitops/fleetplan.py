"""`plan --fleet`: every site's plan against `OUT/<site>/`, as one report (docs/fleet.md).

Each site is compared exactly as `plan --against` compares one PBX (`plan_against`: the rendered
files with `gitops.plan.make_plan`, the extensions as store rows). The report says which sites
change, then shows each changed site's plan with the one-PBX formatters. Secrets are masked as in
`plan`, with every site's secret values (a value of one site never shows in another's diff). A site
directory in OUT that is no longer in the fleet is listed as removed, never diffed: its files
hold secrets that no longer belong to any site, so there is nothing to mask them with.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reconciler.asterisk import store as store_mod
from reconciler.desired.render import RENDERED_FILES, Rendered
from reconciler.errors import ReconcilerError
from reconciler.gitops import plan as planning
from reconciler.safeio import FileRefused, decode_utf8, read_regular

MAX_LIVE_FILE_BYTES = 256 << 20  # 10,000 extensions render to about 4 MiB
OUTPUT_FILES = (*RENDERED_FILES, store_mod.EXPORT_FILE)  # what `render --out` writes


def read_live(path: Path) -> str | None:
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


def plan_against(
    rendered: Rendered, against: Path, mask_values: Iterable[str] | None = None
) -> planning.Plan:
    """What applying `rendered` would change compared with the files `render --out` wrote into
    `against` (a missing directory: everything is new). `mask_values`: the values to hide in
    the diff (default: `rendered.secret_values`)."""
    live: dict[str, str] = {}
    live_rows = None
    if against.is_dir():
        for name in RENDERED_FILES:
            text = read_live(against / name)
            if text is not None:
                live[name] = text
        live_rows = store_mod.parse_export(read_live(against / store_mod.EXPORT_FILE))
    elif against.exists():
        raise ReconcilerError(
            f"--against {against} is not a directory", "point it at a directory of .conf files"
        )
    secrets = rendered.secret_values if mask_values is None else frozenset(mask_values)
    result = planning.make_plan(rendered.files, live, secrets)
    # Extensions are store rows, not file lines: compare the rows `render --out` wrote beside them.
    rows = store_mod.row_changes(live_rows, store_mod.extension_rows(rendered.state, rendered.secrets))
    return dataclasses.replace(result, changes=[*rows, *result.changes], store_changes=rows)


@dataclass(frozen=True)
class SitePlan:
    name: str
    plan: planning.Plan
    new: bool  # OUT/<site>/ did not exist


@dataclass(frozen=True)
class FleetPlan:
    fleet: str
    sites: list[SitePlan]  # in rollout order
    removed: list[str]  # site directories in OUT that are no longer sites

    @property
    def changed(self) -> list[str]:
        return [s.name for s in self.sites if s.plan.has_changes]

    @property
    def unchanged(self) -> list[str]:
        return [s.name for s in self.sites if not s.plan.has_changes]

    @property
    def has_changes(self) -> bool:
        return bool(self.changed or self.removed)


def removed_sites(against: Path, names: Iterable[str]) -> list[str]:
    """Directories of `against` that hold what `render --out` writes but are not among `names`."""
    if not against.is_dir():
        return []
    known = set(names)
    gone: list[str] = []
    for entry in sorted(os.listdir(against)):
        path = against / entry
        if entry in known or entry.startswith(".") or path.is_symlink() or not path.is_dir():
            continue
        if any(os.path.lexists(path / name) for name in OUTPUT_FILES):
            gone.append(entry)
    return gone


def make_fleet_plan(fleet: str, rendered: dict[str, Rendered], against: Path) -> FleetPlan:
    """Each site (in the order of `rendered`) against `against/<site>/`, one report."""
    every_secret = frozenset().union(*(r.secret_values for r in rendered.values()))
    sites = [
        SitePlan(name, plan_against(r, against / name, every_secret), not (against / name).is_dir())
        for name, r in rendered.items()
    ]
    return FleetPlan(fleet, sites, removed_sites(against, rendered))


def _summary(plan: FleetPlan) -> list[str]:
    def names(values: list[str]) -> str:
        return ", ".join(values) or "none"

    new = [s.name for s in plan.sites if s.new]
    parts = [f"sites changed: {names(plan.changed)}", f"unchanged: {names(plan.unchanged)}"]
    if new:
        parts.append(f"new: {names(new)}")
    if plan.removed:
        parts.append(f"removed: {names(plan.removed)}")
    return ["; ".join(parts)]


def format_fleet_text(plan: FleetPlan) -> str:
    """The summary line, then each changed site's plan (`plan.format_text`)."""
    lines = [f"Fleet {plan.fleet}: " + _summary(plan)[0]]
    for name in plan.removed:
        lines.append(f"  - site {name} removed: {name}/ is no longer a site of the fleet")
    for site in plan.sites:
        if site.plan.has_changes:
            lines += ["", f"== site {site.name}" + (" (new)" if site.new else "")]
            lines.append(planning.format_text(site.plan).rstrip("\n"))
    return "\n".join(lines) + "\n"


def format_fleet_markdown(plan: FleetPlan) -> str:
    """The report as one pull-request comment: a table of the sites, then each changed site's
    plan (`plan.format_markdown`, under a heading naming the site)."""
    lines = ["## reconciler fleet plan", "", _summary(plan)[0], "", "| site | plan |", "| --- | --- |"]
    for site in plan.sites:
        if not site.plan.has_changes:
            state = "no changes"
        else:
            state = f"{len(site.plan.changes)} change(s)" + (" (new site)" if site.new else "")
        lines.append(f"| {site.name} | {state} |")
    lines += [f"| {name} | removed |" for name in plan.removed]
    for site in plan.sites:
        if site.plan.has_changes:
            body = planning.format_markdown(site.plan)
            body = body.replace("### reconciler plan", f"### site {site.name}", 1)
            lines += ["", body.rstrip("\n")]
    return "\n".join(lines) + "\n"
