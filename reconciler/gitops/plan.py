"""Rendered files vs live files → a `Plan`: what changes semantically, the masked diff, what to reload.

The semantic part works on parsed sections only (`confparse`), so it also works against live files
without the YAML they came from. Revision lines (the `; revision:` header, the `gitops-rev-*` AOR and
`revision@gitops-meta`) never count as a change: a new revision with the same content is
`revision_only`, needs no reload for correctness, and makes `plan` exit 0.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.asterisk.restart import RESTART_WHEN_IDLE
from reconciler.desired.confparse import Section, parse_conf
from reconciler.desired.load import gc_paused
from reconciler.desired.snapshot import EXTENSION_KIND, ObjectChange, Snapshot, changes
from reconciler.gitops import linediff
from reconciler.markers import DIALPLAN_CONTEXT, DIALPLAN_EXTEN, PJSIP_MARKER_PREFIX

MASK = "********"
MIN_MASKED_LENGTH = 4  # shorter "secrets" (a user name like "42") would mask unrelated text

RELOAD_COMMANDS: dict[str, str] = {
    "pjsip.conf": "module reload res_pjsip.so",
    "extensions.conf": "dialplan reload",
    "voicemail.conf": "module reload app_voicemail.so",
    "musiconhold.conf": "module reload res_musiconhold.so",
    "queues.conf": "module reload app_queue.so",
    # msmtprc: read by msmtp at each voicemail e-mail, nothing to reload
}
# What an apply runs for a changed transport with the default restart policy (`--restart idle`).
RESTART_COMMAND = RESTART_WHEN_IDLE

_REVISION_LINE = re.compile(r"^;\s*revision:.*$")
_MARKER_SECTION = re.compile(rf"^\[{PJSIP_MARKER_PREFIX}[^\]\s]+\]")
_MARKER_COMMENT = re.compile(rf"^;.*{PJSIP_MARKER_PREFIX}\S+")
_META_LINE = re.compile(rf"^exten\s*=>\s*{DIALPLAN_EXTEN}\s*,\s*1\s*,\s*NoOp\([^)]*\)\s*$")
# `key = value` (Asterisk) or `key value` (msmtprc).
_SECRET_KEY = re.compile(r"^(\s*(?:password|secret|md5_cred)(?:\s*=>?\s*|\s+))(\S.*?)(\s*)$", re.IGNORECASE)
# Keys whose value can come from a `${NAME}` reference (a provider's user name): masked by position,
# not by value, so an old value that is no longer among the current secrets is hidden too.
_USER_KEY = re.compile(
    r"^(\s*(?:username|from_user|contact_user|user)(?:\s*=>?\s*|\s+))(\S.*?)(\s*)$", re.IGNORECASE
)
_USERINFO_KEY = re.compile(r"^(\s*(?:client_uri|contact)\s*=>?\s*sips?:)([^@\s;]+)(@.*)$", re.IGNORECASE)
_SECTION_LINE = re.compile(r"^\s*\[([^\]]*)\]")
_SECTION_HEADER = re.compile(r"^[^\S\n]*\[([^\]\n]*)\]", re.MULTILINE)  # _SECTION_LINE, in a text
_EXTENSION_SECTION = re.compile(r"[0-9]+(?:-auth)?")  # an extension's own user name is its number
_MAILBOX_LINE = re.compile(r"^(\s*[0-9]+\s*=>\s*)([^,]*)(,.*)?$")
_DIALPLAN_LABEL = re.compile(r"NoOp\((route|extension|inbound|feature) ([^\s:)]+)(?: ([^\s:)]+))?")
_PROVIDER_SUFFIXES = ("-auth", "-reg", "-identify")


@dataclass(frozen=True)
class Plan:
    """What applying `new` over `live` would do."""

    changed_files: list[str]  # content differs (revision lines ignored), in render order
    revision_only: list[str]  # only the revision header/markers differ
    changes: list[str]  # semantic, e.g. "extension 4006 added"
    diff: str  # unified diff live → new of the changed files, secrets masked
    reloads: list[str]  # Asterisk CLI commands for the changed files
    restart_required: bool  # a transport was added, changed or removed: PJSIP does not reload them
    new_revision: str | None = None
    live_revision: str | None = None
    restart_reasons: list[str] = field(default_factory=list)
    # Rows of the realtime store that change (extensions): named in `changes`, no file, no reload.
    store_changes: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.changed_files or self.store_changes)

    @property
    def files_to_write(self) -> list[str]:
        """Changed files plus those whose revision markers are stale."""
        return [*self.changed_files, *self.revision_only]

    @property
    def marker_reloads(self) -> list[str]:
        """Reloads that also bring the revision markers up to date (for `files_to_write`)."""
        return [RELOAD_COMMANDS[f] for f in _ordered(self.files_to_write) if f in RELOAD_COMMANDS]


def _ordered(names: Iterable[str]) -> list[str]:
    order = list(RELOAD_COMMANDS)
    return sorted(set(names), key=lambda n: (order.index(n) if n in order else len(order), n))


def revision_of_text(text: str) -> str | None:
    """The revision named in a rendered file's `; revision:` header line, if any."""
    for line in text.split("\n", 10)[:10]:
        match = re.match(r"^;\s*revision:\s*(\S+)", line)
        if match:
            return match.group(1)
    return None


