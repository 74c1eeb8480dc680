"""The revision markers: the one grammar of a revision id, and how it appears in rendered files and in
Asterisk's answers. Render, verification, the parsers, status, doctor and the shell steps run in the
container all take it from here, so every revision id that render accepts is one that verifies.

- A revision id is a git sha, `sha256:<hex>` (a content hash), or whatever `--revision` names
  (`release_7`, `v1.2-rc`): an optional `sha256:` prefix, then a letter or digit, then up to 99 of
  letters, digits and `. _ + -`. Nothing else can reach a config file: no space, no `;`, no line
  break (a trailing newline is refused too: the match is a full match).
- `rev12` is the first 12 characters without the `sha256:` prefix; it names the markers:
  - PJSIP: an AOR section `[gitops-rev-<rev12>]`, found by `pjsip show aor gitops-rev-<rev12>`;
  - dialplan: `exten => revision,1,NoOp(<rev12>)` in context `[gitops-meta]`, shown by
    `dialplan show revision@gitops-meta`.
"""

from __future__ import annotations

import re

HASH_PREFIX = "sha256:"
# Characters of a revision id after the optional prefix. In a bracket expression `-` comes last, so
# the same text works in Python regexes and in sed's basic regexes.
REVISION_CHARS = "A-Za-z0-9._+-"
REVISION_MAX = 100
REVISION_RE = re.compile(rf"(?:{HASH_PREFIX})?[A-Za-z0-9][{REVISION_CHARS}]{{0,{REVISION_MAX - 1}}}")
REVISION_HELP = (
    "a revision id is a git sha, sha256:<hex>, or up to 100 letters, digits and . _ + - "
    "starting with a letter or digit"
)
REV12_LENGTH = 12
_REV12 = rf"[{REVISION_CHARS}]{{1,{REV12_LENGTH}}}"

PJSIP_MARKER_PREFIX = "gitops-rev-"
DIALPLAN_CONTEXT = "gitops-meta"
DIALPLAN_EXTEN = "revision"
DIALPLAN_QUERY = f"dialplan show {DIALPLAN_EXTEN}@{DIALPLAN_CONTEXT}"

_PJSIP_SECTION = re.compile(rf"^\[{PJSIP_MARKER_PREFIX}({_REV12})\]", re.M)
_DIALPLAN_LINE = re.compile(rf"^exten\s*=>\s*{DIALPLAN_EXTEN}\s*,\s*1\s*,\s*NoOp\(({_REV12})\)\s*$", re.M)
_DIALPLAN_ANSWER = re.compile(rf"'{DIALPLAN_EXTEN}' =>\s+1\. NoOp\(({_REV12})\)")
# The same section pattern for sed in the container (`sed -n "s/$PJSIP_MARKER_SED/\1/p"`).
PJSIP_MARKER_SED = rf"^\[{PJSIP_MARKER_PREFIX}\([{REVISION_CHARS}]*\)\].*"


def valid_revision(revision: str) -> bool:
    """Whether `revision` may be rendered into config files (and will therefore verify)."""
    return REVISION_RE.fullmatch(revision) is not None


def rev12(revision: str) -> str:
    """The short revision used in markers: 12 characters, without a `sha256:` prefix."""
    return revision.removeprefix(HASH_PREFIX)[:REV12_LENGTH]


def pjsip_marker(short: str) -> str:
    """The name of the marker AOR for a rev12: `gitops-rev-<rev12>`."""
    return f"{PJSIP_MARKER_PREFIX}{short}"


def pjsip_marker_query(short: str) -> str:
    """The CLI query that finds the marker AOR of a rev12."""
    return f"pjsip show aor {pjsip_marker(short)}"


def declared_pjsip_rev12(pjsip_conf: str | None) -> str | None:
    """The rev12 of the `[gitops-rev-<rev12>]` marker AOR a managed pjsip.conf declares."""
    match = _PJSIP_SECTION.search(pjsip_conf or "")
    return match[1] if match else None


def declared_dialplan_rev12(extensions_conf: str | None) -> str | None:
    """The rev12 that a managed extensions.conf declares in `exten => revision,1,NoOp(<rev12>)`."""
    match = _DIALPLAN_LINE.search(extensions_conf or "")
    return match[1] if match else None


def aor_found(output: str, short: str) -> bool:
    """Whether the answer to `pjsip show aor gitops-rev-<rev12>` found the marker AOR."""
    return "Unable to find object" not in output and pjsip_marker(short) in output


def dialplan_revision(output: str) -> str | None:
    """The rev12 in the `NoOp(<rev12>)` of the answer to `dialplan show revision@gitops-meta`."""
    match = _DIALPLAN_ANSWER.search(output)
    return match[1] if match else None


def is_marker_section(name: str) -> bool:
    """Whether a pjsip.conf section name is a revision marker."""
    return name.startswith(PJSIP_MARKER_PREFIX)
