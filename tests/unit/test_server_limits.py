"""The watch server against slow and hostile clients, over real sockets on 127.0.0.1.

Limits are made small so each case takes a fraction of a second; the bounds the tests wait for are
generous progress bounds, never a measured time.
"""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.observe.server import (
    ServerContext,
    ServerLimits,
    WatchHTTPServer,
    github_signature,
    make_server,
    serve_in_background,
)
from reconciler.settings import Settings
from tests.harness.waiting import GENEROUS_S, wait_until

SECRET = "s3cret-webhook-value"
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: the request never ends


class Served:
    """A running watch server with the given limits, and helpers to talk to it."""

    def __init__(self, tmp_path: Path, limits: ServerLimits) -> None:
        self.triggers: list[str] = []
        ctx = ServerContext(
            settings=Settings(state_dir=tmp_path / "state"),
            trigger=self.triggers.append,
            webhook_secret=SECRET,
        )
        self.httpd: WatchHTTPServer = make_server("127.0.0.1:0", ctx, limits)
        self.port = self.httpd.server_address[1]
        self.sockets: list[socket.socket] = []
        serve_in_background(self.httpd)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=GENEROUS_S)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def slow_client(self, first_bytes: bytes = PARTIAL_HEAD) -> socket.socket:
        """A connection that sends the start of a request and then nothing."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=GENEROUS_S)
        if first_bytes:
            sock.sendall(first_bytes)
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(**limits: float) -> Served:
        served = Served(tmp_path, ServerLimits(**limits))  # type: ignore[arg-type]
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def closed_by_server(sock: socket.socket, timeout: float = GENEROUS_S) -> bool:
    """True when the server closes (or resets) the connection within `timeout`."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass  # an error answer may come first; the close is what counts
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def has_hung_up(sock: socket.socket) -> bool:
    """Without blocking: has the server closed or reset this connection?"""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536, socket.MSG_PEEK) == b""
    except OSError:
        return True


def handler_threads() -> int:
    return sum(1 for t in threading.enumerate() if "process_request_thread" in t.name)


# -- timeouts -------------------------------------------------------------------------------------


def trickle_until_cut_off(sock: socket.socket, chunks: list[bytes], interval_s: float) -> bool:
    """Send `chunks` one by one, `interval_s` apart; True as soon as the server hung up on us."""
    for chunk in chunks:
        try:
            sock.send(chunk)
        except OSError:
            return True
        if has_hung_up(sock):
            return True
        time.sleep(interval_s)
    return False


def test_a_client_that_trickles_its_request_a_byte_at_a_time_is_cut_off_at_the_deadline(serve) -> None:
    # Each byte comes well within the socket timeout: only the overall deadline can stop it.
    served = serve(socket_timeout_s=5.0, request_deadline_s=0.5)
    sock = served.slow_client(b"GET /healthz?")
    cut_off = trickle_until_cut_off(sock, [b"a"] * int(GENEROUS_S / 0.05), 0.05)
    assert cut_off, "the server kept reading a request that never ends"
    assert wait_until(lambda: served.httpd.open_connections == 0)


def test_a_client_that_connects_and_says_nothing_is_cut_off_by_the_socket_timeout(serve) -> None:
    served = serve(socket_timeout_s=0.2, request_deadline_s=3600)
    sock = served.slow_client(b"")
    assert closed_by_server(sock)
    assert wait_until(lambda: served.httpd.open_connections == 0)


def test_a_webhook_body_that_trickles_in_is_cut_off_and_triggers_nothing(serve) -> None:
    served = serve(socket_timeout_s=5.0, request_deadline_s=0.5)
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    head = (
        f"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"X-Hub-Signature-256: {github_signature(SECRET, body)}\r\n\r\n"
    ).encode()
    sock = served.slow_client(head)
    # never the last byte within the deadline
    assert trickle_until_cut_off(sock, [bytes([byte]) for byte in body[:-1]], GENEROUS_S / len(body))
    assert served.triggers == []


# -- the connection cap ---------------------------------------------------------------------------


def test_slow_clients_below_the_cap_do_not_starve_a_healthz_request(serve) -> None:
    served = serve(max_connections=8, request_deadline_s=3600, socket_timeout_s=3600)
    for _ in range(6):
        served.slow_client()
    assert wait_until(lambda: served.httpd.open_connections == 6)
    status, data = served.request("GET", "/healthz")
    assert status == 200
    assert json.loads(data)["ok"] is True


def test_three_times_the_cap_of_slow_clients_cannot_starve_a_healthz_request(serve) -> None:
    # Long timeouts: only making room by cutting off the slowest can keep /healthz answered.
    cap = 4
    served = serve(max_connections=cap, request_deadline_s=3600, socket_timeout_s=3600, evict_after_s=0.05)
    for _ in range(3 * cap):
        served.slow_client()
        time.sleep(0.06)  # each is old enough to be cut off when the next one needs room
    time.sleep(0.06)
    for _ in range(3):
        status, data = served.request("GET", "/healthz")
        assert status == 200
        assert json.loads(data)["ok"] is True
    assert served.httpd.peak_connections <= cap
    assert served.httpd.evicted >= 2 * cap
    assert handler_threads() <= cap


