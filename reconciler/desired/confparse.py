"""Asterisk `.conf` text → sections, the way Asterisk's config parser reads it (the subset we need).

Handles `[name]`, `[name](!)`, `[name](tmpl1,tmpl2)`, `key = value` and `key => value` lines,
`;` comments (an escaped `\\;` is kept as `;`), and `;-- --;` block comments. `#include` and other
directives are kept as options named `#include` etc. so they are not silently lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SECTION_RE = re.compile(r"^\[([^\]]*)\]\s*(?:\(([^)]*)\))?\s*$")


@dataclass
class Section:
    """One `[name](templates)` section with its options in file order."""

    name: str
    templates: tuple[str, ...] = ()  # e.g. ("!",) for a template, ("ext-endpoint",) for inheritance
    options: list[tuple[str, str]] = field(default_factory=list)
    line: int = 0  # 1-based line of the `[name]` header

    @property
    def is_template(self) -> bool:
        return "!" in self.templates

    def get(self, key: str, default: str | None = None) -> str | None:
        """The last value of `key` (Asterisk: a later line overrides an earlier one for scalars)."""
        for k, v in reversed(self.options):
            if k == key:
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        return [v for k, v in self.options if k == key]

    @property
    def type(self) -> str | None:
        """The PJSIP object type (`type = endpoint`), if any."""
        return self.get("type")


_UNESCAPED_SEMICOLON = re.compile(r"(?<!\\);")


def strip_comment(line: str) -> str:
    """Drop a `;` comment, keeping escaped `\\;` as a literal `;`."""
    if ";" not in line:
        return line
    return _UNESCAPED_SEMICOLON.split(line, maxsplit=1)[0].replace("\\;", ";")


def parse_conf(text: str) -> list[Section]:
    """Parse Asterisk config text into sections in file order. Options before the first section
    go into a section named "" (Asterisk would warn about them). Lines end at `\n` only, as
    Asterisk reads them: `str.splitlines()` would also split on \x1c, \x85 or U+2028 and see
    sections that Asterisk does not."""
    sections: list[Section] = []
    current: Section | None = None
    in_block_comment = False
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw
        if in_block_comment:
            end = line.find("--;")
            if end < 0:
                continue
            line = line[end + 3 :]
            in_block_comment = False
        start = line.find(";--")
        if start >= 0:
            end = line.find("--;", start + 3)
            if end < 0:
                in_block_comment = True
                line = line[:start]
            else:
                line = line[:start] + line[end + 3 :]
        line = strip_comment(line).strip()
        if not line:
            continue
        match = _SECTION_RE.match(line)
        if match:
            templates = tuple(t.strip() for t in (match.group(2) or "").split(",") if t.strip())
            current = Section(match.group(1).strip(), templates, [], number)
            sections.append(current)
            continue
        if current is None:
            current = Section("", (), [], number)
            sections.append(current)
        if line.startswith("#"):
            directive, _, rest = line.partition(" ")
            current.options.append((directive, rest.strip()))
            continue
        key, sep, value = line.partition("=")
        if not sep:
            current.options.append((line, ""))  # Asterisk skips it with a warning; keep it visible
            continue
        value = value.removeprefix(">")  # `exten => ...` is `exten = ...` to Asterisk
        current.options.append((key.strip(), value.strip()))
    return sections
