"""A small SIP client over plain sockets: requests of one dialog, digest answers, response parsing,
and a channel that retransmits over UDP as RFC 3261 says.

Shared by `check-provider` (reconciler.observe.sipcheck: OPTIONS and REGISTER to a provider) and
the PBX readiness probe (reconciler.asterisk.sipready: an OPTIONS to the PBX's own transport). The
messages are few and simple, and the point is to see exactly what the other side says.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field

T1 = 0.5  # RFC 3261 Timer T1: first UDP retransmission interval


@dataclass(frozen=True)
class SipTarget:
    """Everything check-provider needs about one provider, with the password already resolved."""

    name: str
    host: str
    port: int
    transport: str  # udp | tcp | tls
    username: str
    password: str = field(repr=False)
    password_ref: str | None = None  # the secret's name (e.g. PBX_PROVIDER_PASSWORD), for hints
    register: bool = True
    ca_file: str | None = None  # extra trust anchor for a provider with a private CA


@dataclass(frozen=True)
class SipResponse:
    status: int
    reason: str
    headers: dict[str, list[str]]

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class SipTimeout(Exception):
    """No final response within the time allowed."""


# ---------------------------------------------------------------------------------------------
# Message building and parsing


_COMPACT = {"i": "call-id", "m": "contact", "f": "from", "t": "to", "v": "via", "l": "content-length"}


def parse_response(data: bytes) -> SipResponse | None:
    """Parse a SIP response's status line and headers; None when `data` is a request or garbage."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    match = re.match(r"SIP/2\.0\s+(\d{3})\s*(.*)", lines[0])
    if not match:
        return None
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if ":" not in line:
            continue
        name, value = line.split(":", 1)
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    return SipResponse(int(match.group(1)), match.group(2).strip(), headers)


def parse_challenge(value: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y", qop="auth"` → {"realm": "x", "nonce": "y", "qop": "auth"}."""
    scheme, _, params = value.strip().partition(" ")
    result = {"scheme": scheme.lower()}
    for match in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*("([^"]*)"|[^\s,]+)', params):
        result[match.group(1).lower()] = match.group(3) if match.group(3) is not None else match.group(2)
    return result


def digest_authorization(
    challenge: dict[str, str],
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization header value answering a Digest MD5 challenge (RFC 2617, qop=auth or none)."""
    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # SIP digest is MD5 by definition

    ha1 = md5(f"{username}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce = cnonce or secrets.token_hex(8)
        nc_text = f"{nc:08x}"
        response = md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        parts += [f'response="{response}"', "qop=auth", f"nc={nc_text}", f'cnonce="{cnonce}"']
    else:
        parts.append(f'response="{md5(f"{ha1}:{nonce}:{ha2}")}"')
    parts.append("algorithm=MD5")
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


def host_for_uri(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class SipDialog:
    """Builds requests that share a Call-ID, a From tag and a growing CSeq (one registration)."""

    def __init__(self, target: SipTarget, local: tuple[str, int], user_agent: str) -> None:
        self.target = target
        self.local = local
        self.user_agent = user_agent
        self.call_id = secrets.token_hex(12) + "@asterisk-gitops"
        self.tag = secrets.token_hex(6)
        self.cseq = 0
        self.branch = ""

    @property
    def server_uri(self) -> str:
        return f"sip:{host_for_uri(self.target.host)}:{self.target.port}"

    def request(self, method: str, extra: list[str], to_user: str | None = None) -> bytes:
        self.cseq += 1
        self.branch = "z9hG4bK" + secrets.token_hex(8)
        transport = self.target.transport.upper()
        lhost, lport = self.local
        user = self.target.username
        to_uri = f"sip:{to_user}@{host_for_uri(self.target.host)}" if to_user else self.server_uri
        lines = [
            f"{method} {self.server_uri} SIP/2.0",
            f"Via: SIP/2.0/{transport} {host_for_uri(lhost)}:{lport};branch={self.branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{host_for_uri(self.target.host)}>;tag={self.tag}",
            f"To: <{to_uri}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"User-Agent: {self.user_agent}",
            *extra,
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---------------------------------------------------------------------------------------------
# Transports


class SipChannel:
    """A connection (or connected UDP socket) to the provider: send a request, get its final response."""

    def __init__(self, sock: socket.socket, stream: bool) -> None:
        self.sock = sock
        self.stream = stream
        self._buffer = b""

    @property
    def local(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def transact(self, message: bytes, call_id: str, cseq: int, timeout: float) -> SipResponse:
        """Send `message`, retransmit over UDP, and return the first final response matching it.

        Raises SipTimeout, or ConnectionRefusedError when ICMP says nothing listens (UDP)."""
        deadline = time.monotonic() + timeout
        interval = T1
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise SipTimeout()
            if now >= next_send:
                self.sock.sendall(message) if self.stream else self.sock.send(message)
                if self.stream:
                    next_send = deadline  # reliable transports never retransmit
                else:
                    next_send = now + interval
                    interval = min(interval * 2, 4.0)
            self.sock.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()))
            try:
                for data in self._receive():
                    response = parse_response(data)
                    if response is None or response.status < 200:
                        continue  # a request from the server, or 100 Trying
                    if response.header("call-id") != call_id:
                        continue
                    if not (response.header("cseq") or "").startswith(f"{cseq} "):
                        continue  # a late answer to an earlier retransmission
                    return response
            except TimeoutError:
                continue

    def _receive(self) -> list[bytes]:
        if not self.stream:
            return [self.sock.recv(65535)]
        chunk = self.sock.recv(65535)
        if not chunk:
            raise ConnectionResetError("the provider closed the connection")
        self._buffer += chunk
        messages = []
        while b"\r\n\r\n" in self._buffer:
            head, rest = self._buffer.split(b"\r\n\r\n", 1)
            length_match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
            length = int(length_match.group(1)) if length_match else 0
            if len(rest) < length:
                break
            messages.append(head + b"\r\n\r\n" + rest[:length])
            self._buffer = rest[length:].lstrip(b"\r\n")
        return messages


def open_channel(target: SipTarget, address: tuple, timeout: float) -> SipChannel:
    """Open a channel to `address` using the target's transport (TLS verifies certificate and name)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    if target.transport == "udp":
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.connect(address)
        return SipChannel(sock, stream=False)
    sock = socket.create_connection(address[:2], timeout=timeout)
    if target.transport == "tls":
        context = ssl.create_default_context(cafile=target.ca_file)
        try:
            sock = context.wrap_socket(sock, server_hostname=target.host)
        except BaseException:
            sock.close()
            raise
    return SipChannel(sock, stream=True)