def strip_revision(text: str) -> str:
    """`text` without the revision header line, the marker AOR section and the gitops-meta line."""
    lines = _lines(text)
    dropped: list[tuple[int, int]] = []  # [start, end) line ranges, in order
    marker_from: int | None = None
    # Only a line starting with `[`, `;` or `e` can be a marker or start or end a marker section:
    # the regex engine finds those, so the other lines of a 50,000-extension file cost nothing here.
    for i, _ in linediff.matching_lines(lines, _MARKER_CANDIDATE):
        stripped = lines[i].strip()
        if stripped.startswith("["):
            if marker_from is not None:
                dropped.append((marker_from, i))
                marker_from = None
            if _MARKER_SECTION.match(stripped):
                marker_from = i
                continue
        if marker_from is None and (
            _REVISION_LINE.match(stripped) or _MARKER_COMMENT.match(stripped) or _META_LINE.match(stripped)
        ):
            dropped.append((i, i + 1))
    if marker_from is not None:
        dropped.append((marker_from, len(lines)))
    out: list[str] = []
    kept_from = 0
    for start, end in dropped:
        out += lines[kept_from:start]
        kept_from = end
    out += lines[kept_from:]
    return "\n".join(out).rstrip("\n")


_MARKER_CANDIDATE = re.compile(r"^[^\S\n]*[\[;e]", re.MULTILINE)


class SecretMatcher:
    """Finds every occurrence of any of a set of secret values in a line, leftmost and longest
    first. Values are kept in sets by length, so building it is O(values) and a line costs one set
    lookup per window of each distinct length (a regex alternation of 100,000 passwords took 20 s
    to compile and 20 us per line to apply)."""

    def __init__(self, values: frozenset[str]) -> None:
        self.by_length: dict[int, frozenset[str]] = {}
        grouped: dict[int, set[str]] = {}
        for value in values:
            grouped.setdefault(len(value), set()).add(value)
        self.by_length = {n: frozenset(v) for n, v in grouped.items()}
        self.lengths = sorted(self.by_length, reverse=True)
        self.shortest = min(self.lengths) if self.lengths else 0
        # Every window of a length made only of characters that secrets of that length use, listed
        # by the regex engine, then one set test (10-digit PINs: only runs of 10 digits are looked at).
        self._windows = {n: _window_pattern(grouped[n], n) for n in self.lengths}

    def _any(self, line: str) -> bool:
        size = len(line)
        for length in self.lengths:
            if length <= size and not self.by_length[length].isdisjoint(self._windows[length].findall(line)):
                return True
        return False

    def sub(self, replacement: str, line: str) -> str:
        """`line` with every secret replaced (the `re.Pattern.sub` signature)."""
        if not self.lengths or len(line) < self.shortest or not self._any(line):
            return line
        out: list[str] = []
        size, i, last = len(line), 0, 0
        while i <= size - self.shortest:
            for length in self.lengths:
                if i + length <= size and line[i : i + length] in self.by_length[length]:
                    out += (line[last:i], replacement)
                    i = last = i + length
                    break
            else:
                i += 1
        out.append(line[last:])
        return "".join(out)


