"""DesiredState + templates → Asterisk config files, byte for byte deterministic.

Objects are rendered in a fixed, sorted order (extensions by number, providers by name, routes by
prefix/number, inbound by provider and DID), so reordering YAML entries changes nothing live.

No value can add a line, a section or a control character to a rendered file. One rule decides
(`textrules.unsafe_character`), and every value passes it twice: before rendering, every string of
the state and every secret value the state references (`unsafe_values`; `render_desired` reports
them as FILE:LINE problems, a secret by its name, never its value), and while rendering, Jinja's
`finalize` hook, which sees the output of every `{{ }}` (derived values, custom templates). The
rendered text is split on `\n` only, like Asterisk reads it (never `str.splitlines()`, which also
splits on \x1c, \x85, U+2028, ...).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.runtime
from pydantic import BaseModel

from reconciler.desired.model import (
    DesiredState,
    Extension,
    OpenSpan,
    SecretRef,
    field_name,
    host_port,
    parse_target,
    secret_refs,
)
from reconciler.desired.model import Path as FieldPath
from reconciler.errors import Problem, ReconcilerError, ValidationFailed
from reconciler.markers import REVISION_HELP, pjsip_marker, rev12, valid_revision
from reconciler.settings import Settings
from reconciler.textrules import unsafe_character, unsafe_lines

if TYPE_CHECKING:
    from reconciler.desired.load import LoadedState

RENDERED_FILES = (
    "pjsip.conf",
    "extensions.conf",
    "voicemail.conf",
    "queues.conf",
    "musiconhold.conf",
    "msmtprc",
)
HEADER = "; Managed by asterisk-gitops: do not edit, changes are overwritten."


class RenderFailed(ReconcilerError):
    """A template could not be rendered (a broken custom template, or an unresolved secret)."""


@dataclass(frozen=True)
class Rendered:
    """The result of load → resolve secrets → render for one desired directory."""

    revision: str
    files: dict[str, str]
    state: DesiredState
    secret_values: frozenset[str]
    # The resolved secrets, for the rows of the realtime store (never printed: repr hides them).
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Where each field came from (a LoadedState), for problems only the PBX can find (a sound it
    # does not have); None for a render made without files.
    loaded: LoadedState | None = field(default=None, repr=False, compare=False)

    def problem(self, path: FieldPath, message: str) -> Problem:
        """A problem of the field at `path`, at its FILE:LINE when known."""
        file, line = self.loaded.locate(path) if self.loaded is not None else ("desired state", 0)
        return Problem(file, line, field_name(path), message)


def mailbox_pin(ext: Extension, secrets: Mapping[str, str]) -> str:
    """The voicemail PIN of `ext`: its configured PIN, or (none configured) a 10-digit value derived
    from the extension's SIP password with HMAC-SHA256. Nobody knows the derived PIN, so the mailbox
    is reachable only from the extension's own phone (`*97`, authenticated by PJSIP), never by a
    guessable default."""
    box = ext.mailbox
    if box is not None and box.pin is not None:
        return _secret(box.pin, secrets)
    key = _secret(ext.password, secrets).encode()
    digest = hmac.new(key, f"asterisk-gitops voicemail pin {ext.number}".encode(), hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**10:010d}"


UNSAFE_HINT = (
    "a value that reaches a config file may not hold line breaks, control characters or invisible "
    "formatting characters; fix the field, or set the secret to another value"
)


def string_values(state: DesiredState) -> Iterator[tuple[FieldPath, str]]:
    """Every string in `state` with its field path, whatever the model's fields are (a new field is
    covered without being listed anywhere)."""

    def walk(value: Any, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        if isinstance(value, str):
            yield path, value
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                yield from walk(getattr(value, name), (*path, name))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from walk(item, (*path, i))

    return walk(state, ())


def unsafe_values(state: DesiredState, secrets: Mapping[str, str]) -> list[tuple[FieldPath, str | None, str]]:
    """The one check every value passes before it can reach a rendered file: (field path, secret
    name or None, what is wrong) for each string of `state` and each referenced secret value that
    holds a line break, a control character or an invisible formatting character."""
    found: list[tuple[FieldPath, str | None, str]] = []
    for path, value in string_values(state):
        why = unsafe_character(value)
        if why is not None:
            found.append((path, None, f"contains {why}"))
    for use in secret_refs(state):
        secret = secrets.get(use.name)
        why = None if secret is None else unsafe_character(secret)
        if why is not None:
            found.append((use.path, use.name, f"secret {use.name} contains {why}"))
    return found


class _UnsafeOutput(Exception):
    """Raised by `finalize` inside a template; carries the value privately to find its origin."""

    def __init__(self, value: str, why: str) -> None:
        super().__init__(why)
        self.value, self.why = value, why


def _finalize(value: Any) -> Any:
    """Jinja's hook on every `{{ }}` output: the last guard, for values no pre-check saw."""
    if isinstance(value, str):
        why = unsafe_character(value)
        if why is not None:
            raise _UnsafeOutput(value, why)
    return value


