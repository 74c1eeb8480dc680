"""A fleet of PBXs from one repository: `fleet.yaml`, and each site's desired state merged from its
bases and its own files (docs/fleet.md "Merging a site").

`fleet.yaml` is read with the same bounded, line-tracking YAML reader as the desired files
(`load.read_document`), so every problem is `fleet.yaml:LINE: sites[1].sip_port: message`. A site's
desired state is built as one raw mapping whose every list item and `pbx` key remembers the file
and line it came from (`LoadedState.overrides`), then validated by `load._validate`: every check of a
single desired directory reports the base or site file (and line) that holds the offending entry.

Pure: no Docker, no git, no network. Paths in fleet.yaml are relative names inside the fleet
directory (no `..`, not absolute), and a base or site directory that is a symbolic link leaving the
fleet directory is refused unread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from reconciler.desired.load import (
    LEAVES_DIRECTORY,
    DesiredEntry,
    LineIndex,
    LoadedState,
    _line_of,
    _pydantic_problems,
    _refusal,
    _validate,
    desired_entries,
    display_name,
    gc_paused,
    load_desired,
    read_document,
    read_layer,
)
from reconciler.desired.model import DesiredState, Port, field_name, is_host_name, parse_ip
from reconciler.errors import Problem, ReconcilerError, ValidationFailed
from reconciler.settings import Settings

FLEET_FILE = "fleet.yaml"
BASES_DIR = "bases"
SITES_DIR = "sites"
SECRETS_DIR = ".secrets"
SECRETS_SUFFIX = ".env"
STATUS_SCHEME = "http://"
MAX_SITES = 200

_SITE_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")
_FLEET_NAME = re.compile(r"[a-z0-9-]{1,20}")
# One part of a relative path in fleet.yaml: no `.`/`..`, no hidden name, no separator.
_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]_-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/%-]*)?")

# A list item's identity across layers (docs/fleet.md): the fields that name it.
IDENTITY: dict[str, tuple[str, ...]] = {
    "providers": ("name",),
    "extensions": ("number",),
    "outbound": ("name",),
    "inbound": ("provider", "did"),
    "ring_groups": ("number",),
    "schedules": ("name",),
    "menus": ("name",),
    "queues": ("number",),
}
_WHAT = {
    "providers": "provider",
    "extensions": "extension",
    "outbound": "route",
    "inbound": "inbound route",
    "ring_groups": "ring group",
    "schedules": "schedule",
    "menus": "menu",
    "queues": "queue",
}
REMOVE_KEY = "remove"
Locate = Callable[[tuple[str | int, ...]], tuple[str, int]]
# fleet.yaml's per-site ports → the pbx keys they set.
PBX_PORTS = (("port", "sip_port"), ("tls_port", "tls_port"))


def is_fleet_dir(path: Path) -> bool:
    """A directory with a `fleet.yaml` (even a broken one: loading it says what is wrong)."""
    return os.path.lexists(Path(path) / FLEET_FILE)


# --- fleet.yaml's grammar -------------------------------------------------------------------------


def _site_name(value: str) -> str:
    if not _SITE_NAME.fullmatch(value):
        raise ValueError(
            f"{value[:40]!r} must be lower case letters, digits and -, starting with a letter, at most 20"
        )
    return value


def _fleet_name(value: str) -> str:
    if not _FLEET_NAME.fullmatch(value):
        raise ValueError(f"{value[:40]!r} must be lower case letters, digits and -, at most 20")
    return value


def _relative(value: str) -> str:
    parts = value.split("/")
    if value.startswith("/") or not all(_PATH_PART.fullmatch(p) for p in parts) or len(parts) > 8:
        raise ValueError(
            f"{value[:80]!r} must be a relative path inside the fleet directory "
            "(names of letters, digits, _ . -; no '..', not absolute)"
        )
    return value


def _base_name(value: str) -> str:
    if not _PATH_PART.fullmatch(value):
        raise ValueError(f"{value[:80]!r} must be the name of a folder under {BASES_DIR}/ (no '/', no '..')")
    return value


def _node(value: str) -> str:
    if not is_host_name(value):
        raise ValueError(f"{value[:80]!r} is not a node host name")
    return value


def split_host_port(value: str) -> tuple[str, int]:
    """`127.0.0.1:8181` or `[::1]:8181` → (host, port); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value[:80]!r} must be host:port, e.g. 127.0.0.1:8181")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        parse_ip(host)  # ValueError for a bad address
    elif ":" in host or not host:
        raise ValueError(f"{value[:80]!r} must be host:port (an IPv6 address goes in brackets)")
    else:
        try:
            parse_ip(host)
        except ValueError:
            if not is_host_name(host):
                raise ValueError(f"{value[:80]!r}: {host[:60]!r} is not an address or host name") from None
    return host, int(port)


