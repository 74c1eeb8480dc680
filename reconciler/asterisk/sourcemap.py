"""Map what Asterisk says about a rendered file back to the object and the desired item behind it.

Asterisk names a defect by a line of a rendered file (`line 144 of pjsip.conf`), by a section
(`category '4005'`) or by an object (`Could not create an object of type 'endpoint' with id
'4005'`). The render is deterministic and its section names are the desired names (extension
numbers, provider names with `-auth`/`-reg`/`-identify`, `transport-<proto>`), so a rendered
section leads to one desired item, and `LoadedState.locate` to its file and line.

Pure functions over text and the model: no Docker, no files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.asterisk.parsers import LogProblem
from reconciler.desired.confparse import Section, parse_conf
from reconciler.desired.load import LoadedState
from reconciler.desired.model import DesiredState, field_name
from reconciler.desired.render import extension_pattern
from reconciler.markers import is_marker_section

ItemPath = tuple[str | int, ...]

# `exten => 911,1,...` (and `same => n,...` lines, which belong to the exten above them)
_EXTEN = re.compile(r"^\s*exten\s*=>?\s*(?P<exten>[^,\s]+)\s*,")
# `4001 => 1234567890,Sales` in voicemail.conf
# res_pjsip names a transport that could not start: `Transport 'transport-udp' could not be started`
_TRANSPORT_NAMED = re.compile(r"\bTransport '([^']+)'")
_PROVIDER_SUFFIXES = {"-auth": "password", "-reg": "register", "-identify": "match"}


@dataclass(frozen=True)
class RenderedObject:
    """One section of a rendered file: `[name]` with its `type =` (None outside pjsip.conf)."""

    file: str
    section: str
    type: str | None
    line: int  # 1-based line of the `[name]` header


@dataclass(frozen=True)
class Located:
    """Where a problem Asterisk logged comes from.

    `rendered` is `file:line` in the render (the line Asterisk named, else the section header);
    `item` the desired item's path (`("extensions", 5)`) and `source` its `(file, line)` in the
    desired directory, when the object comes from one.
    """

    rendered: str | None
    section: str | None
    item: ItemPath | None = None
    source: tuple[str, int] | None = None
    what: str | None = None  # e.g. "extension 4005", "provider pbx_provider"

    @property
    def field(self) -> str | None:
        return field_name(self.item) if self.item else None

    def prefix(self) -> str:
        """`desired/extensions.yaml:21: extensions[5] (extension 4005): ` or `pjsip.conf:144: `."""
        if self.source is not None and self.item is not None:
            file, line = self.source
            what = f" ({self.what})" if self.what else ""
            return f"{file}:{line}: {self.field}{what}: "
        if self.rendered:
            return f"{self.rendered}: "
        return ""


def sections(text: str) -> list[Section]:
    """The sections of a rendered file in order (template and placeholder lines included)."""
    return parse_conf(text)


def section_at(text: str, line: int) -> Section | None:
    """The section that line `line` (1-based) of `text` belongs to: the last header at or above it."""
    found = None
    for section in parse_conf(text):
        if section.line > line:
            break
        if section.name:
            found = section
    return found


def _object(file: str, section: Section | None) -> RenderedObject | None:
    if section is None:
        return None
    return RenderedObject(file, section.name, section.type if file == "pjsip.conf" else None, section.line)


def rendered_object(problem: LogProblem, files: Mapping[str, str]) -> RenderedObject | None:
    """The rendered section a problem is about, from its line, its category or the object it names.

    config_options.c leaves the file name empty (`at line 144 of `): the only sorcery file the
    reconciler manages is pjsip.conf, so such a line is read there.
    """
    file = problem.file or ("pjsip.conf" if problem.line is not None else None)
    failed = problem.failed_object
    named = _TRANSPORT_NAMED.search(problem.message) if problem.module.startswith("res_pjsip") else None
    if failed is not None or named is not None:
        file = "pjsip.conf"
    text = files.get(file or "")
    if text is None:
        return None
    if problem.line is not None:
        lines = text.splitlines()
        own = lines[problem.line - 1].strip() if 1 <= problem.line <= len(lines) else ""
        if own.startswith("[") and "]" not in own:
            # a header Asterisk could not parse (`[4001-auth`): the section it was meant to open
            name = re.split(r"[\](\s;]", own[1:], maxsplit=1)[0]
            return RenderedObject(file or "", name, None, problem.line)
        return _object(file or "", section_at(text, problem.line))
    wanted_name = failed[1] if failed else problem.category or (named[1] if named else None)
    if wanted_name is None:
        return None
    wanted_type = failed[0] if failed else ("transport" if named and not problem.category else None)
    for section in parse_conf(text):
        if section.name == wanted_name and (wanted_type is None or section.type == wanted_type):
            return _object(file or "", section)
    return None


def _extension_index(state: DesiredState, number: str) -> int | None:
    return next((i for i, e in enumerate(state.extensions) if e.number == number), None)


def _provider_index(state: DesiredState, name: str) -> int | None:
    return next((i for i, p in enumerate(state.providers) if p.name == name), None)


def _pjsip_item(state: DesiredState, obj: RenderedObject) -> tuple[ItemPath, str] | None:
    name = obj.section
    if is_marker_section(name):
        return None
    if name.startswith("transport-"):
        return ("pbx", "bind"), f"transport {name}"
    ext_number = name.removesuffix("-auth")
    i = _extension_index(state, ext_number)
    if i is not None:
        path: ItemPath = ("extensions", i, "password") if name.endswith("-auth") else ("extensions", i)
        return path, f"extension {ext_number}"
    j = _provider_index(state, name)
    if j is not None:  # the provider's endpoint and aor share its name
        return ("providers", j), f"provider {name}"
    for suffix, field in _PROVIDER_SUFFIXES.items():
        j = _provider_index(state, name.removesuffix(suffix)) if name.endswith(suffix) else None
        if j is None:
            continue
        if field == "match" and not state.providers[j].match:
            field = "host"  # the default match is the provider's host:port
        return ("providers", j, field), f"provider {state.providers[j].name}"
    return None


def _exten_at(text: str, line: int) -> str | None:
    """The extension that line `line` of a dialplan belongs to (`same =>` lines: the one above)."""
    lines = text.splitlines()
    for number in range(min(line, len(lines)), 0, -1):
        current = lines[number - 1]
        if current.lstrip().startswith("["):
            return None
        match = _EXTEN.match(current)
        if match:
            return match["exten"]
    return None


def _dialplan_item(
    state: DesiredState, obj: RenderedObject, text: str, line: int
) -> tuple[ItemPath, str] | None:
    context = obj.section
    exten = _exten_at(text, line)
    if context == "internal" and exten:
        for i, route in enumerate(state.outbound):
            if route.numbers and exten in route.numbers:
                return ("outbound", i, "numbers", route.numbers.index(exten)), f"route {route.name}"
            if route.prefix is not None and exten == f"_{route.prefix}X.":
                return ("outbound", i, "prefix"), f"route {route.name}"
        i_ext = _extension_index(state, exten)
        if i_ext is not None:
            return ("extensions", i_ext), f"extension {exten}"
        if any(extension_pattern(e.number) == exten for e in state.extensions):
            return ("extensions",), f"the extensions {exten} routes"
        return None
    if context.startswith("from-"):
        provider = context.removeprefix("from-")
        for i, inbound in enumerate(state.inbound):
            if inbound.provider == provider and inbound.did == exten:
                return ("inbound", i), f"DID {inbound.did}"
        j = _provider_index(state, provider)
        return (("providers", j), f"provider {provider}") if j is not None else None
    return None  # [general], [gitops-meta] (the revision marker) or a context a template added


def desired_item(
    state: DesiredState, obj: RenderedObject, files: Mapping[str, str], line: int | None = None
) -> tuple[ItemPath, str] | None:
    """(path of the desired item, what it is) behind a rendered object, or None when no desired
    item made it (a marker, a section a custom template added, `[general]`)."""
    text = files.get(obj.file, "")
    if obj.file == "pjsip.conf":
        return _pjsip_item(state, obj)
    if obj.file == "extensions.conf":
        return _dialplan_item(state, obj, text, line or obj.line)
    return None


def locate(problem: LogProblem, files: Mapping[str, str], loaded: LoadedState | None) -> Located:
    """Where `problem` comes from: the rendered line and section, and (with a `LoadedState`) the
    desired file, line and field of the item that rendered it."""
    obj = rendered_object(problem, files)
    if obj is None:
        rendered = f"{problem.file}:{problem.line}" if problem.file and problem.line else None
        return Located(rendered=rendered, section=None)
    line = problem.line if problem.line is not None else obj.line
    rendered = f"{obj.file}:{line}"
    item = desired_item(loaded.state, obj, files, line) if loaded is not None else None
    if loaded is None or item is None:
        return Located(rendered=rendered, section=obj.section)
    path, what = item
    source = loaded.locate(path)
    return Located(rendered=rendered, section=obj.section, item=path, source=source, what=what)