def _origin(value: str, state: DesiredState, secrets: Mapping[str, str]) -> str:
    """Which field or secret holds `value` (for a message that must not show the value)."""
    for name, secret in secrets.items():
        if secret and (secret == value or secret in value):
            return f"secret {name}"
    for path, text in string_values(state):
        if text and text in value:
            return field_name(path)
    return "a value"


def _secret(value: str, secrets: Mapping[str, str]) -> str:
    if isinstance(value, SecretRef):
        try:
            return secrets[value.name]
        except KeyError:
            raise RenderFailed(
                f"secret {value.name} was not resolved",
                "resolve secrets with secrets.resolve_secrets() before rendering",
            ) from None
    return value


def conf_escape(value: str) -> str:
    """Escape a value for an Asterisk .conf line: `;` starts a comment unless written `\\;`
    (Asterisk drops the backslash before a `;` and treats every other backslash literally)."""
    return value.replace(";", "\\;")


def _number_key(number: str) -> tuple[int, str]:
    return (len(number), number)


# How long the dialplan rings an extension before voicemail, and waits for a provider to answer;
# and the feature code of the caller's own mailbox. The template and `reconciler route` read them.
EXTENSION_RING_S = 20
OUTBOUND_DIAL_S = 60
MAILBOX_CODE = "*97"
# Feature codes dialled from a phone (README "Feature codes"); `_X.` after the ones that take a number.
FEATURE_CODES = {
    "fwd_always": "*72",
    "fwd_always_off": "*73",
    "fwd_busy": "*90",
    "fwd_busy_off": "*91",
    "fwd_noanswer": "*52",
    "fwd_noanswer_off": "*53",
    "dnd_on": "*78",
    "dnd_off": "*79",
    "pickup_group": "*8",
    "pickup_direct": "**",
}
# How many targets one call may pass through (a phone forwarding in a circle ends there).
MAX_HOPS = 10
MOH_DIR = "/usr/share/asterisk/moh"  # Debian's asterisk-moh-opsound files
MSMTPRC = "/etc/asterisk/managed/msmtprc"
MAIL_COMMAND = f"/usr/bin/msmtp -C {MSMTPRC} -t"
# Where each kind of target goes in the dialplan: `Goto(<context>,<exten>,1)`.
TARGET_CONTEXTS = {
    "extension": "gitops-ext",
    "ring_group": "gitops-rg",
    "queue": "gitops-queue",
    "voicemail": "gitops-vm",
}


def target_destination(target: str) -> str:
    """`ring_group:600` → `gitops-rg,600`: the context and extension a target's calls go to
    (`Goto(<this>,1)`); `menu:main` → `gitops-menu-main,s`, `hangup` → `gitops-hangup,s`."""
    ref = parse_target(target)
    if ref.kind == "menu":
        return f"gitops-menu-{ref.value},s"
    if ref.kind == "hangup":
        return "gitops-hangup,s"
    return f"{TARGET_CONTEXTS[ref.kind]},{ref.value}"


def gotoiftime_range(span: OpenSpan) -> str:
    """An open span as GotoIfTime takes it. Asterisk counts the end minute in (pbx_timing.c), a span's
    end is exclusive: `09:00-18:00` is written `09:00-17:59` (and 24:00 becomes 23:59)."""
    return f"{span.hhmm(span.start)}-{span.hhmm(span.end - 1)}"


