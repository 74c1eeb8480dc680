"""The AMI client against a tiny fake AMI server on 127.0.0.1: framing, lists, login, reconnect.

The fake speaks what Asterisk 22.10 was observed to send (see reconciler/asterisk/ami.py); the
same behaviours run against a real Asterisk in tests/integration/test_control_channel.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from reconciler.asterisk.ami import (
    AmiClient,
    AmiLoginRefused,
    AmiUnavailable,
    command_output,
    encode_action,
    parse_message,
)
from reconciler.asterisk.control import AmiChannel
from reconciler.errors import ReconcilerError

SECRET = "s3cret-0123456789abcdef"
VERSION = "Asterisk 22.10.1 built by nobody"


def _reply(fields: list[tuple[str, str]]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n").encode()


class FakeAmi:
    """Accepts sessions one after another; `close_after` closes a session after that many actions
    (without answering the last one when `drop_unanswered`)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sessions = 0
        self.actions: list[dict[str, str]] = []
        self.close_after: int | None = None
        self.drop_unanswered = False
        self.handlers: dict[str, Callable[[dict[str, str]], bytes]] = {}
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.sessions += 1
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        conn.sendall(b"Asterisk Call Manager/11.0.0\r\n")
        buffer = b""
        count = 0
        logged_in = False
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            block, _, buffer = buffer.partition(b"\r\n\r\n")
            action = parse_message(block).as_dict()
            self.actions.append(action)
            count += 1
            if self.close_after is not None and count >= self.close_after and self.drop_unanswered:
                self.close_after = None
                return
            conn.sendall(self._answer(action, logged_in))
            if action.get("Action") == "Login" and action.get("Secret") == SECRET:
                logged_in = True
            if self.close_after is not None and count >= self.close_after:
                self.close_after = None
                return

    def _answer(self, action: dict[str, str], logged_in: bool) -> bytes:
        aid = action.get("ActionID", "")
        name = action.get("Action", "")
        if name == "Login":
            ok = action.get("Secret") == SECRET
            return _reply(
                [
                    ("Response", "Success" if ok else "Error"),
                    ("ActionID", aid),
                    ("Message", "Authentication accepted" if ok else "Authentication failed"),
                ]
            )
        if not logged_in:
            return _reply([("Response", "Error"), ("ActionID", aid), ("Message", "Permission denied")])
        if name in self.handlers:
            return self.handlers[name](action)
        if name == "Command":
            return _reply(
                [
                    ("Response", "Success"),
                    ("ActionID", aid),
                    ("Message", "Command output follows"),
                    ("Output", VERSION if action["Command"] == "core show version" else ""),
                    *([("Output", "  indented  "), ("Output", "")] if action["Command"] == "two" else []),
                ]
            )
        return _reply([("Response", "Error"), ("ActionID", aid), ("Message", "Invalid/unknown command\n")])

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake() -> Iterator[FakeAmi]:
    server = FakeAmi()
    yield server
    server.close()


def client(fake: FakeAmi, secret: str = SECRET) -> AmiClient:
    return AmiClient("127.0.0.1", fake.port, secret, timeout_s=2.0)


def test_a_command_logs_in_once_and_returns_the_text_as_the_cli_prints_it(fake: FakeAmi) -> None:
    ami = client(fake)
    assert ami.command("core show version") == VERSION + "\n"
    assert ami.command("core show version") == VERSION + "\n"
    assert fake.sessions == 1 and ami.stats.logins == 1
    login = fake.actions[0]
    assert login["Action"] == "Login" and login["Events"] == "off"


def test_output_lines_keep_their_leading_spaces_and_empty_lines() -> None:
    block = b"Response: Success\r\nActionID: 1\r\nOutput: \r\nOutput:   Contact:  x  \r\nOutput: \r\n"
    from reconciler.asterisk.ami import AmiReply

    assert command_output(AmiReply(parse_message(block))) == "\n  Contact:  x  \n\n"


