"""The pull-request check of a fleet repository (`reconciler pr-check FLEETDIR`): every site at once.

The one-PBX check (`prcheck.py`) for each site of the fleet, in one report: validate every site
(every problem with its FILE:LINE, annotated), render base and head of each site with the same
throwaway secrets, plan each site against its base, verify each changed site in a throwaway
Asterisk, and one comment that says which sites the change touches and what changes at each.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.desired.fleet import Fleet, load_fleet, load_site
from reconciler.desired.load import LoadedState, display_name
from reconciler.desired.model import DesiredState
from reconciler.desired.revision import site_revision
from reconciler.errors import EXIT_ERROR, EXIT_OK, Problem, ValidationFailed
from reconciler.gitops import plan as planning
from reconciler.gitops.prcheck import (
    Located,
    PrCheckOptions,
    VerifyOutcome,
    export_base,
    fenced,
    invalid_body,
    plan_against_base,
    run_verify,
    state_summary,
    throwaway_secrets,
    throwaway_settings,
    validation_located,
    write_env_file,
)

_ICON = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}


@dataclass
class SiteCheck:
    name: str
    summary: str = ""
    plan: planning.Plan | None = None
    base_note: str = ""
    verify: VerifyOutcome = field(default_factory=lambda: VerifyOutcome("skipped", "not run"))


@dataclass
class FleetPrCheckReport:
    desired: str  # the fleet dir as the user names it, e.g. "fleet"
    fleet: str = ""
    problems: list[Problem] = field(default_factory=list)
    sites: list[SiteCheck] = field(default_factory=list)
    base_note: str = ""
    located: list[Located] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def passed(self) -> bool:
        return self.valid and all(site.verify.status != "failed" for site in self.sites)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_ERROR

    def changed(self) -> list[str]:
        return [s.name for s in self.sites if s.plan is not None and s.plan.has_changes]


def _invalid(report: FleetPrCheckReport, problems: list[Problem]) -> FleetPrCheckReport:
    report.problems = problems
    report.located = validation_located(problems)
    return report


def _base_states(base_dir: Path | None, names: list[str]) -> tuple[dict[str, DesiredState], str]:
    """Each site's state at the base (a site the base lacks, or an invalid base: none), and a note."""
    if base_dir is None:
        return {}, "the base has no fleet here: everything is new"
    try:
        base_fleet = load_fleet(base_dir)
    except ValidationFailed as exc:
        return (
            {},
            f"the base's fleet.yaml does not validate ({len(exc.problems)} problem(s)): "
            "planned against nothing",
        )
    states: dict[str, DesiredState] = {}
    for name in names:
        if name not in base_fleet.names:
            continue
        try:
            states[name] = load_site(base_fleet, name).state
        except ValidationFailed:
            continue  # that site is planned against nothing (its note says so)
    return states, ""


