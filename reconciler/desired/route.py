"""What a dial does, from the desired state alone (`reconciler route NUMBER --from EXT`).

The rendered dialplan decides which entry takes a number the way Asterisk does: an exact entry
before any pattern, and among patterns the most specific one, compared position by position (a
literal digit before `X`, `X` before `.`). This module builds the same candidates as
templates/extensions.conf.j2 (exact emergency numbers, the mailbox code, one pattern per
extension length, one `_<prefix>X.` per prefix route) and follows the chosen one: the provider and
the number it is sent as, the extension that rings and for how long, the voicemail after it. An
inbound call (`--from provider:NAME`) starts at that provider's DID table and goes on as a dial
of the extension it names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from reconciler.desired.model import DesiredState, Extension, OutboundRoute, Provider
from reconciler.desired.render import (
    EXTENSION_RING_S,
    MAILBOX_CODE,
    OUTBOUND_DIAL_S,
    extension_pattern,
)
from reconciler.errors import ReconcilerError

PROVIDER_PREFIX = "provider:"
Kind = Literal["emergency", "outbound", "extension", "mailbox", "no-such-extension", "rejected", "no-route"]

# Weights of a pattern's elements for "most specific": fewer matching characters first.
_LITERAL, _X, _ANY = 1, 10, 11


@dataclass(frozen=True)
class Ring:
    extension: str
    name: str
    devices: int
    seconds: int


@dataclass(frozen=True)
class Step:
    """What happens after the ringing: voicemail (on busy or no answer) or hang up."""

    action: Literal["voicemail", "hangup"]
    when: str
    mailbox: str | None = None


@dataclass(frozen=True)
class Explanation:
    number: str
    caller: str  # extension number, or provider:NAME
    kind: Kind
    summary: str
    entry: str | None = None  # the dialplan entry that takes it: `911`, `_9X.`, `_4XXX`
    route: str | None = None
    provider: str | None = None
    provider_address: str | None = None
    registers: bool | None = None
    sent: str | None = None
    caller_id: str | None = None
    seconds: int | None = None
    did: str | None = None  # inbound: the DID that matched
    rings: tuple[Ring, ...] = ()
    then: tuple[Step, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return asdict(self)  # the nested Ring/Step too; json writes their tuples as lists


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
    patterns: dict[str, tuple[Kind, Any]] = {}
    for ext in state.extensions:
        patterns.setdefault(extension_pattern(ext.number), ("extension", None))
    for route in state.outbound:
        if route.prefix is not None:
            patterns[f"_{route.prefix}X."] = ("outbound", route)
    return exact, patterns


def _provider(state: DesiredState, name: str) -> Provider:
    return next(p for p in state.providers if p.name == name)


def _ring(ext: Extension) -> tuple[tuple[Ring, ...], tuple[Step, ...]]:
    rings = (Ring(ext.number, ext.name, 1, EXTENSION_RING_S),)
    if ext.voicemail:
        then = (Step("voicemail", "busy or no answer", f"{ext.number}@default"),)
    else:
        then = (Step("hangup", "busy or no answer"),)
    return rings, then


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
    }


def explain_internal(state: DesiredState, number: str, caller: str, caller_id: str | None) -> Explanation:
    """What dialling `number` from an extension (context internal) does."""
    exact, patterns = _candidates(state)
    base: dict[str, Any] = {"number": number, "caller": caller, "caller_id": caller_id}
    if number in exact:
        kind, route = exact[number]
        if kind == "mailbox":
            return Explanation(
                **base, kind="mailbox", entry=number, summary=f"{MAILBOX_CODE}: the caller's own mailbox"
            )
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
    kind, route = patterns[best]
    if kind == "outbound":
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
    ext = next((e for e in state.extensions if e.number == number), None)
    if ext is None:
        return Explanation(
            **base,
            kind="no-such-extension",
            entry=best,
            summary=f"{number} looks like an extension ({best}) but none has that number: hung up "
            "(unallocated, cause 1)",
        )
    rings, then = _ring(ext)
    fallback = "voicemail" if ext.voicemail else "hang up"
    return Explanation(
        **base,
        kind="extension",
        entry=best,
        seconds=EXTENSION_RING_S,
        rings=rings,
        then=then,
        summary=f"rings extension {ext.number} ({ext.name}) for {EXTENSION_RING_S} s, then {fallback}",
    )


def explain(state: DesiredState, number: str, caller: str) -> Explanation:
    """What `number` dialled by `caller` does: an extension number, or `provider:NAME` for a call
    coming in from that provider to the DID `number`. An unknown caller is a one-line error."""
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
        inner = explain_internal(state, route.to, caller, None)  # the outside caller's own number
        return replace(
            inner,
            number=number,
            did=route.did,
            summary=f"inbound DID {route.did} from {name} goes to {route.to}: {inner.summary}",
        )
    ext = next((e for e in state.extensions if e.number == caller), None)
    if ext is None:
        raise ReconcilerError(
            f"--from {caller}: no extension {caller!r} in the desired state",
            "pass --from with an extension number of the desired files, or provider:NAME for an inbound call",
        )
    return explain_internal(state, number, caller, ext.number)