def _window_pattern(values: set[str], length: int) -> re.Pattern[str]:
    chars = "".join(re.escape(c) for c in sorted(set().union(*values)))
    return re.compile(f"(?=([{chars}]{{{length}}}))")


@functools.lru_cache(maxsize=8)
def _secret_matcher(values: frozenset[str]) -> SecretMatcher | None:
    return SecretMatcher(values) if values else None


def mask(text: str, secret_values: Iterable[str] = (), file: str = "") -> str:
    """Replace secrets with `********`: values of `password`/`secret` keys, user names that can be
    secret references (`username`, `from_user`, `contact_user`, the user of `client_uri`; an
    extension's own user name, its number, stays), voicemail PINs, and every occurrence of any of
    `secret_values` (longest first)."""
    pattern = secret_pattern(secret_values)
    section: str | None = None
    out: list[str] = []
    for line in text.split("\n"):
        header = _SECTION_LINE.match(line)
        if header:
            section = header.group(1).strip()
        out.append(_mask_line(line, section, pattern, file))
    return "\n".join(out)


def secret_pattern(secret_values: Iterable[str]) -> SecretMatcher | None:
    """The matcher `mask` uses for these secret values (build it once, mask many times)."""
    return _secret_matcher(frozenset(v for v in secret_values if len(v) >= MIN_MASKED_LENGTH))


def _mask_line(line: str, section: str | None, pattern: SecretMatcher | None, file: str) -> str:
    """One line (no line break) with its secrets masked; `section` is the `[name]` it is in."""
    match = _secret_by_position(line, section)
    if match:
        line = match.group(1) + MASK + match.group(3)
    elif file == "voicemail.conf" and not line.lstrip().startswith(";"):
        vm = _MAILBOX_LINE.match(line)
        if vm and vm.group(2).strip():
            line = vm.group(1) + MASK + (vm.group(3) or "")
    if pattern is not None:
        line = pattern.sub(MASK, line)
    return line


def _secret_by_position(line: str, section: str | None) -> re.Match[str] | None:
    """The (prefix, value, rest) match of a line whose value is a secret by its key and section."""
    match = _SECRET_KEY.match(line)
    if match is None and not (section and _EXTENSION_SECTION.fullmatch(section)):
        match = _USER_KEY.match(line)
    return match or _USERINFO_KEY.match(line)


