"""What the reconciler asks of Asterisk besides writing files: the control channel.

`ControlChannel` is the interface; two implementations:
- `AmiChannel`: one kept AMI session (`reconciler.asterisk.ami`), ~0.1 ms a command. It imports
  no Docker: a reconciler beside Asterisk (same host or pod, AMI on loopback) needs no socket.
- `ExecChannel`: `asterisk -rx` through the existing `AsteriskClient` (`docker exec`, 70-90 ms a
  batch; with the local executor of a sidecar, `sh -c` beside Asterisk over the shared control
  socket, ~9 ms), for when AMI is not configured or not reachable.
`open_control(settings, client)` prefers AMI and falls back to exec, saying why in `note`.

Answers are the parsers' dataclasses (`reconciler.asterisk.parsers`), whichever channel gave
them, so callers do not care which one they hold. Secrets Asterisk prints (an auth's password in
PJSIPShowEndpoint) are never kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from reconciler.asterisk import parsers
from reconciler.asterisk.ami import AmiClient, AmiMessage, AmiUnavailable
from reconciler.asterisk.parsers import Contact, EndpointInfo, Registration
from reconciler.errors import ReconcilerError
from reconciler.settings import Settings

FULLY_BOOTED = "fully booted"
_CID_NUMBER = re.compile(r"<([^>]*)>")
# AMI's contact status words → the CLI's (parsers.Contact.status)
_CONTACT_STATUS = {
    "reachable": "Avail",
    "unreachable": "Unavail",
    "nonqualified": "NonQual",
    "unknown": "Unknown",
    "created": "Created",
    "removed": "Removed",
}
_NO_ENDPOINT = re.compile(r"^Unable to (?:find|retrieve) (?:object|endpoint)", re.M)


@runtime_checkable
class ControlChannel(Protocol):
    """The questions and commands the reconciler sends to one Asterisk."""

    kind: str  # "ami" | "exec"
    note: str | None  # why it is not the preferred channel (None for AMI)

    def command(self, cli: str) -> str:
        """One CLI command's text, as `asterisk -rx` prints it."""
        ...

    def commands(self, cli: Sequence[str]) -> list[str]:
        """Several CLI commands, in order; one text each."""
        ...

    def endpoint(self, name: str) -> EndpointInfo | None:
        """One endpoint with its auths, AORs, contacts and identifies; None when it does not exist."""
        ...

    def contacts(self) -> list[Contact]:
        """Every registered (dynamic) contact. Cheap at 10k endpoints: no endpoint is built."""
        ...

    def registrations(self) -> list[Registration]:
        """Every outbound registration and its state."""
        ...

    def fully_booted(self) -> bool:
        """Asterisk answers and has finished booting."""
        ...

    def close(self) -> None: ...


# --- AMI --------------------------------------------------------------------------------------


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _rtt_ms(usec: str | None) -> float | None:
    try:
        return int(usec or "") / 1000.0
    except ValueError:
        return None  # "N/A": never qualified


def _status(word: str | None) -> str:
    return _CONTACT_STATUS.get((word or "").lower(), word or "Unknown")


def contact_from_list(event: AmiMessage) -> Contact | None:
    """A `ContactList` event (PJSIPShowContacts) as a Contact; its ObjectName is `AOR;@HASH`."""
    name = event.get("ObjectName") or ""
    aor, _, digest = name.partition(";@")
    uri = event.get("Uri")
    if not aor or not uri:
        return None
    return Contact(aor, uri, digest[:10], _status(event.get("Status")), _rtt_ms(event.get("RoundtripUsec")))


def contact_from_status(event: AmiMessage) -> Contact | None:
    """A `ContactStatusDetail` event (PJSIPShowEndpoint); its ID is `AOR@@HASH` for a static
    contact, `AOR;@HASH` for a registered one."""
    aor, uri = event.get("AOR"), event.get("URI")
    if not aor or not uri:
        return None
    ident = event.get("ID") or ""
    digest = ident.partition("@@")[2] or ident.partition(";@")[2]
    return Contact(aor, uri, digest[:10], _status(event.get("Status")), _rtt_ms(event.get("RoundtripUsec")))


