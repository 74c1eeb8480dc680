"""Read `desired/*.yaml` into a `DesiredState`, keeping where every value came from.

Every problem (malformed YAML, unknown key, wrong type, dangling reference, ...) becomes a
`Problem(file, line, field, message)`; all of them are raised at once in one `ValidationFailed`.

Which entries of a directory are desired files, and which of them are refused unread, is decided
by `desired_entries()` alone: the CLI, the content hash of a revision and the watch loop's snapshots
(`sources.py`) all call it. A desired file is a `*.yaml`/`*.yml` entry not starting with `.` (editor
lock and swap files do); a symlink may point at a regular file inside the directory, never outside
it (its target is not even looked at) and never at nothing. Reading is bounded (size, UTF-8 with
line and column, nesting depth, alias expansion), so no file can hang, crash or flood `validate`.
"""

from __future__ import annotations

import difflib
import gc
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import MarkedYAMLError, YAMLError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.desired import model
from reconciler.desired.model import DesiredState, field_name
from reconciler.errors import Problem, ValidationFailed
from reconciler.safeio import FileRefused, decode_utf8, read_regular
from reconciler.textrules import ECHO_LIMIT, describe, echo, one_line

DESIRED_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 16 << 20  # 10,000 extensions are about 1 MiB
MAX_DEPTH = 32  # levels of nested lists/mappings; the schema needs 5
MAX_ALIAS_EXPANSION = 1_000_000  # values that aliases may add to a document (a bomb adds billions)
# Characters YAML 1.1 parsers count as line breaks and editors do not: line numbers would disagree.
_YAML_ONLY_BREAKS = re.compile("[\x85\u2028\u2029]")

# Why an entry is refused without being read (sources.py reproduces each in snapshots).
LEAVES_DIRECTORY = "is a symbolic link that leaves the desired directory (its target is not read)"
DANGLING_LINK = "is a symbolic link to nothing (dangling)"
NOT_REGULAR = "is not a regular file (a directory, pipe, socket or device)"

_NAME_KEYS = {
    "providers": "name",
    "extensions": "number",
    "ring_groups": "number",
    "queues": "number",
    "menus": "name",
    "schedules": "name",
}
_ITEM_MODELS: dict[str, type[BaseModel]] = {
    "providers": model.Provider,
    "extensions": model.Extension,
    "outbound": model.OutboundRoute,
    "inbound": model.InboundRoute,
    "ring_groups": model.RingGroup,
    "schedules": model.Schedule,
    "menus": model.Menu,
    "queues": model.Queue,
}

# Where each value of a document came from: a mapping's index maps each key to (1-based line of the
# key, index of its value); a sequence's index lists (1-based line of the item, index of the item);
# a scalar has none.
LineIndex: TypeAlias = "dict[Any, tuple[int, LineIndex]] | list[tuple[int, LineIndex]] | None"


@dataclass(frozen=True)
class LoadedState:
    """A validated desired state and the source location of each of its top-level keys."""

    state: DesiredState
    dir: Path
    # top-level key -> (display file name, line index of the file's document)
    sources: Mapping[str, tuple[str, LineIndex]] = field(default_factory=dict, repr=False)
    files: tuple[str, ...] = ()
    # A state merged from several files (a fleet's site, `fleet.py`): path prefix, e.g.
    # `("extensions", 3)` or `("pbx", "port")` -> (display file name, line of that node, its line
    # index). Consulted before `sources`, longest prefix first.
    overrides: Mapping[tuple[str | int, ...], tuple[str, int, LineIndex]] = field(
        default_factory=dict, repr=False
    )

    def locate(self, path: tuple[str | int, ...]) -> tuple[str, int]:
        """(display file name, 1-based line) of the field at `path`, e.g. `("extensions", 2, "password")`.
        Falls back to the nearest enclosing node that exists; `(dir, 0)` for a key in no file."""
        if self.overrides:
            for length in range(min(len(path), 3), 0, -1):
                found = self.overrides.get(path[:length])
                if found is not None:
                    file, line, index = found
                    return file, _line_of(index, path[length:], line)
        if not path or path[0] not in self.sources:
            return (self.files[0] if self.files else display_name(self.dir), 0)
        file, index = self.sources[str(path[0])]
        return file, _line_of(index, path)


