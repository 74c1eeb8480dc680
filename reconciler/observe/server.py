"""HTTP for `watch` (stdlib only): the git webhook, health, status JSON, dashboard and metrics.

Routes:
- `POST /hooks/git`: GitHub (`X-Hub-Signature-256`, HMAC-SHA256 of the body) or GitLab
  (`X-Gitlab-Token`). A missing or wrong signature gets 401 and triggers nothing; a body over
  `MAX_BODY` gets 413; a valid push gets 202 and one trigger into the loop's queue.
- `GET /healthz`: 200 while the loop works (and, with RECONCILER_SIP_PROBE, the PBX answers SIP), else
  503 with the reasons (`reconciler.gitops.health`).
- `GET /api/status`, `GET /`, `GET /metrics`: the status helper's `status`, `web` and `metrics`
  modules; 503 while one of them is not available.
- `GET /api/calls`: the newest call records (`observe.calls`, read at most every few seconds);
  503 while they cannot be read.

Slow and hostile clients (`ServerLimits`): one request per connection; the request line, headers
and body must arrive within `request_deadline_s` (each read also within `socket_timeout_s`), so
a client that trickles a byte every few seconds is cut off; the request line, the header block and
the number of headers are capped. At most `max_connections` connections are served at once, one
thread each. At the cap, the connection that has been sending its request longest (a slow client,
by then) is cut off to make room; when every slot is busy answering, the newcomer gets an
immediate 503. So no number of slow clients starves a `/healthz` probe, and an attacker never gets
a thread per connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import importlib
import io
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reconciler.asterisk.sipready import sip_answers
from reconciler.errors import ReconcilerError
from reconciler.gitops.health import Health, SipProbe, with_sip
from reconciler.gitops.history import History, LoopState
from reconciler.settings import Settings

log = logging.getLogger("reconciler.observe.server")

MAX_BODY = 1024 * 1024  # a push event of a large merge is well below this
DRAIN_LIMIT = 16 * MAX_BODY
BUSY_BODY = b'{"error": "too many connections, try again"}\n'
BUSY_RESPONSE = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(BUSY_BODY), BUSY_BODY)
)


@dataclass(frozen=True)
class ServerLimits:
    """What one client may take from the server. The defaults suit a webhook from the internet."""

    max_connections: int = 32  # connections served at once, one thread each
    socket_timeout_s: float = 10.0  # longest silence while reading a request or writing an answer
    request_deadline_s: float = 20.0  # request line + headers + body must all arrive within this
    max_request_line: int = 8192  # bytes, with the CRLF
    max_header_bytes: int = 32768  # the whole header block, with the blank line that ends it
    max_headers: int = 64
    max_body: int = MAX_BODY
    # At the cap, a connection still sending its request after this long is cut off to make room.
    evict_after_s: float = 1.0
    # How long a newcomer waits for the slot of the connection cut off for it.
    evict_wait_s: float = 1.0


def github_signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` header value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_webhook(secret: str | None, headers: Any, body: bytes) -> bool:
    """True when the request carries a valid GitHub signature or GitLab token for `secret`.

    Without a configured secret nothing is accepted: an open webhook would let anyone on the
    network make the reconciler fetch and reload at will.
    """
    if not secret:
        return False
    signature = headers.get("X-Hub-Signature-256")
    if signature:
        return hmac.compare_digest(signature.strip().encode(), github_signature(secret, body).encode())
    token = headers.get("X-Gitlab-Token")
    if token:
        return hmac.compare_digest(token.encode(), secret.encode())
    return False


def pushed_branch(body: bytes) -> str | None:
    """The branch a push event is about (`ref: refs/heads/NAME`), None when the body does not say."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return None
    ref = payload.get("ref") if isinstance(payload, dict) else None
    if isinstance(ref, str) and ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/")
    return None


