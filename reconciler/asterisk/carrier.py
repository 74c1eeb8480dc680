"""The sandbox carrier: a second Asterisk of the project's image that plays the SIP provider.

It lets `make up` give a PBX on which every dial of the sample works with no internet and no
account: the carrier accepts the PBX's trunk registration, identifies the PBX's INVITEs by address
*and port* and still challenges them, answers any number (an announcement, then it hangs up; a
call never lasts longer than `max_call_s`), and appends one line per answered call to
`CALLS_LOG` inside its container:

    2026-12-01T20:15:02+0000 call=carrier-1764620102.3 to=1234567890 from=4001

**Which provider is the carrier's.** A provider of the desired state whose `host` is 127.0.0.1 and
whose `port` is the carrier's port (`DEFAULT_PORT`, 5070; `make up CARRIER_PORT=...`). That is the
address the carrier listens on, so pointing a trunk there *is* choosing the carrier; nothing else
in the desired files changes, and switching to a real provider is editing that provider alone. A
desired state without such a provider gets no carrier. The carrier's settings all come from that
provider: its account is the values of the provider's `username`/`password` references (the
secrets `make up` generated), and the PBX is recognised at `pbx.bind:pbx.port` (127.0.0.1 when the
PBX binds every address).

Nothing a caller sends can run a command: the number must be digits (an optional leading `+`) or
the call is refused, the caller ID is filtered to a safe set of characters before it is logged,
and the log is written with `FILE()` (func_env), never `System()`. The PBX sends the caller's
number in P-Asserted-Identity (its trunk's From user is the account name) and the carrier trusts
it, so `from=` is the extension (or the provider's `caller_id`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from reconciler.asterisk.client import AsteriskClient
from reconciler.desired.confparse import parse_conf
from reconciler.desired.fleet import load_tree
from reconciler.desired.load import LoadedState, load_desired
from reconciler.desired.model import DesiredState, Provider, SecretRef
from reconciler.desired.render import conf_escape
from reconciler.desired.secrets import resolve_secrets
from reconciler.errors import Problem, ReconcilerError, ValidationFailed
from reconciler.settings import Settings

CARRIER_HOST = "127.0.0.1"
DEFAULT_PORT = 5070
DEFAULT_CONTAINER = "gitops-carrier"
CALLS_LOG = "/var/log/asterisk/carrier_calls.log"
CONTEXT = "carrier"
ANNOUNCEMENT = "demo-congrats"  # ~30 s, in every Debian asterisk install (asterisk-core-sounds-en)
DEFAULT_MAX_CALL_S = 40
FILES = ("pjsip.conf", "extensions.conf")
# The account name becomes a section name and the user part of SIP URIs on both sides.
USERNAME_RE = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", "[::]"})
_CALL_FIELD = re.compile(r"\b(call|to|from)=(\S*)")

_PJSIP = """\
; Sandbox carrier of asterisk-gitops, for provider {{ provider }}: written by `reconciler carrier apply`.
; Do not edit: the next `make up` writes it again from the desired state.

[global]
type = global
user_agent = asterisk-gitops-sandbox-carrier
; the PBX is identified by address *and* port (see identify below), then by user name
endpoint_identifier_order = ip,username

[transport-udp]
type = transport
protocol = udp
bind = {{ host }}:{{ sip_port }}

[{{ username }}-auth]
type = auth
auth_type = userpass
username = {{ username }}
password = {{ password }}

[{{ username }}]
type = aor
max_contacts = 1
remove_existing = yes

[{{ username }}]
type = endpoint
transport = transport-udp
context = {{ context }}
disallow = all
allow = ulaw,alaw
; the PBX must authenticate its INVITEs too, even when identified by address
auth = {{ username }}-auth
aors = {{ username }}
; the PBX's From user is the account name; the caller's number arrives in P-Asserted-Identity
trust_id_inbound = yes
direct_media = no
rtp_symmetric = yes
media_address = {{ host }}
bind_rtp_to_media_address = yes

