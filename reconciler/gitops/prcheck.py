"""The pull-request check: validate the head, render base and head with throwaway secrets, plan,
verify the head in a throwaway Asterisk, and word it all as one markdown report.

This is the logic of the shipped GitHub workflow (`reconciler pr-check`), kept in the package so the
project runs exactly what its users run and the workflow file stays a thin wrapper. Nothing here
talks to GitHub: `reconciler.gitops.github` posts the report; `commands/prcheck.py` prints it.

Secrets: the PBX's real passwords never enter CI. Rendering needs values, so every `${NAME}` that
the base or the head references gets one random value that passes the reconciler's own strength
checks, and *both* sides are rendered with the same values: a line that carries a secret shows as
changed only when its reference changed. The environment, `.env` and `/run/secrets` of the runner
are never read for them.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import string
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import git
import typer

from reconciler.desired.load import LoadedState, display_name, load_desired
from reconciler.desired.model import DesiredState, SecretUse, secret_refs, state_counts
from reconciler.desired.render import Rendered, render_desired
from reconciler.desired.revision import revision_of
from reconciler.desired.secrets import weakness
from reconciler.desired.snapshot import snapshot_of
from reconciler.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    AsteriskUnavailable,
    Problem,
    ReconcilerError,
    ValidationFailed,
)
from reconciler.gitops import plan as planning

# The watch loop's own export of a commit's subtree: the check reads exactly the files (regular
# files only, no symlinks) that the loop would apply after the merge.
from reconciler.gitops.sources import _write_tree
from reconciler.settings import Settings, packaged_templates_dir

VerifyMode = Literal["auto", "always", "never"]
VERIFY_MODES: tuple[VerifyMode, ...] = ("auto", "always", "never")
VERIFY_COMMAND = "verify"
VERIFY_TIMEOUT_S = 600.0
# `reconciler verify` text lines that name a desired file: `desired/extensions.yaml:12: message`
# (optionally after a `problem: ` label).
_LOCATED_LINE = re.compile(r"^(?:problem:\s*)?(?P<file>[^\s:]+\.ya?ml):(?P<line>\d+):\s*(?P<message>.+)$")


class PrCheckSetupError(ReconcilerError):
    """The check cannot run as asked (base commit missing, verify required but unavailable)."""


@dataclass(frozen=True)
class Located:
    """A problem to annotate on the pull request's diff."""

    file: str
    line: int
    message: str
    source: Literal["validate", "verify"]


@dataclass(frozen=True)
class VerifyOutcome:
    status: Literal["passed", "failed", "skipped"]
    detail: str
    output: str = ""  # what verify said, for the report
    located: tuple[Located, ...] = ()  # its problems that name a desired file and line


@dataclass(frozen=True)
class PrCheckOptions:
    desired_dir: Path
    base: str | None = None  # a commit, branch or tag; None: no base (everything is new)
    templates_dir: Path | None = None
    revision: str | None = None
    verify: VerifyMode = "auto"
    image: str | None = None


@dataclass
class PrCheckReport:
    desired: str  # the desired dir as the user names it, e.g. "desired"
    problems: list[Problem] = field(default_factory=list)
    summary: str = ""  # "7 extensions, 1 providers, ..." when valid
    plan: planning.Plan | None = None
    base_note: str = ""
    verify: VerifyOutcome = VerifyOutcome("skipped", "not run")
    located: list[Located] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def passed(self) -> bool:
        return self.valid and self.verify.status != "failed"

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_ERROR


# ---------------------------------------------------------------------------------------------- secrets


def _candidate(uses: list[SecretUse]) -> str:
    kinds = {use.kind for use in uses}
    if "pin" in kinds:
        return "".join(secrets.choice(string.digits) for _ in range(8))
    if kinds == {"username"}:
        return f"ci-{uses[0].owner}"
    return secrets.token_urlsafe(18)