def _lines(text: str) -> list[str]:
    """Rendered config text as lines: split on `\n` only, as Asterisk reads it."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


class _Sections:
    """The `[section]` each line of a text is in, found without scanning lines the diff skips."""

    def __init__(self, lines: list[str]) -> None:
        self.starts: list[int] = []
        self.names: list[str] = []
        for i, header in linediff.matching_lines(lines, _SECTION_HEADER):
            self.starts.append(i)
            self.names.append(header.group(1).strip())

    def at(self, index: int) -> str | None:
        pos = bisect.bisect_right(self.starts, index) - 1
        return self.names[pos] if pos >= 0 else None


# ---- semantic objects -------------------------------------------------------------------------

ObjectKey = tuple[str, str]  # (kind, name), e.g. ("extension", "4001")
Parts = dict[tuple[str, ...], dict[str, list[str]]]  # part id → option → values


def _pjsip_object(section: Section) -> ObjectKey | None:
    name, kind = section.name, section.type
    if _MARKER_SECTION.match(f"[{name}]"):
        return None
    if kind == "transport":
        return ("transport", name)
    base = name.removesuffix("-auth")
    if base.isdigit():
        return ("extension", base)
    for suffix in _PROVIDER_SUFFIXES:
        if name.endswith(suffix):
            return ("provider", name.removesuffix(suffix))
    if kind in {"endpoint", "aor"} and re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return ("provider", name)
    return ("section", name)


def _pjsip_objects(text: str) -> dict[ObjectKey, Parts]:
    objects: dict[ObjectKey, Parts] = {}
    for section in parse_conf(text):
        key = _pjsip_object(section)
        if key is None:
            continue
        options: dict[str, list[str]] = {}
        for k, v in section.options:
            options.setdefault(k, []).append(v)
        part = ("pjsip.conf", section.name, section.type or "", ",".join(section.templates))
        objects.setdefault(key, {})[part] = {k: sorted(v) for k, v in options.items()}
    return objects


def _dialplan_objects(text: str) -> dict[ObjectKey, Parts]:
    objects: dict[ObjectKey, Parts] = {}
    for section in parse_conf(text):
        if section.name == DIALPLAN_CONTEXT:
            continue
        groups: list[tuple[str, list[str]]] = []
        for k, v in section.options:
            if k == "exten":
                exten = v.split(",", 1)[0].strip()
                groups.append((exten, [v]))
            elif k == "same" and groups:
                groups[-1][1].append(v)
            else:
                groups.append((f"{k} => {v}", [v]))
        for exten, lines in groups:
            label = _DIALPLAN_LABEL.search(lines[0])
            if label is None:
                key: ObjectKey = ("dialplan", f"{exten}@{section.name}")
            elif label.group(1) == "inbound" and label.group(3) not in (None, "unknown"):
                key = ("inbound route", f"{label.group(2)} {label.group(3)}")
            elif label.group(1) == "inbound":
                key = ("provider", label.group(2))
            elif label.group(1) == "feature":
                key = ("feature", label.group(2))
            else:
                key = (label.group(1), label.group(2))
            objects.setdefault(key, {})[("extensions.conf", section.name, exten)] = {"": lines}
    return objects


def _voicemail_objects(text: str) -> dict[ObjectKey, Parts]:
    objects: dict[ObjectKey, Parts] = {}
    for section in parse_conf(text):
        for k, v in section.options:
            pin, _, rest = v.partition(",")
            if k.isdigit():
                key: ObjectKey = ("extension", k)
                parts = {"voicemail pin": [pin.strip()], "voicemail": [rest.strip()]}
            else:
                key = ("voicemail", f"{section.name}.{k}")
                parts = {"": [v]}
            objects.setdefault(key, {})[("voicemail.conf", section.name, k)] = parts
    return objects


_PARSERS = {
    "pjsip.conf": _pjsip_objects,
    "extensions.conf": _dialplan_objects,
    "voicemail.conf": _voicemail_objects,
}


def _objects(files: Mapping[str, str]) -> dict[ObjectKey, Parts]:
    merged: dict[ObjectKey, Parts] = {}
    for name, text in files.items():
        parser = _PARSERS.get(name)
        if parser is None:
            continue
        for key, parts in parser(text).items():
            merged.setdefault(key, {}).update(parts)
    return merged


def _changed_fields(old: Parts, new: Parts) -> list[str]:
    fields: set[str] = set()
    for part in old.keys() | new.keys():
        a, b = old.get(part, {}), new.get(part, {})
        if part[0] == "extensions.conf":
            if a != b:
                fields.add("dialplan")
            continue
        for option in a.keys() | b.keys():
            if a.get(option) != b.get(option):
                fields.add(option or part[0])
    return sorted(fields)


def semantic_changes(new: Mapping[str, str], live: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(changes, restart reasons) between two sets of rendered files, as sentences."""
    old_objects, new_objects = _objects(live), _objects(new)
    changes: list[str] = []
    restart: list[str] = []

    def sort_key(key: ObjectKey) -> tuple[str, int, str]:
        kind, name = key
        return (kind, int(name) if name.isdigit() else -1, name)

    for key in sorted(old_objects.keys() | new_objects.keys(), key=sort_key):
        kind, name = key
        if key not in old_objects:
            sentence = f"{kind} {name} added"
            if kind == "transport":
                # A reload does bind a new transport, but PJSIP picks the transport types its DNS
                # resolver may use only at start: a TLS trunk given by host name would not resolve.
                sentence += " (restart needed)"
                restart.append(sentence)
            changes.append(sentence)
        elif key not in new_objects:
            sentence = f"{kind} {name} removed"
            if kind == "transport":
                sentence += " (restart needed)"
                restart.append(sentence)
            changes.append(sentence)
        else:
            fields = _changed_fields(old_objects[key], new_objects[key])
            if not fields:
                continue
            if kind == "transport":
                sentence = f"transport {name} changed (restart needed)"
                restart.append(sentence)
            elif fields == ["dialplan"] and kind in {"route", "inbound route", "feature", "dialplan"}:
                sentence = f"{kind} {name} changed"
            else:
                sentence = f"{kind} {name} {', '.join(fields)} changed"
            changes.append(sentence)
    return changes, restart


