"""DesiredState + templates → Asterisk config files, byte for byte deterministic.

Objects are rendered in a fixed, sorted order (extensions by number, providers by name, routes by
prefix/number, inbound by provider and DID), so reordering YAML entries changes nothing live.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.runtime

from reconciler.errors import ReconcilerError
from reconciler.markers import REVISION_HELP, rev12, valid_revision
from reconciler.model import DesiredState, Extension, SecretRef
from reconciler.settings import Settings

RENDERED_FILES = ("pjsip.conf", "extensions.conf", "voicemail.conf")
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
        "emergency": emergency,
        "prefix_routes": sorted(
            (r for r in state.outbound if r.prefix is not None), key=lambda r: r.prefix or ""
        ),
        "inbound": sorted(state.inbound, key=lambda r: (r.provider, r.did)),
    }


@jinja2.pass_context
def _secret_filter(context: jinja2.runtime.Context, value: str) -> str:
    return conf_escape(_secret(value, context["secrets"]))


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
    )
    env.filters["secret"] = _secret_filter
    env.filters["conf"] = conf_escape
    env.globals["mailbox_pin"] = _mailbox_pin_global
    return env


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def render(
    state: DesiredState, secrets: Mapping[str, str], revision: str, templates_dir: Path
) -> dict[str, str]:
    """Render `pjsip.conf`, `extensions.conf` and `voicemail.conf` from `templates_dir/<name>.j2`.
    Same arguments, same bytes. Raises `RenderFailed` for a missing or broken template."""
    if not valid_revision(revision):
        raise RenderFailed(f"revision {revision[:120]!r} cannot be used in config files", REVISION_HELP)
    env = _environment(Path(templates_dir).resolve())
    context = {**template_context(state, revision), "secrets": secrets}
    files: dict[str, str] = {}
    for name in RENDERED_FILES:
        try:
            files[name] = _tidy(env.get_template(f"{name}.j2").render(context))
        except jinja2.TemplateNotFound:
            raise RenderFailed(
                f"template {name}.j2 not found in {templates_dir}",
                "point --templates at a directory with all three",
            ) from None
        except jinja2.TemplateError as exc:
            where = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
            raise RenderFailed(
                f"template {name}.j2{where} failed: {exc.message or exc}", "fix the template"
            ) from None
    return files


def secret_values(state: DesiredState, secrets: Mapping[str, str]) -> frozenset[str]:
    """Every value that must be masked in output: resolved secrets and derived mailbox PINs."""
    values = set(secrets.values())
    values.update(mailbox_pin(e, secrets) for e in state.extensions if e.has_voicemail)
    return frozenset(v for v in values if v)


def render_desired(desired_dir: Path, settings: Settings, revision: str | None = None) -> Rendered:
    """load → resolve secrets → render for `desired_dir`, with `settings.templates_dir`.
    The revision defaults to `revision.revision_of(desired_dir)`. Raises `ValidationFailed` for an
    invalid state or missing/weak secrets, `RenderFailed` for a broken template."""
    from reconciler.load import load_desired
    from reconciler.revision import revision_of
    from reconciler.secrets import resolve_secrets

    loaded = load_desired(Path(desired_dir))
    secrets = resolve_secrets(loaded, settings)
    rev = revision or revision_of(Path(desired_dir))
    files = render(loaded.state, secrets, rev, Path(settings.templates_dir))
    return Rendered(rev, files, loaded.state, secret_values(loaded.state, secrets))
