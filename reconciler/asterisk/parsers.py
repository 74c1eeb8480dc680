"""Parse Asterisk 22 CLI output and log lines into small frozen dataclasses.

Pure functions over text: no Docker, no files. The formats are those of Asterisk 22.10
(see tests/fixtures/cli/ for real captures). Tables have fixed column widths, but a value longer
than its column pushes the rest of the line to the right, so rows are parsed by their tokens and
the words that can appear in them, not by character offsets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from reconciler.desired.render import RENDERED_FILES

# The line of 90 '=' that ends the header of every `pjsip show/list ...` table.
_RULE = re.compile(r"^=+\s*$")
_SIP_URI_SPLIT = re.compile(r"^(?P<left>.+?)/(?P<uri>(?:sips?|tel):.*)$")


def _table_body(text: str) -> list[str]:
    """The lines of a `pjsip show ...` table after its `=====` rule, without the trailer."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _RULE.match(line):
            body = lines[i + 1 :]
            break
    else:
        body = lines
    return [
        line
        for line in body
        if line.strip() and not line.startswith("Objects found:") and line.strip() != "No objects found."
    ]


def _split_uri(text: str) -> tuple[str, str]:
    """Split `NAME/sip:...` into (NAME, sip:...); without a SIP URI, split at the first '/'."""
    match = _SIP_URI_SPLIT.match(text)
    if match:
        return match["left"], match["uri"]
    name, _, rest = text.partition("/")
    return name, rest


# --- pjsip show registrations -------------------------------------------------------------------

REGISTRATION_STATUSES = ("Registered", "Unregistered", "Rejected", "Stopping", "Stopped")


@dataclass(frozen=True)
class Registration:
    """One outbound registration (`pjsip show registrations`).

    `expires_s` is the number of seconds until the registration expires; it is negative when
    Asterisk prints `(exp. 29s ago)` (the registration is overdue: the provider stopped answering).
    """

    name: str
    server_uri: str
    auth: str | None
    status: str
    expires_s: int | None
    detail: str

    @property
    def registered(self) -> bool:
        return self.status == "Registered"


_REGISTRATION_ROW = re.compile(
    r"^\s*(?P<id>\S+)\s+(?:(?P<auth>\S+)\s+)??"
    r"(?P<status>" + "|".join(REGISTRATION_STATUSES) + r")\b\s*(?P<detail>.*?)\s*$"
)
_EXPIRES = re.compile(r"exp\.\s*(?P<n>-?\d+)s(?P<ago>\s+ago)?")


def parse_registrations(text: str) -> list[Registration]:
    """Parse `pjsip show registrations` into one Registration per row."""
    result = []
    for line in _table_body(text):
        match = _REGISTRATION_ROW.match(line)
        if not match:
            continue
        name, uri = _split_uri(match["id"])
        auth = match["auth"]
        detail = match["detail"].strip().strip("()").strip()
        expires = _EXPIRES.search(detail)
        expires_s = None
        if expires:
            expires_s = int(expires["n"]) * (-1 if expires["ago"] else 1)
        result.append(
            Registration(
                name=name,
                server_uri=uri,
                auth=None if auth in (None, "n/a") else auth,
                status=match["status"],
                expires_s=expires_s,
                detail=detail,
            )
        )
    return result


# --- pjsip show contacts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Contact:
    """One contact of an AOR (`pjsip show contacts`, or a `Contact:` line of `pjsip show endpoints`).

    `status` is Asterisk's word: `Avail`, `NonQual` (not qualified), `Unavail`, `Unknown`, ...;
    `rtt_ms` is None when Asterisk prints `-nan` (never qualified).
    """

    aor: str
    uri: str
    hash: str
    status: str
    rtt_ms: float | None

    @property
    def reachable(self) -> bool:
        return self.status in ("Avail", "NonQual")


_CONTACT_ROW = re.compile(r"^\s*Contact:\s+(?P<id>\S+)\s+(?P<hash>\S+)\s+(?P<status>\S+)\s+(?P<rtt>\S+)\s*$")