def _range(start: int, stop: int) -> str:
    """A unified diff hunk range, exactly as difflib writes it."""
    beginning, length = start + 1, stop - start
    if length == 1:
        return str(beginning)
    return f"{beginning - 1 if not length else beginning},{length}"


def _masked_diff(old: str, new: str, fromfile: str, name: str, secrets: frozenset[str]) -> Iterator[str]:
    """Unified diff of `old` → `new` (difflib's format) with every secret masked. Only the lines
    the diff shows are masked (a one-line change in a 36,000-line file masks a handful of lines),
    each knowing its section, so user names are masked by where they are, old values included;
    a line that changed only in a secret shows as a masked -/+ pair."""
    pattern = secret_pattern(secrets)
    a, b = _lines(old), _lines(new)
    sections_a, sections_b = _Sections(a), _Sections(b)
    # A rendered file repeats most of its lines: each distinct (line, section kind) is masked once.
    memo: dict[tuple[str, bool], str] = {}

    def masked(line: str, section: str | None) -> str:
        key = (line, bool(section and _EXTENSION_SECTION.fullmatch(section)))
        done = memo.get(key)
        if done is None:
            done = memo[key] = _mask_line(line, section, pattern, name)
        return done

    for number, group in enumerate(linediff.grouped_opcodes(a, b, 3)):
        if number == 0:
            yield f"--- {fromfile}\n"
            yield f"+++ new/{name}\n"
        first, last = group[0], group[-1]
        yield f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for i in range(i1, i2):
                    yield " " + masked(a[i], sections_a.at(i)) + "\n"
                continue
            for i in range(i1, i2):
                yield "-" + masked(a[i], sections_a.at(i)) + "\n"
            for j in range(j1, j2):
                yield "+" + masked(b[j], sections_b.at(j)) + "\n"


def make_plan(
    new: Mapping[str, str] | Any,
    live: Mapping[str, str],
    secret_values: Iterable[str] = (),
    *,
    models: ModelPlan | None = None,
) -> Plan:
    """Compare rendered files `new` (a name → text mapping, or a `render.Rendered`) with `live`
    (the same names; a missing name means the file does not exist yet).

    With `models` (from `plan_models(before, after)`), the semantic changes and restart reasons
    are the model plan's and no file is parsed; without it they come from the changed files'
    sections, which also works against live files nothing remembers the model of."""
    # Millions of short-lived lines, matches and tuples and no garbage cycles among them: the
    # cyclic collector's passes over them took ~40% of a 50,000-extension plan.
    with gc_paused():
        return _make_plan(new, live, secret_values, models)