[{{ username }}-identify]
type = identify
endpoint = {{ username }}
; a bare address would make every sender on it (every local phone) this trunk
match = {{ pbx_address }}:{{ pbx_port }}
"""

_EXTENSIONS = """\
; Sandbox carrier of asterisk-gitops, for provider {{ provider }}: written by `reconciler carrier apply`.

[general]
static = yes
writeprotect = yes

[{{ context }}]
; Any number (digits, optionally a leading +): answered, logged, an announcement, hung up after at
; most {{ max_call_s }} s. Anything else is refused (Hangup(1): unallocated number, SIP 404).
exten => _[+0-9]!,1,NoOp(sandbox carrier: call to ${EXTEN})
 same => n,GotoIf($[${LEN(${FILTER(+0123456789,${EXTEN})})} != ${LEN(${EXTEN})}]?refuse)
 same => n,Answer()
 same => n,Set(FILE({{ calls_log }},,,al,u)=${STRFTIME(${EPOCH},,%Y-%m-%dT%H:%M:%S%z)} call=${UNIQUEID} \
to=${EXTEN} from=${FILTER(0-9A-Za-z+*#._,${CALLERID(num)})})
 same => n,Set(TIMEOUT(absolute)={{ max_call_s }})
 same => n,Playback({{ announcement }})
 same => n,Wait({{ max_call_s }})
 same => n,Hangup()
 same => n(refuse),Hangup(1)
"""


class CarrierError(ReconcilerError):
    """The sandbox carrier cannot be configured as the desired state asks (or did not take it)."""


@dataclass(frozen=True)
class CarrierConfig:
    """Everything the carrier's two config files depend on."""

    sip_port: int
    pbx_port: int
    username: str
    password: str = field(repr=False)
    pbx_address: str = CARRIER_HOST
    provider: str = "provider"
    max_call_s: int = DEFAULT_MAX_CALL_S

    def __post_init__(self) -> None:
        if not USERNAME_RE.fullmatch(self.username):
            raise CarrierError(
                f"the sandbox carrier cannot use the account name of provider {self.provider}: it may "
                "contain only letters, digits and _ . + - (1-64 characters)",
                "give the provider's username reference a simpler value in .env",
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in self.password) or not self.password:
            raise CarrierError(
                f"the password of provider {self.provider} is empty or contains control characters",
                "give the provider's password reference another value in .env",
            )


@dataclass(frozen=True)
class CarrierPlan:
    """The carrier a desired state asks for: which provider, and the config rendered for it."""

    provider: Provider
    config: CarrierConfig
    dial: tuple[str, ...]  # what a phone dials to reach the carrier, e.g. "9 + number (sent without the 9)"


@dataclass(frozen=True)
class CarrierCall:
    """One line of the carrier's calls log."""

    time: str
    call: str
    to: str
    caller: str


@dataclass(frozen=True)
class CarrierApplied:
    """What `apply_carrier` did."""

    changed: tuple[str, ...]
    restarted: bool
    reloads: tuple[str, ...] = ()

    @property
    def unchanged(self) -> bool:
        return not self.changed


def is_carrier_provider(provider: Provider, port: int = DEFAULT_PORT) -> bool:
    """True when `provider` points at the sandbox carrier (127.0.0.1:`port`)."""
    return provider.host == CARRIER_HOST and provider.port == port


def find_carrier_provider(loaded: LoadedState, port: int = DEFAULT_PORT) -> tuple[int, Provider] | None:
    """(index, provider) of the provider that points at the carrier, or None.

    Raises `ValidationFailed` (FILE:LINE) when that provider cannot use the carrier (not udp) or
    when two providers point at it (the carrier holds one account).
    """
    found = [(i, p) for i, p in enumerate(loaded.state.providers) if is_carrier_provider(p, port)]
    problems: list[Problem] = []
    for i, p in found:
        if p.transport != "udp":
            file, line = loaded.locate(("providers", i, "transport"))
            problems.append(
                Problem(
                    file,
                    line,
                    f"providers[{i}].transport",
                    f"{p.name} points at the sandbox carrier ({CARRIER_HOST}:{port}), which speaks "
                    f"udp only, not {p.transport}",
                )
            )
    for i, p in found[1:]:
        file, line = loaded.locate(("providers", i, "host"))
        problems.append(
            Problem(
                file,
                line,
                f"providers[{i}].host",
                f"{p.name} and {found[0][1].name} both point at the sandbox carrier "
                f"({CARRIER_HOST}:{port}), which holds one account",
            )
        )
    if problems:
        raise ValidationFailed(problems)
    return found[0] if found else None


def _value(value: str, secrets: Mapping[str, str]) -> str:
    return secrets[value.name] if isinstance(value, SecretRef) else value


def pbx_source_address(state: DesiredState) -> str:
    """The address the PBX's SIP packets to the carrier come from."""
    bind = state.pbx.bind
    return CARRIER_HOST if bind in _WILDCARD_BINDS else bind


def dial_hints(state: DesiredState, provider: str) -> tuple[str, ...]:
    """What a phone dials to reach `provider`, from the outbound routes, e.g.
    `9 + number: it receives the number without the 9 (route external)`."""
    hints: list[str] = []
    for route in state.outbound:
        if route.provider != provider:
            continue
        if route.prefix is not None:
            sent = f"without the {route.prefix[: route.strip]}" if route.strip else "as dialled"
            hints.append(f"{route.prefix} + number: it receives the number {sent} (route {route.name})")
        else:
            hints.append(
                f"{', '.join(route.numbers or ())}: it receives them as dialled (route {route.name})"
            )
    return tuple(hints)


def plan_carrier(
    desired_dir: Path,
    settings: Settings,
    port: int = DEFAULT_PORT,
    *,
    max_call_s: int = DEFAULT_MAX_CALL_S,
    with_secrets: bool = True,
    site: str | None = None,
) -> CarrierPlan | None:
    """The carrier `desired_dir` asks for, or None when no provider points at 127.0.0.1:`port`.
    With `site`, `desired_dir` is a fleet directory and the state is that site's merged one (its
    carrier port is fleet.yaml's `carrier.port`, which the caller passes as `port`).

    With `with_secrets` the provider's account is resolved (environment, env file, /run/secrets)
    like an apply does; without, the config is not needed (e.g. `carrier show`) and holds
    placeholders that are never written anywhere.
    """
    loaded = load_tree(Path(desired_dir), site) if site else load_desired(Path(desired_dir))
    found = find_carrier_provider(loaded, port)
    if found is None:
        return None
    _, provider = found
    state = loaded.state
    if with_secrets:
        secrets = resolve_secrets(loaded, settings)
        username, password = _value(provider.username, secrets), _value(provider.password, secrets)
    else:
        username, password = "unresolved", "unresolved"
    config = CarrierConfig(
        sip_port=port,
        pbx_port=state.pbx.port,
        pbx_address=pbx_source_address(state),
        username=username,
        password=password,
        provider=provider.name,
        max_call_s=max_call_s,
    )
    return CarrierPlan(provider, config, dial_hints(state, provider.name))


def render_carrier(config: CarrierConfig) -> dict[str, str]:
    """The carrier's `pjsip.conf` and `extensions.conf` for `config` (same input, same bytes)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    values = {
        "provider": config.provider,
        "host": CARRIER_HOST,
        "sip_port": config.sip_port,
        "pbx_address": config.pbx_address,
        "pbx_port": config.pbx_port,
        "username": config.username,
        "password": conf_escape(config.password),
        "context": CONTEXT,
        "calls_log": CALLS_LOG,
        "announcement": ANNOUNCEMENT,
        "max_call_s": int(config.max_call_s),
    }
    return {
        "pjsip.conf": env.from_string(_PJSIP).render(values),
        "extensions.conf": env.from_string(_EXTENSIONS).render(values),
    }


def parse_calls_log(text: str) -> list[CarrierCall]:
    """The calls of the carrier's log, oldest first (lines without `to=` are skipped)."""
    calls: list[CarrierCall] = []
    for line in text.splitlines():
        fields = dict(_CALL_FIELD.findall(line))
        if "to" in fields:
            stamp = line.split(" ", 1)[0] if not line.startswith(("call=", "to=")) else ""
            calls.append(CarrierCall(stamp, fields.get("call", ""), fields["to"], fields.get("from", "")))
    return calls


def _transports(pjsip_conf: str | None) -> list[tuple[str, list[tuple[str, str]]]]:
    if not pjsip_conf:
        return []
    return [(s.name, s.options) for s in parse_conf(pjsip_conf) if s.type == "transport"]


def _problems_in(lines: Sequence[str]) -> list[str]:
    return [line for line in lines if re.search(r"\b(ERROR|WARNING)\[", line)]


def apply_carrier(client: AsteriskClient, config: CarrierConfig) -> CarrierApplied:
    """Make the carrier in `client`'s container run `config`; nothing is written or reloaded when
    its files already match. A changed transport restarts that Asterisk (PJSIP does not reload
    transports); otherwise only the changed file's module is reloaded. Verified by asking it: the
    transport is bound, the account and the dialplan exist, and the reload logged no error."""
    files = render_carrier(config)
    live, (transports_out,) = client.read_managed_and_run("pjsip show transports")
    changed = tuple(name for name in FILES if live.get(name) != files[name])
    bound = f"{CARRIER_HOST}:{config.sip_port}"
    if not changed:
        if bound not in transports_out:
            raise CarrierError(
                f"the sandbox carrier in {client.container_name!r} is not listening on {bound}/udp",
                f"another program may hold that port (`ss -lunp 'sport = :{config.sip_port}'`); free it "
                f"and run `docker restart {client.container_name}`, or choose another CARRIER_PORT",
            )
        return CarrierApplied((), False)
    restart = _transports(live.get("pjsip.conf")) != _transports(files["pjsip.conf"])
    reloads = []
    if "pjsip.conf" in changed:
        reloads.append("module reload res_pjsip.so")
    if "extensions.conf" in changed:
        reloads.append("dialplan reload")
    result = client.reload(
        reloads,
        files={name: files[name] for name in changed},
        queries=(
            "pjsip show transports",
            f"pjsip show endpoint {config.username}",
            f"dialplan show {CONTEXT}",
        ),
        restart=restart,
    )
    transports_now, endpoint_out, dialplan_out = result.query_outputs
    problems = _problems_in(result.log_lines)
    if bound not in transports_now or any("could not be started" in line for line in result.log_lines):
        raise CarrierError(
            f"the sandbox carrier in {client.container_name!r} could not listen on {bound}/udp"
            + (f": {problems[0]}" if problems else ""),
            f"another program holds the port (`ss -lunp 'sport = :{config.sip_port}'`): free it and run "
            "`make up` again, or choose another CARRIER_PORT (and the provider's port)",
        )
    if problems or "Unable to find object" in endpoint_out or f"'{CONTEXT}'" not in dialplan_out:
        detail = problems[0] if problems else "the account or the dialplan is missing"
        raise CarrierError(
            f"the sandbox carrier in {client.container_name!r} did not take its config: {detail}",
            f"see `docker logs {client.container_name}`",
        )
    return CarrierApplied(changed, restart, () if restart else tuple(reloads))


def read_calls(client: AsteriskClient) -> list[CarrierCall]:
    """Every call in the carrier's log (empty before the first call)."""
    out = client.run_steps([f"cat {CALLS_LOG} 2>/dev/null; true"]).outputs[0]
    return parse_calls_log(out)
