"""Which characters may reach a rendered config line or a problem line, and how a value is echoed.

One rule for every value that ends up in a rendered file (model fields, secret values, anything a
template prints): no control character (Unicode Cc), no surrogate (Cs), no Unicode line or paragraph
separator (Zl, Zp) and no invisible format character (Cf: bidi overrides, BOM, soft hyphen), except
the zero-width (non-)joiner that some scripts need in names. This covers everything `str.splitlines()`
splits on (\\n \\r \\v \\f \\x1c \\x1d \\x1e \\x85 U+2028 U+2029): a value can never add a line, in
Asterisk (which splits on \\n only) nor in any tool that splits like Python does.

Problem lines use the same rule the other way round: whatever they echo is escaped (`one_line`) and
shortened (`echo`), so a problem is always exactly one short line and never a CI workflow command.
"""

from __future__ import annotations

import re
import unicodedata

# Everything str.splitlines() treats as a line boundary.
LINE_BOUNDARIES = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})
# Zero-width non-joiner and joiner: format characters, but part of how Persian, Hindi, ... write names.
_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"})


def is_unsafe(char: str) -> bool:
    """Whether `char` may never appear in a rendered value (see the module docstring)."""
    return char not in _ALLOWED_FORMAT and unicodedata.category(char) in _REFUSED_CATEGORIES


def describe(char: str) -> str:
    """What `char` is, for a message; names the code point, never the surrounding value."""
    code = f"U+{ord(char):04X}"
    if char in LINE_BOUNDARIES:
        return f"a line break ({code})"
    if unicodedata.category(char) == "Cf":
        return f"an invisible formatting character ({code})"
    return f"a control character ({code})"


def unsafe_character(text: str, allowed: str = "") -> str | None:
    """A description of the first character of `text` that may not reach a config line (characters
    in `allowed` excepted), or None when there is none. Never includes `text` itself."""
    if text.isprintable():  # the fast path: isprintable() is False for every refused category
        return None
    for char in text:
        if char not in allowed and is_unsafe(char):
            return describe(char)
    return None


def unsafe_lines(text: str, allowed: str = "\t") -> tuple[int, str] | None:
    """(1-based line, description) of the first unsafe character of a `\\n`-separated text."""
    for number, line in enumerate(text.split("\n"), start=1):
        found = unsafe_character(line, allowed)
        if found is not None:
            return number, found
    return None


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r"[^\S ]|##(?=\[|vso\[)")
# GitHub's runner treats a line that starts with `::` (after spaces) as a workflow command, and `##[`
# anywhere as a legacy one (Azure: `##vso[`). Problem lines never carry either.


def _escape(match: re.Match[str]) -> str:
    text = match.group()
    if text.startswith("##"):
        return "#\\x23"
    return _ESCAPES.get(text) or f"\\u{ord(text):04x}"


def one_line(text: str, limit: int | None = None) -> str:
    """`text` as one printable line: line breaks, tabs, control and format characters escaped
    (`\\n`, `\\u2028`), CI workflow command markers defused, at most `limit` characters (then `…`
    and how many were left out)."""
    text = str(text)
    cut = 0
    if limit is not None and len(text) > limit:
        cut = len(text) - limit
        text = text[:limit]
    if not text.isprintable() or "##" in text:
        text = _NEEDS_ESCAPE.sub(_escape, text)
        if not text.isprintable():  # format/control characters that are not whitespace
            text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
    if cut:
        text += f"…(+{cut} characters)"
    return text


ECHO_LIMIT = 60


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """A value quoted for a message: `'text'`, escaped to one line and shortened to `limit`
    characters, so a 50 MB value or a key with a newline in it stays one short line."""
    if isinstance(value, str):
        shown = one_line(value, limit)
        return "'" + shown.replace("'", "\\'") + "'"
    return one_line(repr(value), limit)


def no_command(line: str) -> str:
    """`line`, made sure not to start a CI workflow command (`::error ...`): such a line gets `./`
    in front (problem lines start with a file name, and `./name` names the same file)."""
    return "./" + line if line.lstrip().startswith("::") else line
