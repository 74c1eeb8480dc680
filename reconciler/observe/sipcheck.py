"""`check-provider`: can this PBX reach its SIP provider and authenticate with the configured account?

Four steps, each with a verdict and, on failure, what to fix: DNS resolution, transport connect
(TCP, TLS with certificate checks, or UDP reachability), a SIP OPTIONS round trip, and a REGISTER
with digest authentication followed by an unregister (Expires: 0). A small SIP client over plain
sockets: the messages are few and simple, and the point is to see exactly what the provider says.

The test REGISTER uses the PBX's own account, so on a provider that keeps one binding per account
it replaces the PBX's binding and the unregister removes it. `restore_pbx_registration` then makes
the PBX's Asterisk register again (through an AsteriskClient) and waits until it is registered.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from reconciler.asterisk.parsers import Registration, parse_registrations
from reconciler.asterisk.sip import (
    SipChannel,
    SipDialog,
    SipResponse,
    SipTarget,
    SipTimeout,
    digest_authorization,
    host_for_uri,
    open_channel,
    parse_challenge,
)
from reconciler.errors import ReconcilerError
from reconciler.observe.verdict import Finding as Step
from reconciler.observe.verdict import Verdict

USER_AGENT = "asterisk-gitops check-provider"

# ---------------------------------------------------------------------------------------------
# The steps


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _password_hint(target: SipTarget) -> str:
    where = f"check {target.password_ref}" if target.password_ref else "check the provider's password"
    return f"the password for {target.name} is wrong: {where} (env, .env file or /run/secrets)"


def check_dns(target: SipTarget) -> tuple[Step, tuple | None]:
    """Resolve the provider's host; an IP literal needs no lookup."""
    if _is_ip_literal(target.host):
        return Step("DNS", Verdict.PASS, f"{target.host} is an IP address: no lookup needed"), (
            target.host,
            target.port,
        )
    kind = socket.SOCK_DGRAM if target.transport == "udp" else socket.SOCK_STREAM
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=kind)
    except socket.gaierror as exc:
        return Step(
            "DNS",
            Verdict.FAIL,
            f"cannot resolve {target.host}: {exc.strerror}",
            "check the provider's host name for typos, and that this machine's DNS resolver works "
            "(try `getent hosts " + target.host + "`)",
        ), None
    # IPv4 first: the PBX's transports bind IPv4 addresses, so Asterisk would use those too.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    return Step("DNS", Verdict.PASS, f"{target.host} → {', '.join(addresses)}"), infos[0][4]


def check_connect(target: SipTarget, address: tuple, timeout: float) -> tuple[Step, SipChannel | None]:
    """Open the transport: TCP handshake, TLS handshake with certificate checks, or a UDP socket."""
    where = f"{address[0]}:{address[1]}/{target.transport}"
    try:
        channel = open_channel(target, address, timeout)
    except ssl.SSLCertVerificationError as exc:
        return Step(
            "connect",
            Verdict.FAIL,
            f"TLS certificate of {target.host} not accepted: {exc.verify_message or exc.reason}",
            "the provider's certificate is expired, self-signed or issued for another name: use the exact "
            "host name the certificate names, or ask the provider for a valid certificate (a private CA: "
            "pass it with --ca-file)",
        ), None
    except ssl.SSLError as exc:
        return Step(
            "connect",
            Verdict.FAIL,
            f"TLS handshake with {where} failed: {exc.reason or exc}",
            "the port may not speak TLS: check the provider's TLS port (often 5061) and transport",
        ), None
    except ConnectionRefusedError:
        return Step(
            "connect",
            Verdict.FAIL,
            f"connection to {where} refused: nothing listens there",
            f"check the provider's port ({target.port}) and transport ({target.transport}) in the desired "
            "state; the provider's documentation names both",
        ), None
    except (TimeoutError, OSError) as exc:
        return Step(
            "connect",
            Verdict.FAIL,
            f"cannot connect to {where}: {getattr(exc, 'strerror', None) or exc or 'timed out'}",
            "a firewall may drop the traffic, or the port is wrong: check port and transport, and that "
            "outgoing SIP is allowed from this network",
        ), None
    if target.transport == "tls":
        return Step("connect", Verdict.PASS, f"TLS to {where}: certificate valid for {target.host}"), channel
    if target.transport == "tcp":
        return Step("connect", Verdict.PASS, f"TCP connection to {where} established"), channel
    return Step(
        "connect", Verdict.PASS, f"UDP socket to {where} open (reachability shown by OPTIONS)"
    ), channel