def endpoint_from_events(events: Sequence[AmiMessage]) -> EndpointInfo | None:
    """The events of PJSIPShowEndpoint as one EndpointInfo (the auth's password is dropped)."""
    detail = next((e for e in events if e.get("Event") == "EndpointDetail"), None)
    if detail is None:
        return None
    cid = detail.get("Callerid") or ""
    match = _CID_NUMBER.search(cid)
    busy_at = detail.get("DeviceStateBusyAt") or "0"
    contacts = tuple(
        c for e in events if e.get("Event") == "ContactStatusDetail" if (c := contact_from_status(e))
    )
    matches = tuple(m for e in events if e.get("Event") == "IdentifyDetail" for m in _split(e.get("Match")))
    return EndpointInfo(
        name=detail.get("ObjectName") or "",
        callerid=(match[1] if match else cid) or None,
        state=detail.get("DeviceState") or "Unknown",
        channels_in_use=int(detail.get("ActiveChannels") or 0),
        channel_limit=int(busy_at) if busy_at.isdigit() and int(busy_at) > 0 else None,
        contacts=contacts,
        aors=_split(detail.get("Aors")),
        transports=_split(detail.get("Transport")),
        in_auths=_split(detail.get("Auth")),
        out_auths=_split(detail.get("OutboundAuth")),
        identify_matches=matches,
    )


def _expires(next_reg: str | None) -> int | None:
    try:
        return int(next_reg or "")
    except ValueError:
        return None


def registration_from_event(event: AmiMessage) -> Registration | None:
    """An `OutboundRegistrationDetail` event as a Registration."""
    name = event.get("ObjectName")
    if not name:
        return None
    expires = _expires(event.get("NextReg"))
    return Registration(
        name=name,
        server_uri=event.get("ServerUri") or "",
        auth=(event.get("OutboundAuth") or "").partition(",")[0] or None,
        status=event.get("Status") or "Unknown",
        expires_s=expires,
        detail=f"(exp. {expires}s)" if expires is not None else "",
    )


class AmiChannel:
    """The control channel over one kept AMI session."""

    kind = "ami"
    note: str | None = None

    def __init__(self, client: AmiClient) -> None:
        self.client = client

    def command(self, cli: str) -> str:
        return self.client.command(cli, retry=not _restarts(cli))

    def commands(self, cli: Sequence[str]) -> list[str]:
        return [self.command(c) for c in cli]

    def endpoint(self, name: str) -> EndpointInfo | None:
        reply = self.client.action("PJSIPShowEndpoint", {"Endpoint": name})
        if not reply.ok:
            if _NO_ENDPOINT.search(reply.message):
                return None
            raise ReconcilerError(
                f"PJSIPShowEndpoint {name!r} failed: {reply.message}", "see the Asterisk log"
            )
        return endpoint_from_events(reply.events)

    def contacts(self) -> list[Contact]:
        reply = self.client.action("PJSIPShowContacts")
        if not reply.ok:  # "No Contacts found" is an Error reply
            return []
        return [c for e in reply.events if e.get("Event") == "ContactList" if (c := contact_from_list(e))]

    def registrations(self) -> list[Registration]:
        reply = self.client.action("PJSIPShowRegistrationsOutbound")
        if not reply.ok:
            return []
        return [
            r
            for e in reply.events
            if e.get("Event") == "OutboundRegistrationDetail"
            if (r := registration_from_event(e))
        ]

    def fully_booted(self) -> bool:
        try:
            return FULLY_BOOTED in self.client.command("core waitfullybooted", timeout_s=5.0)
        except AmiUnavailable:
            return False

    def close(self) -> None:
        self.client.close()


def _restarts(cli: str) -> bool:
    """A command that restarts or stops Asterisk must never be sent twice."""
    words = cli.split()
    return len(words) >= 2 and words[0] == "core" and words[1] in ("restart", "stop")


# --- docker exec --------------------------------------------------------------------------------


