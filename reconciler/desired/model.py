"""The desired state of the PBX as pydantic v2 models, and the checks across them.

Structure (types, unknown keys, ranges) is checked by pydantic; the rules that relate objects to each
other (a route names a provider that exists, numbers do not collide) live in `cross_check()`, which
returns every issue with the path of the field it is about, so `load.py` can point at a file and line.

Secrets are never values in these models: a secret field holds a `SecretRef` (a `str` subclass that is
exactly `${NAME}`); `secrets.py` turns references into values at render time.
"""

from __future__ import annotations

import ipaddress
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from reconciler.textrules import echo

Path = tuple[str | int, ...]

SECRET_REF_RE = re.compile(r"^\$\{([A-Z][A-Z0-9_]*)\}$")  # used with fullmatch: no trailing newline
NAME_RE = r"^[a-z][a-z0-9_]*$"
ROUTE_NAME_RE = r"^[a-z][a-z0-9_-]*$"
# A host name: LDH labels (letters, digits, hyphens inside), 1-63 characters each, 253 in all.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_RE = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
DIGITS_RE = r"^[0-9]{1,15}$"
DISPLAY_NAME_RE = r"^[\w][\w .'()-]*$"
DID_RE = r"^\+?[0-9]{1,20}$"
# An e-mail address as voicemail.conf can carry it: nothing it treats as a separator (`,` `|`), no `;`
# (a comment), no space, quote or line break; the domain is LDH labels with at least one dot.
EMAIL_RE = rf"^[A-Za-z0-9._%+-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$"
_EMAIL = re.compile(EMAIL_RE.removeprefix("^").removesuffix("$"))
# An IPv6 zone id (`fe80::1%eth0`): Python's ipaddress accepts any text after `%`; only an interface
# name's characters are allowed here.
_ZONE_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_IP_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_NET_CHARS = re.compile(r"[0-9A-Fa-f:./]+")
# What a pattern means, for error messages (the regex itself helps few people).
PATTERN_HELP = {
    NAME_RE: "must be lower case letters, digits and _, starting with a letter",
    ROUTE_NAME_RE: "must be lower case letters, digits, _ and -, starting with a letter",
    DIGITS_RE: "must be digits only (1-15)",
    DISPLAY_NAME_RE: "may contain only letters, digits, space and . ' ( ) - _",
    DID_RE: "must be digits, optionally after a +",
    EMAIL_RE: "is not an email address (letters, digits and . _ % + - before the @, a host name after)",
}
Codec = Literal["ulaw", "alaw", "g722", "g729", "gsm", "ilbc", "opus", "speex", "slin", "h264", "vp8"]
DEFAULT_CODECS: tuple[Codec, ...] = ("ulaw", "alaw")


class SecretRef(str):
    """A `${NAME}` secret reference. It is a `str` (the reference text itself, never the value)."""

    @property
    def name(self) -> str:
        match = SECRET_REF_RE.fullmatch(self)
        assert match is not None
        return match.group(1)


def _secret_ref(value: Any) -> Any:
    """A secret field must be a `${NAME}` reference: a literal password would end up in git."""
    if isinstance(value, str) and not isinstance(value, SecretRef):
        if SECRET_REF_RE.fullmatch(value):
            return SecretRef(value)
        if "${" in value:
            raise ValueError(
                "a secret reference is written ${NAME} with NAME in upper case letters, digits and _"
            )
        raise ValueError(
            "a literal secret is not allowed in desired/ (secrets never live in git); "
            "write a reference like ${EXT_4001_PASSWORD} and provide its value in the environment, "
            "the env file or /run/secrets"
        )
    return value


def _maybe_secret_ref(value: Any) -> Any:
    """A field that may be a literal (a user name) or a `${NAME}` reference."""
    if isinstance(value, str) and not isinstance(value, SecretRef) and SECRET_REF_RE.fullmatch(value):
        return SecretRef(value)
    if isinstance(value, str) and "${" in value:
        raise ValueError(
            "a secret reference is written ${NAME} with NAME in upper case letters, digits and _"
        )
    return value