def _http(value: str) -> str:
    split_host_port(value)
    return value


def _status_url(value: str) -> str:
    if not _URL.fullmatch(value):
        raise ValueError(f"{value[:80]!r} must be an http:// or https:// URL, e.g. http://127.0.0.1:8181")
    return value


SiteName = Annotated[str, AfterValidator(_site_name)]


class _FleetModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RtpRange(_FleetModel):
    """An RTP port range, both ends included."""

    start: Port = Field(description="First RTP port.")
    end: Port = Field(description="Last RTP port (≥ start).")

    @model_validator(mode="after")
    def _ordered(self) -> RtpRange:
        if self.start > self.end:
            raise ValueError(f"start {self.start} is above end {self.end}")
        return self


class CarrierEntry(_FleetModel):
    """A sandbox carrier beside the site (as `make up` has)."""

    port: Port = Field(description="The carrier's SIP port.")
    rtp: RtpRange = Field(description="The carrier's RTP ports.")


class SecretsEntry(_FleetModel):
    env_file: Annotated[str, AfterValidator(_relative)] | None = Field(
        None,
        description=f"KEY=VALUE file of the site's secrets (default {SECRETS_DIR}/<name>{SECRETS_SUFFIX}).",
    )


class SiteEntry(_FleetModel):
    """One PBX of the fleet."""

    name: SiteName = Field(description="[a-z][a-z0-9-]{0,19}, unique in the fleet.")
    bases: list[Annotated[str, AfterValidator(_base_name)]] = Field(
        default_factory=list, description=f"Folders under {BASES_DIR}/, merged in this order."
    )
    dir: Annotated[str, AfterValidator(_relative)] | None = Field(
        None, description=f"The site's own desired files (default {SITES_DIR}/<name>)."
    )
    node: Annotated[str, AfterValidator(_node)] | None = Field(
        None, description="Swarm node host name the site is pinned to (null: the node that deploys)."
    )
    sip_port: Port = Field(description="pbx.port of the site (UDP/TCP).")
    tls_port: Port = Field(description="pbx.tls_port of the site.")
    rtp: RtpRange = Field(description="The site's RTP ports.")
    ami_port: Port = Field(description="AMI on 127.0.0.1: the sidecar's control channel.")
    http: Annotated[str, AfterValidator(_http)] = Field(description="host:port of the site's reconciler.")
    status_url: Annotated[str, AfterValidator(_status_url)] | None = Field(
        None, description="How other sites reach the reconciler (default http://<http>)."
    )
    carrier: CarrierEntry | None = Field(None, description="An optional sandbox carrier.")
    secrets: SecretsEntry | None = Field(None, description="Where the site's secret values are read.")


class FleetFile(_FleetModel):
    """fleet.yaml: the sites of a fleet, their ports, bases and rollout order."""

    name: Annotated[str, AfterValidator(_fleet_name)] = Field(description="[a-z0-9-], at most 20.")
    rollout: list[SiteName] | None = Field(
        None,
        description="Order a change goes live in; the first is the canary. Sites not listed follow, "
        "in file order (default: the sites' order).",
    )
    sites: list[SiteEntry] = Field(min_length=1, max_length=MAX_SITES, description="The PBXs.")


def fleet_json_schema() -> dict[str, Any]:
    """JSON Schema of fleet.yaml."""
    schema = FleetFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "asterisk-gitops fleet.yaml"
    return schema


# --- the loaded fleet -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CarrierSpec:
    port: int
    rtp_start: int
    rtp_end: int