def _options(target: SipTarget, channel: SipChannel, timeout: float) -> SipResponse:
    dialog = SipDialog(target, channel.local, USER_AGENT)
    message = dialog.request("OPTIONS", ["Accept: application/sdp"])
    return channel.transact(message, dialog.call_id, dialog.cseq, timeout)


def check_options(target: SipTarget, channel: SipChannel, timeout: float) -> list[Step]:
    """Send OPTIONS. Over UDP this is also the reachability test, reported as the connect step."""
    where = f"{target.host}:{target.port}/{target.transport}"
    steps: list[Step] = []
    started = time.monotonic()
    try:
        response = _options(target, channel, timeout)
    except ConnectionRefusedError:
        return [
            Step(
                "connect",
                Verdict.FAIL,
                f"{where}: port unreachable (ICMP): nothing listens on this UDP port",
                f"check the provider's port ({target.port}) and transport ({target.transport}) in the "
                "desired state",
            )
        ]
    except SipTimeout:
        step = "connect" if target.transport == "udp" else "OPTIONS"
        return [
            Step(
                step,
                Verdict.FAIL,
                f"no SIP answer from {where} within {timeout:g} s",
                "nothing answered: check host, port and transport; a firewall may drop SIP"
                if target.transport == "udp"
                else "the port accepts connections but does not answer SIP: check port and transport",
            )
        ]
    except (ConnectionResetError, OSError) as exc:
        return [Step("OPTIONS", Verdict.FAIL, f"{where}: {exc}", "check port and transport")]
    rtt_ms = (time.monotonic() - started) * 1000
    if target.transport == "udp":
        steps.append(Step("connect", Verdict.PASS, f"{where} answers over UDP"))
    server = response.header("server") or response.header("user-agent")
    about = f" ({server})" if server else ""
    if response.status >= 500:
        steps.append(
            Step(
                "OPTIONS",
                Verdict.FAIL,
                f"{response.status} {response.reason}{about} after {rtt_ms:.0f} ms",
                "the provider answers but reports a server error: try later or contact the provider",
            )
        )
    else:
        # 401/403/404/405 still prove a SIP server is there: providers often refuse unauthenticated OPTIONS.
        steps.append(
            Step("OPTIONS", Verdict.PASS, f"{response.status} {response.reason}{about} in {rtt_ms:.0f} ms")
        )
    return steps


def _register(
    target: SipTarget, channel: SipChannel, expires: int, timeout: float, dialog: SipDialog | None = None
) -> tuple[SipResponse, bool, SipDialog]:
    """REGISTER (answering one digest challenge); returns the final response and whether we authenticated."""
    dialog = dialog or SipDialog(target, channel.local, USER_AGENT)
    lhost, lport = channel.local
    transport_param = "" if target.transport == "udp" else f";transport={target.transport}"
    contact = f"Contact: <sip:{target.username}@{host_for_uri(lhost)}:{lport}{transport_param}>"
    base = [contact, f"Expires: {expires}"]

    def send(extra: list[str]) -> SipResponse:
        message = dialog.request("REGISTER", base + extra, to_user=target.username)
        return channel.transact(message, dialog.call_id, dialog.cseq, timeout)

    response = send([])
    if response.status not in (401, 407):
        return response, False, dialog
    header = "www-authenticate" if response.status == 401 else "proxy-authenticate"
    challenge = parse_challenge(response.header(header) or "")
    if challenge.get("scheme") != "digest" or challenge.get("algorithm", "MD5").upper() != "MD5":
        return response, False, dialog
    answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
    uri = dialog.server_uri
    authorization = digest_authorization(challenge, "REGISTER", uri, target.username, target.password)
    return send([f"{answer}: {authorization}"]), True, dialog