def _parse_contact_line(line: str) -> Contact | None:
    match = _CONTACT_ROW.match(line)
    if not match or match["id"].startswith("<"):
        return None
    aor, uri = _split_uri(match["id"])
    try:
        rtt: float | None = float(match["rtt"])
    except ValueError:
        rtt = None
    if rtt is not None and math.isnan(rtt):
        rtt = None
    return Contact(aor=aor, uri=uri, hash=match["hash"], status=match["status"], rtt_ms=rtt)


def parse_contacts(text: str) -> list[Contact]:
    """Parse `pjsip show contacts` into one Contact per row."""
    return [c for c in (_parse_contact_line(line) for line in _table_body(text)) if c is not None]


# --- pjsip show endpoints / pjsip list endpoints -----------------------------------------------


@dataclass(frozen=True)
class EndpointInfo:
    """One endpoint of `pjsip show endpoints` (or `pjsip list endpoints`, then without details).

    `state` is the device state (`Not in use`, `Unavailable`, `In use`, ...); `channel_limit` is
    None for `inf`.
    """

    name: str
    callerid: str | None
    state: str
    channels_in_use: int
    channel_limit: int | None
    contacts: tuple[Contact, ...] = ()
    aors: tuple[str, ...] = ()
    transports: tuple[str, ...] = ()
    in_auths: tuple[str, ...] = ()
    out_auths: tuple[str, ...] = ()
    identify_matches: tuple[str, ...] = ()


_ENDPOINT_ROW = re.compile(
    r"^\s*Endpoint:\s+(?P<id>\S+)\s+(?P<state>\S.*?)\s+(?P<inuse>\d+) of (?P<limit>\S+)\s*$"
)
_DETAIL_ROW = re.compile(
    r"^\s*(?P<key>InAuth|OutAuth|Aor|Transport|Identify|Match|Channel|Exten):\s*(?P<rest>.*)$"
)


def _endpoint_head(line: str) -> EndpointInfo | None:
    match = _ENDPOINT_ROW.match(line)
    if not match or match["id"].startswith("<"):
        return None
    name, _, cid = match["id"].partition("/")
    limit = match["limit"]
    return EndpointInfo(
        name=name,
        callerid=cid or None,
        state=match["state"],
        channels_in_use=int(match["inuse"]),
        channel_limit=int(float(limit)) if limit.replace(".", "", 1).isdigit() else None,
    )


def parse_endpoints(text: str) -> list[EndpointInfo]:
    """Parse `pjsip show endpoints` into one EndpointInfo per endpoint, with its details."""
    result: list[EndpointInfo] = []
    current: EndpointInfo | None = None
    parts: dict[str, list] = {}

    def flush() -> None:
        if current is not None:
            result.append(
                EndpointInfo(
                    name=current.name,
                    callerid=current.callerid,
                    state=current.state,
                    channels_in_use=current.channels_in_use,
                    channel_limit=current.channel_limit,
                    contacts=tuple(parts["contacts"]),
                    aors=tuple(parts["aors"]),
                    transports=tuple(parts["transports"]),
                    in_auths=tuple(parts["in_auths"]),
                    out_auths=tuple(parts["out_auths"]),
                    identify_matches=tuple(parts["matches"]),
                )
            )

    for line in _table_body(text):
        head = _endpoint_head(line)
        if head is not None:
            flush()
            current = head
            parts = {k: [] for k in ("contacts", "aors", "transports", "in_auths", "out_auths", "matches")}
            continue
        if current is None:
            continue
        contact = _parse_contact_line(line)
        if contact is not None:
            parts["contacts"].append(contact)
            continue
        detail = _DETAIL_ROW.match(line)
        if not detail:
            continue
        key, tokens = detail["key"], detail["rest"].split()
        if not tokens:
            continue
        if key == "Aor":
            parts["aors"].append(tokens[0])
        elif key == "Transport":
            parts["transports"].append(tokens[0])
        elif key == "InAuth":
            parts["in_auths"].append(tokens[0].partition("/")[0])
        elif key == "OutAuth":
            parts["out_auths"].append(tokens[0].partition("/")[0])
        elif key == "Match":
            parts["matches"].append(tokens[0])
    flush()
    return result