@dataclass(frozen=True)
class Site:
    """One site of a fleet, as fleet.yaml describes it (paths absolute)."""

    name: str
    bases: tuple[str, ...]
    dir: Path
    node: str | None
    sip_port: int
    tls_port: int
    rtp_start: int
    rtp_end: int
    ami_port: int
    http_host: str
    http_port: int
    http: str
    status_url: str
    carrier: CarrierSpec | None
    env_file: Path
    line: int  # fleet.yaml line of the entry
    # fleet.yaml line of each key of the entry (`sip_port` → 12)
    lines: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Fleet:
    name: str
    dir: Path
    sites: tuple[Site, ...]
    rollout: tuple[str, ...]
    file: str = FLEET_FILE  # display name of fleet.yaml, for messages

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    def site(self, name: str) -> Site:
        for candidate in self.sites:
            if candidate.name == name:
                return candidate
        raise ReconcilerError(
            f"{self.file} has no site {name[:60]!r}", f"use one of: {', '.join(self.names)}"
        )

    def predecessor(self, name: str) -> Site | None:
        """The site before `name` in rollout order (None for the first, the canary)."""
        position = self.rollout.index(self.site(name).name)
        return self.site(self.rollout[position - 1]) if position > 0 else None


def _inside(root: str, path: Path) -> bool:
    target = os.path.realpath(path)
    return os.path.commonpath([root, target]) == root


def _dir_problem(fleet_dir: Path, root: str, relative: str) -> str | None:
    """Why `fleet_dir/relative` cannot be a layer directory, or None."""
    path = fleet_dir / relative
    if not os.path.lexists(path):
        return f"{relative} does not exist"
    if not _inside(root, path):
        return f"{relative} is a symbolic link that leaves the fleet directory (its target is not read)"
    if os.path.realpath(path) == root:
        return f"{relative} is the fleet directory itself"
    if not path.is_dir():
        return f"{relative} is not a directory"
    return None


def _entry_index(index: LineIndex, i: int) -> LineIndex:
    """The line index of `sites[i]` in fleet.yaml's index."""
    sites = index.get("sites") if isinstance(index, dict) else None
    entries = sites[1] if sites is not None else None
    return entries[i][1] if isinstance(entries, list) and i < len(entries) else None


def load_fleet(fleet_dir: Path) -> Fleet:
    """Read and check `fleet_dir/fleet.yaml`. Raises `ValidationFailed` with every problem."""
    with gc_paused():
        return _load_fleet(Path(fleet_dir))


def _load_fleet(fleet_dir: Path) -> Fleet:
    fleet_dir = Path(os.path.abspath(fleet_dir))
    path = fleet_dir / FLEET_FILE
    file = display_name(path)
    if not fleet_dir.is_dir():
        raise ValidationFailed([Problem(display_name(fleet_dir), 0, "-", "not a directory")])
    if not os.path.lexists(path):
        raise ValidationFailed([Problem(file, 0, "-", f"no {FLEET_FILE}: this is not a fleet directory")])
    root = os.path.realpath(fleet_dir)
    read = read_document(DesiredEntry(path, _refusal(path, root)), file)
    if isinstance(read, Problem):
        raise ValidationFailed([read])
    doc, index = read
    if not isinstance(doc, dict):
        raise ValidationFailed(
            [Problem(file, 1, "-", f"{FLEET_FILE} must be a mapping (name, rollout, sites)")]
        )

    def locate(where: tuple[str | int, ...]) -> tuple[str, int]:
        return file, _line_of(index, where)

    try:
        parsed = FleetFile.model_validate(doc)
    except ValidationError as exc:
        raise ValidationFailed(_pydantic_problems(exc, (), locate, set(), FleetFile)) from None

    problems: list[Problem] = []

    def problem(where: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(*locate(where), field_name(where), message))

    first_at: dict[str, int] = {}
    sites: list[Site] = []
    for i, entry in enumerate(parsed.sites):
        if entry.name in first_at:
            j = first_at[entry.name]
            problem(
                ("sites", i, "name"),
                f"site {entry.name!r} is already sites[{j}] ({file}:{locate(('sites', j))[1]})",
            )
        first_at.setdefault(entry.name, i)
        for j, base in enumerate(entry.bases):
            why = _dir_problem(fleet_dir, root, f"{BASES_DIR}/{base}")
            if why is not None:
                problem(("sites", i, "bases", j), why)
            elif base in entry.bases[:j]:
                problem(("sites", i, "bases", j), f"base {base!r} is listed twice")
        relative = entry.dir or f"{SITES_DIR}/{entry.name}"
        why = _dir_problem(fleet_dir, root, relative)
        if why is not None:
            problem(("sites", i, "dir") if entry.dir else ("sites", i, "name"), why)
        env_relative = (entry.secrets.env_file if entry.secrets else None) or (
            f"{SECRETS_DIR}/{entry.name}{SECRETS_SUFFIX}"
        )
        env_file = fleet_dir / env_relative
        if os.path.lexists(env_file) and not _inside(root, env_file):
            problem(
                ("sites", i, "secrets", "env_file")
                if entry.secrets and entry.secrets.env_file
                else ("sites", i),
                f"{env_relative} is a symbolic link that leaves the fleet directory",
            )
        host, port = split_host_port(entry.http)
        entry_index = _entry_index(index, i)
        lines = {
            str(key): line
            for key, (line, _) in (entry_index.items() if isinstance(entry_index, dict) else ())
        }
        sites.append(
            Site(
                name=entry.name,
                bases=tuple(entry.bases),
                dir=Path(os.path.abspath(fleet_dir / relative)),
                node=entry.node,
                sip_port=entry.sip_port,
                tls_port=entry.tls_port,
                rtp_start=entry.rtp.start,
                rtp_end=entry.rtp.end,
                ami_port=entry.ami_port,
                http_host=host,
                http_port=port,
                http=entry.http,
                status_url=entry.status_url or f"{STATUS_SCHEME}{entry.http}",
                carrier=CarrierSpec(entry.carrier.port, entry.carrier.rtp.start, entry.carrier.rtp.end)
                if entry.carrier
                else None,
                env_file=Path(os.path.abspath(env_file)),
                line=locate(("sites", i))[1],
                lines=lines,
            )
        )
    names = [s.name for s in sites]
    listed: list[str] = []
    for i, name in enumerate(parsed.rollout or []):
        if name not in names:
            problem(("rollout", i), f"{name!r} is not a site (sites: {', '.join(names)})")
        elif name in listed:
            problem(("rollout", i), f"{name!r} is listed twice")
        else:
            listed.append(name)
    rollout = (*listed, *(n for n in dict.fromkeys(names) if n not in listed))
    problems += _collisions(sites, file, locate)
    if problems:
        raise ValidationFailed(problems)
    return Fleet(parsed.name, fleet_dir, tuple(sites), rollout, file)