def throwaway_secrets(states: Iterable[DesiredState]) -> dict[str, str]:
    """One random value for every `${NAME}` the states reference, accepted by `secrets.weakness`
    for every use of that name (the reconciler's own policy, so the render is never refused)."""
    uses: dict[str, list[SecretUse]] = {}
    for state in states:
        for use in secret_refs(state):
            uses.setdefault(use.name, []).append(use)
    values: dict[str, str] = {}
    for name, name_uses in sorted(uses.items()):
        value = _candidate(name_uses)
        for _ in range(200):
            if all(weakness(use, value) is None for use in name_uses):
                break
            value = _candidate(name_uses)
        values[name] = value  # a name used as a PIN and a password: render names the conflict
    return values


def throwaway_settings(values: Mapping[str, str], workdir: Path, templates_dir: Path | None) -> Settings:
    """Settings whose only secret source is `values` (nothing of the runner's environment)."""
    return Settings(
        templates_dir=templates_dir or packaged_templates_dir(),
        env_file=workdir / "none.env",
        secrets_dir=workdir / "no-secrets",
        environ=dict(values),
    )


def write_env_file(values: Mapping[str, str], path: Path) -> Path:
    """`KEY=VALUE` lines, mode 600, for `reconciler verify --env-file`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(f"{key}={value}\n" for key, value in sorted(values.items()))
    return path


# ------------------------------------------------------------------------------------------------- base


def export_base(desired_dir: Path, ref: str, target: Path) -> tuple[str, Path | None]:
    """(commit sha, directory) of `desired_dir` as it is in commit `ref` of its git repository,
    exported into `target`; directory None when that commit has no such directory."""
    try:
        repo = git.Repo(desired_dir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise PrCheckSetupError(
            f"--base {ref} needs {display_name(desired_dir)} inside a git work tree",
            "run the check in a clone of the desired-state repository, or leave out --base",
        ) from None
    with repo:
        try:
            commit = repo.commit(ref)
            tree = commit.tree  # a full sha is not looked up until its tree is read
        except (git.BadName, git.BadObject, ValueError):
            raise PrCheckSetupError(
                f"base {ref!r} is not a commit of this clone",
                "fetch it first (GitHub: actions/checkout with fetch-depth: 0), or pass --base "
                "with a commit, branch or tag that exists",
            ) from None
        workdir = Path(repo.working_tree_dir or ".").resolve()
        rel = Path(desired_dir).resolve().relative_to(workdir).as_posix()
        if rel != ".":
            try:
                tree = tree / rel
            except KeyError:
                return commit.hexsha, None
        if tree.type != "tree":
            return commit.hexsha, None
        target.mkdir(parents=True, exist_ok=True)
        _write_tree(tree, target)
        return commit.hexsha, target


# ----------------------------------------------------------------------------------------------- verify


def _verify_command() -> Any:
    """This reconciler's `verify` command (a click command: typer may vendor click, so it is not
    imported by name), or None when it has none."""
    group = typer.main.get_command(importlib.import_module("reconciler.cli").app)
    return getattr(group, "commands", {}).get(VERIFY_COMMAND)


def verify_available() -> bool:
    """Whether this reconciler has a `verify` command (it renders into a throwaway Asterisk)."""
    return _verify_command() is not None


def _verify_speaks_json() -> bool:
    command = _verify_command()
    return command is not None and any("--format" in getattr(p, "opts", ()) for p in command.params)


def run_verify(
    options: PrCheckOptions,
    env_file: Path,
    secret_names: Iterable[str],
    revision: str,
    environ: Mapping[str, str],
    echo: Callable[[str], None],
    site: str | None = None,
) -> VerifyOutcome:
    """`reconciler verify` on the head (with `site`: that site of the fleet), as a subprocess
    through its documented interface (exit 0 clean, 1 Asterisk logged problems, 3 Docker or the
    image unavailable); its findings as JSON when it offers `--format json`, else its text."""
    if options.verify == "never":
        return VerifyOutcome("skipped", "--verify never")
    if not verify_available():
        if options.verify == "always":
            raise PrCheckSetupError(
                "this reconciler has no `verify` command",
                "install a reconciler release that has `reconciler verify`, or pass --verify auto",
            )
        return VerifyOutcome("skipped", "this reconciler has no `verify` command")
    command = [sys.executable, "-m", "reconciler", VERIFY_COMMAND, str(options.desired_dir)]
    command += ["--env-file", str(env_file), "--revision", revision]
    if site is not None:
        command += ["--site", site]
    if options.templates_dir is not None:
        command += ["--templates", str(options.templates_dir)]
    if options.image:
        command += ["--image", options.image]
    as_json = _verify_speaks_json()
    if as_json:
        command += ["--format", "json"]
    # The throwaway values must win: no same-named variable of the runner, no /run/secrets.
    names = set(secret_names)
    env = {k: v for k, v in environ.items() if k not in names}
    env["RECONCILER_SECRETS_DIR"] = str(env_file.parent / "no-secrets")
    env["RECONCILER_ENV_FILE"] = str(env_file)
    echo(
        f"verify{f' {site}' if site else ''}: booting the head's render in a throwaway Asterisk container..."
    )
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=VERIFY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return VerifyOutcome("failed", f"reconciler verify did not finish within {VERIFY_TIMEOUT_S:.0f} s")
    except OSError as exc:
        raise PrCheckSetupError(f"cannot run reconciler verify: {exc}", "check the installation") from None
    findings = _json_findings(proc.stdout) if as_json else None
    if findings is None:
        output = "\n".join(part.rstrip("\n") for part in (proc.stdout, proc.stderr) if part.strip())
        located = tuple(located_in(output))
    else:
        output, located = findings
        tail = proc.stderr.strip()
        output = "\n".join(part for part in (output, tail) if part)
    for line in output.splitlines():
        echo("  " + line)
    outcome = verify_outcome(proc.returncode, output, options.verify)
    return replace(outcome, located=located) if outcome.status == "failed" else outcome


def _json_findings(stdout: str) -> tuple[str, tuple[Located, ...]] | None:
    """(text, located problems) of `verify --format json`; None when stdout is not that JSON."""
    try:
        result = json.loads(stdout)
    except ValueError:
        return None
    if not isinstance(result, dict) or not isinstance(result.get("problems"), list):
        return None
    lines: list[str] = []
    located: list[Located] = []
    for problem in result["problems"]:
        if not isinstance(problem, dict):
            continue
        text = str(problem.get("text") or problem.get("asterisk") or "")
        lines.append(f"problem: {text}")
        file, line = problem.get("file"), problem.get("line")
        if isinstance(file, str) and isinstance(line, int) and line > 0:
            located.append(Located(file, line, text, "verify"))
    for check in result.get("checks") or []:
        if isinstance(check, dict) and not check.get("ok", True):
            detail = f" ({check['detail']})" if check.get("detail") else ""
            lines.append(f"FAILED {check.get('name')}{detail}")
    for note in result.get("notes") or []:
        if isinstance(note, dict) and note.get("text"):
            lines.append(f"note: {note['text']}")
    return "\n".join(lines), tuple(located)


def verify_outcome(code: int, output: str, mode: VerifyMode) -> VerifyOutcome:
    """What an exit code of `reconciler verify` means for the check (3: skipped, unless `always`)."""
    if code == EXIT_OK:
        return VerifyOutcome("passed", "Asterisk loaded the render and logged no error or warning", output)
    if code == EXIT_UNAVAILABLE:
        if mode == "always":
            raise AsteriskUnavailable(
                "verify needs Docker and the project's Asterisk image, and they are unavailable",
                "start Docker and build or pull the image (scripts/build-images.sh asterisk), "
                "or pass --verify auto to skip it",
            )
        return VerifyOutcome("skipped", "Docker or the Asterisk image is not available", output)
    if code == EXIT_ERROR:
        return VerifyOutcome("failed", "Asterisk logged problems about the rendered files", output)
    return VerifyOutcome("failed", f"reconciler verify exited {code}", output)


def located_in(output: str) -> list[Located]:
    """Lines of verify's output that name a desired file and line."""
    found = []
    for line in output.splitlines():
        match = _LOCATED_LINE.match(line.strip())
        if match:
            found.append(Located(match["file"], int(match["line"]), match["message"], "verify"))
    return found