def _make_plan(
    new: Mapping[str, str] | Any,
    live: Mapping[str, str],
    secret_values: Iterable[str],
    models: ModelPlan | None,
) -> Plan:
    new_files: Mapping[str, str] = new.files if hasattr(new, "files") else new
    secrets = frozenset(secret_values)
    names = _ordered(new_files)
    changed: list[str] = []
    revision_only: list[str] = []
    diff_parts: list[str] = []
    for name in names:
        old_text = live.get(name)
        new_text = new_files[name]
        if old_text is not None and old_text == new_text:
            continue
        if old_text is not None and strip_revision(old_text) == strip_revision(new_text):
            revision_only.append(name)
            continue
        changed.append(name)
        fromfile = f"live/{name}" if old_text is not None else "/dev/null"
        diff_parts.extend(_masked_diff(old_text or "", new_text, fromfile, name, secrets))
    diff = "".join(line if line.endswith("\n") else line + "\n" for line in diff_parts)
    live_subset = {k: v for k, v in live.items() if k in new_files}
    store_changes: list[str] = []
    if models is not None:
        changes, restart = list(models.changes), list(models.restart_reasons)
        # Extensions are rows of the realtime store: they change no file and reload nothing.
        store_changes = [c for c in changes if c.startswith(f"{EXTENSION_KIND} ")]
    else:
        changes, restart = semantic_changes(
            {k: new_files[k] for k in changed}, {k: live_subset[k] for k in changed if k in live_subset}
        )
    new_revision = next((r for r in (revision_of_text(t) for t in new_files.values()) if r), None)
    live_revision = next((r for r in (revision_of_text(t) for t in live_subset.values()) if r), None)
    return Plan(
        changed_files=changed,
        revision_only=revision_only,
        changes=changes,
        diff=diff,
        reloads=[RELOAD_COMMANDS[n] for n in changed if n in RELOAD_COMMANDS],
        restart_required=bool(restart),
        new_revision=new_revision,
        live_revision=live_revision,
        restart_reasons=restart,
        store_changes=store_changes,
    )


# ---- the plan on models ----------------------------------------------------------------------

# Snapshot kind → the word the plan uses (the text plan's words: `route`, `inbound route`).
_KIND_WORDS = {
    "extension": "extension",
    "provider": "provider",
    "outbound": "route",
    "inbound": "inbound route",
    "ring_group": "ring group",
    "schedule": "schedule",
    "menu": "menu",
    "queue": "queue",
}
# pbx fields that shape the transports (`[transport-*]` in pjsip.conf): a change needs a restart.
_TRANSPORT_FIELDS = ("bind", "port", "tls_port", "external_address", "local_net")


@dataclass(frozen=True)
class ModelPlan:
    """What turns the last applied snapshot into the desired one, as the plan's sentences."""

    changes: list[str]  # e.g. "extension 4006 added", "provider pbx_provider host changed"
    restart_reasons: list[str]  # the sentences among `changes` that need a restart
    objects: list[ObjectChange]  # the object changes behind the sentences (store and verify use them)

    @property
    def has_changes(self) -> bool:
        return bool(self.objects)

    @property
    def restart_required(self) -> bool:
        return bool(self.restart_reasons)


def _transports(snapshot: Snapshot | None) -> dict[str, tuple[Any, ...]]:
    """transport name → what its section is rendered from (as the template does: udp always, tcp
    and tls when a provider uses them)."""
    if snapshot is None:
        return {}
    pbx = snapshot.objects.get("pbx", {})
    used = {item.get("transport") for key, item in snapshot.objects.items() if key.startswith("provider:")}
    out: dict[str, tuple[Any, ...]] = {}
    for proto in ("udp", *(t for t in ("tcp", "tls") if t in used)):
        external = pbx.get("external_address")
        port = pbx.get("tls_port") if proto == "tls" else pbx.get("port")
        nets = tuple(pbx.get("local_net") or ()) if external else ()
        out[f"transport-{proto}"] = (pbx.get("bind"), port, external, nets)
    return out


