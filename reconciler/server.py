"""HTTP for `watch` (stdlib only): the git webhook, health, status JSON, dashboard and metrics.

Routes:
- `POST /hooks/git`: GitHub (`X-Hub-Signature-256`, HMAC-SHA256 of the body) or GitLab
  (`X-Gitlab-Token`). A missing or wrong signature gets 401 and triggers nothing; a body over
  `MAX_BODY` gets 413; a valid push gets 202 and one trigger into the loop's queue.
- `GET /healthz`: 200 while the loop's threads run, else 503.
- `GET /api/status`, `GET /`, `GET /metrics`: the status helper's `status`, `web` and `metrics`
  modules; 503 while one of them is not available.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.history import History, LoopState
from reconciler.settings import Settings

log = logging.getLogger("reconciler.server")

MAX_BODY = 1024 * 1024  # a push event of a large merge is well below this
DRAIN_LIMIT = 16 * MAX_BODY


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
    healthy: Callable[[], bool] = lambda: True
    loop_info: Callable[[], dict[str, Any]] = dict


def _optional(module: str) -> Any | None:
    """A status-helper module, or None while it is not there yet."""
    try:
        return importlib.import_module(f"reconciler.{module}")
    except ImportError:
        return None


class Handler(BaseHTTPRequestHandler):
    server_version = "asterisk-gitops"
    sys_version = ""
    context: ServerContext  # set on the subclass made by `make_server`

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing ---------------------------------------------------------------------------

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
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return
        if length > MAX_BODY:
            # Read (and drop) a moderately large body so the client sees the 413 instead of a reset
            # connection; beyond DRAIN_LIMIT just close.
            if length <= DRAIN_LIMIT:
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"})
            return
        body = self.rfile.read(length)
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
            "/metrics": self._metrics,
            "/": self._dashboard,
        }.get(path)
        if route is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            route()
        except Exception as exc:  # one broken page must not take the server down
            log.exception("GET %s failed", path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}"})

    do_HEAD = do_GET

    def _healthz(self) -> None:
        ok = self.context.healthy()
        state = LoopState.load(self.context.settings)
        payload = {"ok": ok, "suspended": state.suspended, **self.context.loop_info()}
        self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, payload)

    def _collect(self) -> dict[str, Any] | None:
        status = _optional("status")
        if status is None or not hasattr(status, "collect_status"):
            return None
        try:
            return status.collect_status(
                self.context.settings, self.context.client, head_from_loop=self.context.head_from_loop
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
        text = metrics.render_metrics(collected, records, totals=totals)
        self._send(HTTPStatus.OK, text, "text/plain; version=0.0.4")

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


def make_server(listen: str, context: ServerContext) -> ThreadingHTTPServer:
    """Bind the server (not started yet); port 0 picks a free port (see `server_address`)."""
    host, port = parse_listen(listen)
    handler = type("BoundHandler", (Handler,), {"context": context})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise ReconcilerError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "pick a free port with --http HOST:PORT",
        ) from exc
    server.daemon_threads = True
    return server


def serve_in_background(server: ThreadingHTTPServer) -> threading.Thread:
    """Run `server.serve_forever()` in a daemon thread; stop it with `server.shutdown()`."""
    thread = threading.Thread(target=server.serve_forever, name="reconciler-http", daemon=True)
    thread.start()
    return thread