def parse_endpoint_list(text: str) -> list[str]:
    """Parse `pjsip list endpoints` (or `pjsip show endpoints`) into the endpoint names."""
    return [head.name for head in (_endpoint_head(line) for line in _table_body(text)) if head is not None]


# --- dialplan show ------------------------------------------------------------------------------

PRIORITY_HINT = -1


@dataclass(frozen=True)
class Priority:
    """One priority of a dialplan extension; `number` is PRIORITY_HINT (-1) for a hint."""

    number: int
    app: str
    data: str
    source: str
    label: str | None = None

    @property
    def source_file(self) -> str | None:
        file, sep, line = self.source.rpartition(":")
        return file if sep and line.isdigit() else None

    @property
    def source_line(self) -> int | None:
        _, sep, line = self.source.rpartition(":")
        return int(line) if sep and line.isdigit() else None


@dataclass(frozen=True)
class DialplanExtension:
    """One extension (or pattern) of a context, in the order `dialplan show` lists them.

    For `dialplan show N@CONTEXT` that order is Asterisk's match order: the first one is what a
    call to N runs.
    """

    context: str
    exten: str
    priorities: tuple[Priority, ...]
    cid_match: str | None = None
    included: bool = False

    @property
    def first_priority(self) -> int | None:
        numbers = [p.number for p in self.priorities if p.number != PRIORITY_HINT]
        return min(numbers) if numbers else None


_CONTEXT_HEAD = re.compile(
    r"^\[ (?P<kind>Context|Included context) '(?P<name>.*)' created by '(?P<by>.*)' \]\s*$"
)
_EXTEN_HEAD = re.compile(r"^\s{2}'(?P<exten>[^']*)'(?: \(CID match '(?P<cid>[^']*)'\))?\s*=>\s*(?P<rest>.*)$")
_LABEL_HEAD = re.compile(r"^\s*\[(?P<label>[^\]]+)\]\s+(?P<rest>(?:-?\d+\.|hint:).*)$")
_PRIORITY_BODY = re.compile(r"^(?P<body>.*?)\s+\[(?P<source>[^\[\]]*)\]\s*$")


def _parse_priority(rest: str, label: str | None) -> Priority | None:
    match = _PRIORITY_BODY.match(rest)
    body, source = (match["body"], match["source"]) if match else (rest.rstrip(), "")
    body = body.strip()
    if body.startswith("hint:"):
        return Priority(PRIORITY_HINT, "hint", body[5:].strip(), source, label)
    number, dot, call = body.partition(". ")
    if not dot or not number.lstrip("-").isdigit():
        return None
    app, paren, data = call.partition("(")
    if paren and data.endswith(")"):
        data = data[:-1]
    return Priority(int(number), app, data, source, label)


def parse_dialplan(text: str) -> list[DialplanExtension]:
    """Parse `dialplan show [EXTEN@]CONTEXT` into extensions with their priorities.

    Returns [] when Asterisk says `There is no existence of ...` (no such context/extension).
    Includes, ignore patterns and switches are not extensions and are skipped.
    """
    result: list[DialplanExtension] = []
    context: str | None = None
    included = False
    exten: str | None = None
    cid: str | None = None
    priorities: list[Priority] = []

    def flush() -> None:
        if context is not None and exten is not None:
            result.append(DialplanExtension(context, exten, tuple(priorities), cid, included))

    for line in text.splitlines():
        head = _CONTEXT_HEAD.match(line)
        if head:
            flush()
            context, included, exten, priorities = head["name"], head["kind"] != "Context", None, []
            continue
        if context is None:
            continue
        ext = _EXTEN_HEAD.match(line)
        if ext:
            flush()
            exten, cid, priorities = ext["exten"], ext["cid"], []
            prio = _parse_priority(ext["rest"], None)
            if prio:
                priorities.append(prio)
            continue
        if exten is None or not line.startswith(" "):
            continue
        stripped = line.strip()
        label_match = _LABEL_HEAD.match(line)
        if label_match:
            prio = _parse_priority(label_match["rest"], label_match["label"])
        elif stripped[:1].isdigit() or stripped.startswith(("-", "hint:")):
            prio = _parse_priority(stripped, None)
        else:
            # `Include =>`, `Ignore pattern =>`, `Alt. Switch =>`: end of this extension.
            flush()
            exten, priorities = None, []
            continue
        if prio:
            priorities.append(prio)
    flush()
    return result