@dataclass
class ServerContext:
    """What the handlers need: where state is, how to trigger, how to reach Asterisk."""

    settings: Settings
    trigger: Callable[[str], None]
    webhook_secret: str | None
    branch: str | None = None  # when set, push events for other branches are acknowledged and ignored
    client: Any = None  # asterisk.AsteriskClient for /api/status and /metrics
    # `watch --repo`: the desired head is the branch head the loop fetched, not a local directory.
    head_from_loop: bool = False
    health: Callable[[], Health] = Health
    loop_info: Callable[[], dict[str, Any]] = dict
    # "The PBX serves SIP" for /healthz (None: not probed); `sip_probe_from(settings)` makes one.
    sip_probe: Callable[[], SipProbe] | None = None
    # Opens the kept control channel (AMI) for /api/status and /metrics; None: every status is one
    # exec. An AMI session is kept across requests and opened again once it fell back to exec.
    open_channel: Callable[[], Any] | None = None
    # `watch --site`: the `fleet` key of /api/status (RolloutTracker.fleet_json), and the whole
    # fleet's view for /fleet and /api/fleet (observe.fleet.gather_fleet on the peers).
    fleet_info: Callable[[], dict[str, Any]] | None = None
    fleet_view: Callable[[], dict[str, Any]] | None = None
    _channel: Any = field(default=None, init=False, repr=False)
    _channel_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # The call records for /metrics and /api/calls (observe.calls.CallsCache: one read per few s).
    _calls: Any = field(default=None, init=False, repr=False)

    def channel(self) -> Any:
        """The kept AMI channel, or (AMI unreachable now) an exec channel; None without a factory."""
        if self.open_channel is None:
            return None
        with self._channel_lock:
            if self._channel is None or getattr(self._channel, "kind", "") != "ami":
                try:
                    self._channel = self.open_channel()
                except ReconcilerError:
                    self._channel = None
            return self._channel

    def calls(self) -> Any:
        """The recent call records and the counts by disposition (`observe.calls.CallsRead`, cached
        a few seconds); None without a client, or while they cannot be read."""
        module = _optional("calls")
        if module is None or self.client is None:
            return None
        with self._channel_lock:
            if self._calls is None:
                self._calls = module.CallsCache()
            cache = self._calls
        try:
            return cache.get(self.client)
        except ReconcilerError as exc:
            log.debug("call records not readable: %s", exc.message)
            return None


SIP_PROBE_TIMEOUT_S = 2.0  # under the compose health check's 5 s timeout


def sip_probe_from(
    settings: Settings, timeout_s: float = SIP_PROBE_TIMEOUT_S
) -> Callable[[], SipProbe] | None:
    """A probe of `settings.sip_probe` (host:port, RECONCILER_SIP_PROBE), or None when unset."""
    if not settings.sip_probe:
        return None
    host, port = parse_listen(settings.sip_probe)

    def probe() -> SipProbe:
        return SipProbe(f"{host}:{port}/udp", sip_answers(host, port, timeout_s))

    return probe


def _optional(module: str) -> Any | None:
    """A status-helper module, or None while it is not there yet."""
    try:
        return importlib.import_module(f"reconciler.observe.{module}")
    except ImportError:
        return None