def check_register(target: SipTarget, channel: SipChannel, timeout: float) -> list[Step]:
    """REGISTER with the configured credentials, then remove the binding again (Expires: 0)."""
    try:
        response, authenticated, dialog = _register(target, channel, 60, timeout)
    except SipTimeout:
        return [
            Step(
                "REGISTER",
                Verdict.FAIL,
                f"no answer to REGISTER within {timeout:g} s",
                "the provider answered OPTIONS but not REGISTER: check that registration is enabled for "
                "this account, or raise --timeout",
            )
        ]
    except OSError as exc:
        return [Step("REGISTER", Verdict.FAIL, f"REGISTER failed: {exc}", "run the check again")]
    code = f"{response.status} {response.reason}"
    if 200 <= response.status < 300:
        how = "after digest authentication" if authenticated else "without authentication"
        steps = [Step("REGISTER", Verdict.PASS, f"{code} {how} as {target.username}")]
        steps.append(_unregister(target, channel, timeout, dialog))
        return steps
    if response.status in (401, 403, 407) and authenticated:
        fix = _password_hint(target)
        if response.status == 403:
            fix += f"; or the user name {target.username!r} is not the provider's auth user"
        return [Step("REGISTER", Verdict.FAIL, f"{code} after authentication", fix)]
    if response.status in (401, 407):
        challenge = response.header("www-authenticate") or response.header("proxy-authenticate") or ""
        return [
            Step(
                "REGISTER",
                Verdict.FAIL,
                f"{code}: unsupported challenge {challenge[:60]!r}",
                "the provider asks for an authentication scheme other than Digest MD5",
            )
        ]
    if response.status == 404:
        return [
            Step(
                "REGISTER",
                Verdict.FAIL,
                f"{code}: the provider does not know user {target.username!r}",
                "check the provider's username in the desired state (the account name the provider gave you)",
            )
        ]
    if response.status == 403:
        return [
            Step(
                "REGISTER",
                Verdict.FAIL,
                f"{code} before authentication",
                "the provider refuses this account or this source address: check the username, and whether "
                "the provider requires registering from an allowed IP",
            )
        ]
    return [
        Step(
            "REGISTER",
            Verdict.FAIL,
            code,
            "unexpected answer to REGISTER: compare the account settings with the provider's documentation",
        )
    ]


def _unregister(target: SipTarget, channel: SipChannel, timeout: float, dialog: SipDialog) -> Step:
    try:
        response, _, _ = _register(target, channel, 0, timeout, dialog)
    except (SipTimeout, OSError) as exc:
        return Step("unregister", Verdict.FAIL, f"no answer: {exc or 'timeout'}", "harmless: expires in 60 s")
    if 200 <= response.status < 300:
        return Step("unregister", Verdict.PASS, f"{response.status} {response.reason}: test binding removed")
    return Step(
        "unregister",
        Verdict.FAIL,
        f"{response.status} {response.reason}",
        "harmless: the test binding expires by itself within 60 s",
    )


STEP_NAMES = ("DNS", "connect", "OPTIONS", "REGISTER", "unregister")


def run_checks(
    target: SipTarget, timeout: float = 5.0, on_step: Callable[[Step], None] | None = None
) -> list[Step]:
    """Run every step in order, stopping at the first failure; later steps are reported as SKIP."""
    steps: list[Step] = []

    def add(step: Step) -> None:
        steps.append(step)
        if on_step:
            on_step(step)

    def finish() -> list[Step]:
        done = {s.name for s in steps}
        for name in STEP_NAMES:
            if name not in done and not (name == "unregister" and not target.register):
                add(Step(name, Verdict.SKIP, "not run: an earlier step failed"))
        return steps

    dns, address = check_dns(target)
    add(dns)
    if address is None:
        return finish()
    connect, channel = check_connect(target, address, timeout)
    if channel is None or target.transport != "udp":
        add(connect)  # over UDP the OPTIONS answer decides the connect step
    if channel is None:
        return finish()
    try:
        for step in check_options(target, channel, timeout):
            add(step)
        if any(s.verdict is Verdict.FAIL for s in steps):
            return finish()
        if not target.register:
            add(Step("REGISTER", Verdict.SKIP, "register: false in the desired state: not tried"))
            return steps
        for step in check_register(target, channel, timeout):
            add(step)
    finally:
        channel.close()
    return finish()


def all_passed(steps: list[Step]) -> bool:
    """True when no step failed (skipped-by-configuration steps are fine)."""
    return all(s.verdict is not Verdict.FAIL for s in steps) and not any(
        s.verdict is Verdict.SKIP and s.detail.startswith("not run") for s in steps
    )


def register_was_sent(steps: list[Step]) -> bool:
    """True when the REGISTER step ran (passed or failed): the provider may hold our test binding."""
    return any(s.name == "REGISTER" and s.verdict is not Verdict.SKIP for s in steps)


# ---------------------------------------------------------------------------------------------
# Restoring the PBX's own registration after the test REGISTER