# ------------------------------------------------------------------------------------------------ check


def state_summary(loaded: LoadedState) -> str:
    """ "7 extensions, 1 providers, 2 outbound and 1 inbound routes": the validate row's text."""
    return state_counts(loaded.state)


def validation_located(problems: Iterable[Problem]) -> list[Located]:
    """The validate step's problems as annotations."""
    return [Located(p.file, p.line, f"{p.field}: {p.message}", "validate") for p in problems]


def plan_against_base(
    head_dir: Path,
    head_state: DesiredState,
    base: tuple[Path, str, DesiredState] | None,
    settings: Settings,
    values: Mapping[str, str],
    key: bytes,
    revision: str,
) -> tuple[planning.Plan, str | None]:
    """Render the head (and the base: its dir, commit and state) with the same throwaway `values`
    and plan head against base, files and models. The second value says why the base could not be
    rendered (then the plan is against nothing), else None."""
    rendered = render_desired(head_dir, settings, revision=revision)
    base_files: dict[str, str] = {}
    masked = set(rendered.secret_values)
    before = None
    failed: str | None = None
    if base is not None:
        base_dir, base_sha, base_state = base
        try:
            base_rendered: Rendered = render_desired(base_dir, settings, revision=base_sha)
        except ReconcilerError as exc:
            failed = exc.message
        else:
            base_files = dict(base_rendered.files)
            masked |= base_rendered.secret_values
            # The semantic plan on models: base and head snapshots with the same throwaway values,
            # so a secret shows as changed exactly when the PR points a field at another reference.
            before = snapshot_of(base_state, values, key)
    models = planning.plan_models(before, snapshot_of(head_state, values, key))
    return planning.make_plan(rendered.files, base_files, masked, models=models), failed