def run_fleet_pr_check(
    options: PrCheckOptions,
    environ: Mapping[str, str],
    echo: Callable[[str], None] = lambda _: None,
) -> FleetPrCheckReport:
    """Validate every site, render base and head of each, plan and verify them. Raises
    `ReconcilerError` only when the check cannot run (see `prcheck.run_pr_check`)."""
    report = FleetPrCheckReport(desired=display_name(options.desired_dir))
    try:
        fleet: Fleet = load_fleet(options.desired_dir)
    except ValidationFailed as exc:
        return _invalid(report, list(exc.problems))
    report.fleet = fleet.name
    heads: dict[str, LoadedState] = {}
    problems: list[Problem] = []
    for site in fleet.sites:
        try:
            heads[site.name] = load_site(fleet, site.name)
        except ValidationFailed as exc:
            problems += exc.problems
    if problems:
        return _invalid(report, problems)
    echo(f"validate: {report.desired} is valid ({len(heads)} sites: {', '.join(heads)})")

    with tempfile.TemporaryDirectory(prefix="reconciler-pr-check-") as tmp:
        work = Path(tmp)
        base_sha: str | None = None
        base_dir: Path | None = None
        base_states: dict[str, DesiredState] = {}
        if options.base:
            base_sha, base_dir = export_base(options.desired_dir, options.base, work / "base" / "fleet")
            base_states, note = _base_states(base_dir, list(heads))
            report.base_note = note or f"against the base `{base_sha[:12]}`"
        else:
            report.base_note = "no base given: planned against nothing, everything is new"

        values = throwaway_secrets([*(h.state for h in heads.values()), *base_states.values()])
        settings = throwaway_settings(values, work, options.templates_dir)
        env_file = write_env_file(values, work / "throwaway.env")
        key = secrets.token_bytes(32)
        for name, head in heads.items():
            check = SiteCheck(name, summary=state_summary(head))
            revision = options.revision or site_revision(options.desired_dir, name)
            base = (
                (base_dir, base_sha, base_states[name])
                if base_dir and base_sha and name in base_states
                else None
            )
            check.plan, failed = plan_against_base(
                options.desired_dir, head.state, base, replace(settings, site=name), values, key, revision
            )
            if failed is not None:
                check.base_note = f"the base does not render ({failed}): planned against nothing"
            elif options.base and name not in base_states:
                check.base_note = "new site (not in the base)"
            echo(f"plan {name}: {len(check.plan.changes)} change(s)")
            if check.plan.has_changes:
                check.verify = run_verify(options, env_file, values, revision, environ, echo, site=name)
                report.located += list(check.verify.located)
            else:
                check.verify = VerifyOutcome("skipped", "no change at this site")
            report.sites.append(check)
    return report


def format_fleet_report(report: FleetPrCheckReport, max_chars: int | None = None) -> str:
    """One markdown comment: the verdict, which sites change, a row per site, then each changed
    site's plan. With `max_chars`, diffs that would not fit are left out (the job log has them)."""
    if not report.valid:
        return invalid_body(f"PBX fleet check of `{report.desired}`", report.problems, max_chars)

    def build(with_diffs: bool) -> str:
        changed = report.changed()
        unchanged = [s.name for s in report.sites if s.name not in changed]
        verdict = "✅ valid" if report.passed else "❌ Asterisk rejects it"
        where = f"changes at {', '.join(changed)}" if changed else "no change at any site"
        rows = [
            f"## PBX fleet check of `{report.desired}` ({report.fleet}): {verdict}, {where}",
            "",
            f"Sites changed: {', '.join(changed) or 'none'}; unchanged: {', '.join(unchanged) or 'none'}. "
            f"Plan {report.base_note}.",
            "",
            "| site | validate | plan | verify |",
            "|---|---|---|---|",
        ]
        for site in report.sites:
            assert site.plan is not None
            plan_text = f"{len(site.plan.changes)} change(s)" if site.plan.has_changes else "no change"
            if site.base_note:
                plan_text += f" ({site.base_note})"
            rows.append(
                f"| {site.name} | ✅ {site.summary} | {plan_text} | "
                f"{_ICON[site.verify.status]} {site.verify.status}: {site.verify.detail} |"
            )
        rows.append("")
        for site in report.sites:
            assert site.plan is not None
            if not site.plan.has_changes:
                continue
            plan = (
                site.plan
                if with_diffs
                else replace(site.plan, diff="(diff left out: too long for a comment)")
            )
            rows += [f"## Site `{site.name}`", "", planning.format_markdown(plan)]
            if site.verify.status == "failed" and site.verify.output:
                rows += [
                    "<details open><summary>reconciler verify</summary>",
                    "",
                    fenced(site.verify.output, "text"),
                    "",
                    "</details>",
                    "",
                ]
        rows += [
            "<sub>Rendered with throwaway secrets (never the PBXs'); "
            "this comment is updated on every push.</sub>",
        ]
        return "\n".join(rows) + "\n"

    body = build(with_diffs=True)
    if max_chars is not None and len(body) > max_chars:
        body = build(with_diffs=False)
    return body