RESTORE_TIMEOUT_S = 15.0
RESTORE_POLL_S = 0.5


class AsteriskCli(Protocol):
    """What the restore step needs of `reconciler.asterisk.client.AsteriskClient`."""

    container_name: str

    def run(self, *commands: str) -> list[str]: ...


def registration_name(provider: str) -> str:
    """The rendered name of the PBX's outbound registration with `provider` (templates/pjsip.conf.j2)."""
    return f"{provider}-reg"


def _find_registration(output: str, name: str) -> Registration | None:
    return next((r for r in parse_registrations(output) if r.name == name), None)


def _new_attempt_seen(before: Registration, now: Registration) -> bool:
    """Whether `now` shows a registration attempt made after `before` was read.

    `send register` unregisters first (`Unregistered`, seen for about a second); a state other
    than the one before is news too; and every answer restarts the expiry (`exp. Ns`: the
    registration's lifetime, or the time until the retry after a rejection), which otherwise only
    counts down.
    """
    if now.status == "Unregistered" or now.status != before.status:
        return True
    return now.expires_s is not None and before.expires_s is not None and now.expires_s > before.expires_s


def _manual_restore_fix(provider: str, container: str) -> str:
    command = f'asterisk -rx "pjsip send register {registration_name(provider)}"'
    return (
        f"make the PBX register again: `docker exec {container} {command}` (or `{command}` inside "
        "it), then `reconciler status` shows whether the provider accepted it"
    )


def restore_pbx_registration(
    client: AsteriskCli,
    provider: str,
    timeout_s: float = RESTORE_TIMEOUT_S,
    poll_s: float = RESTORE_POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Step:
    """Make the PBX send a fresh REGISTER to `provider` and wait until Asterisk says `Registered`.

    Needed after a test REGISTER with the PBX's account: a provider with one binding per account
    (max_contacts = 1) has replaced the PBX's binding with the test's, and the unregister removed
    it, while Asterisk still shows `Registered` until its next refresh. `pjsip send register`
    unregisters and registers again; its outcome counts only once a new attempt was seen (see
    `_new_attempt_seen`): the old `Registered` proves nothing, and neither does an old `Rejected`.

    WARN (not a failure) when the PBX's Asterisk cannot be reached; SKIP when the PBX keeps no
    registration with this provider; FAIL when it is not registered again within `timeout_s`.
    """
    name = registration_name(provider)
    container = client.container_name
    fix = _manual_restore_fix(provider, container)
    try:
        (before_output,) = client.run("pjsip show registrations")
    except ReconcilerError as exc:
        return Step(
            "restore",
            Verdict.WARN,
            f"cannot reach the PBX's Asterisk ({exc.message}): if {provider} keeps one binding per "
            "account, the test REGISTER replaced the PBX's and the PBX stays unregistered there until "
            "its next refresh",
            fix + "; pass --container NAME to let check-provider do it",
        )
    before = _find_registration(before_output, name)
    if before is None:
        return Step(
            "restore",
            Verdict.SKIP,
            f"the PBX ({container}) keeps no registration {name}: nothing to restore",
        )
    started = clock()
    deadline = started + timeout_s
    refreshed = False
    current: Registration | None = before
    try:
        _, output = client.run(f"pjsip send register {name}", "pjsip show registrations")
        while True:
            current = _find_registration(output, name)
            if current is not None:
                refreshed = refreshed or _new_attempt_seen(before, current)
                if refreshed and current.status == "Registered":
                    return Step(
                        "restore",
                        Verdict.PASS,
                        f"the PBX re-registered to {provider} ({clock() - started:.1f} s)",
                    )
                if refreshed and current.status == "Rejected":
                    break  # the attempt is over: Asterisk retries later (or never, on bad credentials)
            if clock() >= deadline:
                break
            sleep(poll_s)
            (output,) = client.run("pjsip show registrations")
    except ReconcilerError as exc:
        return Step(
            "restore", Verdict.FAIL, f"lost the PBX's Asterisk while re-registering: {exc.message}", fix
        )
    if current is None:
        state = "gone"
    elif not refreshed:
        state = f"still the old {current.status} (no new REGISTER seen)"
    else:
        state = f"{current.status}" + (f" ({current.detail})" if current.detail else "")
    return Step(
        "restore",
        Verdict.FAIL,
        f"the PBX's registration with {provider} is {state} after {clock() - started:.1f} s",
        fix,
    )