def test_at_the_cap_with_nobody_to_cut_off_a_newcomer_gets_an_immediate_503_and_no_thread(serve) -> None:
    served = serve(max_connections=2, request_deadline_s=3600, socket_timeout_s=3600, evict_after_s=3600)
    holders = [served.slow_client(), served.slow_client()]
    assert wait_until(lambda: served.httpd.open_connections == 2)
    threads_before = handler_threads()
    newcomer = socket.create_connection(("127.0.0.1", served.port), timeout=GENEROUS_S)
    answer = b""
    while chunk := newcomer.recv(65536):
        answer += chunk
    newcomer.close()
    assert answer.startswith(b"HTTP/1.0 503 ")
    assert b"Retry-After: 1" in answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": "too many connections, try again"}
    assert served.httpd.refused == 1
    assert handler_threads() == threads_before
    # The slots come back when the holders go.
    for sock in holders:
        sock.close()
    assert wait_until(lambda: served.httpd.open_connections == 0)
    assert served.request("GET", "/healthz")[0] == 200


def test_every_kind_of_connection_end_gives_its_slot_back(serve) -> None:
    served = serve(max_connections=3, socket_timeout_s=0.3, request_deadline_s=0.6, evict_after_s=3600)
    served.slow_client(b"")  # silent: socket timeout
    served.slow_client()  # partial head: deadline
    reset = served.slow_client(b"GET / HTTP/1.1\r\n")
    assert wait_until(lambda: served.httpd.open_connections == 3)  # all three accepted
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    reset.close()  # the client resets
    assert wait_until(lambda: served.httpd.open_connections <= 2)
    assert served.request("GET", "/nope")[0] == 404
    # (its thread may still be closing the connection after the answer: wait for the slot)
    assert wait_until(lambda: served.httpd.open_connections <= 2)
    assert served.request("GET", "/" + "a" * 9000)[0] == 414
    assert wait_until(lambda: served.httpd.open_connections == 0)
    # All three slots are free again: three clients can hold them at once.
    for _ in range(3):
        served.slow_client()
    assert wait_until(lambda: served.httpd.open_connections == 3)
    assert served.httpd.refused == 0


# -- request size -------------------------------------------------------------------------------


def test_a_request_line_over_the_limit_gets_414(serve) -> None:
    served = serve(max_request_line=256)
    status, data = served.request("GET", "/healthz?" + "a" * 300)
    assert status == 414
    assert "error" in json.loads(data)
    assert served.request("GET", "/healthz?" + "a" * 100)[0] == 200


def test_a_header_block_over_the_byte_limit_gets_431(serve) -> None:
    served = serve(max_header_bytes=2048)
    status, data = served.request("GET", "/healthz", headers={f"X-Pad-{n}": "p" * 500 for n in range(5)})
    assert status == 431
    assert "error" in json.loads(data)
    assert served.request("GET", "/healthz", headers={"X-Pad": "p" * 500})[0] == 200


def test_more_headers_than_the_limit_get_431_and_exactly_the_limit_is_served(serve) -> None:
    # http.client sends Host and Accept-Encoding itself: 2 + 3 = 5 headers.
    served = serve(max_headers=5)
    assert served.request("GET", "/healthz", headers={f"X-{n}": "1" for n in range(3)})[0] == 200
    assert served.request("GET", "/healthz", headers={f"X-{n}": "1" for n in range(4)})[0] == 431


def test_the_webhook_body_limit_holds_with_the_limits_in_place(serve) -> None:
    served = serve(max_body=1000)
    body = b"x" * 1001
    status, _ = served.request(
        "POST", "/hooks/git", body, {"X-Hub-Signature-256": github_signature(SECRET, body)}
    )
    assert status == 413
    assert served.triggers == []


@pytest.mark.parametrize("length", ["+5", "1_0", "\u0665", "-1", "5 5", "9" * 20])
def test_a_content_length_that_is_not_plain_digits_gets_400_and_triggers_nothing(serve, length: str) -> None:
    served = serve()
    sock = served.slow_client(
        f"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\nhello".encode()
    )
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert served.triggers == []


def test_garbage_instead_of_a_request_gets_a_json_error_and_the_server_keeps_serving(serve) -> None:
    served = serve()

    def answer_to(data: bytes) -> bytes:
        sock = served.slow_client(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer

    unknown_method = answer_to(b'\x00\x01\\x" / HTTP/1.1\r\n\r\n')
    assert unknown_method.startswith(b"HTTP/1.0 501 ")
    assert "error" in json.loads(unknown_method.split(b"\r\n\r\n", 1)[1])
    # Two words are an HTTP/0.9 request: the answer has no status line, but is JSON all the same.
    assert "error" in json.loads(answer_to(b'\x00\x01\\x" GET\r\n\r\n'))
    assert served.request("GET", "/healthz")[0] == 200


def test_a_flood_of_slow_clients_is_logged_in_one_line_not_one_per_client(
    serve, caplog: pytest.LogCaptureFixture
) -> None:
    served = serve(max_connections=2, request_deadline_s=3600, socket_timeout_s=3600, evict_after_s=3600)
    with caplog.at_level(logging.WARNING, logger="reconciler.observe.server"):
        for _ in range(12):
            served.slow_client()
        assert wait_until(lambda: served.httpd.refused == 10)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "slow or excess clients" in warnings[0] and "cap 2 connections" in warnings[0]