class _DeadlineReader(io.RawIOBase):
    """The bytes of a connection, but none after `deadline`: each read waits at most what is left.

    A socket timeout alone bounds each silence, not the whole request: a client that sends one
    byte every few seconds would hold its thread for hours. `BufferedReader` keeps calling
    `readinto` until a line is complete, so checking here bounds every `readline` too.
    """

    def __init__(self, sock: socket.socket, deadline: float, timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._timeout_s = timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive within the deadline")
        self._sock.settimeout(min(self._timeout_s, left))
        return self._sock.recv_into(buffer)


class _HeaderBudget:
    """`readline` for `http.client.parse_headers`, within a byte and a line budget.

    `parse_headers` allows 100 lines of 64 KiB each; this gives it at most `max_lines` lines (the
    blank one that ends the block included) and `max_bytes` bytes in all. Overruns raise what
    `parse_request` already answers with 431.
    """

    def __init__(self, rfile: Any, max_bytes: int, max_lines: int) -> None:
        self.complete = False  # True once the blank line that ends the headers came (not EOF)
        self._rfile = rfile
        self._left = max_bytes
        self._max_bytes = max_bytes
        self._max_lines = max_lines
        self._lines_left = max_lines

    def readline(self, limit: int = -1) -> bytes:
        if self._lines_left <= 0:
            raise http.client.HTTPException(f"more than {self._max_lines - 1} headers")
        self._lines_left -= 1
        want = self._left + 1 if limit < 0 else min(limit, self._left + 1)
        line: bytes = self._rfile.readline(want)
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong(f"headers over {self._max_bytes} bytes")
        self.complete = line in (b"\r\n", b"\n")
        return line


class Handler(BaseHTTPRequestHandler):
    server_version = "asterisk-gitops"
    sys_version = ""
    context: ServerContext  # set on the subclass made by `make_server`
    server: WatchHTTPServer
    body: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- reading one request, within the limits ---------------------------------------------

    def setup(self) -> None:
        super().setup()
        limits = self.server.limits
        deadline = time.monotonic() + limits.request_deadline_s
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline, limits.socket_timeout_s))

    def handle_one_request(self) -> None:
        """`BaseHTTPRequestHandler.handle_one_request` with this server's limits; one per connection."""
        limits = self.server.limits
        self.close_connection = True  # one request per connection: no idle keep-alive to hold a slot
        try:
            self.raw_requestline = self.rfile.readline(limits.max_request_line + 1)
            if len(self.raw_requestline) > limits.max_request_line:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                return
            stream = self.rfile
            budget = _HeaderBudget(stream, limits.max_header_bytes, limits.max_headers + 1)
            self.rfile = budget  # type: ignore[assignment]
            try:
                parsed = self.parse_request()
            finally:
                self.rfile = stream
            self.close_connection = True  # parse_request may have honoured a keep-alive
            # A head cut short by the client closing (parse_headers takes EOF as the end) is not a
            # request: answering it would run a route for nobody.
            if not parsed or not budget.complete or not self._read_body():
                return
            if not self.server.request_read(self.connection):
                return  # cut off to make room for another client while it was still sending
            self.connection.settimeout(limits.socket_timeout_s)  # now for writing the answer
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"unsupported method {self.command!r}")
                return
            method()
            self.wfile.flush()
        except TimeoutError as exc:
            self.server.timed_out += 1
            self.server.say_pressure(f"timed out: {exc} (last from {self.client_address[0]})")

    def _read_body(self) -> bool:
        """Read a `Content-Length` body (within the deadline); else answer 400 or 413 and say False."""
        header = self.headers.get("Content-Length")
        if header is None:
            return True
        text = header.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 12):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return False
        length = int(text)
        limit = self.server.limits.max_body
        if length > limit:
            # Read (and drop) a moderately large body so the client sees the 413 instead of a reset
            # connection; beyond DRAIN_LIMIT just close.
            if length <= DRAIN_LIMIT:
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {limit} bytes"})
            return False
        self.body = self.rfile.read(length)
        return len(self.body) == length  # shorter: the client went away mid-body, nobody to answer

    # -- plumbing ---------------------------------------------------------------------------

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the stdlib answers itself (400, 414, 431, 501) come as JSON like every other answer."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = "error"
        self._json(code, {"error": text[:200]})

    def _send(self, status: int, body: bytes | str, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload, indent=2, default=str) + "\n")

    def _unavailable(self, what: str) -> None:
        self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{what} not available"})

    # -- routes -----------------------------------------------------------------------------

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/hooks/git":
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        body = self.body  # read, within the limits, before this method runs
        ctx = self.context
        if not verify_webhook(ctx.webhook_secret, self.headers, body):
            log.warning("webhook refused from %s: missing or wrong signature", self.client_address[0])
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong signature"})
            return
        event = self.headers.get("X-GitHub-Event") or self.headers.get("X-Gitlab-Event") or "push"
        if event == "ping":
            self._json(HTTPStatus.OK, {"pong": True})
            return
        branch = pushed_branch(body)
        if ctx.branch and branch and branch != ctx.branch:
            self._json(HTTPStatus.ACCEPTED, {"ignored": f"push to {branch}, following {ctx.branch}"})
            return
        ctx.trigger("webhook")
        self._json(HTTPStatus.ACCEPTED, {"triggered": True})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        route = {
            "/healthz": self._healthz,
            "/api/status": self._status,
            "/api/calls": self._calls,
            "/metrics": self._metrics,
            "/": self._dashboard,
            "/fleet": self._fleet_page,
            "/api/fleet": self._fleet_json,
        }.get(path)
        if route is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            route()
        except (ConnectionError, TimeoutError):
            raise  # the client went away or stopped reading: nobody to tell (see handle_error)
        except Exception as exc:  # one broken page must not take the server down
            log.exception("GET %s failed", path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}"})

    do_HEAD = do_GET

    def _healthz(self) -> None:
        health = self.context.health()
        if self.context.sip_probe is not None:
            health = with_sip(health, self.context.sip_probe())
        state = LoopState.load(self.context.settings)
        payload = {**health.as_json(), "suspended": state.suspended, **self.context.loop_info()}
        self._json(HTTPStatus.OK if health.ok else HTTPStatus.SERVICE_UNAVAILABLE, payload)

    def _collect(self) -> dict[str, Any] | None:
        status = _optional("status")
        if status is None or not hasattr(status, "collect_status"):
            return None
        try:
            return status.collect_status(
                self.context.settings,
                self.context.client,
                head_from_loop=self.context.head_from_loop,
                channel=self.context.channel(),
                fleet=self.context.fleet_info,
            )
        except ReconcilerError as exc:
            return {"error": exc.message}

    def _status(self) -> None:
        collected = self._collect()
        if collected is None:
            self._unavailable("status")
            return
        self._json(HTTPStatus.OK, collected)

    def _metrics(self) -> None:
        metrics = _optional("metrics")
        collected = self._collect()
        if metrics is None or collected is None or not hasattr(metrics, "render_metrics"):
            self._unavailable("metrics")
            return
        records = History(self.context.settings).records()
        # The running totals of the loop state: counters that never go down (the history is bounded).
        totals = LoopState.load(self.context.settings).totals
        calls = self.context.calls()
        text = metrics.render_metrics(
            collected,
            records,
            totals=totals,
            calls=calls.counts if calls is not None else None,
            active_channels=collected["asterisk"].get("channels"),  # status read them already
        )
        self._send(HTTPStatus.OK, text, "text/plain; version=0.0.4")

    def _calls(self) -> None:
        module = _optional("calls")
        read = self.context.calls()
        if module is None or read is None:
            self._unavailable("call records")
            return
        self._json(HTTPStatus.OK, module.calls_json(read))

    def _fleet_json(self) -> None:
        if self.context.fleet_view is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not a fleet site (watch --site)"})
            return
        self._json(HTTPStatus.OK, self.context.fleet_view())

    def _fleet_page(self) -> None:
        web = _optional("web")
        if self.context.fleet_view is None or web is None or not hasattr(web, "fleet_html"):
            self._json(HTTPStatus.NOT_FOUND, {"error": "not a fleet site (watch --site)"})
            return
        self._send(HTTPStatus.OK, web.fleet_html(), "text/html; charset=utf-8")

    def _dashboard(self) -> None:
        web = _optional("web")
        if web is None or not hasattr(web, "dashboard_html"):
            self._unavailable("dashboard")
            return
        self._send(HTTPStatus.OK, web.dashboard_html(), "text/html; charset=utf-8")


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ReconcilerError(f"--http {value!r} is not HOST:PORT", "e.g. --http 127.0.0.1:8088")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class _Connection:
    """A connection being served: when it came, and whether its request is still arriving."""

    accepted: float = field(default_factory=time.monotonic)
    reading: bool = True
    cut: bool = False  # shut down to make room for another client


class WatchHTTPServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` with a bounded number of connections (see the module docstring)."""

    daemon_threads = True
    request_queue_size = 128  # the kernel's accept queue; nothing waits there for long

    def __init__(self, address: tuple[str, int], handler: type[Handler], limits: ServerLimits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, _Connection] = {}
        # Counters, for the log and for tests.
        self.peak_connections = 0
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        self._last_pressure_log: float | None = None
        super().__init__(address, handler)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in its own thread if a slot is free (or can be made), else 503."""
        if not self._slots.acquire(blocking=False) and not self._make_room():
            self._refuse(request, client_address)
            return
        with self._lock:
            self._connections[request] = _Connection()
            self.peak_connections = max(self.peak_connections, len(self._connections))
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (e.g. the process is out of threads)
            self._release(request)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def request_read(self, request: socket.socket) -> bool:
        """The handler has the whole request: the connection can no longer be cut off for room.

        False when it was cut off already (its request is then incomplete: do not answer it).
        """
        with self._lock:
            conn = self._connections.get(request)
            if conn is None or conn.cut:
                return False
            conn.reading = False
            return True

    def _release(self, request: Any) -> None:
        with self._lock:  # the slot is free by the time `open_connections` says so
            if self._connections.pop(request, None) is not None:
                self._slots.release()

    def _make_room(self) -> bool:
        """At the cap: cut off the connection that has been sending its request longest, and take
        its slot. False when every connection is past its request (or too young to judge)."""
        now = time.monotonic()
        with self._lock:
            slow = [
                (conn.accepted, sock)
                for sock, conn in self._connections.items()
                if conn.reading and not conn.cut and now - conn.accepted >= self.limits.evict_after_s
            ]
            if not slow:
                return False
            accepted, victim = min(slow, key=lambda pair: pair[0])
            self._connections[victim].cut = True
        self.evicted += 1
        self.say_pressure(f"cut off a connection still sending its request after {now - accepted:.1f} s")
        _shut(victim)  # its blocked read returns at once; the thread ends and frees the slot
        return self._slots.acquire(timeout=self.limits.evict_wait_s)

    def _refuse(self, request: socket.socket, client_address: Any) -> None:
        """Answer 503 without a thread and without waiting for the client, then close."""
        self.refused += 1
        self.say_pressure(f"refused a connection from {client_address[0] if client_address else '?'} (503)")
        try:
            request.setblocking(False)
            request.send(BUSY_RESPONSE)
        except OSError:
            pass
        self.shutdown_request(request)

    def say_pressure(self, latest: str) -> None:
        """Log slow or excess clients at most once a minute, with the running counts (a flood of
        them must not flood the log too); every event is logged at debug level."""
        log.debug("http: %s", latest)
        now = time.monotonic()
        with self._lock:
            if self._last_pressure_log is not None and now - self._last_pressure_log < 60:
                return
            self._last_pressure_log = now
        log.warning(
            "http: slow or excess clients: %d timed out, %d cut off to make room, %d refused (cap %d "
            "connections); latest: %s",
            self.timed_out,
            self.evicted,
            self.refused,
            self.limits.max_connections,
            latest,
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets or times out is routine; anything else is a bug worth a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("connection from %s ended: %s", client_address[0], error)
        else:
            log.exception("error serving %s", client_address[0])

    def server_close(self) -> None:
        """Close the listening socket and cut off the connections still open."""
        super().server_close()
        with self._lock:
            open_now = list(self._connections)
        for sock in open_now:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by its own thread
        sock.shutdown(socket.SHUT_RDWR)


def make_server(listen: str, context: ServerContext, limits: ServerLimits | None = None) -> WatchHTTPServer:
    """Bind the server (not started yet); port 0 picks a free port (see `server_address`)."""
    host, port = parse_listen(listen)
    handler = type("BoundHandler", (Handler,), {"context": context})
    try:
        return WatchHTTPServer((host, port), handler, limits or ServerLimits())
    except OSError as exc:
        raise ReconcilerError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "pick a free port with --http HOST:PORT",
        ) from exc


def serve_in_background(server: ThreadingHTTPServer) -> threading.Thread:
    """Run `server.serve_forever()` in a daemon thread; stop it with `server.shutdown()`."""
    thread = threading.Thread(target=server.serve_forever, name="reconciler-http", daemon=True)
    thread.start()
    return thread