def run_pr_check(
    options: PrCheckOptions,
    environ: Mapping[str, str],
    echo: Callable[[str], None] = lambda _: None,
) -> PrCheckReport:
    """Validate, render base and head, plan and verify (`environ`: the environment verify's
    subprocess inherits). Raises `ReconcilerError` only when the check cannot run (a base that is
    not in the clone, a broken custom template, verify required but unavailable)."""
    desired = display_name(options.desired_dir)
    report = PrCheckReport(desired=desired)
    try:
        head = load_desired(options.desired_dir)
    except ValidationFailed as exc:
        report.problems = list(exc.problems)
        report.located = validation_located(exc.problems)
        report.verify = VerifyOutcome("skipped", "the desired state is invalid")
        return report
    report.summary = state_summary(head)
    echo(f"validate: {desired} is valid ({report.summary})")

    with tempfile.TemporaryDirectory(prefix="reconciler-pr-check-") as tmp:
        work = Path(tmp)
        base_dir: Path | None = None
        base_sha: str | None = None
        base_state: DesiredState | None = None
        if options.base:
            base_sha, base_dir = export_base(options.desired_dir, options.base, work / "base" / "desired")
            if base_dir is None:
                report.base_note = f"the base `{base_sha[:12]}` has no `{desired}`: everything is new"
            else:
                try:
                    base_state = load_desired(base_dir).state
                    report.base_note = f"against the base `{base_sha[:12]}`"
                except ValidationFailed as exc:
                    base_dir = None
                    report.base_note = (
                        f"the base `{base_sha[:12]}` does not validate ({len(exc.problems)} problem(s)): "
                        "planned against nothing"
                    )
        else:
            report.base_note = "no base given: planned against nothing, everything is new"

        values = throwaway_secrets([head.state, *([base_state] if base_state else [])])
        settings = throwaway_settings(values, work, options.templates_dir)
        revision = options.revision or revision_of(options.desired_dir)
        base = (base_dir, base_sha, base_state) if base_dir and base_sha and base_state else None
        report.plan, failed = plan_against_base(
            options.desired_dir, head.state, base, settings, values, secrets.token_bytes(32), revision
        )
        if failed is not None and base_sha is not None:
            report.base_note = (
                f"the base `{base_sha[:12]}` does not render ({failed}): planned against nothing"
            )
        echo(f"plan: {len(report.plan.changes)} change(s), {report.base_note}")

        env_file = write_env_file(values, work / "throwaway.env")
        report.verify = run_verify(options, env_file, values, revision, environ, echo)
        report.located += list(report.verify.located)
    return report