# --- voicemail show users -----------------------------------------------------------------------


@dataclass(frozen=True)
class VoicemailUser:
    """One mailbox of `voicemail show users`."""

    context: str
    mailbox: str
    user: str
    zone: str
    new_messages: int


def parse_voicemail_users(text: str) -> list[VoicemailUser]:
    """Parse `voicemail show users` (columns `%-10s %-5s %-25s %-10s %6s`)."""
    result = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 3 or tokens[0] == "Context" or not tokens[-1].isdigit():
            continue
        if line.rstrip().endswith("configured.") or not tokens[1]:
            continue
        context, mailbox, new = tokens[0], tokens[1], int(tokens[-1])
        if (
            len(context) <= 10
            and len(mailbox) <= 5
            and len(line) >= 60
            and line[10] == " "
            and line[16] == " "
        ):
            user, zone = line[17:42].strip(), line[43:53].strip()
        else:
            user, zone = " ".join(tokens[2:-1]), ""
        result.append(VoicemailUser(context, mailbox, user, zone, new))
    return result


# --- core show channels concise -----------------------------------------------------------------


@dataclass(frozen=True)
class ChannelInfo:
    """One channel of `core show channels concise` (fields separated by '!')."""

    channel: str
    context: str
    exten: str
    priority: int | None
    state: str
    application: str
    data: str
    callerid: str
    duration_s: int | None
    bridge_id: str
    unique_id: str