def test_a_list_action_collects_its_events_until_eventlist_complete(fake: FakeAmi) -> None:
    def contacts(action: dict[str, str]) -> bytes:
        aid = action["ActionID"]
        return (
            _reply([("Response", "Success"), ("ActionID", aid), ("EventList", "start")])
            + _reply([("Event", "SomethingElse"), ("ActionID", "not-ours")])
            + _reply(
                [
                    ("Event", "ContactList"),
                    ("ActionID", aid),
                    ("ObjectName", "4001;@c5e0a0638996c97866fc4719c1518251"),
                    ("Uri", "sip:4001@127.0.0.1:54423"),
                    ("Status", "Reachable"),
                    ("RoundtripUsec", "1500"),
                ]
            )
            + _reply([("Event", "ContactListComplete"), ("ActionID", aid), ("EventList", "Complete")])
        )

    fake.handlers["PJSIPShowContacts"] = contacts
    [contact] = AmiChannel(client(fake)).contacts()
    assert (contact.aor, contact.uri, contact.hash, contact.status, contact.rtt_ms) == (
        "4001",
        "sip:4001@127.0.0.1:54423",
        "c5e0a06389",
        "Avail",
        1.5,
    )


def test_an_error_reply_of_a_list_action_means_an_empty_list(fake: FakeAmi) -> None:
    fake.handlers["PJSIPShowContacts"] = lambda a: _reply(
        [("Response", "Error"), ("ActionID", a["ActionID"]), ("Message", "No Contacts found\n")]
    )
    assert AmiChannel(client(fake)).contacts() == []


def test_a_wrong_secret_is_refused_with_a_hint_and_the_secret_is_never_in_the_message(
    fake: FakeAmi,
) -> None:
    wrong = "wrong-secret-value-42"
    with pytest.raises(AmiLoginRefused) as caught:
        client(fake, wrong).command("core show version")
    text = str(caught.value)
    assert "refused the login" in text and "hint:" in text
    assert wrong not in text and SECRET not in text
    assert wrong not in repr(client(fake, wrong))


def test_a_session_the_server_closed_while_idle_is_reopened_before_the_next_action(fake: FakeAmi) -> None:
    ami = client(fake)
    fake.close_after = 2  # Login + one command, then the server hangs up
    assert ami.command("core show version") == VERSION + "\n"
    assert ami.command("core show version") == VERSION + "\n"
    assert fake.sessions == 2 and ami.stats.logins == 2


def test_an_action_cut_off_by_a_broken_session_is_sent_once_more_on_a_new_one(fake: FakeAmi) -> None:
    ami = client(fake)
    ami.connect()
    fake.close_after, fake.drop_unanswered = 2, True  # the first command gets no answer
    assert ami.command("core show version") == VERSION + "\n"
    commands = [a for a in fake.actions if a["Action"] == "Command"]
    assert len(commands) == 2 and fake.sessions == 2


def test_a_restart_command_is_never_sent_twice(fake: FakeAmi) -> None:
    channel = AmiChannel(client(fake))
    channel.client.connect()
    fake.close_after, fake.drop_unanswered = 2, True
    with pytest.raises(AmiUnavailable):
        channel.command("core restart now")
    assert [a["Command"] for a in fake.actions if a["Action"] == "Command"] == ["core restart now"]


def test_nothing_listening_is_a_temporary_unavailable_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(AmiUnavailable) as caught:
            AmiClient("127.0.0.1", port, SECRET, connect_timeout_s=0.5).command("core show version")
    assert caught.value.temporary


def test_a_silent_server_times_out_instead_of_hanging(fake: FakeAmi) -> None:
    fake.handlers["Command"] = lambda a: b""  # never answers
    ami = AmiClient("127.0.0.1", fake.port, SECRET, timeout_s=0.3)
    with pytest.raises(AmiUnavailable, match="did not answer"):
        ami.command("core show version")


def test_a_value_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ReconcilerError, match="line break"):
        encode_action("Command", "1", {"Command": "core show version\r\nAction: Logoff"})


def test_threads_sharing_one_client_each_get_their_own_answer(fake: FakeAmi) -> None:
    ami = client(fake)
    results: list[str] = []

    def work() -> None:
        for _ in range(20):
            results.append(ami.command("core show version"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [VERSION + "\n"] * 80
    assert fake.sessions == 1