@dataclass(frozen=True)
class DesiredEntry:
    """An entry of a desired directory that is a desired file by its name; `refused` says why it
    is not read (a symlink leaving the directory or to nothing, not a regular file), else None."""

    path: Path
    refused: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


def is_desired_name(name: str) -> bool:
    """`*.yaml`/`*.yml`, not hidden (`.#pbx.yaml` is an editor's lock, a dangling symlink)."""
    return name.endswith(DESIRED_SUFFIXES) and not name.startswith(".")


def _refusal(path: Path, root: str) -> str | None:
    try:
        st = os.lstat(path)
    except OSError:
        return DANGLING_LINK  # gone since the directory was listed
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)  # never raises; a loop stays unresolved and does not exist
        if os.path.commonpath([root, target]) != root:
            return LEAVES_DIRECTORY
        try:
            st = os.stat(target)
        except OSError:
            return DANGLING_LINK
    return None if stat.S_ISREG(st.st_mode) else NOT_REGULAR


def desired_entries(directory: Path) -> list[DesiredEntry]:
    """The desired files of `directory`, sorted by name, each with why it is refused (if it is).
    Nothing is opened: a refused entry's target is never read."""
    directory = Path(directory)
    root = os.path.realpath(directory)
    names = sorted(name for name in os.listdir(directory) if is_desired_name(name))
    return [DesiredEntry(directory / name, _refusal(directory / name, root)) for name in names]


def write_refused(target: Path, reason: str) -> None:
    """Make `target` an entry that `desired_entries` refuses for the same `reason`, without the
    original's target: a snapshot of a desired directory (or of a git tree) keeps a refused entry
    refused, so the watch loop reports exactly the problem `validate` reports."""
    if reason == LEAVES_DIRECTORY:
        os.symlink("/dev/null/outside-the-desired-directory", target)
    elif reason == DANGLING_LINK:
        os.symlink(".dangling-link-target", target)  # hidden names are never exported
    else:
        target.mkdir()


