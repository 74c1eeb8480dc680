"""A fake of the three GitHub REST calls `reconciler pr-check` makes, on 127.0.0.1.

It keeps issue comments in memory and answers like api.github.com does for them: list (paginated,
with a `Link: <...>; rel="next"` header), create (201) and edit (200), each only with the right
`Authorization: Bearer <token>` (else 401). `refuse_writes` answers 403 "Resource not accessible
by integration" to writes, as GitHub does for a read-only token (a pull request from a fork).
Every request is recorded, so a test can count creates and edits.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "fake-github-token-for-tests"


@dataclass
class FakeGitHub:
    url: str = ""
    token: str = TOKEN
    comments: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, auth header)
    refuse_writes: bool = False
    next_id: int = 1000

    def add_comment(self, pr: int, body: str, login: str = "someone") -> dict[str, Any]:
        self.next_id += 1
        comment = {
            "id": self.next_id,
            "pr": pr,
            "body": body,
            "user": {"login": login, "type": "User"},
            "html_url": f"https://github.example/acme/pbx/pull/{pr}#issuecomment-{self.next_id}",
        }
        self.comments.append(comment)
        return comment

    def on(self, pr: int) -> list[dict[str, Any]]:
        return [c for c in self.comments if c["pr"] == pr]

    def count(self, method: str) -> int:
        return sum(1 for m, _, _ in self.requests if m == method)


def _handler(state: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            state.requests.append((self.command, self.path, auth))
            if auth != f"Bearer {state.token}":
                self._send(401, {"message": "Bad credentials"})
                return False
            return True

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            with lock:
                if not self._authorized():
                    return
                parts = urlsplit(self.path)
                match = re.fullmatch(r"/repos/[^/]+/[^/]+/issues/(\d+)/comments", parts.path)
                if not match:
                    self._send(404, {"message": "Not Found"})
                    return
                query = parse_qs(parts.query)
                per_page = int(query.get("per_page", ["30"])[0])
                page = int(query.get("page", ["1"])[0])
                items = state.on(int(match[1]))
                chunk = items[(page - 1) * per_page : page * per_page]
                headers = {}
                if page * per_page < len(items):
                    headers["Link"] = (
                        f'<{state.url}{parts.path}?per_page={per_page}&page={page + 1}>; rel="next"'
                    )
                self._send(200, [{k: v for k, v in c.items() if k != "pr"} for c in chunk], headers)

        def do_POST(self) -> None:
            with lock:
                if not self._authorized():
                    return
                match = re.fullmatch(r"/repos/[^/]+/[^/]+/issues/(\d+)/comments", self.path)
                if not match:
                    self._send(404, {"message": "Not Found"})
                    return
                if state.refuse_writes:
                    self._send(403, {"message": "Resource not accessible by integration"})
                    return
                comment = state.add_comment(int(match[1]), self._body()["body"], login="github-actions[bot]")
                self._send(201, {k: v for k, v in comment.items() if k != "pr"})

        def do_PATCH(self) -> None:
            with lock:
                if not self._authorized():
                    return
                match = re.fullmatch(r"/repos/[^/]+/[^/]+/issues/comments/(\d+)", self.path)
                found = [c for c in state.comments if match and c["id"] == int(match[1])]
                if not found:
                    self._send(404, {"message": "Not Found"})
                    return
                if state.refuse_writes:
                    self._send(403, {"message": "Resource not accessible by integration"})
                    return
                found[0]["body"] = self._body()["body"]
                self._send(200, {k: v for k, v in found[0].items() if k != "pr"})

    return Handler


@contextmanager
def fake_github() -> Iterator[FakeGitHub]:
    """A running fake API on an ephemeral port of 127.0.0.1; `state.url` is its GITHUB_API_URL."""
    state = FakeGitHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