@dataclass(frozen=True)
class _Claim:
    """Ports a site takes on its node: a port (low == high) or a range."""

    site: int
    what: str
    where: tuple[str | int, ...]
    low: int
    high: int

    @property
    def text(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def _claims(i: int, site: Site) -> list[_Claim]:
    at: tuple[str | int, ...] = ("sites", i)
    claims = [
        _Claim(i, "SIP port", (*at, "sip_port"), site.sip_port, site.sip_port),
        _Claim(i, "TLS port", (*at, "tls_port"), site.tls_port, site.tls_port),
        _Claim(i, "AMI port", (*at, "ami_port"), site.ami_port, site.ami_port),
        _Claim(i, "HTTP port", (*at, "http"), site.http_port, site.http_port),
        _Claim(i, "RTP range", (*at, "rtp"), site.rtp_start, site.rtp_end),
    ]
    if site.carrier is not None:
        carrier = site.carrier
        claims += [
            _Claim(i, "carrier port", (*at, "carrier", "port"), carrier.port, carrier.port),
            _Claim(i, "carrier RTP range", (*at, "carrier", "rtp"), carrier.rtp_start, carrier.rtp_end),
        ]
    return claims


def _collisions(sites: list[Site], file: str, locate: Locate) -> list[Problem]:
    """Ports and RTP ranges that collide on one node (null: one node), within a site or across
    sites: one problem at the later claim, naming the earlier one."""
    problems: list[Problem] = []
    taken: dict[str | None, list[_Claim]] = {}
    for i, site in enumerate(sites):
        on_node = taken.setdefault(site.node, [])
        for claim in _claims(i, site):
            for other in on_node:
                if claim.low <= other.high and other.low <= claim.high:
                    if other.site == i:
                        whose = f"this site's {other.what} {other.text}"
                    else:
                        where = locate(other.where)[1]
                        node = f"node {site.node}" if site.node else "the same node (node: null)"
                        whose = (
                            f"site {sites[other.site].name}'s {other.what} {other.text} ({file}:{where}) "
                            f"on {node}"
                        )
                    problems.append(
                        Problem(
                            *locate(claim.where),
                            field_name(claim.where),
                            f"{claim.what} {claim.text} collides with {whose}",
                        )
                    )
                    break
            on_node.append(claim)
    return problems


# --- a site's desired state -----------------------------------------------------------------------


@dataclass
class _Item:
    value: Any
    file: str
    line: int
    index: LineIndex
    layer: int


def _identity(key: str, item: Any) -> tuple[str, ...] | None:
    if not isinstance(item, dict):
        return None
    values = [item.get(name) for name in IDENTITY[key]]
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
        return None
    return tuple(str(v) for v in values)


def _label(key: str, ident: tuple[str, ...]) -> str:
    return f"{_WHAT[key]} " + " ".join(repr(part) for part in ident)


def load_site(fleet_dir_or_fleet: Path | Fleet, name: str) -> LoadedState:
    """The desired state of site `name`: its bases in order, then its own files, then fleet.yaml's
    ports. Raises `ValidationFailed` (every problem at the file and line that holds it)."""
    fleet = (
        fleet_dir_or_fleet if isinstance(fleet_dir_or_fleet, Fleet) else load_fleet(Path(fleet_dir_or_fleet))
    )
    site = fleet.site(name)
    with gc_paused():
        return _load_site(fleet, site)


class _Merge:
    """The raw merged mapping of one site, each list item and `pbx` key with its file and line."""

    def __init__(self, fleet: Fleet, site: Site, layers: int) -> None:
        self.fleet, self.site, self.site_layer = fleet, site, layers - 1
        self.problems: list[Problem] = []
        self.sources: dict[str, tuple[str, LineIndex]] = {}
        self.pbx: dict[str, Any] = {}
        self.pbx_at: dict[str, tuple[str, int, LineIndex]] = {}
        self.lists: dict[str, list[_Item | None]] = {}
        self.positions: dict[str, dict[tuple[str, ...], int]] = {}
        # identities in two bases, each with the problem to report unless the site settles it
        self.ambiguous: dict[tuple[str, tuple[str, ...]], Problem] = {}

    def layer(self, number: int, key: str, file: str, value: Any, index: LineIndex) -> None:
        assert isinstance(index, dict)
        key_line, value_index = index[key]
        self.sources[key] = (file, index)
        if value is None:
            return
        if key == "pbx":
            if not isinstance(value, dict) or not isinstance(value_index, dict):
                self.problems.append(Problem(file, key_line, "pbx", "must be a mapping of settings"))
                return
            for setting, setting_value in value.items():
                self.pbx[setting] = setting_value
                self.pbx_at[str(setting)] = (file, *value_index[setting])
            return
        if not isinstance(value, list) or not isinstance(value_index, list):
            self.problems.append(Problem(file, key_line, key, f"must be a list of {key}"))
            return
        first_in_layer: dict[tuple[str, ...], int] = {}
        for j, item in enumerate(value):
            line, item_index = value_index[j]
            self.item(number, key, _Item(item, file, line, item_index, number), j, first_in_layer)

    def _problem(self, item: _Item, key: str, j: int, message: str, at: tuple[str | int, ...] = ()) -> None:
        line = _line_of(item.index, at, item.line)
        self.problems.append(Problem(item.file, line, field_name((key, j, *at)), message))

    def item(
        self, number: int, key: str, new: _Item, j: int, first_in_layer: dict[tuple[str, ...], int]
    ) -> None:
        items = self.lists.setdefault(key, [])
        where = self.positions.setdefault(key, {})
        ident = _identity(key, new.value)
        removing = isinstance(new.value, dict) and REMOVE_KEY in new.value
        names = " and ".join(IDENTITY[key])
        if ident is None:
            if removing:
                self._problem(new, key, j, f"{REMOVE_KEY} needs the {names} of the entry to remove")
            else:
                items.append(new)  # validation says what is missing
            return
        first_key = (IDENTITY[key][0],)
        if ident in first_in_layer:
            where_first = f"{new.file}:{first_in_layer[ident]}"
            self._problem(
                new, key, j, f"{_label(key, ident)} is twice in one layer (first at {where_first})", first_key
            )
            return
        first_in_layer[ident] = new.line
        if removing:
            self._remove(number, key, new, j, ident)
            return
        if ident not in where:
            where[ident] = len(items)
            items.append(new)
            return
        previous = items[where[ident]]
        assert previous is not None
        if number == self.site_layer:
            self.ambiguous.pop((key, ident), None)
        elif previous.layer != number:
            self.ambiguous.setdefault(
                (key, ident),
                Problem(
                    new.file,
                    _line_of(new.index, first_key, new.line),
                    field_name((key, j, *first_key)),
                    f"{_label(key, ident)} is also defined in {previous.file}:{previous.line}: ambiguous "
                    f"for site {self.site.name}; define it in one base, or override it in the site",
                ),
            )
        items[where[ident]] = new

    def _remove(self, number: int, key: str, new: _Item, j: int, ident: tuple[str, ...]) -> None:
        item = new.value
        assert isinstance(item, dict)
        allowed = {*IDENTITY[key], REMOVE_KEY}
        extra = [str(k) for k in item if k not in allowed]
        if number != self.site_layer:
            self._problem(
                new, key, j, f"{REMOVE_KEY} is only for a site's own files, not a base", (REMOVE_KEY,)
            )
        elif item[REMOVE_KEY] is not True:
            self._problem(new, key, j, f"{REMOVE_KEY} must be true (or left out)", (REMOVE_KEY,))
        elif extra:
            message = f"{REMOVE_KEY}: true takes only the {' and '.join(IDENTITY[key])}: drop {extra[0]!r}"
            self._problem(new, key, j, message, (extra[0],))
        elif ident not in self.positions[key]:
            self._problem(
                new, key, j, f"removes {_label(key, ident)}, which no base of site {self.site.name} defines"
            )
        else:
            self.lists[key][self.positions[key].pop(ident)] = None
            self.ambiguous.pop((key, ident), None)

    def ports(self) -> None:
        """fleet.yaml's sip_port and tls_port become pbx.port and pbx.tls_port; a desired file
        that sets another value is an error."""
        site, fleet = self.site, self.fleet
        for setting, fleet_key in PBX_PORTS:
            value = getattr(site, fleet_key)
            fleet_line = site.lines.get(fleet_key, site.line)
            if setting in self.pbx and self.pbx[setting] != value:
                file, line, _ = self.pbx_at[setting]
                self.problems.append(
                    Problem(
                        file,
                        line,
                        f"pbx.{setting}",
                        f"is {str(self.pbx[setting])[:20]} here, but {fleet.file}:{fleet_line} sets "
                        f"{fleet_key} {value} for site {site.name}: leave pbx.{setting} to fleet.yaml",
                    )
                )
            self.pbx[setting] = value
            self.pbx_at[setting] = (fleet.file, fleet_line, None)

    def result(self) -> tuple[dict[str, Any], dict[tuple[str | int, ...], tuple[str, int, LineIndex]]]:
        merged: dict[str, Any] = {"pbx": self.pbx}
        overrides: dict[tuple[str | int, ...], tuple[str, int, LineIndex]] = {
            ("pbx", setting): at for setting, at in self.pbx_at.items()
        }
        if "pbx" not in self.sources:
            overrides[("pbx",)] = (self.fleet.file, self.site.line, None)
        for key, items in self.lists.items():
            kept = [item for item in items if item is not None]
            merged[key] = [item.value for item in kept]
            for position, item in enumerate(kept):
                overrides[(key, position)] = (item.file, item.line, item.index)
        return merged, overrides


def _load_site(fleet: Fleet, site: Site) -> LoadedState:
    layers = [fleet.dir / BASES_DIR / base for base in site.bases] + [site.dir]
    merge = _Merge(fleet, site, len(layers))
    problems: list[Problem] = []
    files: list[str] = []
    unreadable = False
    for number, directory in enumerate(layers):
        layer = read_layer(directory)
        problems += layer.problems
        files += layer.files
        unreadable = unreadable or layer.unreadable
        for key, (file, value, index) in layer.keys.items():
            merge.layer(number, key, file, value, index)
    merge.ports()
    problems += merge.problems
    problems += merge.ambiguous.values()
    merged, overrides = merge.result()
    locator = LoadedState(DesiredState(), fleet.dir, merge.sources, tuple(files), overrides)
    more, state = _validate(merged, locator, cross_checks=not unreadable)
    problems += more
    if problems:
        raise ValidationFailed(problems)
    return LoadedState(state, fleet.dir, merge.sources, tuple(files), overrides)


def load_tree(directory: Path, site: str | None) -> LoadedState:
    """`load_site(directory, site)` for a fleet, `load_desired(directory)` for one PBX's desired
    directory. A site for a plain directory, or a fleet without a site, is a one-line error."""
    directory = Path(directory)
    shown = display_name(directory)
    if site is not None:
        if not is_fleet_dir(directory):
            raise ReconcilerError(
                f"{shown} has no {FLEET_FILE}: a site ({site[:40]!r}) needs a fleet directory",
                "pass the directory that holds fleet.yaml, or no --site (RECONCILER_SITE) for one PBX",
            )
        return load_site(directory, site)
    if is_fleet_dir(directory):
        try:
            names = f" (sites: {', '.join(load_fleet(directory).names)})"
        except ReconcilerError:
            names = ""
        raise ReconcilerError(
            f"{shown} is a fleet ({FLEET_FILE}): say which site to use{names}",
            "pass --site NAME (or set RECONCILER_SITE), or use --fleet for every site",
        )
    return load_desired(directory)


def site_settings(settings: Settings, fleet: Fleet, site: Site | str) -> Settings:
    """`settings` for rendering `site` of `fleet`: the site named, its secrets from its env file
    (the secrets directory and the environment still apply)."""
    chosen = fleet.site(site if isinstance(site, str) else site.name)
    return replace(settings, site=chosen.name, env_file=chosen.env_file)


# --- every file a fleet is made of ----------------------------------------------------------------


def fleet_entries(fleet_dir: Path) -> list[tuple[str, DesiredEntry]]:
    """Every file that makes up the fleet, by its relative posix path, sorted: fleet.yaml and the
    desired files of every folder under bases/ and sites/ and of every site's `dir`. A folder that
    is a symbolic link leaving the fleet counts as one refused entry (never listed or read)."""
    fleet_dir = Path(fleet_dir)
    root = os.path.realpath(fleet_dir)
    found: dict[str, DesiredEntry] = {
        FLEET_FILE: DesiredEntry(fleet_dir / FLEET_FILE, _refusal(fleet_dir / FLEET_FILE, root))
    }
    folders: list[str] = []
    for parent in (BASES_DIR, SITES_DIR):
        path = fleet_dir / parent
        if not os.path.lexists(path):
            continue
        if not _inside(root, path):
            found[parent] = DesiredEntry(path, LEAVES_DIRECTORY)
            continue
        if path.is_dir():
            folders += [f"{parent}/{name}" for name in sorted(os.listdir(path)) if not name.startswith(".")]
    try:
        fleet = load_fleet(fleet_dir)
    except ReconcilerError:
        fleet = None
    if fleet is not None:
        folders += [PurePosixPath(os.path.relpath(s.dir, fleet.dir)).as_posix() for s in fleet.sites]
    for folder in dict.fromkeys(folders):
        path = fleet_dir / folder
        if not _inside(root, path):
            found[folder] = DesiredEntry(path, LEAVES_DIRECTORY)
        elif path.is_dir():
            for entry in desired_entries(path):
                found[f"{folder}/{entry.name}"] = entry
    return sorted(found.items())


def site_inputs(fleet: Fleet, site: Site | str) -> tuple[str, ...]:
    """The relative posix paths one site's state is made of: fleet.yaml, the folders of its bases
    and its own folder. A change anywhere else in the fleet does not change this site."""
    chosen = fleet.site(site if isinstance(site, str) else site.name)
    folders = [f"{BASES_DIR}/{base}" for base in chosen.bases]
    folders.append(PurePosixPath(os.path.relpath(chosen.dir, fleet.dir)).as_posix())
    return (FLEET_FILE, *dict.fromkeys(folders))


def is_site_input(name: str, inputs: tuple[str, ...]) -> bool:
    """Whether the fleet file at relative path `name` is one of a site's `inputs`."""
    return any(name == path or name.startswith(path + "/") for path in inputs)


def site_entries(fleet_dir: Path, site: str) -> list[tuple[str, DesiredEntry]]:
    """The part of `fleet_entries()` that makes up `site` (see `site_inputs`), sorted."""
    inputs = site_inputs(load_fleet(fleet_dir), site)
    return [(name, entry) for name, entry in fleet_entries(fleet_dir) if is_site_input(name, inputs)]


__all__ = [
    "FLEET_FILE",
    "CarrierSpec",
    "Fleet",
    "FleetFile",
    "Site",
    "fleet_entries",
    "fleet_json_schema",
    "is_fleet_dir",
    "is_site_input",
    "load_fleet",
    "load_site",
    "load_tree",
    "site_entries",
    "site_inputs",
    "site_settings",
]
