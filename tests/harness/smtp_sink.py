"""An SMTP server on 127.0.0.1 that keeps every message it receives, for the voicemail-to-email tests.

`SmtpSink()` (a context manager) runs aiosmtpd's `Controller` on a reserved port in a thread. Each
accepted message is parsed with the modern email policy into an `email.message.EmailMessage` and
kept with its envelope (`Received`: mail_from, rcpt_tos, message), so a test asserts the recipient,
the subject and `attachments(message)`: (filename, content type, bytes) of each attached part
(app_voicemail with `attach=yes` attaches `msg0000.wav`, `audio/x-wav`). No TLS; with
`credentials=(user, password)` AUTH PLAIN/LOGIN is offered and required before MAIL (over plain
TCP: loopback only). The voicemail side: voicemail.conf `mailcmd=/usr/bin/msmtp -C <file> -t`, msmtp's
config `host 127.0.0.1`, `port <sink.port>`, `tls off`, `auth off` (or `auth on` + user/password).
"""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.harness import ports
from tests.harness.waiting import wait_until

# aiosmtpd's warnings about AUTH without TLS (the point here) are filtered in pyproject.toml.


@dataclass(frozen=True)
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    authenticated_as: str | None


def attachments(message: EmailMessage) -> list[tuple[str | None, str, bytes]]:
    """(filename, content type, decoded bytes) of every attachment of `message`."""
    out: list[tuple[str | None, str, bytes]] = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        out.append(
            (part.get_filename(), part.get_content_type(), payload if isinstance(payload, bytes) else b"")
        )
    return out


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        user = login.decode() if isinstance(login, bytes) else None
        self._sink._add(Received(envelope.mail_from or "", tuple(envelope.rcpt_tos), message, user))
        return "250 Message accepted for delivery"


class SmtpSink:
    """Keeps every message sent to 127.0.0.1:`port`; `credentials` make AUTH mandatory."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.port = ports.reserve_port()
        self.host = ports.LOOPBACK
        self.credentials = credentials
        self._messages: list[Received] = []
        self._lock = threading.Lock()
        self.auth_failures = 0
        kwargs: dict[str, Any] = {"auth_require_tls": False}
        if credentials is not None:
            kwargs.update(auth_required=True, authenticator=self._authenticate)
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, ready_timeout=10, **kwargs
        )
        self._started = False

    def _authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            self.credentials is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password)
            == (self.credentials[0].encode(), self.credentials[1].encode())
        )
        if not ok:
            self.auth_failures += 1
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _add(self, received: Received) -> None:
        with self._lock:
            self._messages.append(received)

    def start(self) -> Self:
        """Listen (returns when the server accepts connections)."""
        if not self._started:
            self._controller.start()
            self._started = True
        return self

    def stop(self) -> None:
        """Stop listening and release the port. Idempotent."""
        if self._started:
            self._controller.stop()
            self._started = False
        ports.release_port(self.port)

    def messages(self) -> list[Received]:
        """Every message accepted so far, oldest first."""
        with self._lock:
            return list(self._messages)

    def wait_messages(self, count: int = 1, timeout_s: float = 20.0) -> list[Received]:
        """Wait until `count` messages arrived (or `timeout_s`); return those received."""
        wait_until(lambda: len(self.messages()) >= count, timeout_s, interval_s=0.1)
        return self.messages()

    def msmtprc(self, sender: str = "pbx@example.test") -> str:
        """An msmtp configuration that sends to this sink (no TLS; AUTH when the sink requires it)."""
        lines = [
            "defaults",
            "tls off",
            "account default",
            f"host {self.host}",
            f"port {self.port}",
            f"from {sender}",
        ]
        if self.credentials is None:
            lines.append("auth off")
        else:
            lines += ["auth plain", f"user {self.credentials[0]}", f"password {self.credentials[1]}"]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