def _int_or_none(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None


def parse_channels_concise(text: str) -> list[ChannelInfo]:
    """Parse `core show channels concise`.

    The application data may itself contain '!', so the six leading and seven trailing fields are
    taken from their ends and the data is what is between them.
    """
    result = []
    for line in text.splitlines():
        fields = line.rstrip("\n").split("!")
        if len(fields) < 14:
            continue
        head, tail = fields[:6], fields[-7:]
        data = "!".join(fields[6:-7])
        callerid, _account, _peer, _ama, duration, bridge, unique = tail
        result.append(
            ChannelInfo(
                channel=head[0],
                context=head[1],
                exten=head[2],
                priority=_int_or_none(head[3]),
                state=head[4],
                application=head[5],
                data=data,
                callerid=callerid,
                duration_s=_int_or_none(duration),
                bridge_id=bridge,
                unique_id=unique,
            )
        )
    return result


# --- log lines of a reload ----------------------------------------------------------------------

MANAGED_FILES = RENDERED_FILES


@dataclass(frozen=True)
class LogProblem:
    """A WARNING/ERROR that Asterisk logged about a managed file while (re)loading it.

    `file` and `line` locate the defect when Asterisk says where (`line 155 of /etc/.../pjsip.conf`);
    config_options.c leaves the file name empty, so `file` may be None while `line` is known.
    """

    level: str
    module: str
    message: str
    file: str | None = None
    line: int | None = None
    raw: str = field(default="", compare=False)

    @property
    def failed_object(self) -> tuple[str, str] | None:
        """(type, id) of `Could not create an object of type 'T' with id 'ID' ...`, else None."""
        match = _OBJECT_FAILED.search(self.message)
        return (match["type"], match["id"]) if match else None

    @property
    def category(self) -> str | None:
        """The section config_options.c names (`... for category '4005' named ...`), else None."""
        match = _CATEGORY.search(self.message)
        return match["id"] if match else None

    def __str__(self) -> str:
        where = ""
        if self.file and self.line is not None:
            where = f"{self.file}:{self.line}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        return f"{where}{self.level} {self.module}: {self.message}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_LINE = re.compile(
    r"^(?:\[(?P<ts>[^\]]*)\]\s*)?"
    r"(?P<level>ERROR|WARNING|NOTICE|VERBOSE|DEBUG|SECURITY|DTMF)(?:\[\d+\])?(?:\[[^\]]*\])?:?\s+"
    r"(?P<module>[\w/.-]+\.c)(?::\d+)?(?:\s+(?:in\s+)?\w+)?:\s(?P<message>.*)$"
)
_OBJECT_FAILED = re.compile(r"Could not create an object of type '(?P<type>[^']+)' with id '(?P<id>[^']+)'")
_CATEGORY = re.compile(r"\bcategory '(?P<id>[^']*)'")
_LOCATION = re.compile(r"line (?P<line>\d+) of ?(?P<file>\S*)")
_CONF_NAME = re.compile(r"'(?P<file>[\w./-]+\.conf)'")

# Modules whose every WARNING/ERROR during a reload concerns the config being loaded.
_ALWAYS_MODULES = ("config_options.c", "pbx_config.c", "pbx.c")
# Modules that log about many files or about their static config: only lines naming a managed file
# count (app_voicemail warns "maxsilence should be less than minsecs" on every load of the stub).
_FILE_MODULES = ("config.c", "res_sorcery_config.c", "app_voicemail.c")


def _mentions_managed(message: str, managed: Iterable[str]) -> bool:
    return any(name in message for name in managed)


def parse_reload_log(lines: Iterable[str], managed_files: Iterable[str] = MANAGED_FILES) -> list[LogProblem]:
    """The WARNING/ERROR lines of a reload (or restart) that concern the managed config files.

    Lines of config.c, res_sorcery_config.c and app_voicemail.c count only when they name a
    managed file; those of config_options.c, pbx_config.c and pbx.c always; res_pjsip's transport ERRORs
    (a transport that could not be started, e.g. its port is taken) too. NOTICEs are not problems
    (e.g. the always-printed `Type 'system' is not reloadable`). Repeated lines are kept once.
    """
    managed = tuple(managed_files)
    problems: list[LogProblem] = []
    seen: set[tuple[str, str, str]] = set()
    for raw in lines:
        line = _ANSI.sub("", raw).rstrip("\r\n")
        match = _LOG_LINE.match(line)
        if not match or match["level"] not in ("WARNING", "ERROR"):
            continue
        module, message, level = match["module"], match["message"].strip(), match["level"]
        base = module.rsplit("/", 1)[-1]
        if base in _FILE_MODULES:
            if not _mentions_managed(message, managed):
                continue
        elif base not in _ALWAYS_MODULES and not (
            module.startswith("res_pjsip") and level == "ERROR" and "Transport" in message
        ):
            continue
        key = (level, module, message)
        if key in seen:
            continue
        seen.add(key)
        file: str | None = None
        line_no: int | None = None
        loc = _LOCATION.search(message)
        if loc:
            line_no = int(loc["line"])
            file = loc["file"].rsplit("/", 1)[-1] or None
        else:
            named = _CONF_NAME.search(message)
            if named:
                file = named["file"].rsplit("/", 1)[-1]
        problems.append(LogProblem(level, module, message, file, line_no, raw=line))
    return problems


# --- name resolution and outbound registration in the log ---------------------------------------


@dataclass(frozen=True)
class ResolutionFailure:
    """An identify whose `match` host did not resolve while PJSIP loaded it.

    From `Identify 'ID' failed when adding resolution results of 'HOST:PORT'`
    (res_pjsip_endpoint_identifier_ip.c); `reason` is the resolver's words from the netsock2.c
    `getaddrinfo("HOST", "PORT", ...): REASON` line logged just before it, when there is one.
    """

    identify: str
    host: str
    port: str | None
    reason: str | None = None


_IDENTIFY_RESOLUTION = re.compile(
    r"Identify '(?P<id>[^']+)' failed when adding resolution results of '(?P<target>[^']*)'"
)
_GETADDRINFO = re.compile(r'getaddrinfo\("(?P<host>[^"]*)", "(?P<port>[^"]*)", \.\.\.\): (?P<reason>.+)$')


def split_host_port(target: str) -> tuple[str, str | None]:
    """`host:5061` → (`host`, `5061`); `[::1]:5060` → (`::1`, `5060`); a bare host → (host, None)."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, rest.removeprefix(":") or None
    if target.count(":") == 1:
        host, port = target.split(":")
        return host, port or None
    return target, None


def _log_messages(lines: Iterable[str]) -> Iterable[tuple[str, str, str]]:
    """(level, module, message) of every parseable log line."""
    for raw in lines:
        match = _LOG_LINE.match(_ANSI.sub("", raw).rstrip("\r\n"))
        if match:
            yield match["level"], match["module"], match["message"].strip()


def parse_resolution_failures(lines: Iterable[str]) -> list[ResolutionFailure]:
    """Every identify that failed to resolve its match host in these log lines, once each."""
    reasons: dict[str, str] = {}
    result: list[ResolutionFailure] = []
    seen: set[tuple[str, str]] = set()
    for _level, module, message in _log_messages(lines):
        lookup = _GETADDRINFO.search(message)
        if lookup and module.endswith("netsock2.c"):
            reasons[lookup["host"]] = lookup["reason"].strip()
            continue
        failed = _IDENTIFY_RESOLUTION.search(message)
        if failed and (failed["id"], failed["target"]) not in seen:
            seen.add((failed["id"], failed["target"]))
            host, port = split_host_port(failed["target"])
            result.append(ResolutionFailure(failed["id"], host, port, reasons.get(host)))
    return result


_RETAINED = re.compile(
    r"Retaining existing configuration for object of type '(?P<type>[^']+)' with id '(?P<id>[^']+)'"
)


def retained_objects(lines: Iterable[str]) -> set[tuple[str, str]]:
    """(type, id) of every object Asterisk kept from before because its new version failed
    (`Retaining existing configuration for object of type 'T' with id 'ID'`)."""
    found = set()
    for _level, _module, message in _log_messages(lines):
        match = _RETAINED.search(message)
        if match:
            found.add((match["type"], match["id"]))
    return found


@dataclass(frozen=True)
class RegistrationEvent:
    """What res_pjsip_outbound_registration.c logged about one attempt.

    `No response received from 'SERVER' on registration attempt to 'CLIENT', retrying in '20'` →
    outcome `No response received`, then `retrying in '20'`; `Fatal response '401' received from ...,
    stopping outbound registration` → outcome `Fatal response '401'`, then `stopping outbound
    registration`. `timestamp` is the log line's, as printed.
    """

    server_uri: str
    client_uri: str
    outcome: str
    then: str
    level: str
    timestamp: str | None = None

    @property
    def stopped(self) -> bool:
        """Asterisk gave up (a fatal response such as 401 with auth_rejection_permanent)."""
        return "stopping" in self.then

    def describe(self) -> str:
        """`no response from sip:127.0.0.1:5070, retrying in 20 s`,
        `rejected with 401 by sip:127.0.0.1:5070; Asterisk stopped retrying`."""
        code = re.search(r"'(\d{3})'", self.outcome)
        if code:
            what = f"{'rejected with' if self.stopped else 'answered'} {code[1]} by {self.server_uri}"
        else:
            what = f"{self.outcome[:1].lower()}{self.outcome[1:]} from {self.server_uri}"
        retry = re.search(r"retrying in '(\d+)'", self.then)
        if retry:
            return f"{what}, retrying in {retry[1]} s"
        if self.stopped:
            return f"{what}; Asterisk stopped retrying"
        return what


_REGISTRATION_EVENT = re.compile(
    r"^(?P<outcome>.+?) received from '(?P<server>[^']+)' on registration attempt to '(?P<client>[^']+)'"
    r"(?:,\s*(?P<then>.*?))?\s*$"
)
_TIMESTAMP = re.compile(r"^\[(?P<ts>[^\]]*)\]")


def parse_registration_events(lines: Iterable[str]) -> list[RegistrationEvent]:
    """The outbound registration failures in these log lines, oldest first."""
    events = []
    for raw in lines:
        line = _ANSI.sub("", raw).rstrip("\r\n")
        match = _LOG_LINE.match(line)
        if not match or not match["module"].endswith("res_pjsip_outbound_registration.c"):
            continue
        event = _REGISTRATION_EVENT.match(match["message"].strip())
        if not event:
            continue
        ts = _TIMESTAMP.match(line)
        events.append(
            RegistrationEvent(
                server_uri=event["server"],
                client_uri=event["client"],
                outcome=event["outcome"].strip(),
                then=(event["then"] or "").strip(),
                level=match["level"],
                timestamp=ts["ts"] if ts else None,
            )
        )
    return events


@dataclass(frozen=True)
class TransportInfo:
    """One row of `pjsip show transports`: a transport Asterisk has bound."""

    name: str
    protocol: str
    bind: str


_TRANSPORT_ROW = re.compile(
    r"^\s*Transport:\s+(?P<name>[^\s<]\S*)\s+(?P<proto>\w+)\s+\d+\s+\d+\s+(?P<bind>\S+)\s*$"
)


def parse_transports(text: str) -> list[TransportInfo]:
    """`pjsip show transports` → the transports Asterisk runs (a transport whose bind failed is
    not listed: `No objects found.`)."""
    rows = []
    for line in text.splitlines():
        match = _TRANSPORT_ROW.match(line)
        if match:
            rows.append(TransportInfo(match["name"], match["proto"].lower(), match["bind"]))
    return rows


# --- office features: AstDB settings from the phones, queues -------------------------------------

_ASTDB_LINE = re.compile(r"^/([^/\s]+)/(\S+?)\s*:\s*(.*?)\s*$")


def parse_database_show(text: str) -> dict[str, dict[str, str]]:
    """`database show FAMILY` → family → key → value (`/gitops-dnd/4001  : on`)."""
    result: dict[str, dict[str, str]] = {}
    for raw in text.splitlines():
        match = _ASTDB_LINE.match(_ANSI.sub("", raw))
        if match:
            result.setdefault(match[1], {})[match[2]] = match[3]
    return result


@dataclass(frozen=True)
class QueueMember:
    name: str
    interface: str
    state: str  # as app_queue says it: Not in use, In use, Ringing, Unavailable, Busy, ...


@dataclass(frozen=True)
class QueueInfo:
    name: str
    waiting: int
    strategy: str
    members: tuple[QueueMember, ...] = ()


_QUEUE_HEAD = re.compile(r"^(\S+) has (\d+) calls? \(.*?\) in '([^']*)' strategy")
_QUEUE_MEMBER = re.compile(r"^\s+(.+?) \((\S+?)(?: from \S+)?\)(?: \([^)]*\))*? \(([^)]+)\) has ")


def parse_queue_show(text: str) -> list[QueueInfo]:
    """`queue show` → one QueueInfo per queue: callers waiting, strategy, members and their state."""
    queues: list[QueueInfo] = []
    name = strategy = ""
    waiting = 0
    members: list[QueueMember] = []
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        head = _QUEUE_HEAD.match(line)
        if head:
            if name:
                queues.append(QueueInfo(name, waiting, strategy, tuple(members)))
            name, waiting, strategy, members = head[1], int(head[2]), head[3], []
            continue
        member = _QUEUE_MEMBER.match(line)
        if member and name:
            # the last parenthesised word before "has" is the member's state
            states = re.findall(r"\(([^)]+)\)", line.split(" has ")[0])
            members.append(QueueMember(member[1], member[2], states[-1] if states else member[3]))
    if name:
        queues.append(QueueInfo(name, waiting, strategy, tuple(members)))
    return queues
