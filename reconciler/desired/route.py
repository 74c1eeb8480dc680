"""What a dial does, from the desired state alone (`reconciler route NUMBER --from EXT`).

The rendered dialplan decides which entry takes a number the way Asterisk does: an exact entry
before any pattern, and among patterns the most specific one, compared position by position (a
literal digit before `X`, `X` before `.`). This module builds the same candidates as
templates/extensions.conf.j2 (exact emergency numbers, ring group and queue numbers, the mailbox
code and the feature codes without a number; one pattern per extension length, the feature codes
that take a number, one `_<prefix>X.` per prefix route) and follows the chosen one: the provider
and the number it is sent as, or the chain of targets the call passes through (a forward, a ring
group and its fallback, a queue, a menu), each with what rings and for how long, until the call
ends, reaches a menu (the caller chooses) or has passed MAX_HOPS targets.

An inbound call (`--from provider:NAME`) starts at that provider's DID table; a DID whose `to` is a
schedule choice is explained at a time (`at`): closed dates first, then the open spans (end
exclusive), in the schedule's own time zone.

What the phones set themselves (forwards and do-not-disturb in AstDB, `*72`/`*78`...) is not in the
model: the explanation says so, and `reconciler status` shows it.
"""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from reconciler.desired.model import (
    DesiredState,
    Extension,
    OutboundRoute,
    Provider,
    Schedule,
    ScheduleChoice,
    parse_target,
)
from reconciler.desired.render import (
    EXTENSION_RING_S,
    FEATURE_CODES,
    MAILBOX_CODE,
    MAX_HOPS,
    OUTBOUND_DIAL_S,
    extension_pattern,
)
from reconciler.errors import ReconcilerError

PROVIDER_PREFIX = "provider:"
Kind = Literal[
    "emergency",
    "outbound",
    "extension",
    "mailbox",
    "no-such-extension",
    "rejected",
    "no-route",
    "ring_group",
    "queue",
    "menu",
    "voicemail",
    "hangup",
    "feature",
]
PHONE_STATE_NOTE = (
    "the phone's own *72/*78 settings are not in desired/: `reconciler status` shows them "
    "(forwards and do-not-disturb set from a phone override desired/)"
)

# Weights of a pattern's elements for "most specific": fewer matching characters first.
_LITERAL, _X, _ANY = 1, 10, 11
# Feature codes that take a number (`_<code>X.`), and the AstDB family each one sets.
_NUMBER_CODES = ("fwd_always", "fwd_busy", "fwd_noanswer", "pickup_direct")
_FORWARDS = {
    "fwd_always": ("gitops-fwd-always", "always", "forward always"),
    "fwd_busy": ("gitops-fwd-busy", "busy", "forward on busy"),
    "fwd_noanswer": ("gitops-fwd-noanswer", "no_answer", "forward on no answer"),
}


@dataclass(frozen=True)
class Ring:
    extension: str
    name: str
    devices: int
    seconds: int


@dataclass(frozen=True)
class Skipped:
    """A member of a ring group or queue that does not ring, and why."""

    extension: str
    name: str
    why: str


@dataclass(frozen=True)
class Step:
    """What happens after the ringing: voicemail (on busy or no answer), hang up, or another target."""

    action: Literal["voicemail", "hangup", "target"]
    when: str
    mailbox: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class Option:
    """A menu key (or `timeout`/`invalid`) and what its target does (one level deep)."""

    key: str
    target: str
    does: str


