"""Read `desired/*.yaml` into a `DesiredState`, keeping where every value came from.

Every problem (malformed YAML, unknown key, wrong type, dangling reference, ...) becomes a
`Problem(file, line, field, message)`; all of them are raised at once in one `ValidationFailed`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

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


@dataclass(frozen=True)
class LoadedState:
    """A validated desired state and the source location of each of its top-level keys."""

    state: DesiredState
    dir: Path
    # top-level key -> (display file name, parsed YAML document with line info)
    sources: Mapping[str, tuple[str, Any]] = field(default_factory=dict, repr=False)
    files: tuple[str, ...] = ()

    def locate(self, path: tuple[str | int, ...]) -> tuple[str, int]:
        """(display file name, 1-based line) of the field at `path`, e.g. `("extensions", 2, "password")`.
        Falls back to the nearest enclosing node that exists; `(dir, 0)` for a key in no file."""
        if not path or path[0] not in self.sources:
            return (self.files[0] if self.files else display_name(self.dir), 0)
        file, doc = self.sources[str(path[0])]
        return file, _line_of(doc, path)


def display_name(path: Path) -> str:
    """The path as the user would type it: relative to the current directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _line_of(doc: Any, path: tuple[str | int, ...]) -> int:
    """1-based line of `path` in a ruamel round-trip document; the closest existing parent if absent."""
    node = doc
    line = 1
    for part in path:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _plain(node: Any) -> Any:
    """ruamel's round-trip types → plain dict/list/str so pydantic sees ordinary values."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str | int) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, ScalarBoolean | bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


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
    desired_dir = Path(desired_dir)
    shown_dir = display_name(desired_dir)
    if not desired_dir.is_dir():
        raise ValidationFailed([Problem(shown_dir, 0, "-", "not a directory")])
    paths = sorted(p for p in desired_dir.iterdir() if p.suffix in DESIRED_SUFFIXES and p.is_file())
    problems: list[Problem] = []
    sources: dict[str, tuple[str, Any]] = {}
    merged: dict[str, Any] = {}
    yaml = _yaml()
    unreadable = False  # a file that does not parse: its objects are unknown, so skip cross-checks
    for path in paths:
        file = display_name(path)
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"))
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
        if not isinstance(doc, CommentedMap):
            problems.append(Problem(file, 1, "-", "a desired file must be a mapping of top-level keys"))
            continue
        for key in doc:
            line = doc.lc.key(key)[0] + 1
            if key not in model.TOP_LEVEL_KEYS:
                problems.append(
                    Problem(file, line, str(key), _unknown_key_message(str(key), list(model.TOP_LEVEL_KEYS)))
                )
            elif key in sources:
                first_file, first_doc = sources[key]
                first_line = first_doc.lc.key(key)[0] + 1
                problems.append(
                    Problem(
                        file,
                        line,
                        key,
                        f"top-level key {key!r} is already defined in {first_file}:{first_line}",
                    )
                )
            else:
                sources[key] = (file, doc)
                merged[key] = _plain(doc[key])
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
