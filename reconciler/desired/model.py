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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
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


class SmtpSettings(_Model):
    """Where voicemail e-mails are sent (msmtp in the PBX container submits them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: Host = Field(description="SMTP server host name or address.")
    port: Port = Field(587, description="SMTP port (587 submission with starttls, 465 tls, 25 none).")
    tls: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls, tls (implicit) or none."
    )
    username: MaybeSecret | None = Field(None, description="Login user: a literal or a ${NAME} reference.")
    password: Secret | None = Field(None, description="Login password: a ${NAME} reference.")
    from_address: Email = Field(alias="from", description="Sender address of voicemail e-mails.")

    @model_validator(mode="after")
    def _login_pair(self) -> SmtpSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither (no login)")
        return self


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
    smtp: SmtpSettings | None = Field(None, description="Mail server for voicemail to e-mail.")


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
    devices: Int = Field(1, ge=1, le=10, description="How many phones may register at once; all ring.")
    pickup_group: str | None = Field(
        None,
        pattern=NAME_RE,
        max_length=40,
        description="Calls ringing here can be picked up with *8 by the group.",
    )
    dnd: bool = Field(False, description="Do not disturb (default; *78 / *79 on the phone change it).")
    forward: Forward | None = Field(None, description="Call forwarding defaults (*72/*90/*52 change them).")

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


# --- targets: where a call can be sent -----------------------------------------------------------

TARGET_KINDS = ("extension", "ring_group", "menu", "queue", "voicemail", "hangup")
TARGET_HELP = (
    "must be a target: extension:4001, ring_group:600, menu:main, queue:700, voicemail:4001 or hangup "
    "(a bare number is an extension)"
)
TARGET_PATTERN = (
    r"[0-9]{1,15}|(?:extension|ring_group|queue|voicemail):[0-9]{1,15}|menu:[a-z][a-z0-9_]{0,39}|hangup"
)
_TARGET_RE = re.compile(TARGET_PATTERN)


@dataclass(frozen=True)
class TargetRef:
    """A parsed target: `kind` is one of TARGET_KINDS, `value` the number or name ('' for hangup)."""

    kind: str
    value: str

    def __str__(self) -> str:
        return self.kind if self.kind == "hangup" else f"{self.kind}:{self.value}"


def parse_target(text: str) -> TargetRef:
    """`extension:4001` → TargetRef("extension", "4001"); a bare number is an extension. Raises
    ValueError with TARGET_HELP for anything else."""
    if re.fullmatch(r"[0-9]{1,15}", text):
        return TargetRef("extension", text)
    if _TARGET_RE.fullmatch(text) is None:
        raise ValueError(TARGET_HELP)
    if text == "hangup":
        return TargetRef("hangup", "")
    kind, _, value = text.partition(":")
    return TargetRef(kind, value)


def _target(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f'must be a quoted string, e.g. "extension:{value}" (YAML reads {value} as a number)'
        )
    if isinstance(value, str):
        parse_target(value)
    return value


Target = Annotated[
    str,
    BeforeValidator(_target),
    Field(
        description="Where the call goes: extension:N, ring_group:N, menu:NAME, queue:N, voicemail:N, hangup."
    ),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^(?:{TARGET_PATTERN})$",
            "description": "extension:N, ring_group:N, menu:NAME, queue:N, voicemail:N or hangup.",
        }
    ),
]


class ScheduleChoice(_Model):
    """A target chosen by a schedule: `open` while the schedule is open, `closed` otherwise."""

    schedule: str = Field(pattern=NAME_RE, max_length=40, description="Name of a schedule in schedules.")
    open: Target
    closed: Target


class Forward(_Model):
    """Call forwarding of an extension (the defaults; a phone can change them with feature codes)."""

    always: Target | None = Field(None, description="Every call goes here instead; the phone does not ring.")
    busy: Target | None = Field(None, description="Where a call goes when the extension is busy.")
    no_answer: Target | None = Field(None, description="Where a call goes after ringing unanswered.")


class RingGroup(_Model):
    """A number that rings several extensions: all at once (ringall) or one after another (hunt)."""

    number: Digits = Field(description="The group's number: dialled from an extension, or a target.")
    name: str = Field(pattern=DISPLAY_NAME_RE, max_length=40, description="Display name.")
    members: list[Digits] = Field(min_length=1, max_length=100, description="Extension numbers that ring.")
    strategy: Literal["ringall", "hunt"] = Field(
        "ringall", description="ringall: all at once; hunt: in order."
    )
    ring_seconds: Int = Field(20, ge=5, le=300, description="How long it rings (hunt: each member).")
    fallback: Target = Field("hangup", description="Where an unanswered call goes.")


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN_RE = re.compile(
    r"(?P<days>daily|(?:mon|tue|wed|thu|fri|sat|sun)(?:-(?:mon|tue|wed|thu|fri|sat|sun))?"
    r"(?:,(?:mon|tue|wed|thu|fri|sat|sun)(?:-(?:mon|tue|wed|thu|fri|sat|sun))?)*)"
    r" (?P<start>[0-2][0-9]:[0-5][0-9])-(?P<end>[0-2][0-9]:[0-5][0-9])"
)
SPAN_HELP = 'must be days and hours like "mon-fri 09:00-18:00", "sat 10:00-14:00" or "daily 08:00-20:00"'


@dataclass(frozen=True)
class OpenSpan:
    """One `open` line of a schedule: the weekdays (0 = Monday) and minutes since midnight [start, end)."""

    days: tuple[int, ...]
    start: int
    end: int
    day_ranges: tuple[str, ...]  # as Asterisk's GotoIfTime takes them: "mon-fri", "sat"

    def hhmm(self, minutes: int) -> str:
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    @property
    def times(self) -> str:
        return f"{self.hhmm(self.start)}-{self.hhmm(self.end)}"


def parse_span(text: str) -> OpenSpan:
    """`mon-fri 09:00-18:00` → OpenSpan. Raises ValueError."""
    match = _SPAN_RE.fullmatch(text)
    if match is None:
        raise ValueError(SPAN_HELP)
    start, end = (int(t[:2]) * 60 + int(t[3:]) for t in (match["start"], match["end"]))
    if start >= 24 * 60 or end > 24 * 60:
        raise ValueError("hours run from 00:00 to 24:00")
    if end <= start:
        raise ValueError(
            f"{match['end']} is not after {match['start']}: write a span past midnight as two lines"
        )
    days: list[int] = []
    ranges: list[str] = []
    for part in ("mon-sun" if match["days"] == "daily" else match["days"]).split(","):
        first, _, last = part.partition("-")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        if b < a:
            raise ValueError(f"{part}: write days in week order (mon-sun)")
        days.extend(range(a, b + 1))
        ranges.append(part)
    return OpenSpan(tuple(sorted(set(days))), start, end, tuple(ranges))


def _span(value: str) -> str:
    parse_span(value)
    return value


def _date(value: Any) -> Any:
    import datetime

    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            datetime.date.fromisoformat(value)
        except ValueError:
            raise ValueError("must be a date written YYYY-MM-DD") from None
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise ValueError("must be a date written YYYY-MM-DD")
    return value


def _timezone(value: str) -> str:
    import zoneinfo

    if not re.fullmatch(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*", value) or ".." in value:
        raise ValueError("must be a time zone name such as Europe/Madrid or UTC")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {echo(value)} (write it as Europe/Madrid, America/New_York or UTC)"
        ) from None
    return value


Span = Annotated[str, AfterValidator(_span), Field(description='Days and hours, e.g. "mon-fri 09:00-18:00".')]
DateText = Annotated[
    str,
    BeforeValidator(_date),
    Field(description="A date, YYYY-MM-DD."),
    WithJsonSchema({"type": "string", "format": "date"}),
]


class Schedule(_Model):
    """Office hours: open during any `open` span, closed otherwise and on `closed_dates`."""

    name: str = Field(pattern=NAME_RE, max_length=40, description="Schedule name.")
    timezone: Annotated[str, AfterValidator(_timezone)] = Field("UTC", description="Time zone of the hours.")
    open: list[Span] = Field(min_length=1, description='When it is open, e.g. ["mon-fri 09:00-18:00"].')
    closed_dates: list[DateText] = Field(
        default_factory=list, description="Whole days it is closed (holidays)."
    )

    @property
    def spans(self) -> list[OpenSpan]:
        return [parse_span(s) for s in self.open]


OWN_SOUNDS_DIR = "sounds"
OWN_SOUNDS_HELP = (
    "recordings of your own (desired/sounds/) are not supported yet: "
    "use a sound Asterisk ships, e.g. demo-congrats"
)
SOUND_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:/[A-Za-z0-9][A-Za-z0-9_-]*)*$"  # vm-INBOX, digits/1
MENU_KEY_RE = r"^[0-9*#]$"


def _menu_options(value: Any) -> Any:
    """YAML reads `1:` as the number 1: a single digit key is the digit."""
    if isinstance(value, dict):
        return {
            (str(k) if isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= 9 else k): v
            for k, v in value.items()
        }
    return value


MenuKey = Annotated[str, Field(pattern=MENU_KEY_RE)]


class Menu(_Model):
    """An auto-attendant: answers, plays `prompt`, and sends the caller where the key pressed says."""

    name: str = Field(pattern=NAME_RE, max_length=40, description="Menu name (target menu:NAME).")
    prompt: str = Field(
        pattern=SOUND_RE,
        max_length=80,
        description="A sound the PBX has (shipped with Asterisk), without extension (e.g. demo-congrats).",
    )
    options: Annotated[dict[MenuKey, Target], BeforeValidator(_menu_options)] = Field(
        min_length=1, description='Key → target, e.g. {"1": ring_group:600, "0": extension:4000}.'
    )
    wait_seconds: Int = Field(5, ge=1, le=60, description="How long to wait for a key after the prompt.")
    timeout: Target = Field("hangup", description="Where the call goes when no key is pressed.")
    invalid: Target = Field("hangup", description="Where the call goes after a key with no option.")

    @field_validator("prompt")
    @classmethod
    def _shipped_sound(cls, value: str) -> str:
        if value.split("/", 1)[0] == OWN_SOUNDS_DIR:
            raise ValueError(OWN_SOUNDS_HELP)
        return value


QueueStrategy = Literal["ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear"]


class Queue(_Model):
    """A call queue: callers wait with music on hold until a member answers."""

    number: Digits = Field(description="The queue's number: dialled from an extension, or a target.")
    name: str = Field(pattern=NAME_RE, max_length=40, description="Queue name (lower case).")
    members: list[Digits] = Field(min_length=1, max_length=200, description="Extension numbers that answer.")
    strategy: QueueStrategy = Field("ringall", description="How members are rung.")
    music: str = Field("default", pattern=NAME_RE, max_length=40, description="Music on hold class.")
    ring_seconds: Int = Field(15, ge=5, le=120, description="How long each attempt rings a member.")
    max_wait_seconds: Int = Field(300, ge=10, le=7200, description="After this, the call goes to fallback.")
    fallback: Target = Field("hangup", description="Where a call goes after max_wait_seconds.")


MUSIC_CLASSES = ("default",)  # Debian's packaged music on hold (asterisk-moh-opsound)


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
    """Calls from a provider to a DID, sent to a target."""

    provider: ProviderName = Field(description="Name of the provider the call comes from.")
    did: str = Field(pattern=DID_RE, description="Called number as the provider sends it.")
    to: Target | ScheduleChoice = Field(
        description="Where the call goes: a target (a bare number is an extension) or "
        "{schedule: NAME, open: target, closed: target}."
    )


class DesiredState(_Model):
    """Everything in desired/*.yaml. In files, each top-level key may appear in one file only."""

    pbx: PbxSettings = Field(default_factory=PbxSettings, description="PBX-wide settings.")  # type: ignore[arg-type]
    providers: list[Provider] = Field(default_factory=list, description="SIP trunks.")
    extensions: list[Extension] = Field(default_factory=list, description="Internal phones.")
    outbound: list[OutboundRoute] = Field(default_factory=list, description="Outbound routes.")
    inbound: list[InboundRoute] = Field(default_factory=list, description="Inbound DIDs.")
    ring_groups: list[RingGroup] = Field(
        default_factory=list, description="Numbers that ring several extensions."
    )
    schedules: list[Schedule] = Field(default_factory=list, description="Office hours for inbound routes.")
    menus: list[Menu] = Field(default_factory=list, description="Auto-attendants.")
    queues: list[Queue] = Field(default_factory=list, description="Call queues with music on hold.")


TOP_LEVEL_KEYS: tuple[str, ...] = tuple(DesiredState.model_fields)


def state_counts(state: DesiredState) -> str:
    """`6 extensions, 1 providers, 2 outbound and 2 inbound routes, 1 ring groups, 1 queues`: what a
    state holds (the office objects only when there are any)."""
    text = (
        f"{len(state.extensions)} extensions, {len(state.providers)} providers, "
        f"{len(state.outbound)} outbound and {len(state.inbound)} inbound routes"
    )
    for key, word in (
        ("ring_groups", "ring groups"),
        ("queues", "queues"),
        ("menus", "menus"),
        ("schedules", "schedules"),
    ):
        if getattr(state, key):
            text += f", {len(getattr(state, key))} {word}"
    return text


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
    # "issued": a password someone else issued (the mail server's): its strength is not ours to judge.
    kind: Literal["password", "username", "pin", "issued"]
    owner: str  # extension number or provider name

    @property
    def name(self) -> str:
        return self.ref.name


def secret_refs(state: DesiredState) -> list[SecretUse]:
    """Every secret reference in `state`, with its field path, in declaration order."""
    uses: list[SecretUse] = []
    kind: Literal["password", "username", "issued"]
    for i, p in enumerate(state.providers):
        for field in ("username", "password", "from_user"):
            value = getattr(p, field)
            if isinstance(value, SecretRef):
                kind = "password" if field == "password" else "username"
                uses.append(SecretUse(("providers", i, field), value, kind, p.name))
    smtp = state.pbx.smtp
    if smtp is not None:
        for field in ("username", "password"):
            value = getattr(smtp, field)
            if isinstance(value, SecretRef):
                kind = "issued" if field == "password" else "username"
                uses.append(SecretUse(("pbx", "smtp", field), value, kind, "smtp"))
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
    left_out: Mapping[str, Iterable[str]] | None = None,
) -> list[Issue]:
    """The rules that relate objects to each other. `index` maps a list position in `state` to the
    position in the files (when invalid items were left out of `state`); `more_providers` and
    `more_numbers` are names of such left-out items, so a reference to them is no second problem;
    `left_out` has them for every list (key → names or numbers)."""

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
        did_key = (inbound.provider, inbound.did)
        if did_key in seen_did:
            issues.append(
                Issue(
                    at("inbound", i, "did"),
                    f"DID {inbound.did} is already routed by {_fmt(seen_did[did_key])}",
                )
            )
        seen_did.setdefault(did_key, at("inbound", i, "did"))
    issues.extend(_check_features(state, at, known_numbers, left_out or {}))
    return issues


ANY_NAME = "*"  # in `left_out`: an item was left out whose name could not be read
_TARGET_LISTS = {
    "extension": "extensions",
    "voicemail": "extensions",
    "ring_group": "ring_groups",
    "queue": "queues",
    "menu": "menus",
}


class _Everything(set[str]):
    """A set that holds every name (references cannot be judged yet)."""

    def __contains__(self, item: object) -> bool:
        return True


def _check_features(
    state: DesiredState, at: Any, known_numbers: set[str], left_out: Mapping[str, Iterable[str]]
) -> Iterator[Issue]:
    """Ring groups, queues, menus, schedules, forwards and every target: names unique, references
    resolve, numbers do not collide, and no chain of automatic moves loops. A reference to an item
    left out for its own problem (`left_out`) is not a second problem."""
    # An extension left out with an unreadable number (`"40a2"`, a list) may be the one a reference
    # means: references are judged once it is fixed.
    unjudged_extensions = any(not n.isdigit() for n in left_out.get("extensions", ()))
    if unjudged_extensions:
        known_numbers = _Everything()
    groups = {g.number for g in state.ring_groups} | set(left_out.get("ring_groups", ()))
    queues = {q.number for q in state.queues} | set(left_out.get("queues", ()))
    menus = {m.name for m in state.menus} | set(left_out.get("menus", ()))
    schedules = {s.name for s in state.schedules} | set(left_out.get("schedules", ()))
    mailboxes = {e.number for e in state.extensions if e.has_voicemail} | set(left_out.get("extensions", ()))

    for key, attr, what in (
        ("ring_groups", "number", "ring group number"),
        ("queues", "number", "queue number"),
        ("queues", "name", "queue name"),
        ("menus", "name", "menu name"),
        ("schedules", "name", "schedule name"),
    ):
        items = getattr(state, key)
        for path, name, first in _duplicates(
            (at(key, i, attr), getattr(item, attr)) for i, item in enumerate(items)
        ):
            yield Issue(path, f"duplicate {what} {name!r} (first at {_fmt(first)})")

    # A ring group or queue number is an exact dialplan entry beside the extensions and routes.
    taken: dict[str, str] = {e.number: f"extension {e.number}" for e in state.extensions}
    for route in state.outbound:
        for number in route.numbers or []:
            taken.setdefault(number, f"route {route.name}")
    for key, what in (("ring_groups", "ring group"), ("queues", "queue")):
        if ANY_NAME in left_out.get(key, ()):
            continue
        for i, item in enumerate(getattr(state, key)):
            path = at(key, i, "number")
            other = taken.get(item.number)
            if other is not None and other != f"{what} {item.number}":
                yield Issue(path, f"number {item.number} is already {other}")
            taken.setdefault(item.number, f"{what} {item.number}")
            for route in state.outbound:
                if route.prefix is not None and item.number.startswith(route.prefix):
                    yield Issue(
                        path,
                        f"number {item.number} starts with prefix {route.prefix!r} of route {route.name}",
                    )
            for j, member in enumerate(item.members):
                if member not in known_numbers:
                    yield Issue(at(key, i, "members", j), f"no extension {member!r}")
            for path_, member, first in _duplicates(
                (at(key, i, "members", j), m) for j, m in enumerate(item.members)
            ):
                yield Issue(path_, f"extension {member} is listed twice (first at {_fmt(first)})")

    def check(path: Path, text: str, own: str | None = None) -> Iterator[Issue]:
        ref = parse_target(text)
        if ANY_NAME in left_out.get(_TARGET_LISTS.get(ref.kind, ""), ()):
            return
        if unjudged_extensions and ref.kind in ("extension", "voicemail"):
            return
        if ref.kind == "extension" and ref.value not in known_numbers:
            yield Issue(path, f"no extension {ref.value!r}")
        elif ref.kind == "ring_group" and ref.value not in groups:
            yield Issue(
                path, f"no ring group {ref.value!r} (known: {', '.join(sorted(groups)) or 'none defined'})"
            )
        elif ref.kind == "queue" and ref.value not in queues:
            yield Issue(
                path, f"no queue {ref.value!r} (known: {', '.join(sorted(queues)) or 'none defined'})"
            )
        elif ref.kind == "menu" and ref.value not in menus:
            yield Issue(path, f"no menu {ref.value!r} (known: {', '.join(sorted(menus)) or 'none defined'})")
        elif ref.kind == "voicemail" and ref.value not in mailboxes:
            yield Issue(path, f"extension {ref.value!r} has no voicemail (set voicemail: true on it)")
        if own is not None and ref.kind == "extension" and ref.value == own:
            yield Issue(path, f"extension {own} cannot forward to itself")

    for i, inbound in enumerate(state.inbound):
        to = inbound.to
        if isinstance(to, ScheduleChoice):
            if to.schedule not in schedules:
                yield Issue(
                    at("inbound", i, "to", "schedule"),
                    f"no schedule {to.schedule!r} (known: {', '.join(sorted(schedules)) or 'none defined'})",
                )
            yield from check(at("inbound", i, "to", "open"), to.open)
            yield from check(at("inbound", i, "to", "closed"), to.closed)
        else:
            yield from check(at("inbound", i, "to"), to)
    for i, group in enumerate(state.ring_groups):
        yield from check(at("ring_groups", i, "fallback"), group.fallback)
    for i, queue in enumerate(state.queues):
        yield from check(at("queues", i, "fallback"), queue.fallback)
        if queue.music not in MUSIC_CLASSES:
            yield Issue(
                at("queues", i, "music"),
                f"no music class {queue.music!r} (known: {', '.join(MUSIC_CLASSES)}; "
                "classes of your own from files are not supported yet)",
            )
    for i, menu in enumerate(state.menus):
        for key, target in menu.options.items():
            yield from check(at("menus", i, "options", key), target)
        yield from check(at("menus", i, "timeout"), menu.timeout)
        yield from check(at("menus", i, "invalid"), menu.invalid)
    for i, ext in enumerate(state.extensions):
        if ext.forward is not None:
            for name in ("always", "busy", "no_answer"):
                target = getattr(ext.forward, name)
                if target is not None:
                    yield from check(at("extensions", i, "forward", name), target, own=ext.number)
    yield from _automatic_loops(state, at)


def _automatic_loops(state: DesiredState, at: Any) -> Iterator[Issue]:
    """A chain of moves nobody chooses (forwards, fallbacks) that comes back to where it started
    would ring in a circle: refused. A menu breaks a chain (the caller chooses)."""
    edges: dict[str, list[tuple[str, Path]]] = {}
    for i, ext in enumerate(state.extensions):
        if ext.forward is not None:
            for name in ("always", "busy", "no_answer"):
                target = getattr(ext.forward, name)
                if target is not None and str(parse_target(target)) != f"extension:{ext.number}":
                    edges.setdefault(f"extension:{ext.number}", []).append(
                        (str(parse_target(target)), at("extensions", i, "forward", name))
                    )
    for i, group in enumerate(state.ring_groups):
        edges.setdefault(f"ring_group:{group.number}", []).append(
            (str(parse_target(group.fallback)), at("ring_groups", i, "fallback"))
        )
    for i, queue in enumerate(state.queues):
        edges.setdefault(f"queue:{queue.number}", []).append(
            (str(parse_target(queue.fallback)), at("queues", i, "fallback"))
        )
    reported: set[str] = set()
    for start in sorted(edges):
        stack: list[tuple[str, list[str], Path | None]] = [(start, [start], None)]
        while stack:
            node, trail, first_path = stack.pop()
            for nxt, path in edges.get(node, []):
                step_path = first_path or path
                if nxt == start:
                    if start not in reported:
                        reported.update(trail)
                        yield Issue(
                            step_path, "calls would go round in a circle: " + " -> ".join([*trail, start])
                        )
                elif nxt not in trail and len(trail) < 50:
                    stack.append((nxt, [*trail, nxt], step_path))
