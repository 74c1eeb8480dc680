"""The desired state as objects: what the plan compares and what the PBX keeps as "last applied".

A `Snapshot` maps an object key (`extension:4001`, `provider:pbx_provider`, `outbound:external`,
`inbound:pbx_provider:+34910000000`, `pbx`) to the item as plain data. Secret references are replaced
by a keyed digest of the value they resolve to, so a changed password shows as a changed `password`
field while no value, and no unkeyed hash of a short PIN, is ever written down. Comparing two
snapshots is O(objects) with dict lookups: the plan of 50,000 extensions never diffs text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.desired.model import DesiredState, Extension, SecretRef

SNAPSHOT_VERSION = 1

Action = Literal["add", "remove", "change"]


def object_key(kind: str, *ids: str) -> str:
    """`kind:id[:id…]`: the one spelling of an object's key."""
    return ":".join((kind, *ids))


EXTENSION_KIND = "extension"


def extension_key(number: str) -> str:
    return object_key(EXTENSION_KIND, number)


def secret_digest(value: str, key: bytes) -> str:
    """`secret:<hex>`: a keyed digest of a secret value; equal values give equal digests for one key."""
    return "secret:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def _plain(value: Any, secrets: Mapping[str, str], key: bytes) -> Any:
    if isinstance(value, SecretRef):
        return secret_digest(secrets.get(value.name, ""), key)
    if isinstance(value, Mapping):
        return {k: _plain(v, secrets, key) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, secrets, key) for v in value]
    return value


# Fields added after snapshots were first recorded (issue 11): at their default they are left out, so
# a snapshot recorded before them compares equal and an upgrade plans no change.
_ABSENT_AT_DEFAULT = frozenset({"devices", "pickup_group", "dnd", "forward", "smtp"})


def _item_deep(model: Any, secrets: Mapping[str, str], key: bytes) -> dict[str, Any]:
    # Attribute access keeps SecretRef instances (model_dump would turn them into plain str).
    fields = type(model).model_fields
    return {
        name: _nested(getattr(model, name), secrets, key)
        for name, info in fields.items()
        if name not in _ABSENT_AT_DEFAULT or getattr(model, name) != info.default
    }


def _objects(state: DesiredState) -> Iterator[tuple[str, Any]]:
    yield "pbx", state.pbx
    for p in state.providers:
        yield object_key("provider", p.name), p
    for e in state.extensions:
        yield extension_key(e.number), e
    for o in state.outbound:
        yield object_key("outbound", o.name), o
    for i in state.inbound:
        yield object_key("inbound", i.provider, i.did), i
    for g in state.ring_groups:
        yield object_key("ring_group", g.number), g
    for s in state.schedules:
        yield object_key("schedule", s.name), s
    for m in state.menus:
        yield object_key("menu", m.name), m
    for q in state.queues:
        yield object_key("queue", q.number), q


def _nested(value: Any, secrets: Mapping[str, str], key: bytes) -> Any:
    if hasattr(type(value), "model_fields"):
        return _item_deep(value, secrets, key)
    if isinstance(value, list):
        return [_nested(v, secrets, key) for v in value]
    return _plain(value, secrets, key)


@dataclass(frozen=True)
class Snapshot:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"version": SNAPSHOT_VERSION, "objects": self.objects}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Snapshot | None:
        """The snapshot in `text`, or None when it is unreadable or of another version."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            return None
        objects = data.get("objects")
        return cls(objects) if isinstance(objects, dict) else None

    def extensions(self) -> dict[str, dict[str, Any]]:
        """number → item, for the extension objects only."""
        prefix = extension_key("")
        return {k[len(prefix) :]: v for k, v in self.objects.items() if k.startswith(prefix)}


def snapshot_of(state: DesiredState, secrets: Mapping[str, str], key: bytes) -> Snapshot:
    """The objects of `state`, each field plain data, secret references as keyed digests."""
    return Snapshot({k: _item_deep(m, secrets, key) for k, m in _objects(state)})


@dataclass(frozen=True)
class ObjectChange:
    key: str
    action: Action
    fields: tuple[str, ...] = ()  # the fields that differ, for "change"

    @property
    def kind(self) -> str:
        return self.key.split(":", 1)[0]

    @property
    def id(self) -> str:
        return self.key.split(":", 1)[1] if ":" in self.key else ""


def changes(before: Snapshot | None, after: Snapshot) -> list[ObjectChange]:
    """What turns `before` into `after`, object by object, in `after`'s order then removals.
    `before=None` (nothing applied yet) makes every object an "add"."""
    old = before.objects if before is not None else {}
    out: list[ObjectChange] = []
    for k, item in after.objects.items():
        prev = old.get(k)
        if prev is None:
            out.append(ObjectChange(k, "add"))
        elif prev != item:
            names = sorted(set(prev) | set(item))
            out.append(ObjectChange(k, "change", tuple(n for n in names if prev.get(n) != item.get(n))))
    out.extend(ObjectChange(k, "remove") for k in old if k not in after.objects)
    return out


def extension_of(state: DesiredState, number: str) -> Extension | None:
    return next((e for e in state.extensions if e.number == number), None)