def _literal_or_ref(value: str) -> str:
    """A literal (a user name) or a `${NAME}` reference. Literals end up in Asterisk config lines:
    refuse what would break or extend a line."""
    value = _maybe_secret_ref(value)
    if not isinstance(value, SecretRef) and not re.fullmatch(r"[A-Za-z0-9_.+@-]+", value):
        raise ValueError("may contain only letters, digits and _ . + @ - (or be a ${NAME} reference)")
    return value


Secret = Annotated[
    str,
    AfterValidator(_secret_ref),
    Field(
        description="A secret reference ${NAME}; the value comes from the environment, the env file "
        "or /run/secrets/NAME.",
        json_schema_extra={"pattern": SECRET_REF_RE.pattern},
    ),
]
MaybeSecret = Annotated[str, AfterValidator(_literal_or_ref)]


def _digits(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f'must be a quoted string of digits, e.g. "{value}" (YAML reads {value} as a number)'
        )
    return value


Digits = Annotated[
    str,
    BeforeValidator(_digits),
    Field(pattern=DIGITS_RE, description="Digits only, quoted."),
    WithJsonSchema({"type": "string", "pattern": DIGITS_RE}),
]


def _not_bool(value: Any) -> Any:
    """YAML's `true` is not the number 1: a boolean in a number field is a mistake, not a port."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Port = Annotated[Int, Field(ge=1, le=65535, description="A port number, 1-65535.")]


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 or IPv6 address, strictly: only address characters, and an IPv6 zone id (`%eth0`) only
    of letters, digits and `_ . -` (Python's ipaddress accepts any text after `%`, line breaks too)."""
    address, percent, zone = value.partition("%")
    if not _IP_CHARS.fullmatch(address):
        raise ValueError("must be an IPv4 or IPv6 address")
    parsed = ipaddress.ip_address(address)  # ValueError names the problem ("Expected 4 octets ...")
    if percent:
        if parsed.version != 6 or not _ZONE_RE.fullmatch(zone):
            raise ValueError(
                "a zone id (after %) is allowed only on an IPv6 address and only as an interface name "
                "(letters, digits and _ . -, at most 15)"
            )
        return ipaddress.IPv6Address(value)
    return parsed


def parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR (`192.168.1.0/24`), strictly: address characters only, no zone id."""
    if not _NET_CHARS.fullmatch(value):
        raise ValueError("must be an address or CIDR such as 192.168.1.0/24 (no zone id)")
    return ipaddress.ip_network(value, strict=False)


def is_host_name(value: str) -> bool:
    """Whether `value` is a DNS host name: LDH labels of 1-63 characters, 253 in all."""
    return HOST_RE.fullmatch(value) is not None


def _ip(value: str) -> str:
    parse_ip(value)
    return value


def _net(value: str) -> str:
    parse_network(value)
    return value


def _host(value: str) -> str:
    try:
        parse_ip(value)
    except ValueError:
        if not is_host_name(value):
            raise ValueError(
                "must be a host name (letters, digits and -, labels separated by dots) or an IP address"
            ) from None
    return value


def _email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValueError(PATTERN_HELP[EMAIL_RE])
    return value


def _match(value: str) -> str:
    """identify match: an address, CIDR or host name, optionally with :port ([v6]:port)."""
    host, port = value, None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError("write an IPv6 address with a port as [address]:port")
        port = rest.removeprefix(":") or None
    elif value.count(":") == 1:
        host, port = value.split(":")
    if port is not None and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        raise ValueError(f"port {echo(port)} must be 1-65535")
    try:
        net = parse_network(host)
    except ValueError:
        if not is_host_name(host):
            raise ValueError("must be an address, CIDR or host name, optionally with :port") from None
        return value
    if net.is_loopback and port is None:
        raise ValueError(
            "a loopback match without a port makes every local phone the trunk: write address:port"
        )
    return value


IpAddress = Annotated[str, AfterValidator(_ip), Field(description="An IPv4 or IPv6 address.")]
Host = Annotated[str, AfterValidator(_host), Field(description="A host name or IP address.")]
Network = Annotated[str, AfterValidator(_net), Field(description="An address or CIDR, e.g. 192.168.1.0/24.")]
Email = Annotated[
    str,
    AfterValidator(_email),
    Field(description="An e-mail address.", json_schema_extra={"pattern": EMAIL_RE}),
]
ProviderName = Annotated[
    str, Field(pattern=NAME_RE, max_length=40, description="Name of a provider in providers.")
]
Match = Annotated[
    str,
    AfterValidator(_match),
    Field(description="An address, CIDR or host name, optionally with :port, e.g. 127.0.0.1:5070."),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class PbxSettings(_Model):
    """PBX-wide settings: where SIP listens, which address goes into SDP, NAT and codecs."""

    bind: IpAddress = Field(
        "127.0.0.1", description="Address the SIP transports bind to (0.0.0.0 for a LAN PBX)."
    )
    port: Port = Field(5060, description="UDP/TCP SIP port.")
    tls_port: Port = Field(5061, description="TLS transport port (rendered only when a provider uses tls).")
    media_address: IpAddress | None = Field(
        "127.0.0.1", description="Address put in SDP and used for RTP (null: Asterisk decides)."
    )
    external_address: Host | None = Field(None, description="Public address of the PBX behind NAT.")
    local_net: list[Network] = Field(default_factory=list, description="Networks that are not behind NAT.")
    codecs: list[Codec] = Field(
        default_factory=lambda: list(DEFAULT_CODECS),
        min_length=1,
        description="Codecs, in order of preference.",
    )


# `register` is the documented YAML key; it shadows only ModelMetaclass.register (ABC), which nothing
# here uses. Pydantic warns about it, and a subclass of Provider would lose the default: do not subclass.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"')

    class Provider(_Model):
        """A SIP trunk to a provider. `name` is the PJSIP endpoint name."""

        name: str = Field(pattern=NAME_RE, max_length=40, description="Lower case letters, digits, _.")
        host: Host = Field(description="Provider's SIP host name or IP address.")
        register: bool = Field(False, description="Keep an outbound registration with the provider.")
        port: Port = Field(5060, description="Provider's SIP port (default 5061 for tls, 5060 otherwise).")
        transport: Literal["udp", "tcp", "tls"] = Field("udp", description="udp, tcp or tls.")
        username: MaybeSecret = Field(description="Account user name: a literal or a ${NAME} reference.")
        password: Secret = Field(description="Account password: must be a ${NAME} reference.")
        match: list[Match] = Field(
            default_factory=list,
            description="identify match for inbound calls; default the provider's host:port "
            "(a bare address would make every sender from that address the trunk).",
        )
        from_user: MaybeSecret | None = Field(None, description="User part of From (default: username).")
        from_domain: Host | None = Field(None, description="Domain of From (default: host).")
        caller_id: str | None = Field(None, pattern=DID_RE, description="Outbound caller ID number.")
        codecs: list[Codec] | None = Field(None, min_length=1, description="Codecs (default: pbx.codecs).")
        expiration: Int = Field(3600, ge=60, le=86400, description="Registration expiry in seconds.")

        @model_validator(mode="before")
        @classmethod
        def _default_port(cls, data: Any) -> Any:
            if isinstance(data, dict) and "port" not in data and data.get("transport") == "tls":
                return {**data, "port": 5061}
            return data

        @property
        def match_or_default(self) -> list[str]:
            """identify `match` values: the configured ones, or host:port (never a bare address)."""
            return list(self.match) if self.match else [host_port(self.host, self.port)]


def host_port(host: str, port: int) -> str:
    """`host:port` as Asterisk and SIP URIs write it: an IPv6 address goes in brackets (`[::1]:5060`),
    since a bare `::1:5060` is read as the address `::1:5060` without a port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Voicemail(_Model):
    """Voicemail options of an extension."""

    pin: Secret | None = Field(
        None, description="Mailbox PIN as a ${NAME} reference (digits). Without it, see README (PIN policy)."
    )
    email: Email | None = Field(None, description="Notify address.")


DEFAULT_VOICEMAIL = Voicemail(pin=None, email=None)  # `voicemail: true`: no PIN of its own, no e-mail