def read_entry(entry: DesiredEntry) -> bytes:
    """The bytes of a desired file that is not refused, at most MAX_FILE_BYTES (`FileRefused`)."""
    if entry.refused is not None:
        raise FileRefused(entry.refused)
    try:
        return read_regular(entry.path, MAX_FILE_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        raise FileRefused("was removed while being read") from None


def display_name(path: Path) -> str:
    """The path as the user would type it: relative to the current directory when below it. Only
    the parent directory is resolved: a symlinked desired file is shown by its own name, never by
    its target's."""
    path = Path(path)
    try:
        return str((path.parent.resolve() / path.name).relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _line_of(index: LineIndex, path: tuple[str | int, ...], line: int = 1) -> int:
    """1-based line of `path` in a document's line index; the closest existing parent if absent
    (`line`, the line of the node the index is of, when not even the first part exists)."""
    node: Any = index
    for part in path:
        in_mapping = isinstance(node, dict) and part in node
        in_sequence = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_mapping or in_sequence):
            break
        line, node = node[part]
    return line


# --- YAML: libyaml's parser, YAML 1.2 core schema scalars ------------------------------------------

_TAG = "tag:yaml.org,2002:"


# ruamel.yaml's YAML 1.2 core schema resolvers: (tag, pattern, first characters), in its order.
_RESOLVERS: tuple[tuple[str, str, str | list[str]], ...] = (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (
        "float",
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        "-+0123456789.",
    ),
    ("int", r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$", "-+0123456789"),
    ("merge", r"^(?:<<)$", "<"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    (
        "timestamp",
        r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
        |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
        (?:[Tt]|[ \t]+)[0-9][0-9]?
        :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
        (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""",
        "0123456789",
    ),
)
# first character of a plain scalar -> the (tag, compiled pattern) pairs to try, in order
_IMPLICIT: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
for _tag, _pattern, _first in _RESOLVERS:
    for _char in _first:
        _IMPLICIT.setdefault(_char, []).append((_TAG + _tag, re.compile(_pattern, re.X)))


class _Yaml12Schema:
    """The YAML 1.2 core schema that ruamel.yaml used before: only true/false are booleans (`yes`,
    `no`, `on`, `off` stay strings), `012` is decimal 12, `1:30` is a string (no sexagesimal)."""

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        """The tag of an untagged node (PyYAML's `Resolver.resolve`, minus path resolvers)."""
        if kind is ScalarNode:
            if implicit[0]:  # a plain (unquoted) scalar
                for tag, pattern in _IMPLICIT.get(value[:1], ()):
                    if pattern.match(value):
                        return tag
            return _TAG + "str"
        return _TAG + ("seq" if kind is SequenceNode else "map")


def _too_deep_message() -> str:
    return f"nested deeper than {MAX_DEPTH} levels of lists and mappings"


class _Yaml12PyLoader(_Yaml12Schema, yaml.SafeLoader):
    """PyYAML's pure-Python parser. An anchor may be defined again (YAML 1.2 allows it; an alias
    names the latest definition), as ruamel.yaml allowed."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if not isinstance(event, AliasEvent) and event.anchor is not None:
            self.anchors.pop(event.anchor, None)
        # PyYAML composes recursively: stop at MAX_DEPTH instead of a RecursionError.
        if self._depth >= MAX_DEPTH:
            raise ComposerError(None, None, _too_deep_message(), event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


if getattr(yaml, "__with_libyaml__", False):

    class _Yaml12CLoader(_Yaml12Schema, yaml.CSafeLoader):
        """libyaml's parser (about 20 times faster than PyYAML's Python one)."""

    _FAST_LOADER: type = _Yaml12CLoader
else:  # PyYAML built without libyaml: the same schema, just slower
    _FAST_LOADER = _Yaml12PyLoader


class DuplicateKeyError(ConstructorError):
    """A mapping names the same key twice (YAML forbids it; the second would silently win)."""


def _int(text: str) -> int:
    """A YAML 1.2 int as ruamel.yaml read it: `_` separators, 0b/0o/0x prefixes, `012` is 12."""
    digits = text.replace("_", "")
    sign = -1 if digits[:1] == "-" else 1
    digits = digits.lstrip("+-")
    base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2], 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


def _float(text: str) -> float:
    digits = text.replace("_", "").lower()
    if digits.lstrip("+-") == ".nan":
        return float("nan")
    return float(digits.replace(".inf", "inf"))


_SCALARS: dict[str, Callable[[str], Any]] = {
    _TAG + "str": str,
    _TAG + "int": _int,
    _TAG + "float": _float,
    _TAG + "bool": lambda text: SafeConstructor.bool_values[text.lower()],
    _TAG + "null": lambda text: None,
}


def _key(value: Any) -> Any:
    """A scalar mapping key as pydantic sees it (as before: str and int stay, others become str)."""
    if isinstance(value, str | int):
        return value
    return str(value)


_STR, _MAP, _SEQ, _MERGE = (_TAG + name for name in ("str", "map", "seq", "merge"))


def _too_deep(node: Node) -> ConstructorError:
    return ConstructorError(None, None, _too_deep_message(), node.start_mark)


class _Builder:
    """Node tree → (plain Python value, line index), one pass; duplicate keys are errors, and so is
    a key that is a list or mapping. Depth is bounded, so recursion is too."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[Any, LineIndex]] = {}  # aliased nodes are built once
        self._active: set[int] = set()

    def build(self, node: Node, depth: int = 0) -> tuple[Any, LineIndex]:
        if type(node) is ScalarNode:
            return (node.value if node.tag == _STR else self._scalar(node)), None
        ident = id(node)
        if ident in self._done:
            return self._done[ident]
        if ident in self._active:
            raise ConstructorError(None, None, "found a recursive alias", node.start_mark)
        if depth >= MAX_DEPTH:
            raise _too_deep(node)
        self._active.add(ident)
        built: tuple[Any, LineIndex]
        if type(node) is MappingNode and node.tag == _MAP:
            built = self._mapping(node, depth + 1)
        elif type(node) is SequenceNode and node.tag == _SEQ:
            built = self._sequence(node, depth + 1)
        else:  # an explicitly tagged collection (!!set, !!omap, ...): PyYAML's own constructor
            built = SafeConstructor().construct_document(node), None
        self._active.discard(ident)
        self._done[ident] = built
        return built

    @staticmethod
    def _scalar(node: ScalarNode) -> Any:
        convert = _SCALARS.get(node.tag)
        if convert is None:  # timestamp, binary, or an unknown tag (a ConstructorError)
            return SafeConstructor().construct_object(node)
        try:
            return convert(node.value)
        except (ValueError, KeyError):  # `!!int x`, `!!bool maybe`, or a lone `_` (int pattern)
            message = f"cannot read {echo(node.value)} as {node.tag.removeprefix(_TAG)}"
            raise ConstructorError(None, None, message, node.start_mark) from None

    def _sequence(self, node: SequenceNode, depth: int) -> tuple[list[Any], LineIndex]:
        values: list[Any] = []
        lines: list[tuple[int, LineIndex]] = []
        build = self.build
        for item in node.value:
            value, index = build(item, depth)
            values.append(value)
            lines.append((item.start_mark.line + 1, index))
        return values, lines

    def _mapping(self, node: MappingNode, depth: int) -> tuple[dict[Any, Any], LineIndex]:
        values: dict[Any, Any] = {}
        lines: dict[Any, tuple[int, LineIndex]] = {}
        first_lines: dict[Any, int] = {}  # constructed key -> its line, to find duplicates
        merges: list[tuple[int, Node]] = []
        build = self.build
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if type(key_node) is ScalarNode and key_node.tag == _STR:
                key = plain_key = unique_key = key_node.value
            elif key_node.tag == _MERGE:
                merges.append((key_line, value_node))
                continue
            elif type(key_node) is not ScalarNode:
                # A list or mapping as a key: useless here, and an aliased one is an alias bomb
                # that str() would expand into gigabytes.
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "a mapping key must be a plain value, not a list or a mapping",
                    key_node.start_mark,
                )
            else:
                key = self._scalar(key_node)
                plain_key = unique_key = _key(key)
            if unique_key in first_lines:
                # Unlike ruamel.yaml, no values in the message: a duplicated key may hold a secret.
                raise DuplicateKeyError(
                    "while constructing a mapping",
                    node.start_mark,
                    f'found duplicate key "{one_line(str(key), ECHO_LIMIT)}" '
                    f"(first at line {first_lines[unique_key]})",
                    key_node.start_mark,
                )
            first_lines[unique_key] = key_line
            value, index = build(value_node, depth)
            values[plain_key] = value
            lines[plain_key] = (key_line, index)
        for merge_line, source in merges:  # `<<: *defaults`: explicit keys and earlier merges win
            for part in source.value if isinstance(source, SequenceNode) else [source]:
                if type(part) is not MappingNode or part.tag != _MAP:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        "a merge key (<<) needs a mapping or a list of mappings",
                        part.start_mark,
                    )
                merged, merged_lines = build(part, depth)
                assert isinstance(merged_lines, dict)
                for key, value in merged.items():
                    if key not in values:
                        values[key] = value
                        lines[key] = (merge_line, merged_lines[key][1])
        return values, lines


def _read_text(entry: DesiredEntry) -> str:
    """A desired file's text: bounded, UTF-8, and without the line breaks only YAML counts
    (U+0085, U+2028, U+2029: after one, PyYAML's line numbers and the editor's would differ)."""
    text = decode_utf8(read_entry(entry))
    odd = _YAML_ONLY_BREAKS.search(text)
    if odd is not None:
        line = text.count("\n", 0, odd.start()) + 1
        column = odd.start() - (text.rfind("\n", 0, odd.start()) + 1) + 1
        raise FileRefused(
            f"contains {describe(odd.group())} at column {column}, which YAML reads as a line break; "
            "remove it (write it as an escape in a double-quoted string if a value needs it)",
            line,
        )
    return text


def _parse(text: str) -> tuple[Any, LineIndex]:
    """One YAML document → (plain value, line index); (None, None) for an empty file.
    Raises PyYAML's `MarkedYAMLError` (with line marks) for malformed YAML and duplicate keys."""
    try:
        root = yaml.compose(text, Loader=_FAST_LOADER)
    except YAMLError:
        if _FAST_LOADER is _Yaml12PyLoader:
            raise
        # Parse again in Python: its messages name the offending character and are the ones
        # ruamel.yaml gave, and it accepts a redefined anchor, which libyaml refuses.
        root = yaml.compose(text, Loader=_Yaml12PyLoader)
    if root is None:
        return None, None
    if "&" in text:  # only a document with an anchor can have aliases
        _check_aliases(root)
    return _Builder().build(root)


def _check_aliases(root: Node) -> None:
    """Refuse an alias used as a mapping key, and aliases that expand the document by more than
    MAX_ALIAS_EXPANSION values or nest it deeper than MAX_DEPTH (a 300-byte "billion laughs"
    expands to billions). One pass over the distinct nodes: an aliased node is counted, never
    walked again, so the check itself costs no more than the document's size."""
    sizes: dict[int, tuple[int, int]] = {}  # node id -> (expanded values, height)
    active: set[int] = set()
    added = 0  # values added by aliases so far

    def visit(node: Node, depth: int, where: Node) -> tuple[int, int]:
        nonlocal added
        ident = id(node)
        known = sizes.get(ident)
        if known is not None:  # an alias of a node seen before
            added += known[0]
            if added > MAX_ALIAS_EXPANSION:
                raise ConstructorError(
                    None,
                    None,
                    f"aliases expand this document by more than {MAX_ALIAS_EXPANSION:,} values "
                    "(an alias bomb?): write the values out or use fewer aliases",
                    where.start_mark,
                )
            if depth + known[1] > MAX_DEPTH:
                raise _too_deep(where)
            return known
        if ident in active:
            raise ConstructorError(None, None, "found a recursive alias", where.start_mark)
        if depth >= MAX_DEPTH:
            raise _too_deep(node)
        size, height = 1, 0
        if type(node) is not ScalarNode:
            active.add(ident)
            pairs = node.value if type(node) is MappingNode else [(None, item) for item in node.value]
            for key, value in pairs:
                for child, near in ((key, key), (value, key or value)):
                    if child is None:
                        continue
                    if child is key and (id(key) in sizes or id(key) in active):
                        raise ConstructorError(
                            "while constructing a mapping",
                            node.start_mark,
                            "an alias (*name) cannot be a mapping key",
                            value.start_mark if id(value) not in sizes else node.start_mark,
                        )
                    child_size, child_height = visit(child, depth + 1, near or child)
                    size += child_size
                    height = max(height, child_height + 1)
            active.discard(ident)
        sizes[ident] = (size, height)
        return size, height

    visit(root, 0, root)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector. Loading (and the plan) makes hundreds of thousands of
    objects (nodes, values, models) without garbage cycles among them, and collecting again and
    again while they pile up took about a third of the load time at 10,000 extensions."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    msg = str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in {"bool_type", "bool_parsing"}:
        return "must be true or false"
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "literal_error":
        return msg.replace("Input should be", "must be")
    if kind == "string_pattern_mismatch":
        pattern = (error.get("ctx") or {}).get("pattern", "")
        return f"{echo(error.get('input'))} {model.PATTERN_HELP.get(pattern, f'does not match {pattern}')}"
    return msg.replace("Input should be", "should be")


def _unknown_key_message(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1) if len(key) <= 100 else []
    hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
    return f"unknown key {echo(key)}{hint}"


def _allowed_keys(path: tuple[str | int, ...], root: type[BaseModel] = DesiredState) -> list[str]:
    """Field names allowed at the parent of `path` (for 'did you mean' on unknown keys)."""
    cls: Any = root
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        info = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if info is None:
            return []
        cls = _model_in(info.annotation)
        if cls is None:
            return []
    return list(cls.model_fields) if isinstance(cls, type) and issubclass(cls, BaseModel) else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union/tag segments (e.g. 'bool', 'Voicemail') that are not YAML keys."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (part[:1].isupper() or part in {"bool", "str", "int", "list[str]"}):
            continue
        if isinstance(part, str) and ("[" in part or "function-" in part):
            continue
        out.append(part)
    return tuple(out)


def _pydantic_problems(
    exc: ValidationError,
    prefix: tuple[str | int, ...],
    locate: Any,
    seen: set[tuple[str | int, ...]],
    root: type[BaseModel] = DesiredState,
) -> list[Problem]:
    problems: list[Problem] = []
    errors = exc.errors(include_url=False)
    # The key of an unknown-key error is the user's text ("Name", "a[b]"): never taken for a tag.
    paths = [
        prefix + _clean_loc(tuple(e["loc"])[:-1]) + tuple(e["loc"])[-1:]
        if e["type"] == "extra_forbidden"
        else prefix + _clean_loc(tuple(e["loc"]))
        for e in errors
    ]
    for error, path in zip(errors, paths, strict=True):
        if any(len(other) > len(path) and other[: len(path)] == path for other in paths):
            continue  # a union alternative failed deeper down: report the deeper, more useful error
        if path in seen:
            continue  # a union reports each alternative: one problem per field is enough
        seen.add(path)
        message = _message(error)
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(str(path[-1]), _allowed_keys(path, root))
        file, line = locate(path)
        problems.append(Problem(file, line, field_name(path), message))
    return problems


def load_desired(desired_dir: Path) -> LoadedState:
    """Load and validate every `*.yaml`/`*.yml` file in `desired_dir`.

    Raises `ValidationFailed` listing every problem (file, line, field, message)."""
    with gc_paused():
        return _load_desired(Path(desired_dir))


def _load_desired(desired_dir: Path) -> LoadedState:
    layer = read_layer(desired_dir)
    problems = list(layer.problems)
    sources = {key: (file, index) for key, (file, _, index) in layer.keys.items()}
    merged = {key: value for key, (_, value, _) in layer.keys.items()}
    locator = LoadedState(DesiredState(), desired_dir, sources, layer.files)
    more, state = _validate(merged, locator, cross_checks=not layer.unreadable)
    problems.extend(more)
    if problems:
        raise ValidationFailed(problems)
    return LoadedState(state, desired_dir, sources, layer.files)


@dataclass(frozen=True)
class Layer:
    """The desired files of one directory, read but not validated: each top-level key with the
    file it is in, its value and the line index of that file's document."""

    keys: Mapping[str, tuple[str, Any, LineIndex]]
    files: tuple[str, ...]
    problems: tuple[Problem, ...]
    unreadable: bool  # a file did not parse: its objects are unknown, so cross-checks are skipped


def read_document(entry: DesiredEntry, file: str) -> tuple[Any, LineIndex] | Problem:
    """One desired (or fleet) file → (plain value, line index), read bounded; a `Problem` at the
    right line for a refused file or malformed YAML."""
    try:
        text = _read_text(entry)
        return _parse(text)
    except FileRefused as exc:
        return Problem(file, exc.line, "-", exc.reason)
    except MarkedYAMLError as exc:
        # "could not find expected ':'" is found a line late; the key it belongs to is the context.
        simple_key = "simple key" in str(exc.context or "")
        mark = (exc.context_mark if simple_key else None) or exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        return Problem(file, line, "-", f"malformed YAML: {what}")
    except YAMLError as exc:
        return Problem(file, 1, "-", f"malformed YAML: {exc}")
    except RecursionError:  # not expected (depth is bounded), but never a traceback
        return Problem(file, 1, "-", f"malformed YAML: {_too_deep_message()}")


def read_layer(desired_dir: Path) -> Layer:
    """Read every desired file of `desired_dir` (`desired_entries`): each top-level key may be in
    one file only. Problems are collected, never raised."""
    shown_dir = display_name(desired_dir)
    if not desired_dir.is_dir():
        return Layer({}, (), (Problem(shown_dir, 0, "-", "not a directory"),), True)
    try:
        entries = desired_entries(desired_dir)
    except OSError as exc:
        return Layer({}, (), (Problem(shown_dir, 0, "-", f"cannot list: {exc.strerror}"),), True)
    problems: list[Problem] = []
    keys: dict[str, tuple[str, Any, LineIndex]] = {}
    unreadable = False
    for entry in entries:
        file = display_name(entry.path)
        read = read_document(entry, file)
        if isinstance(read, Problem):
            problems.append(read)
            unreadable = True
            continue
        doc, index = read
        if doc is None:
            continue
        if not isinstance(doc, dict) or not isinstance(index, dict):
            problems.append(Problem(file, 1, "-", "a desired file must be a mapping of top-level keys"))
            continue
        for key, value in doc.items():
            line = index[key][0]
            if key not in model.TOP_LEVEL_KEYS:
                problems.append(
                    Problem(file, line, str(key), _unknown_key_message(str(key), list(model.TOP_LEVEL_KEYS)))
                )
            elif key in keys:
                first_file, _, first_index = keys[key]
                first_line = _line_of(first_index, (key,))
                problems.append(
                    Problem(
                        file,
                        line,
                        key,
                        f"top-level key {key!r} is already defined in {first_file}:{first_line}",
                    )
                )
            else:
                keys[key] = (file, value, index)
    files = tuple(display_name(entry.path) for entry in entries)
    return Layer(keys, files, tuple(problems), unreadable)


def _validate(
    merged: dict[str, Any], loaded: LoadedState, cross_checks: bool = True
) -> tuple[list[Problem], DesiredState]:
    """Validate structure item by item (so one broken item hides no other problem), then run the
    cross-checks over the items that are valid on their own."""
    problems: list[Problem] = []
    seen: set[tuple[str | int, ...]] = set()
    parts: dict[str, Any] = {}
    index: dict[tuple[str, int], int] = {}
    left_out: dict[str, list[str]] = {}  # names of invalid items: references to them are fine
    if "pbx" in merged:
        try:
            parts["pbx"] = model.PbxSettings.model_validate(merged["pbx"] or {})
        except ValidationError as exc:
            problems += _pydantic_problems(exc, ("pbx",), loaded.locate, seen)
    for key, item_model in _ITEM_MODELS.items():
        if key not in merged:
            continue
        items = merged[key]
        if items is None:
            items = []
        if not isinstance(items, list):
            file, line = loaded.locate((key,))
            problems.append(Problem(file, line, key, f"must be a list of {key}"))
            continue
        valid: list[Any] = []
        for i, item in enumerate(items):
            try:
                valid.append(item_model.model_validate(item))
                index[(key, len(valid) - 1)] = i
            except ValidationError as exc:
                problems += _pydantic_problems(exc, (key, i), loaded.locate, seen)
                name = item.get(_NAME_KEYS.get(key, "")) if isinstance(item, dict) else None
                if isinstance(name, str | int) and not isinstance(name, bool):
                    left_out.setdefault(key, []).append(str(name))
                else:  # no readable name: a reference to any name may be to this item
                    left_out.setdefault(key, []).append(model.ANY_NAME)
        parts[key] = valid
    state = DesiredState(**parts)
    more_providers, more_numbers = left_out.get("providers", []), left_out.get("extensions", [])
    issues = model.cross_check(state, index, more_providers, more_numbers, left_out) if cross_checks else []
    for issue in issues:
        file, line = loaded.locate(issue.path)
        problems.append(Problem(file, line, field_name(issue.path), issue.message))
    return problems, state