def msmtp_quote(value: str) -> str:
    """A value as one msmtp configuration argument: in double quotes, `\\` and `\"` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def extension_pattern(number: str) -> str:
    """The dialplan pattern that routes `number`: its first digit, then one X per other digit."""
    return f"_{number[0]}{'X' * (len(number) - 1)}"


def file_object_ids(state: DesiredState, revision: str) -> set[str]:
    """The PJSIP object ids pjsip.conf defines (transports aside): providers and the marker."""
    ids = {pjsip_marker(rev12(revision))}
    for p in state.providers:
        ids |= {p.name, f"{p.name}-auth", f"{p.name}-reg", f"{p.name}-identify"}
    return ids


def store_object_ids(number: str) -> set[str]:
    """The PJSIP object ids an extension has in the realtime store (endpoint/aor, auth)."""
    return {number, f"{number}-auth"}


def check_no_shared_ids(state: DesiredState, revision: str) -> None:
    """An id must never be both in pjsip.conf and in the store: Asterisk would silently use the file's
    object. The model keeps numbers digits-only and provider names letters-first; this says so."""
    in_file = file_object_ids(state, revision)
    both = sorted(i for e in state.extensions for i in store_object_ids(e.number) if i in in_file)
    if both:
        raise RenderFailed(
            f"object id(s) {', '.join(both)} would be both in pjsip.conf and in the realtime store",
            "rename the provider or the extension: an id must be unique across both",
        )


def template_context(state: DesiredState, revision: str) -> dict[str, Any]:
    """What the templates see: the state in render order plus a few derived values."""
    transports = ["udp"] + [t for t in ("tcp", "tls") if any(p.transport == t for p in state.providers)]
    emergency = sorted(
        ((number, route) for route in state.outbound for number in route.numbers or []),
        key=lambda item: _number_key(item[0]),
    )
    return {
        "revision": revision,
        "rev12": rev12(revision),
        "header": HEADER,
        "pbx": state.pbx,
        "transports": transports,
        "providers": sorted(state.providers, key=lambda p: p.name),
        "providers_by_name": {p.name: p for p in state.providers},
        "extensions": sorted(state.extensions, key=lambda e: _number_key(e.number)),
        "extension_patterns": sorted(
            {extension_pattern(e.number) for e in state.extensions}, key=lambda p: (len(p), p)
        ),
        "emergency": emergency,
        "prefix_routes": sorted(
            (r for r in state.outbound if r.prefix is not None), key=lambda r: r.prefix or ""
        ),
        "inbound": sorted(state.inbound, key=lambda r: (r.provider, r.did)),
        "ring_s": EXTENSION_RING_S,
        "dial_s": OUTBOUND_DIAL_S,
        "mailbox_code": MAILBOX_CODE,
        "codes": FEATURE_CODES,
        "max_hops": MAX_HOPS,
        "ring_groups": sorted(state.ring_groups, key=lambda g: _number_key(g.number)),
        "queues": sorted(state.queues, key=lambda q: _number_key(q.number)),
        "menus": sorted(state.menus, key=lambda m: m.name),
        "schedules": sorted(state.schedules, key=lambda s: s.name),
        "extension_names": {e.number: e.name for e in state.extensions},
        "moh_dir": MOH_DIR,
        "mail_command": MAIL_COMMAND,
    }


@jinja2.pass_context
def _secret_filter(context: jinja2.runtime.Context, value: str) -> str:
    return conf_escape(_secret(value, context["secrets"]))


@jinja2.pass_context
def _msmtp_secret_filter(context: jinja2.runtime.Context, value: str) -> str:
    return msmtp_quote(_secret(value, context["secrets"]))


@jinja2.pass_context
def _mailbox_pin_global(context: jinja2.runtime.Context, ext: Extension) -> str:
    return mailbox_pin(ext, context["secrets"])


@functools.lru_cache(maxsize=8)
def _environment(templates_dir: Path) -> jinja2.Environment:
    """One environment per templates dir: compiled templates are cached (and reloaded when changed)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=_finalize,
    )
    env.filters["secret"] = _secret_filter
    env.filters["conf"] = conf_escape
    env.filters["msmtp_secret"] = _msmtp_secret_filter
    env.globals["dest"] = target_destination
    env.globals["gotoiftime"] = gotoiftime_range
    env.globals["mailbox_pin"] = _mailbox_pin_global
    env.globals["host_port"] = host_port
    return env