class Extension(_Model):
    """An internal phone (a PJSIP endpoint with its own AOR and auth)."""

    number: Digits = Field(description="Extension number: digits only, quoted, unique.")
    name: str = Field(
        pattern=DISPLAY_NAME_RE,
        max_length=40,
        description="Display name (letters, digits, space and . ' ( ) - _).",
    )
    password: Secret = Field(description="SIP password: a ${NAME} reference.")
    voicemail: bool | Voicemail = Field(False, description="true, or {pin: ${NAME}, email: ...}.")
    codecs: list[Codec] | None = Field(None, min_length=1, description="Codecs (default: pbx.codecs).")

    @property
    def has_voicemail(self) -> bool:
        return self.voicemail is not False

    @property
    def mailbox(self) -> Voicemail | None:
        if self.voicemail is False:
            return None
        # The shared default (models are frozen): building a Voicemail per call cost ~2 s per
        # render at 50,000 extensions.
        return self.voicemail if isinstance(self.voicemail, Voicemail) else DEFAULT_VOICEMAIL


class OutboundRoute(_Model):
    """Calls from extensions to a provider: a dialled prefix, or a list of exact numbers (emergency)."""

    name: str = Field(pattern=ROUTE_NAME_RE, max_length=40, description="Route name.")
    provider: ProviderName = Field(description="Name of the provider the calls leave through.")
    prefix: Digits | None = Field(None, description='Dialled prefix, e.g. "9": 9 + number.')
    strip: Int = Field(
        0, ge=0, description="Digits removed from the front before sending (<= prefix length)."
    )
    numbers: list[Digits] | None = Field(
        None, min_length=1, description="Exact numbers sent as dialled (emergency: 911, 112)."
    )

    @model_validator(mode="after")
    def _prefix_or_numbers(self) -> OutboundRoute:
        if (self.prefix is None) == (self.numbers is None):
            raise ValueError("give exactly one of prefix or numbers")
        if self.prefix is not None and self.strip > len(self.prefix):
            raise ValueError(f"strip ({self.strip}) must not exceed the prefix length ({len(self.prefix)})")
        if self.numbers is not None and self.strip:
            raise ValueError("strip applies to prefix routes only; numbers are sent as dialled")
        return self


class InboundRoute(_Model):
    """Calls from a provider to a DID, sent to an extension."""

    provider: ProviderName = Field(description="Name of the provider the call comes from.")
    did: str = Field(pattern=DID_RE, description="Called number as the provider sends it.")
    to: Digits = Field(description="Extension number that rings.")


class DesiredState(_Model):
    """Everything in desired/*.yaml. In files, each top-level key may appear in one file only."""

    pbx: PbxSettings = Field(default_factory=PbxSettings, description="PBX-wide settings.")  # type: ignore[arg-type]
    providers: list[Provider] = Field(default_factory=list, description="SIP trunks.")
    extensions: list[Extension] = Field(default_factory=list, description="Internal phones.")
    outbound: list[OutboundRoute] = Field(default_factory=list, description="Outbound routes.")
    inbound: list[InboundRoute] = Field(default_factory=list, description="Inbound DIDs.")


TOP_LEVEL_KEYS: tuple[str, ...] = tuple(DesiredState.model_fields)


@dataclass(frozen=True)
class Issue:
    """A cross-object problem, located by the path of the field it is about."""

    path: Path
    message: str


@dataclass(frozen=True)
class SecretUse:
    """Where a secret reference is used, and for what (to check the value's strength)."""

    path: Path
    ref: SecretRef
    kind: Literal["password", "username", "pin"]
    owner: str  # extension number or provider name

    @property
    def name(self) -> str:
        return self.ref.name


def secret_refs(state: DesiredState) -> list[SecretUse]:
    """Every secret reference in `state`, with its field path, in declaration order."""
    uses: list[SecretUse] = []
    for i, p in enumerate(state.providers):
        for field in ("username", "password", "from_user"):
            value = getattr(p, field)
            if isinstance(value, SecretRef):
                kind: Literal["password", "username"] = "password" if field == "password" else "username"
                uses.append(SecretUse(("providers", i, field), value, kind, p.name))
    append = uses.append
    for i, e in enumerate(state.extensions):
        ref = e.password
        append(
            SecretUse(
                ("extensions", i, "password"),
                ref if type(ref) is SecretRef else SecretRef(ref),
                "password",
                e.number,
            )
        )
        box = e.voicemail
        if type(box) is Voicemail and box.pin is not None:
            pin = box.pin
            append(
                SecretUse(
                    ("extensions", i, "voicemail", "pin"),
                    pin if type(pin) is SecretRef else SecretRef(pin),
                    "pin",
                    e.number,
                )
            )
    return uses


