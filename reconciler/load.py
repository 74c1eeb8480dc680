"""Read `desired/*.yaml` into a `DesiredState`, keeping where every value came from.

Every problem (malformed YAML, unknown key, wrong type, dangling reference, ...) becomes a
`Problem(file, line, field, message)`; all of them are raised at once in one `ValidationFailed`.
"""

from __future__ import annotations

import difflib
import gc
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import MarkedYAMLError, YAMLError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler import model
from reconciler.errors import Problem, ValidationFailed
from reconciler.model import DesiredState, field_name

DESIRED_SUFFIXES = (".yaml", ".yml")

_NAME_KEYS = {"providers": "name", "extensions": "number"}
_ITEM_MODELS: dict[str, type[BaseModel]] = {
    "providers": model.Provider,
    "extensions": model.Extension,
    "outbound": model.OutboundRoute,
    "inbound": model.InboundRoute,
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

    def locate(self, path: tuple[str | int, ...]) -> tuple[str, int]:
        """(display file name, 1-based line) of the field at `path`, e.g. `("extensions", 2, "password")`.
        Falls back to the nearest enclosing node that exists; `(dir, 0)` for a key in no file."""
        if not path or path[0] not in self.sources:
            return (self.files[0] if self.files else display_name(self.dir), 0)
        file, index = self.sources[str(path[0])]
        return file, _line_of(index, path)


def display_name(path: Path) -> str:
    """The path as the user would type it: relative to the current directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _line_of(index: LineIndex, path: tuple[str | int, ...]) -> int:
    """1-based line of `path` in a document's line index; the closest existing parent if absent."""
    node: Any = index
    line = 1
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


class _Yaml12PyLoader(_Yaml12Schema, yaml.SafeLoader):
    """PyYAML's pure-Python parser. An anchor may be defined again (YAML 1.2 allows it; an alias
    names the latest definition), as ruamel.yaml allowed."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if not isinstance(event, AliasEvent) and event.anchor is not None:
            self.anchors.pop(event.anchor, None)
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


if getattr(yaml, "__with_libyaml__", False):

    class _Yaml12CLoader(_Yaml12Schema, yaml.CSafeLoader):  # type: ignore[misc, name-defined]
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


_SCALARS = {
    _TAG + "str": str,
    _TAG + "int": _int,
    _TAG + "float": _float,
    _TAG + "bool": lambda text: SafeConstructor.bool_values[text.lower()],
    _TAG + "null": lambda text: None,
}


def _key(value: Any) -> Any:
    """A mapping key as pydantic sees it (as before: str and int stay, anything else becomes str)."""
    if isinstance(value, str | int):
        return value
    if isinstance(value, list | dict):
        return str(_hashable(value))
    return str(value)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    return value


_STR, _MAP, _SEQ, _MERGE = (_TAG + name for name in ("str", "map", "seq", "merge"))


class _Builder:
    """Node tree → (plain Python value, line index), one pass; duplicate keys are errors."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[Any, LineIndex]] = {}  # aliased nodes are built once
        self._active: set[int] = set()

    def build(self, node: Node) -> tuple[Any, LineIndex]:
        if type(node) is ScalarNode:
            return (node.value if node.tag == _STR else self._scalar(node)), None
        ident = id(node)
        if ident in self._done:
            return self._done[ident]
        if ident in self._active:
            raise ConstructorError(None, None, "found a recursive alias", node.start_mark)
        self._active.add(ident)
        if type(node) is MappingNode and node.tag == _MAP:
            built = self._mapping(node)
        elif type(node) is SequenceNode and node.tag == _SEQ:
            built = self._sequence(node)
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
            message = f"cannot read {node.value!r} as {node.tag.removeprefix(_TAG)}"
            raise ConstructorError(None, None, message, node.start_mark) from None

    def _sequence(self, node: SequenceNode) -> tuple[list[Any], LineIndex]:
        values: list[Any] = []
        lines: list[tuple[int, LineIndex]] = []
        build = self.build
        for item in node.value:
            value, index = build(item)
            values.append(value)
            lines.append((item.start_mark.line + 1, index))
        return values, lines

    def _mapping(self, node: MappingNode) -> tuple[dict[Any, Any], LineIndex]:
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
            else:
                key = build(key_node)[0]
                plain_key, unique_key = _key(key), _hashable(key)
            if unique_key in first_lines:
                # Unlike ruamel.yaml, no values in the message: a duplicated key may hold a secret.
                raise DuplicateKeyError(
                    "while constructing a mapping",
                    node.start_mark,
                    f'found duplicate key "{key}" (first at line {first_lines[unique_key]})',
                    key_node.start_mark,
                )
            first_lines[unique_key] = key_line
            value, index = build(value_node)
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
                merged, merged_lines = build(part)
                assert isinstance(merged_lines, dict)
                for key, value in merged.items():
                    if key not in values:
                        values[key] = value
                        lines[key] = (merge_line, merged_lines[key][1])
        return values, lines


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
    return _Builder().build(root)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector: loading makes hundreds of thousands of objects (nodes,
    values, models) without garbage cycles among them, and collecting again and again while they
    pile up took about a third of the load time at 10,000 extensions."""
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
        return f"{error.get('input')!r} {model.PATTERN_HELP.get(pattern, f'does not match {pattern}')}"
    return msg.replace("Input should be", "should be")


def _unknown_key_message(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
    return f"unknown key {key!r}{hint}"


def _allowed_keys(path: tuple[str | int, ...]) -> list[str]:
    """Field names allowed at the parent of `path` (for 'did you mean' on unknown keys)."""
    cls: Any = DesiredState
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
    exc: ValidationError, prefix: tuple[str | int, ...], locate: Any, seen: set[tuple[str | int, ...]]
) -> list[Problem]:
    problems: list[Problem] = []
    errors = exc.errors(include_url=False)
    paths = [prefix + _clean_loc(tuple(e["loc"])) for e in errors]
    for error, path in zip(errors, paths, strict=True):
        if any(len(other) > len(path) and other[: len(path)] == path for other in paths):
            continue  # a union alternative failed deeper down: report the deeper, more useful error
        if path in seen:
            continue  # a union reports each alternative: one problem per field is enough
        seen.add(path)
        message = _message(error)
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(str(path[-1]), _allowed_keys(path))
        file, line = locate(path)
        problems.append(Problem(file, line, field_name(path), message))
    return problems


def load_desired(desired_dir: Path) -> LoadedState:
    """Load and validate every `*.yaml`/`*.yml` file in `desired_dir`.

    Raises `ValidationFailed` listing every problem (file, line, field, message)."""
    with _gc_paused():
        return _load_desired(Path(desired_dir))


def _load_desired(desired_dir: Path) -> LoadedState:
    shown_dir = display_name(desired_dir)
    if not desired_dir.is_dir():
        raise ValidationFailed([Problem(shown_dir, 0, "-", "not a directory")])
    paths = sorted(p for p in desired_dir.iterdir() if p.suffix in DESIRED_SUFFIXES and p.is_file())
    problems: list[Problem] = []
    sources: dict[str, tuple[str, LineIndex]] = {}
    merged: dict[str, Any] = {}
    unreadable = False  # a file that does not parse: its objects are unknown, so skip cross-checks
    for path in paths:
        file = display_name(path)
        try:
            doc, index = _parse(path.read_text(encoding="utf-8"))
        except MarkedYAMLError as exc:
            # "could not find expected ':'" is found a line late; the key it belongs to is the context.
            simple_key = "simple key" in str(exc.context or "")
            mark = (exc.context_mark if simple_key else None) or exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
            problems.append(Problem(file, line, "-", f"malformed YAML: {what}"))
            unreadable = True
            continue
        except OSError as exc:
            problems.append(Problem(file, 0, "-", f"cannot read: {exc.strerror}"))
            unreadable = True
            continue
        except (YAMLError, UnicodeDecodeError) as exc:
            problems.append(Problem(file, 0, "-", f"malformed YAML: {exc}"))
            unreadable = True
            continue
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
            elif key in sources:
                first_file, first_index = sources[key]
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
                sources[key] = (file, index)
                merged[key] = value
    files = tuple(display_name(p) for p in paths)
    locator = LoadedState(DesiredState(), desired_dir, sources, files)
    more, state = _validate(merged, locator, cross_checks=not unreadable)
    problems.extend(more)
    if problems:
        raise ValidationFailed(problems)
    return LoadedState(state, desired_dir, sources, files)


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
                if isinstance(name, str):
                    left_out.setdefault(key, []).append(name)
        parts[key] = valid
    state = DesiredState(**parts)
    more_providers, more_numbers = left_out.get("providers", []), left_out.get("extensions", [])
    issues = model.cross_check(state, index, more_providers, more_numbers) if cross_checks else []
    for issue in issues:
        file, line = loaded.locate(issue.path)
        problems.append(Problem(file, line, field_name(issue.path), issue.message))
    return problems, state