# ----------------------------------------------------------------------------------------------- report


def fenced(text: str, lang: str = "") -> str:
    """`text` in a code fence longer than any backtick run inside it (so it cannot close early)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


_ICON = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}


def invalid_body(title: str, problems: list[Problem], max_chars: int | None = None) -> str:
    """The report of a state that does not validate: every problem in a fence; with `max_chars`,
    halved until it fits (the job log lists them all)."""
    shown = [str(p) for p in problems]
    while True:
        left_out = len(problems) - len(shown)
        more = [f"... and {left_out} more: the job log lists them all"] if left_out else []
        lines = [
            f"## {title}: ❌ {len(problems)} problem(s)",
            "",
            fenced("\n".join(shown + more), "text"),
            "",
            "Fix these lines (they are annotated on the diff); nothing was rendered or planned.",
        ]
        body = "\n".join(lines) + "\n"
        if max_chars is None or len(body) <= max_chars or len(shown) <= 1:
            return body
        shown = shown[: len(shown) // 2]


def format_report(report: PrCheckReport, max_chars: int | None = None) -> str:
    """The report as markdown: a verdict line, validate/plan/verify rows, then the plan itself.
    With `max_chars`, a diff that would not fit is left out (the job log has it)."""
    if not report.valid:
        return invalid_body(f"PBX check of `{report.desired}`", report.problems, max_chars)
    assert report.plan is not None
    changes = len(report.plan.changes)
    verdict = "✅ valid" if report.passed else "❌ Asterisk rejects it"
    change_text = f"{changes} change(s)" if report.plan.has_changes else "no change"
    verify = report.verify
    rows = [
        f"## PBX check of `{report.desired}`: {verdict}, {change_text}",
        "",
        "| step | result |",
        "|---|---|",
        f"| validate | ✅ {report.summary} |",
        f"| plan | {report.base_note} |",
        f"| verify | {_ICON[verify.status]} {verify.status}: {verify.detail} |",
        "",
        "",
    ]
    if verify.status != "skipped" and verify.output:
        # Open when it failed; a pass may still carry notes (e.g. a provider host the sandbox
        # cannot resolve), folded away.
        rows += [
            f"<details{' open' if verify.status == 'failed' else ''}><summary>reconciler verify</summary>",
            "",
            fenced(verify.output, "text"),
            "",
            "</details>",
            "",
        ]
    footer = [
        "",
        "<sub>Rendered with throwaway secrets (never the PBX's); "
        "this comment is updated on every push.</sub>",
    ]
    body = "\n".join(rows) + planning.format_markdown(report.plan) + "\n".join(footer) + "\n"
    if max_chars is not None and len(body) > max_chars:
        short = replace(report.plan, diff="(diff left out: too long for a comment; the job log has it)")
        body = "\n".join(rows) + planning.format_markdown(short) + "\n".join(footer) + "\n"
    return body