def _tidy(text: str) -> str:
    """Trailing spaces and trailing blank lines removed. Lines are split on `\n` only: that is how
    Asterisk reads a .conf file (and Jinja writes every template line break as `\n`)."""
    lines = [line.rstrip(" \t") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def render(
    state: DesiredState, secrets: Mapping[str, str], revision: str, templates_dir: Path
) -> dict[str, str]:
    """Render `pjsip.conf`, `extensions.conf` and `voicemail.conf` from `templates_dir/<name>.j2`.
    Same arguments, same bytes. Raises `RenderFailed` for a missing or broken template, and for a
    value that would add a line or a control character (naming the field or secret, never the value)."""
    unsafe = unsafe_values(state, secrets)
    if unsafe:
        path, _, why = unsafe[0]
        raise RenderFailed(f"{field_name(path)}: {why}", UNSAFE_HINT)
    return _render(state, secrets, revision, templates_dir)


def _render(
    state: DesiredState, secrets: Mapping[str, str], revision: str, templates_dir: Path
) -> dict[str, str]:
    if not valid_revision(revision):
        raise RenderFailed(f"revision {revision[:120]!r} cannot be used in config files", REVISION_HELP)
    check_no_shared_ids(state, revision)
    env = _environment(Path(templates_dir).resolve())
    context = {**template_context(state, revision), "secrets": secrets}
    files: dict[str, str] = {}
    for name in RENDERED_FILES:
        try:
            text = _tidy(env.get_template(f"{name}.j2").render(context))
        except _UnsafeOutput as exc:
            raise RenderFailed(
                f"template {name}.j2: {_origin(exc.value, state, secrets)} would print {exc.why}",
                UNSAFE_HINT,
            ) from None
        except jinja2.TemplateNotFound:
            raise RenderFailed(
                f"template {name}.j2 not found in {templates_dir}",
                "point --templates at a directory with every template ("
                + ", ".join(f"{n}.j2" for n in RENDERED_FILES)
                + ")",
            ) from None
        except jinja2.TemplateError as exc:
            lineno = getattr(exc, "lineno", None)
            where = f" line {lineno}" if lineno else ""
            raise RenderFailed(
                f"template {name}.j2{where} failed: {exc.message or exc}", "fix the template"
            ) from None
        bad_line = unsafe_lines(text)
        if bad_line is not None:  # only a template's own text can get here: every value was checked
            raise RenderFailed(
                f"template {name}.j2 renders {bad_line[1]} on line {bad_line[0]} of {name}",
                "remove it from the template",
            )
        files[name] = text
    return files


RENDERED_FILE_MODE = 0o600  # pjsip.conf holds passwords, voicemail.conf PINs
RENDERED_DIR_MODE = 0o700


def write_rendered(out_dir: Path, files: Mapping[str, str]) -> None:
    """Write rendered files into `out_dir`, each readable by its owner only (0600), through a temp
    file renamed into place, so no moment exists in which a password is world-readable, not even
    when an older file of the same name was 0644. A directory this creates is 0700; an existing
    one keeps its mode. Raises OSError."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        out_dir.mkdir(mode=RENDERED_DIR_MODE, exist_ok=True)
    for name, text in files.items():
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")  # mkstemp: 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            os.chmod(tmp, RENDERED_FILE_MODE)
            os.replace(tmp, out_dir / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def secret_values(state: DesiredState, secrets: Mapping[str, str]) -> frozenset[str]:
    """Every value that must be masked in output: resolved secrets and derived mailbox PINs."""
    values = set(secrets.values())
    values.update(mailbox_pin(e, secrets) for e in state.extensions if e.has_voicemail)
    return frozenset(v for v in values if v)


def render_desired(desired_dir: Path, settings: Settings, revision: str | None = None) -> Rendered:
    """load → resolve secrets → render for `desired_dir`, with `settings.templates_dir`. With
    `settings.site`, `desired_dir` is a fleet directory and that site is rendered (its secrets come
    from `settings.env_file`: `fleet.site_settings()` points it at the site's env file).
    The revision defaults to `revision.revision_of(desired_dir)`. Raises `ValidationFailed` for an
    invalid state or missing/weak secrets, `RenderFailed` for a broken template."""
    from reconciler.desired.fleet import load_tree
    from reconciler.desired.revision import revision_of, site_revision
    from reconciler.desired.secrets import resolve_secrets

    loaded = load_tree(Path(desired_dir), settings.site)
    secrets = resolve_secrets(loaded, settings)
    problems = [
        Problem(*loaded.locate(path), field_name(path), why)
        for path, _, why in unsafe_values(loaded.state, secrets)
    ]
    if problems:
        raise ValidationFailed(problems)
    rev = revision or (
        site_revision(Path(desired_dir), settings.site) if settings.site else revision_of(Path(desired_dir))
    )
    files = _render(loaded.state, secrets, rev, Path(settings.templates_dir))
    return Rendered(rev, files, loaded.state, secret_values(loaded.state, secrets), dict(secrets), loaded)