def _duplicates(items: Iterator[tuple[Path, str]]) -> Iterator[tuple[Path, str, Path]]:
    seen: dict[str, Path] = {}
    for path, key in items:
        if key in seen:
            yield path, key, seen[key]
        else:
            seen[key] = path


def _fmt(path: Path) -> str:
    return field_name(path)


def field_name(path: Path) -> str:
    """`("extensions", 1, "password")` → `extensions[1].password`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_provider(path: Path, name: str, providers: Iterable[str]) -> Issue:
    known = ", ".join(sorted(providers)) or "none defined"
    return Issue(path, f"no provider named {name!r} (known: {known})")


def cross_check(
    state: DesiredState,
    index: dict[tuple[str, int], int] | None = None,
    more_providers: Iterable[str] = (),
    more_numbers: Iterable[str] = (),
) -> list[Issue]:
    """The rules that relate objects to each other. `index` maps a list position in `state` to the
    position in the files (when invalid items were left out of `state`); `more_providers` and
    `more_numbers` are names of such left-out items, so a reference to them is no second problem."""

    def at(key: str, i: int, *rest: str | int) -> Path:
        return (key, (index or {}).get((key, i), i), *rest)

    issues: list[Issue] = []
    providers = {p.name for p in state.providers} | set(more_providers)
    numbers = {e.number for e in state.extensions}
    known_numbers = numbers | set(more_numbers)

    for path, key, first in _duplicates(
        (at("providers", i, "name"), p.name) for i, p in enumerate(state.providers)
    ):
        issues.append(Issue(path, f"duplicate provider name {key!r} (first at {_fmt(first)})"))
    for path, key, first in _duplicates(
        (at("extensions", i, "number"), e.number) for i, e in enumerate(state.extensions)
    ):
        issues.append(Issue(path, f"duplicate extension number {key!r} (first at {_fmt(first)})"))
    for path, key, first in _duplicates(
        (at("outbound", i, "name"), r.name) for i, r in enumerate(state.outbound)
    ):
        issues.append(Issue(path, f"duplicate route name {key!r} (first at {_fmt(first)})"))

    exact: dict[str, Path] = {}
    prefixes: dict[str, Path] = {}
    for i, r in enumerate(state.outbound):
        if r.provider not in providers:
            issues.append(_unknown_provider(at("outbound", i, "provider"), r.provider, providers))
        if r.prefix is not None:
            path = at("outbound", i, "prefix")
            if r.prefix in prefixes:
                issues.append(
                    Issue(path, f"prefix {r.prefix!r} is already used by {_fmt(prefixes[r.prefix])}")
                )
            prefixes.setdefault(r.prefix, path)
            for number in sorted(numbers):
                if number.startswith(r.prefix):
                    issues.append(
                        Issue(
                            path,
                            f"prefix {r.prefix!r} would swallow extension {number}",
                        )
                    )
        for j, number in enumerate(r.numbers or []):
            path = at("outbound", i, "numbers", j)
            if number in numbers:
                issues.append(Issue(path, f"number {number} is also an extension number"))
            if number in exact:
                issues.append(Issue(path, f"number {number} is already routed by {_fmt(exact[number])}"))
            exact.setdefault(number, path)

    seen_did: dict[tuple[str, str], Path] = {}
    for i, inbound in enumerate(state.inbound):
        if inbound.provider not in providers:
            issues.append(_unknown_provider(at("inbound", i, "provider"), inbound.provider, providers))
        if inbound.to not in known_numbers:
            issues.append(Issue(at("inbound", i, "to"), f"no extension {inbound.to!r}"))
        did_key = (inbound.provider, inbound.did)
        if did_key in seen_did:
            issues.append(
                Issue(
                    at("inbound", i, "did"),
                    f"DID {inbound.did} is already routed by {_fmt(seen_did[did_key])}",
                )
            )
        seen_did.setdefault(did_key, at("inbound", i, "did"))
    return issues