@dataclass(frozen=True)
class TargetStep:
    """One target the call passes through: what it does, what rings, and where the call goes next."""

    target: str  # `ring_group:600`
    kind: str  # the target's kind: extension, ring_group, queue, menu, voicemail, hangup
    does: str
    strategy: str | None = None  # ringall (together) or hunt (in order); a queue's strategy
    rings: tuple[Ring, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    options: tuple[Option, ...] = ()  # a menu
    then: tuple[Step, ...] = ()  # where the call goes after this target
    next: str | None = None  # the target the call goes on to without anyone choosing
    when: str | None = None  # why it goes on: "forward always", "no answer", ...


@dataclass(frozen=True)
class ScheduleState:
    name: str
    timezone: str
    local_time: str  # ISO 8601 in the schedule's time zone
    state: Literal["open", "closed"]
    reason: str  # "open: mon-fri 09:00-18:00", "closed: 2026-12-25 is a closed date"
    open: str  # the targets of the two branches
    closed: str


@dataclass(frozen=True)
class Explanation:
    number: str
    caller: str  # extension number, or provider:NAME
    kind: Kind
    summary: str
    entry: str | None = None  # the dialplan entry that takes it: `911`, `_9X.`, `_4XXX`, a DID
    route: str | None = None
    provider: str | None = None
    provider_address: str | None = None
    registers: bool | None = None
    sent: str | None = None
    caller_id: str | None = None
    seconds: int | None = None
    did: str | None = None  # inbound: the DID that matched
    rings: tuple[Ring, ...] = ()  # what rings first
    then: tuple[Step, ...] = ()  # what comes after that ringing
    target: str | None = None  # `ring_group:600`, `route:external`, `feature:fwd_always`
    schedule: ScheduleState | None = None
    steps: tuple[TargetStep, ...] = ()  # the targets the call passes through, in order
    chain: tuple[str, ...] = ()  # their names (as the call record's gitops_target lists them)
    feature: str | None = None  # a feature code's name (FEATURE_CODES key, or `mailbox`)
    astdb: str | None = None  # what a feature code stores: `gitops-fwd-always/4001 = 4002`
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return asdict(self)  # the nested dataclasses too; json writes their tuples as lists


# --- choosing the entry ----------------------------------------------------------------------------


def _elements(pattern: str) -> list[int]:
    body = pattern[1:]
    return [_ANY if c == "." else _X if c == "X" else _LITERAL for c in body]


def _more_specific(a: str, b: str) -> bool:
    """True when pattern `a` wins over pattern `b` for a number both match (Asterisk's order)."""
    for x, y in zip(_elements(a), _elements(b), strict=False):
        if x != y:
            return x < y
    return len(a) > len(b)


def _matches(pattern: str, number: str) -> bool:
    elements = pattern[1:]
    if elements.endswith("."):
        fixed = elements[:-1]
        if len(number) < len(fixed) + 1:
            return False
    elif len(number) != len(elements):
        return False
    else:
        fixed = elements
    return all((p == "X" and n.isdigit()) or p == n for p, n in zip(fixed, number, strict=False))


def _candidates(state: DesiredState) -> tuple[dict[str, tuple[Kind, Any]], dict[str, tuple[Kind, Any]]]:
    """(exact entries, pattern entries) of context internal, as the template renders them."""
    exact: dict[str, tuple[Kind, Any]] = {MAILBOX_CODE: ("mailbox", None)}
    for route in state.outbound:
        for number in route.numbers or []:
            exact[number] = ("emergency", route)
    for group in state.ring_groups:
        exact[group.number] = ("ring_group", f"ring_group:{group.number}")
    for queue in state.queues:
        exact[queue.number] = ("queue", f"queue:{queue.number}")
    patterns: dict[str, tuple[Kind, Any]] = {}
    for name, code in FEATURE_CODES.items():
        if name in _NUMBER_CODES:
            patterns[f"_{code}X."] = ("feature", name)
        else:
            exact[code] = ("feature", name)
    for ext in state.extensions:
        patterns.setdefault(extension_pattern(ext.number), ("extension", None))
    for route in state.outbound:
        if route.prefix is not None:
            patterns[f"_{route.prefix}X."] = ("outbound", route)
    return exact, patterns


def _provider(state: DesiredState, name: str) -> Provider:
    return next(p for p in state.providers if p.name == name)


def _extension(state: DesiredState, number: str) -> Extension | None:
    return next((e for e in state.extensions if e.number == number), None)


def _leaving(state: DesiredState, route: OutboundRoute, sent: str, base: dict[str, Any]) -> dict[str, Any]:
    provider = _provider(state, route.provider)
    return {
        **base,
        "route": route.name,
        "provider": provider.name,
        "provider_address": f"{provider.host}:{provider.port}/{provider.transport}",
        "registers": provider.register,
        "sent": sent,
        "caller_id": provider.caller_id or base["caller_id"],
        "seconds": OUTBOUND_DIAL_S,
        "target": f"route:{route.name}",
        "chain": (f"route:{route.name}",),
    }


# --- what each target does -------------------------------------------------------------------------


def _canonical(target: str) -> str:
    return str(parse_target(target))


def _after(target: str | None, when: str, mailbox_of: str | None = None, greeting: str = "u") -> Step:
    """The Step for moving on to `target`; None: the extension's own voicemail (or hang up)."""
    if target is None:
        if mailbox_of is not None:
            kind = "busy" if greeting == "b" else "unavailable"
            return Step("voicemail", f"{when} ({kind} greeting)", f"{mailbox_of}@default")
        return Step("hangup", when)
    ref = parse_target(target)
    if ref.kind == "voicemail":
        return Step("voicemail", when, f"{ref.value}@default", str(ref))
    if ref.kind == "hangup":
        return Step("hangup", when, target="hangup")
    return Step("target", when, target=str(ref))


def _step_text(step: Step) -> str:
    if step.action == "target":
        return f"{step.target}"
    if step.action == "voicemail":
        return f"voicemail {step.mailbox}"
    return "hang up"


def _merge(busy: Step, no_answer: Step) -> tuple[Step, ...]:
    """One Step for "busy or no answer" when both go to the same place (as before forwards)."""
    if (busy.action, busy.mailbox, busy.target) == (no_answer.action, no_answer.mailbox, no_answer.target):
        return (replace(busy, when="busy or no answer"),)
    return (no_answer, busy)


def _extension_step(state: DesiredState, number: str) -> TargetStep:
    target = f"extension:{number}"
    ext = _extension(state, number)
    if ext is None:
        return TargetStep(target, "extension", f"no extension {number}: hung up (unallocated, cause 1)")
    label = f"extension {ext.number} ({ext.name})"
    mailbox = ext.number if ext.has_voicemail else None
    forward = ext.forward
    always = forward.always if forward else None
    if always is not None:
        nxt = _canonical(always)
        return TargetStep(
            target,
            "extension",
            f"{label} forwards every call to {nxt} (forward.always in desired/): its phone does not ring",
            then=(Step("target", "forward always", target=nxt),),
            next=nxt,
            when="forward always",
        )
    busy = _after(forward.busy if forward else None, "busy", mailbox, "b")
    if ext.dnd:
        does = f"{label} is on do-not-disturb (dnd: true in desired/): treated as busy, nothing rings"
        return TargetStep(
            target,
            "extension",
            f"{does}, then {_step_text(busy)}",
            then=(busy,),
            next=busy.target,
            when="busy",
        )
    no_answer = _after(forward.no_answer if forward else None, "no answer", mailbox, "u")
    then = _merge(busy, no_answer)
    devices = f"its {ext.devices} devices at once" if ext.devices > 1 else "its phone"
    after = ", ".join(f"{s.when}: {_step_text(s)}" for s in then)
    return TargetStep(
        target,
        "extension",
        f"rings {label} on {devices} for {EXTENSION_RING_S} s; {after}",
        rings=(Ring(ext.number, ext.name, ext.devices, EXTENSION_RING_S),),
        then=then,
        next=no_answer.target,
        when="no answer",
    )


def _members(
    state: DesiredState, members: list[str], seconds: int
) -> tuple[tuple[Ring, ...], tuple[Skipped, ...]]:
    rings: list[Ring] = []
    skipped: list[Skipped] = []
    for number in members:
        ext = _extension(state, number)
        if ext is None:
            skipped.append(Skipped(number, "", "no such extension"))
        elif ext.dnd:
            skipped.append(Skipped(number, ext.name, "dnd: true in desired/"))
        else:
            rings.append(Ring(number, ext.name, ext.devices, seconds))
    return tuple(rings), tuple(skipped)


def _ring_group_step(state: DesiredState, number: str) -> TargetStep:
    target = f"ring_group:{number}"
    group = next((g for g in state.ring_groups if g.number == number), None)
    if group is None:
        return TargetStep(target, "ring_group", f"no ring group {number}: hung up")
    rings, skipped = _members(state, group.members, group.ring_seconds)
    fallback = _canonical(group.fallback)
    then = _after(fallback, "no answer")
    names = ", ".join(r.extension for r in rings)
    if not rings:
        how = "no member can ring"
        then = replace(then, when="nobody to ring")
    elif group.strategy == "ringall":
        how = f"rings {names} together for {group.ring_seconds} s"
    else:
        how = f"rings {names} one after another, {group.ring_seconds} s each"
    skip = "".join(f"; skips {s.extension} ({s.why})" for s in skipped)
    return TargetStep(
        target,
        "ring_group",
        f"ring group {group.number} ({group.name}) {how}{skip}; then {fallback}",
        strategy=group.strategy,
        rings=rings,
        skipped=skipped,
        then=(then,),
        next=fallback,
        when=then.when,
    )


def _queue_step(state: DesiredState, number: str) -> TargetStep:
    target = f"queue:{number}"
    queue = next((q for q in state.queues if q.number == number), None)
    if queue is None:
        return TargetStep(target, "queue", f"no queue {number}: hung up")
    rings, skipped = _members(state, queue.members, queue.ring_seconds)
    skipped = tuple(replace(s, why=f"{s.why}: answers busy") for s in skipped)
    fallback = _canonical(queue.fallback)
    when = f"nobody answers within {queue.max_wait_seconds} s"
    names = ", ".join(r.extension for r in rings) or "nobody (every member is skipped)"
    skip = "".join(f"; skips {s.extension} ({s.why})" for s in skipped)
    return TargetStep(
        target,
        "queue",
        f"queue {queue.number} ({queue.name}) answers; the caller hears music on hold (class "
        f"{queue.music}) for up to {queue.max_wait_seconds} s while {names} ring (strategy "
        f"{queue.strategy}, {queue.ring_seconds} s per attempt){skip}; then {fallback}",
        strategy=queue.strategy,
        rings=rings,
        skipped=skipped,
        then=(_after(fallback, when),),
        next=fallback,
        when=when,
    )


def _menu_step(state: DesiredState, name: str, deep: bool = True) -> TargetStep:
    target = f"menu:{name}"
    menu = next((m for m in state.menus if m.name == name), None)
    if menu is None:
        return TargetStep(target, "menu", f"no menu {name}: hung up")
    does = (
        f"menu {menu.name} answers, plays {menu.prompt} and waits {menu.wait_seconds} s for a key "
        "(the caller chooses: the chain stops here)"
    )
    if not deep:
        return TargetStep(target, "menu", does)
    keys = sorted(menu.options.items())
    keys += [("timeout", menu.timeout), ("invalid", menu.invalid)]
    options = tuple(
        Option(key, _canonical(text), _target_step(state, _canonical(text), deep=False).does)
        for key, text in keys
    )
    return TargetStep(target, "menu", does, options=options)


def _target_step(state: DesiredState, target: str, deep: bool = True) -> TargetStep:
    """What `target` does when a call reaches it (a menu's options one level deep)."""
    ref = parse_target(target)
    if ref.kind == "extension":
        return _extension_step(state, ref.value)
    if ref.kind == "ring_group":
        return _ring_group_step(state, ref.value)
    if ref.kind == "queue":
        return _queue_step(state, ref.value)
    if ref.kind == "menu":
        return _menu_step(state, ref.value, deep)
    if ref.kind == "voicemail":
        ext = _extension(state, ref.value)
        if ext is None or not ext.has_voicemail:
            return TargetStep(str(ref), "voicemail", f"extension {ref.value} has no voicemail: hung up")
        return TargetStep(
            str(ref),
            "voicemail",
            f"voicemail of {ext.number} ({ext.name}), mailbox {ext.number}@default, unavailable greeting",
        )
    return TargetStep("hangup", "hangup", "hung up")


def follow(state: DesiredState, target: str) -> tuple[TargetStep, ...]:
    """The targets a call reaching `target` passes through when nobody answers: forwards, fallbacks,
    until one ends the call, a menu (the caller chooses), or MAX_HOPS targets (then Asterisk hangs up,
    cause 25, as [gitops-hop] does)."""
    steps: list[TargetStep] = []
    current: str | None = _canonical(target)
    while current is not None:
        if len(steps) == MAX_HOPS:
            steps.append(
                TargetStep(
                    current,
                    "hangup",
                    f"not reached: the call has passed {MAX_HOPS} targets (MAX_HOPS): hung up (cause 25)",
                )
            )
            break
        step = _target_step(state, current)
        steps.append(step)
        current = step.next
    return tuple(steps)


def _from_target(base: dict[str, Any], state: DesiredState, target: str, entry: str | None) -> Explanation:
    """The Explanation of a call that goes to `target` (from a dialplan entry or a DID)."""
    steps = follow(state, target)
    first = steps[0]
    ringing = next((s for s in steps if s.rings), None)
    kind: Kind = first.kind  # type: ignore[assignment]  # every target kind is a Kind
    if first.kind == "extension" and first.does.startswith("no extension"):
        kind = "no-such-extension"
    summary = first.does  # it names the next target; the ones after it follow
    if len(steps) > 2:
        summary += " → " + " → ".join(s.target for s in steps[2:])
    notes: tuple[str, ...] = ()
    if any(s.kind in ("extension", "ring_group", "queue") for s in steps):
        notes = (PHONE_STATE_NOTE,)
    if any(s.kind == "ring_group" for s in steps):
        notes += ("a ring group rings its members' phones directly: their forwards do not apply",)
    return Explanation(
        **base,
        kind=kind,
        entry=entry,
        summary=summary,
        seconds=ringing.rings[0].seconds if ringing else None,
        rings=ringing.rings if ringing else (),
        then=ringing.then if ringing else first.then,
        target=first.target,
        steps=steps,
        chain=tuple(s.target for s in steps),
        notes=notes,
    )


# --- feature codes ---------------------------------------------------------------------------------


def _feature(state: DesiredState, name: str, number: str, caller: str, base: dict[str, Any]) -> Explanation:
    code = FEATURE_CODES[name]
    digits = "".join(c for c in number[len(code) :] if c.isdigit()) if name in _NUMBER_CODES else ""
    ext = _extension(state, caller)
    fields: dict[str, Any] = {
        **base,
        "kind": "feature",
        "entry": None,
        "feature": name,
        "target": f"feature:{name}",
    }
    fields["notes"] = (PHONE_STATE_NOTE,)
    tail = "the PBX answers, beeps and hangs up"
    if name in _FORWARDS:
        family, field, what = _FORWARDS[name]
        in_yaml = getattr(ext.forward, field, None) if ext and ext.forward else None
        yaml = f" (desired/ has forward.{field}: {in_yaml})" if in_yaml else ""
        inner = explain_internal(state, digits, caller, base["caller_id"]).summary
        calls, goes = {
            "fwd_always": ("every call", "goes, instead of ringing,"),
            "fwd_busy": ("a call", "that finds it busy goes"),
            "fwd_noanswer": ("a call", "that it does not answer goes"),
        }[name]
        fields |= {
            "astdb": f"{family}/{caller} = {digits}",
            "sent": digits,
            "summary": f"{what} on for {caller}: {calls} to {caller} {goes} to {digits}, dialled as {caller} "
            f"would dial it ({inner}); it replaces desired/'s setting{yaml}; {tail}",
        }
        return Explanation(**fields)
    off = {"fwd_always_off": "fwd_always", "fwd_busy_off": "fwd_busy", "fwd_noanswer_off": "fwd_noanswer"}
    if name in off:
        family, field, what = _FORWARDS[off[name]]
        in_yaml = getattr(ext.forward, field, None) if ext and ext.forward else None
        yaml = f"; this also turns off desired/'s forward.{field} ({in_yaml})" if in_yaml else ""
        fields |= {
            "astdb": f"{family}/{caller} = off",
            "summary": f"{what} off for {caller}{yaml}; {tail}",
        }
        return Explanation(**fields)
    if name in ("dnd_on", "dnd_off"):
        on = name == "dnd_on"
        does = (
            f"do-not-disturb on for {caller}: its calls are treated as busy (forward on busy or voicemail), "
            "ring groups and queues skip it"
            if on
            else f"do-not-disturb off for {caller}: its phone rings again"
            + ("; this also overrides dnd: true in desired/" if ext and ext.dnd else "")
        )
        fields |= {"astdb": f"gitops-dnd/{caller} = {'on' if on else 'off'}", "summary": f"{does}; {tail}"}
        return Explanation(**fields)
    if name == "pickup_group":
        group = ext.pickup_group if ext else None
        if group is None:
            fields["summary"] = (
                f"group pickup: {caller} has no pickup_group in desired/, so nothing is picked up (hung up)"
            )
        else:
            members = ", ".join(
                e.number for e in state.extensions if e.pickup_group == group and e.number != caller
            )
            fields["summary"] = (
                f"group pickup: answers a call ringing at a phone of pickup group {group} "
                f"({members or 'no other member'}); nothing ringing: hung up"
            )
        return Explanation(**fields)
    # pickup_direct
    who = _extension(state, digits)
    known = f"extension {digits} ({who.name})" if who else f"{digits} (no such extension in desired/)"
    fields |= {
        "sent": digits,
        "summary": f"directed pickup: answers the call ringing at {known}; nothing ringing there: hung up",
    }
    return Explanation(**fields)


# --- the entry points ------------------------------------------------------------------------------


def explain_internal(state: DesiredState, number: str, caller: str, caller_id: str | None) -> Explanation:
    """What dialling `number` from an extension (context internal) does."""
    exact, patterns = _candidates(state)
    base: dict[str, Any] = {"number": number, "caller": caller, "caller_id": caller_id}
    if number in exact:
        kind, item = exact[number]
        if kind == "mailbox":
            return Explanation(
                **base,
                kind="mailbox",
                entry=number,
                summary=f"{MAILBOX_CODE}: the caller's own mailbox ({caller}@default, no PIN asked: the "
                "phone is authenticated)",
                feature="mailbox",
                target="feature:mailbox",
            )
        if kind == "feature":
            return replace(_feature(state, item, number, caller, base), entry=number)
        if kind in ("ring_group", "queue"):
            return _from_target(base, state, item, number)
        route = item
        fields = _leaving(state, route, number, base)
        return Explanation(
            **fields,
            kind="emergency",
            entry=number,
            summary=f"emergency route {route.name}: sent as dialled ({number}) via {route.provider}",
        )
    matching = [p for p in patterns if _matches(p, number)]
    if not matching:
        return Explanation(
            **base,
            kind="no-route",
            summary=f"no route takes {number}: refused (nothing in context internal matches it)",
        )
    best = matching[0]
    for pattern in matching[1:]:
        if _more_specific(pattern, best):
            best = pattern
    kind, item = patterns[best]
    if kind == "feature":
        return replace(_feature(state, item, number, caller, base), entry=best)
    if kind == "outbound":
        route = item
        rest = number[route.strip :]
        if not rest.isdigit():
            return Explanation(
                **base,
                kind="rejected",
                entry=best,
                route=route.name,
                summary=f"route {route.name} takes it, but {rest!r} is not all digits: rejected (cause 21)",
            )
        fields = _leaving(state, route, rest, base)
        stripped = f", first {route.strip} digit(s) removed" if route.strip else ""
        return Explanation(
            **fields,
            kind="outbound",
            entry=best,
            summary=f"outbound route {route.name} ({route.prefix} + number{stripped}): sends {rest} via "
            f"{route.provider}",
        )
    if _extension(state, number) is None:
        return Explanation(
            **base,
            kind="no-such-extension",
            entry=best,
            summary=f"{number} looks like an extension ({best}) but none has that number: hung up "
            "(unallocated, cause 1)",
        )
    return _from_target(base, state, f"extension:{number}", best)


def schedule_state(schedule: Schedule, at: datetime.datetime, choice: ScheduleChoice) -> ScheduleState:
    """Whether `schedule` is open at `at` (a naive time is in the schedule's own time zone): a closed
    date first, then the open spans, each [start, end)."""
    zone = zoneinfo.ZoneInfo(schedule.timezone)
    local = at.replace(tzinfo=zone) if at.tzinfo is None else at.astimezone(zone)
    branches = {"open": _canonical(choice.open), "closed": _canonical(choice.closed)}
    when = local.isoformat(timespec="minutes")
    day = local.date().isoformat()
    if day in schedule.closed_dates:
        return ScheduleState(
            schedule.name, schedule.timezone, when, "closed", f"closed: {day} is a closed date", **branches
        )
    minute = local.hour * 60 + local.minute
    for text, span in zip(schedule.open, schedule.spans, strict=True):
        if local.weekday() in span.days and span.start <= minute < span.end:
            return ScheduleState(schedule.name, schedule.timezone, when, "open", f"open: {text}", **branches)
    hours = ", ".join(schedule.open)
    now = local.strftime("%a %H:%M").lower()
    reason = f"closed: {now} is outside the open hours ({hours})"
    return ScheduleState(schedule.name, schedule.timezone, when, "closed", reason, **branches)


def explain(
    state: DesiredState, number: str, caller: str, at: datetime.datetime | None = None
) -> Explanation:
    """What `number` dialled by `caller` does: an extension number, or `provider:NAME` for a call
    coming in from that provider to the DID `number`. `at` is when (for a schedule; default now; a
    naive time is in the schedule's time zone). An unknown caller is a one-line error."""
    if caller.startswith(PROVIDER_PREFIX):
        name = caller[len(PROVIDER_PREFIX) :]
        if not any(p.name == name for p in state.providers):
            names = ", ".join(p.name for p in state.providers) or "none"
            raise ReconcilerError(
                f"--from {caller}: no provider {name!r} in the desired state (providers: {names})",
                "pass --from provider:NAME with a provider of the desired files, or an extension number",
            )
        route = next((r for r in state.inbound if r.provider == name and r.did == number), None)
        if route is None:
            return Explanation(
                number=number,
                caller=caller,
                kind="no-route",
                summary=f"no inbound route of {name} has the DID {number}: refused (cause 21)",
            )
        base: dict[str, Any] = {"number": number, "caller": caller, "caller_id": None, "did": route.did}
        to = route.to
        if isinstance(to, ScheduleChoice):
            schedule = next((s for s in state.schedules if s.name == to.schedule), None)
            if schedule is None:
                raise ReconcilerError(f"DID {number}: no schedule {to.schedule!r} in the desired state")
            when = at or datetime.datetime.now(datetime.UTC)
            evaluated = schedule_state(schedule, when, to)
            chosen = evaluated.open if evaluated.state == "open" else evaluated.closed
            inner = _from_target(base, state, chosen, route.did)
            return replace(
                inner,
                schedule=evaluated,
                summary=f"inbound DID {route.did} from {name}: schedule {schedule.name} "
                f"({evaluated.reason}) → {chosen}: {inner.summary}",
            )
        inner = _from_target(base, state, to, route.did)
        return replace(inner, summary=f"inbound DID {route.did} from {name} goes to {to}: {inner.summary}")
    ext = _extension(state, caller)
    if ext is None:
        raise ReconcilerError(
            f"--from {caller}: no extension {caller!r} in the desired state",
            "pass --from with an extension number of the desired files, or provider:NAME for an inbound call",
        )
    return explain_internal(state, number, caller, ext.number)