def _field_names(change: ObjectChange, before: Snapshot | None, after: Snapshot) -> list[str]:
    """The changed fields by their YAML names; nested ones dotted (`voicemail.pin`)."""
    old = before.objects.get(change.key, {}) if before is not None else {}
    new = after.objects.get(change.key, {})
    names: list[str] = []
    for name in change.fields:
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            names += [f"{name}.{k}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
        else:
            names.append(name)
    return names


def _sentence_key(sentence_key: tuple[str, str]) -> tuple[str, int, str]:
    kind, name = sentence_key
    return (kind, int(name) if name.isdigit() else -1, name)


def plan_models(before: Snapshot | None, after: Snapshot) -> ModelPlan:
    """The semantic plan from two snapshots, O(objects) with dict lookups: `before` is the last
    applied state (None: nothing applied yet), `after` the desired one. Sentences use the text
    plan's words and order ("extension 4006 added", "provider pbx_provider password changed",
    "route external changed", "transport transport-udp changed (restart needed)"); a changed field
    is named by its YAML key. No value appears: secrets are digests in snapshots and only field
    names are printed."""
    objects = changes(before, after)
    sentences: list[tuple[tuple[str, str], str]] = []
    for change in objects:
        if change.key == "pbx":
            fields = [
                f for f in _field_names(change, before, after) if f.split(".")[0] not in _TRANSPORT_FIELDS
            ]
            if fields and before is not None:
                sentences.append((("pbx", ""), f"pbx {', '.join(fields)} changed"))
            continue
        kind, _, ident = change.key.partition(":")
        word = _KIND_WORDS.get(kind, kind)
        name = ident.replace(":", " ")
        if change.action == "add":
            sentence = f"{word} {name} added"
        elif change.action == "remove":
            sentence = f"{word} {name} removed"
        elif kind in ("outbound", "inbound"):
            sentence = f"{word} {name} changed"
        else:
            sentence = f"{word} {name} {', '.join(_field_names(change, before, after))} changed"
        sentences.append(((word, name), sentence))
    restart: list[str] = []
    old_t, new_t = _transports(before), _transports(after)
    for name in sorted(old_t.keys() | new_t.keys()):
        if name not in old_t:
            sentence = f"transport {name} added (restart needed)"
        elif name not in new_t:
            sentence = f"transport {name} removed (restart needed)"
        elif old_t[name] != new_t[name]:
            sentence = f"transport {name} changed (restart needed)"
        else:
            continue
        restart.append(sentence)
        sentences.append((("transport", name), sentence))
    sentences.sort(key=lambda item: _sentence_key(item[0]))
    return ModelPlan([s for _, s in sentences], restart, objects)


STORE_PLACE = "the realtime store"
STORE_LIVE_NOTE = "store rows are live at once, nothing is reloaded"


def _where(plan: Plan) -> list[str]:
    return [*plan.changed_files, *([STORE_PLACE] if plan.store_changes else [])]


def format_text(plan: Plan) -> str:
    """Human-readable plan: changes, then the masked diff, then the Asterisk commands."""
    lines: list[str] = []
    if not plan.has_changes:
        lines.append("No changes." + (" (only the revision markers differ)" if plan.revision_only else ""))
        return "\n".join(lines) + "\n"
    lines.append(f"Plan: {len(plan.changes)} change(s) in {', '.join(_where(plan))}")
    lines += [f"  ~ {c}" for c in plan.changes]
    if plan.diff:
        lines.append("")
        lines.append(plan.diff.rstrip("\n"))
    lines.append("")
    lines.append("Asterisk commands an apply would run:")
    lines += [f"  asterisk -rx '{cmd}'" for cmd in plan.reloads]
    if not plan.reloads and not plan.restart_required:
        lines.append(f"  none: {STORE_LIVE_NOTE}")
    if plan.restart_required:
        lines.append(f"  asterisk -rx '{RESTART_COMMAND}'   # {'; '.join(plan.restart_reasons)}")
    return "\n".join(lines) + "\n"


def format_markdown(plan: Plan) -> str:
    """The plan as a pull-request comment."""
    if not plan.has_changes:
        return "### reconciler plan\n\nNo changes.\n"
    lines = ["### reconciler plan", ""]
    lines.append(f"**{len(plan.changes)} change(s)** in {', '.join(f'`{f}`' for f in _where(plan))}:")
    lines.append("")
    lines += [f"- {c}" for c in plan.changes]
    lines += ["", "Asterisk commands an apply would run:", ""]
    lines += [f"- `{cmd}`" for cmd in plan.reloads]
    if not plan.reloads and not plan.restart_required:
        lines.append(f"- none: {STORE_LIVE_NOTE}")
    if plan.restart_required:
        lines.append(f"- `{RESTART_COMMAND}` (**restart needed**: {'; '.join(plan.restart_reasons)})")
    if not plan.diff.strip():
        # Only store rows change (no file line does): an empty diff block says nothing.
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "<details><summary>Diff (secrets masked)</summary>",
        "",
        "```diff",
        plan.diff.rstrip("\n"),
        "```",
    ]
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
