"""Property (issue 9 §8): whatever text goes into any free-text field or any secret value, either
validation or the secret check refuses it (with one-line problems), or every rendered file keeps
the baseline's lines, sections, keys and comments and gains no control character.

The fields are found by walking the pydantic models, so a field added later is covered without
being listed here (the baseline must set it: a test below fails until it does)."""

from __future__ import annotations

import copy
import re
import tempfile
import types
import typing
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from reconciler.desired.confparse import parse_conf
from reconciler.desired.load import load_desired
from reconciler.desired.model import DesiredState, field_name, secret_refs
from reconciler.desired.render import render_desired
from reconciler.errors import ReconcilerError, ValidationFailed
from reconciler.settings import Settings
from tests.unit.desired_support import TEMPLATES_DIR
from tests.unit.hostile_support import FULL_FILES, FULL_SECRETS

FieldPath = tuple[str | int, ...]


class Key(str):
    """In a field path: the key itself of a mapping entry (a menu's option key), not its value."""


ANY_KEY = "*"  # in a field path from the walk: any entry of a mapping (moved to the baseline's first)


def text_fields(model: type[BaseModel] = DesiredState, path: FieldPath = ()) -> Iterator[FieldPath]:
    """The path of every string-typed field reachable from `model` (list items at index 0, mapping
    entries as ANY_KEY), by the YAML key (`from`, not the attribute `from_address`)."""
    # The resolved annotations: a field whose model is defined further down the module (Extension's
    # `forward: Forward | None`) is a ForwardRef in model_fields until pydantic first rebuilds it.
    hints = typing.get_type_hints(model, include_extras=True)
    for name, info in model.model_fields.items():
        yield from _from_annotation(hints.get(name, info.annotation), (*path, info.alias or name))


def _from_annotation(annotation: Any, path: FieldPath) -> Iterator[FieldPath]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is str:
        yield path
    elif origin is typing.Annotated:
        yield from _from_annotation(args[0], path)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _from_annotation(arg, path)
    elif origin is list:
        yield from _from_annotation(args[0], (*path, 0))
    elif origin is dict:
        if any(p == path for p in _from_annotation(args[0], path)):  # string keys: the key itself
            yield (*path, Key(ANY_KEY + "key"))  # not equal to ANY_KEY: both stay in a set
        yield from _from_annotation(args[1], (*path, ANY_KEY))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from text_fields(annotation, path)


FIELDS = sorted(set(text_fields()), key=field_name)
FILE_OF = {"pbx": "pbx.yaml", "providers": "providers.yaml", "extensions": "extensions.yaml"}
FILE_OF |= {key: "office.yaml" for key in ("ring_groups", "schedules", "menus", "queues")}
BASE_DATA: dict[str, Any] = {}
for _text in FULL_FILES.values():
    BASE_DATA.update(yaml.safe_load(_text))
SECRETS = sorted(FULL_SECRETS)

HOSTILE = (
    "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # everything str.splitlines() splits on
    "\x00\x07\x09\x1b\x7f\x9b"  # other control characters
    "\u202e\u2066\u200b\ufeff\u00ad"  # invisible formatting: bidi override, zero width, BOM, soft hyphen
    "\u00a0\u3000"  # unusual spaces
    "[]=;,|%@:/\\\"'(){}<>#!&*$+-_. "  # what config and voicemail lines treat specially
)
PAYLOAD = st.text(
    st.sampled_from(HOSTILE) | st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
)
INJECTIONS = [
    "\n[anonymous]\ntype = endpoint\ncontext = internal",
    "\x1e[general]\x1emailcmd=/bin/sh -c id",
    "%x\n[transport-evil]\nbind=0.0.0.0",
    "\u2028[evil]\u2029",
    ";x",
    "\\",
]


def get(data: Any, path: FieldPath) -> Any:
    for part in path:
        data = str(part) if isinstance(part, Key) else data[part]
    return data


def concrete(data: Any, path: FieldPath) -> FieldPath | None:
    """`path` (list items at index 0) with each index moved to the first item of the baseline that
    has the field as a string (the prefix route has no `numbers`, the emergency route has)."""
    if not path:
        return () if isinstance(data, str) else None
    part, rest = path[0], path[1:]
    if isinstance(part, Key):  # the first key of the mapping, as text
        keys = [k for k in data if isinstance(k, str)] if isinstance(data, dict) else []
        return (Key(keys[0]),) if keys and not rest else None
    if part == ANY_KEY:
        for key, item in data.items() if isinstance(data, dict) else ():
            found = concrete(item, rest)
            if found is not None:
                return (key, *found)
        return None
    if isinstance(part, int):
        for i, item in enumerate(data if isinstance(data, list) else []):
            found = concrete(item, rest)
            if found is not None:
                return (i, *found)
        return None
    if not isinstance(data, dict) or part not in data:
        return None
    found = concrete(data[part], rest)
    return None if found is None else (part, *found)


def put(data: Any, path: FieldPath, value: str) -> None:
    parent, last = get(data, path[:-1]), path[-1]
    if isinstance(last, Key):  # rename the entry, in its place
        items = [(value if k == str(last) else k, v) for k, v in parent.items()]
        parent.clear()
        parent.update(items)
    else:
        parent[last] = value


def write(directory: Path, data: dict[str, Any]) -> None:
    by_file: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        by_file.setdefault(FILE_OF.get(key, "routes.yaml"), {})[key] = value
    for name, doc in by_file.items():
        # allow_unicode=False: every unusual character is written as an escape in double quotes.
        (directory / name).write_text(yaml.safe_dump(doc, allow_unicode=False), encoding="utf-8")