class Runner(Protocol):
    """What ExecChannel needs of `reconciler.asterisk.client.AsteriskClient`."""

    def run(self, *commands: str) -> list[str]: ...


class ExecChannel:
    """The control channel through `asterisk -rx` in the container (one exec per call)."""

    kind = "exec"

    def __init__(self, client: Runner, note: str | None = None) -> None:
        self.client = client
        self.note = note  # why this is not AMI

    def command(self, cli: str) -> str:
        return self.client.run(cli)[0]

    def commands(self, cli: Sequence[str]) -> list[str]:
        return self.client.run(*cli) if cli else []

    def endpoint(self, name: str) -> EndpointInfo | None:
        text = self.command(f"pjsip show endpoint {name}")
        if _NO_ENDPOINT.search(text):
            return None
        found = parsers.parse_endpoints(text)
        return found[0] if found else None

    def contacts(self) -> list[Contact]:
        return parsers.parse_contacts(self.command("pjsip show contacts"))

    def registrations(self) -> list[Registration]:
        return parsers.parse_registrations(self.command("pjsip show registrations"))

    def fully_booted(self) -> bool:
        try:
            return FULLY_BOOTED in self.command("core waitfullybooted")
        except ReconcilerError:
            return False

    def close(self) -> None:
        return None


# --- choosing -----------------------------------------------------------------------------------


AMI_SECRET_NAME = "RECONCILER_AMI_SECRET"  # also its name under Settings.secrets_dir (/run/secrets)


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def ami_secret(settings: Settings, client: Any = None) -> str | None:
    """The AMI secret: RECONCILER_AMI_SECRET, else the secret file, else
    `<secrets_dir>/RECONCILER_AMI_SECRET` (a Docker/Swarm secret), else read once through `client`
    from Asterisk's generated file and cached for the process. A local client (the sidecar) reads
    that file over the shared managed volume; it never asks Docker."""
    if settings.ami_secret:
        return settings.ami_secret
    if settings.ami_secret_file is not None:
        return _read_secret(Path(settings.ami_secret_file))
    from_secrets = _read_secret(Path(settings.secrets_dir) / AMI_SECRET_NAME)
    if from_secrets is not None or client is None:
        return from_secrets
    executor = getattr(client, "executor", None)
    if getattr(executor, "kind", "docker") == "local":
        return _read_secret(Path(settings.ami_container_secret_path))
    key = (getattr(client, "container_name", ""), settings.ami_container_secret_path)
    if key not in _SECRET_CACHE:
        try:
            out = client.run_steps([f"cat {settings.ami_container_secret_path} 2>/dev/null"]).outputs[0]
        except ReconcilerError:
            return None
        secret = out.strip()
        if not secret:
            return None
        _SECRET_CACHE[key] = secret
    return _SECRET_CACHE[key]


_SECRET_CACHE: dict[tuple[str, str], str] = {}


def open_control(settings: Settings, client: Any = None) -> ControlChannel:
    """AMI when it is enabled, has a secret and logs in; else `docker exec` through `client`, with
    the reason in the channel's `note`."""
    why: str
    if not settings.ami_enabled:
        why = "AMI is off (RECONCILER_AMI=off)"
    else:
        secret = ami_secret(settings, client)
        if secret is None:
            why = "no AMI secret (RECONCILER_AMI_SECRET, RECONCILER_AMI_SECRET_FILE, or the container's file)"
        else:
            ami = AmiClient(settings.ami_host, settings.ami_port, secret)
            try:
                ami.connect()
                return AmiChannel(ami)
            except ReconcilerError as exc:
                why = exc.message
    if client is None:
        raise ReconcilerError(
            f"no control channel to Asterisk: {why}",
            "configure AMI (RECONCILER_AMI_PORT, RECONCILER_AMI_SECRET) or give the reconciler Docker access",
        )
    local = getattr(getattr(client, "executor", None), "kind", "docker") == "local"
    return ExecChannel(
        client, f"using {'asterisk -rx over the control socket' if local else 'docker exec'}: {why}"
    )
