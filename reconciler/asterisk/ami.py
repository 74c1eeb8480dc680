"""A small synchronous client for the Asterisk Manager Interface (AMI), for one kept session.

Why our own and not a library (checked 2026-12 on the local PyPI mirror):
- panoramisk 1.4 (2021) is asyncio-only; the reconciler is synchronous and threaded (watch loop,
  HTTP server), so every call would need an event loop of its own.
- pyst2 0.5.1 (last release 2019) is unmaintained and predates Asterisk 14's `Command` format.
- asterisk-ami 0.1.7 runs a background listener thread with future callbacks and Python 2 shims,
  has no type hints, and its `Command` handling expects the old `--END COMMAND--` framing.
What the reconciler needs is small: log in, send one action at a time, read its response and, for
list actions, its events up to `EventList: Complete`. That is this module, about 250 lines,
tested against a fake server (framing, reconnect) and a real Asterisk 22 (tests/integration).

Protocol facts relied on (Asterisk 22.10, observed):
- a greeting line `Asterisk Call Manager/11.0.0`, then messages of `Key: Value` lines ending with
  an empty line (`\\r\\n\\r\\n`); an error `Message:` may end with a stray `\\n`;
- `Action: Command` answers `Response: Success` (or `Error` for an unknown command) with one
  `Output:` line per line of CLI output: joined with newlines plus a final newline, the text is
  byte for byte what `asterisk -rx` prints;
- a list action answers `EventList: start`, then one event per item, then an event with
  `EventList: Complete`; every one of them carries our `ActionID`;
- Asterisk closes idle, broken or restarted sessions. Before each action the client checks
  whether the server closed the socket and, if so, logs in again; when the session breaks while an
  action is under way the action is sent once more on a new session, unless the caller said it
  must not be repeated (`retry=False`, e.g. `core restart now`).

One request at a time under a lock: the client is safe to share between threads. The secret is
never logged, printed or put into an error message.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from reconciler.errors import AsteriskUnavailable, ReconcilerError

DEFAULT_PORT = 5038
DEFAULT_USER = "gitops"  # the user asterisk/ami-setup.sh writes into manager.conf
CONNECT_TIMEOUT_S = 2.0
ACTION_TIMEOUT_S = 30.0  # a res_pjsip reload at 10k endpoints takes up to ~9 s in realtime mode
GREETING_PREFIX = "Asterisk Call Manager/"
_EOL = "\r\n"
_END = b"\r\n\r\n"
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class AmiUnavailable(AsteriskUnavailable):
    """AMI cannot be reached or the session broke: retrying later may succeed."""


class AmiLoginRefused(ReconcilerError):
    """Asterisk refused the login (wrong secret, unknown user, or an address its ACL denies)."""


class AmiProtocolError(AmiUnavailable):
    """The peer said something that is not AMI (or not Asterisk 22's AMI)."""


@dataclass(frozen=True)
class AmiMessage:
    """One AMI message: its `Key: Value` lines in order (keys may repeat, e.g. `Output`)."""

    items: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of `key` (case-insensitive), or `default`."""
        lower = key.lower()
        return next((v for k, v in self.items if k.lower() == lower), default)

    def get_all(self, key: str) -> list[str]:
        lower = key.lower()
        return [v for k, v in self.items if k.lower() == lower]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def as_dict(self) -> dict[str, str]:
        """First value of each key (for list events, whose keys do not repeat)."""
        result: dict[str, str] = {}
        for k, v in self.items:
            result.setdefault(k, v)
        return result


@dataclass(frozen=True)
class AmiReply:
    """The response to one action and, for a list action, its events (without the Complete one)."""

    response: AmiMessage
    events: tuple[AmiMessage, ...] = ()

    @property
    def ok(self) -> bool:
        return (self.response.get("Response") or "").lower() in ("success", "goodbye")

    @property
    def message(self) -> str:
        return (self.response.get("Message") or "").strip()


def parse_message(block: bytes) -> AmiMessage:
    """One message (without its terminating empty line) into its key/value pairs."""
    items: list[tuple[str, str]] = []
    for line in block.decode("utf-8", errors="replace").split(_EOL):
        line = line.rstrip("\n")
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        # exactly one space after the colon: `Output:` keeps the CLI's own leading spaces
        items.append((key.strip(), value[1:] if value.startswith(" ") else value))
    return AmiMessage(tuple(items))


def encode_action(name: str, action_id: str, fields: Mapping[str, str]) -> bytes:
    """`Action: NAME` with its ActionID and fields; refuses values that would break the framing."""
    lines = [f"Action: {name}", f"ActionID: {action_id}"]
    for key, value in fields.items():
        if any(c in str(value) for c in "\r\n") or any(c in key for c in "\r\n:"):
            raise ReconcilerError(
                f"AMI field {key!r} of action {name} contains a line break",
                "AMI values are single lines: pass one command per call",
            )
        lines.append(f"{key}: {value}")
    return (_EOL.join(lines) + _EOL + _EOL).encode("utf-8")


def command_output(reply: AmiReply) -> str:
    """The CLI text of an `Action: Command` reply, as `asterisk -rx` prints it."""
    lines = reply.response.get_all("Output")
    if not lines:
        message = reply.message
        # Asterisk 22 says "Command output follows" also when there is no output at all.
        return "" if not message or message == "Command output follows" else message + "\n"
    return "\n".join(lines) + "\n"


@dataclass
class AmiStats:
    """What the session cost so far: actions sent, logins (the first one and each reconnect)."""

    actions: int = 0
    logins: int = 0


@dataclass
class AmiClient:
    """One AMI session to `host:port` as `username`, opened on first use and kept."""

    host: str
    port: int
    secret: str = field(repr=False)
    username: str = DEFAULT_USER
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    timeout_s: float = ACTION_TIMEOUT_S
    stats: AmiStats = field(default_factory=AmiStats)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._ids = itertools.count(1)
        self._prefix = f"gitops-{id(self):x}-"

    @property
    def where(self) -> str:
        return f"AMI at {self.host}:{self.port}"

    # --- the session ----------------------------------------------------------------------------

    def connect(self) -> None:
        """Open and log in now (normally done by the first action)."""
        with self._lock:
            self._ensure_session()

    def close(self) -> None:
        """Log off (best effort) and close the socket."""
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendall(encode_action("Logoff", self._next_id(), {}))
            self._drop()

    def __enter__(self) -> AmiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._buffer = b""

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def _peer_closed(self) -> bool:
        """Did the server close the kept socket while we were not looking (idle timeout, restart)?"""
        sock = self._sock
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            data = sock.recv(65536, socket.MSG_PEEK)
        except OSError:
            return True
        if not data:
            return True
        # Unsolicited data (an event despite `Events: off`): keep it in the buffer, it is skipped.
        self._buffer += sock.recv(65536)
        return False

    def _ensure_session(self) -> None:
        if self._sock is not None and not self._peer_closed():
            return
        self._drop()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except OSError as exc:
            raise AmiUnavailable(
                f"cannot connect to {self.where}: {exc.strerror or exc}",
                "check that Asterisk runs and AMI is enabled on that address and port "
                "(RECONCILER_AMI_HOST/RECONCILER_AMI_PORT, AMI_BIND/AMI_PORT of the image)",
            ) from exc
        self._sock = sock
        try:
            greeting = self._read_line(time.monotonic() + self.connect_timeout_s)
            if not greeting.startswith(GREETING_PREFIX):
                raise AmiProtocolError(
                    f"{self.where} did not greet as Asterisk's manager: {greeting[:80]!r}",
                    "point RECONCILER_AMI_PORT at Asterisk's AMI port",
                )
            action_id = self._next_id()
            sock.sendall(
                encode_action(
                    "Login", action_id, {"Username": self.username, "Secret": self.secret, "Events": "off"}
                )
            )
            reply = self._read_reply(action_id, time.monotonic() + self.timeout_s)
        except BaseException:
            self._drop()
            raise
        if not reply.ok:
            self._drop()
            raise AmiLoginRefused(
                f"{self.where} refused the login of user {self.username!r}: "
                f"{reply.message or 'no reason given'}",
                "the secret is wrong, the user does not exist, or the connection does not come from "
                "an address manager.conf permits (127.0.0.1): check RECONCILER_AMI_SECRET / the secret "
                "file against /etc/asterisk/managed/.gitops/ami.secret in the Asterisk container",
            )
        self.stats.logins += 1

    # --- reading --------------------------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        sock = self._sock
        if sock is None:
            raise AmiUnavailable(f"the session to {self.where} is closed", "retry")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        self._buffer += data
        if len(self._buffer) > _MAX_MESSAGE_BYTES:
            raise AmiProtocolError(f"{self.where} sent a message over 64 MiB", "check the AMI port")

    def _read_line(self, deadline: float) -> str:
        while b"\r\n" not in self._buffer:
            self._fill(deadline)
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line.decode("utf-8", errors="replace")

    def _messages(self, deadline: float) -> Iterator[AmiMessage]:
        while True:
            while _END not in self._buffer:
                self._fill(deadline)
            block, _, self._buffer = self._buffer.partition(_END)
            message = parse_message(block)
            if message.items:
                yield message

    def _read_reply(self, action_id: str, deadline: float) -> AmiReply:
        response: AmiMessage | None = None
        events: list[AmiMessage] = []
        for message in self._messages(deadline):
            if message.get("ActionID") != action_id:
                continue  # an event of nobody's action, or a late answer to an abandoned one
            if response is None:
                response = message
                listing = (message.get("EventList") or "").lower() == "start"
                if not listing:
                    return AmiReply(response)
                continue
            if (message.get("EventList") or "").lower() == "complete":
                return AmiReply(response, tuple(events))
            events.append(message)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- actions --------------------------------------------------------------------------------

    def action(
        self,
        name: str,
        fields: Mapping[str, str] | None = None,
        *,
        timeout_s: float | None = None,
        retry: bool = True,
    ) -> AmiReply:
        """Send one action and return its reply (an error reply is returned, not raised).

        When the session broke under the action it is sent once more on a new session, unless
        `retry` is False (an action that must not run twice)."""
        fields = dict(fields or {})
        timeout = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            for attempt in (1, 2):
                self._ensure_session()
                action_id = self._next_id()
                try:
                    assert self._sock is not None
                    self._sock.sendall(encode_action(name, action_id, fields))
                    self.stats.actions += 1
                    return self._read_reply(action_id, time.monotonic() + timeout)
                except TimeoutError as exc:
                    self._drop()  # a late reply must not be read as the next action's
                    raise AmiUnavailable(
                        f"{self.where} did not answer {name} within {timeout:g} s",
                        "Asterisk may be busy (a large reload) or stuck; retry, or raise the timeout",
                    ) from exc
                except OSError as exc:
                    self._drop()
                    if attempt == 2 or not retry:
                        raise AmiUnavailable(
                            f"the session to {self.where} broke during {name}: {exc}",
                            "Asterisk restarted or closed the session; retry once it is up",
                        ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def command(self, cli: str, *, timeout_s: float | None = None, retry: bool = True) -> str:
        """Run one CLI command; return its text as `asterisk -rx` prints it.

        An unknown command is not an exception: its text says so, as on the CLI."""
        reply = self.action("Command", {"Command": cli}, timeout_s=timeout_s, retry=retry)
        if not reply.ok and not reply.response.get_all("Output") and "Permission denied" in reply.message:
            raise AmiLoginRefused(
                f"{self.where}: user {self.username!r} may not run CLI commands",
                "manager.conf must give it the `command` class (asterisk/ami-setup.sh does)",
            )
        return command_output(reply)