def render_or_refusal(data: dict[str, Any], secrets: dict[str, str]) -> dict[str, str] | None:
    """The rendered files, or None after checking that the refusal is made of one-line problems."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write(directory, data)
        settings = Settings(
            templates_dir=TEMPLATES_DIR,
            env_file=directory / "none",
            secrets_dir=directory / "none",
            environ=secrets,
        )
        try:
            return render_desired(directory, settings, revision="r1").files
        except ValidationFailed as exc:
            for problem in exc.problems:
                line = str(problem)
                assert "\n" not in line and line.isprintable() and len(line) < 800, line
                assert not any(v and v in line for v in secrets.values() if len(v) >= 4), line
            return None
        except ReconcilerError as exc:  # RenderFailed from the render guard
            assert "\n" not in exc.message and exc.message.isprintable()
            return None


_COMMENT = re.compile(r"(?<!\\);")


def skeleton(files: dict[str, str]) -> dict[str, Any]:
    """What no value may change: lines, comment starts per line, sections with their types and keys
    (msmtprc, which msmtp reads: lines, which are comments, and each line's key and argument count)."""
    return {
        name: (_msmtp_skeleton(text) if name == "msmtprc" else _conf_skeleton(text))
        for name, text in files.items()
    }


def _conf_skeleton(text: str) -> Any:
    return (
        len(text.split("\n")),
        [len(_COMMENT.findall(line)) for line in text.split("\n")],
        [(s.type, [k for k, _ in s.options]) for s in parse_conf(text)],
    )


# One msmtp argument: a word, or a double-quoted string with \" and \\ escaped (render.msmtp_quote).
_MSMTP_LINE = re.compile(r'(\S+)(?: (?:"(?:[^"\\]|\\.)*"|[^\s"]+))?')


def _msmtp_skeleton(text: str) -> Any:
    lines = text.split("\n")
    shape = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            shape.append("#" if line.strip() else "")
            continue
        match = _MSMTP_LINE.fullmatch(line)
        shape.append(match.group(1) if match else f"unreadable: {line!r}")
    return (len(lines), shape)


BASELINE = render_or_refusal(BASE_DATA, dict(FULL_SECRETS))
assert BASELINE is not None
BASE_SKELETON = skeleton(BASELINE)


# Control, format (bidi overrides, zero-width space), surrogate, line and paragraph separators; the
# zero-width (non-)joiner is part of how some scripts write names.
CONTROL_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
JOINERS = "\u200c\u200d"


def assert_harmless(files: dict[str, str]) -> None:
    assert skeleton(files) == BASE_SKELETON
    for text in files.values():
        for line in text.split("\n"):
            bad = [c for c in line if unicodedata.category(c) in CONTROL_CATEGORIES and c not in JOINERS]
            assert not bad, repr(line)


def test_the_baseline_sets_every_text_field_of_the_model() -> None:
    missing = [field_name(path) for path in FIELDS if concrete(BASE_DATA, path) is None]
    assert not missing, f"set these fields in tests/unit/hostile_support.py FULL_FILES: {missing}"
    assert len(FIELDS) >= 20  # the walk found the model's fields (not an empty list)


def test_the_baseline_references_every_kind_of_secret() -> None:
    state = load_desired_from(BASE_DATA)
    assert {use.kind for use in secret_refs(state)} == {"password", "username", "pin", "issued"}


def load_desired_from(data: dict[str, Any]) -> DesiredState:
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), data)
        return load_desired(Path(tmp)).state


PROPERTY_SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@pytest.mark.parametrize("path", FIELDS, ids=field_name)
@PROPERTY_SETTINGS
@given(payload=PAYLOAD, where=st.sampled_from(["end", "start", "middle", "alone"]))
@example(payload=INJECTIONS[0], where="end")
@example(payload=INJECTIONS[1], where="end")
@example(payload=INJECTIONS[2], where="middle")
@example(payload=INJECTIONS[3], where="end")
@example(payload="\n", where="end")
def test_no_text_in_any_field_adds_a_line_a_section_or_a_control_character(
    path: FieldPath, payload: str, where: str
) -> None:
    data = copy.deepcopy(BASE_DATA)
    found = concrete(data, path)
    assert found is not None, f"{field_name(path)} is not set in the baseline"
    path = found
    value = get(data, path)
    half = len(value) // 2
    hostile = {
        "end": value + payload,
        "start": payload + value,
        "middle": value[:half] + payload + value[half:],
        "alone": payload,
    }[where]
    put(data, path, hostile)
    files = render_or_refusal(data, dict(FULL_SECRETS))
    if files is not None:
        assert_harmless(files)


@pytest.mark.parametrize("name", SECRETS)
@PROPERTY_SETTINGS
@given(payload=PAYLOAD, where=st.sampled_from(["end", "start", "middle"]))
@example(payload=INJECTIONS[0], where="end")
@example(payload="\u2028[anonymous]", where="middle")
@example(payload="\x85", where="end")
@example(payload=";x", where="middle")
def test_no_secret_value_adds_a_line_a_section_or_a_control_character(
    name: str, payload: str, where: str
) -> None:
    value = FULL_SECRETS[name]
    half = len(value) // 2
    hostile = {
        "end": value + payload,
        "start": payload + value,
        "middle": value[:half] + payload + value[half:],
    }
    secrets = {**FULL_SECRETS, name: hostile[where]}
    files = render_or_refusal(copy.deepcopy(BASE_DATA), secrets)
    if files is not None:
        assert_harmless(files)
