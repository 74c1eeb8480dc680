"""The watch server: webhook signatures (GitHub HMAC, GitLab token), size cap, health."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.observe.server import (
    MAX_BODY,
    ServerContext,
    github_signature,
    make_server,
    parse_listen,
    serve_in_background,
    verify_webhook,
)
from reconciler.settings import Settings

SECRET = "s3cret-webhook-value"
PUSH = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()


class Server:
    def __init__(self, tmp_path: Path, secret: str | None = SECRET) -> None:
        self.triggers: list[str] = []
        ctx = ServerContext(
            settings=Settings(state_dir=tmp_path / "state"),
            trigger=self.triggers.append,
            webhook_secret=secret,
            branch="main",
        )
        self.httpd = make_server("127.0.0.1:0", ctx)
        self.port = self.httpd.server_address[1]
        serve_in_background(self.httpd)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    s.close()


def test_a_github_push_with_a_valid_signature_is_accepted_and_triggers_once(server: Server) -> None:
    status, _ = server.request(
        "POST",
        "/hooks/git",
        PUSH,
        {"X-Hub-Signature-256": github_signature(SECRET, PUSH), "X-GitHub-Event": "push"},
    )
    assert status == 202
    assert server.triggers == ["webhook"]


def test_a_wrong_github_signature_gets_401_and_no_trigger(server: Server) -> None:
    status, _ = server.request(
        "POST", "/hooks/git", PUSH, {"X-Hub-Signature-256": github_signature("other-secret", PUSH)}
    )
    assert status == 401
    assert server.triggers == []


def test_a_signature_of_a_different_body_gets_401(server: Server) -> None:
    status, _ = server.request(
        "POST", "/hooks/git", PUSH + b" ", {"X-Hub-Signature-256": github_signature(SECRET, PUSH)}
    )
    assert status == 401
    assert server.triggers == []


def test_a_missing_signature_gets_401_and_no_trigger(server: Server) -> None:
    status, _ = server.request("POST", "/hooks/git", PUSH)
    assert status == 401
    assert server.triggers == []


def test_a_gitlab_token_is_accepted_and_a_wrong_one_refused(server: Server) -> None:
    assert server.request("POST", "/hooks/git", PUSH, {"X-Gitlab-Token": "nope"})[0] == 401
    assert server.request("POST", "/hooks/git", PUSH, {"X-Gitlab-Token": SECRET})[0] == 202
    assert server.triggers == ["webhook"]


def test_an_oversized_body_gets_413_and_no_trigger(server: Server) -> None:
    body = b"x" * (MAX_BODY + 1)
    status, _ = server.request(
        "POST", "/hooks/git", body, {"X-Hub-Signature-256": github_signature(SECRET, body)}
    )
    assert status == 413
    assert server.triggers == []


def test_a_push_to_another_branch_is_acknowledged_but_triggers_nothing(server: Server) -> None:
    body = json.dumps({"ref": "refs/heads/feature"}).encode()
    status, data = server.request(
        "POST", "/hooks/git", body, {"X-Hub-Signature-256": github_signature(SECRET, body)}
    )
    assert status == 202
    assert b"ignored" in data
    assert server.triggers == []


def test_a_github_ping_is_answered_without_a_trigger(server: Server) -> None:
    status, _ = server.request(
        "POST",
        "/hooks/git",
        b"{}",
        {"X-Hub-Signature-256": github_signature(SECRET, b"{}"), "X-GitHub-Event": "ping"},
    )
    assert status == 200
    assert server.triggers == []


def test_without_a_configured_secret_every_webhook_is_refused(tmp_path: Path) -> None:
    s = Server(tmp_path, secret=None)
    try:
        status, _ = s.request("POST", "/hooks/git", PUSH, {"X-Hub-Signature-256": github_signature("", PUSH)})
    finally:
        s.close()
    assert status == 401
    assert s.triggers == []


def test_healthz_reports_ok_and_the_suspend_flag(server: Server) -> None:
    status, data = server.request("GET", "/healthz")
    assert status == 200
    assert json.loads(data) == {"ok": True, "reason": None, "reasons": [], "suspended": False}


def test_unknown_routes_are_404(server: Server) -> None:
    assert server.request("GET", "/nope")[0] == 404
    assert server.request("POST", "/hooks/other", PUSH)[0] == 404


def test_verify_webhook_compares_the_whole_signature() -> None:
    good = github_signature(SECRET, PUSH)
    assert verify_webhook(SECRET, {"X-Hub-Signature-256": good}, PUSH)
    assert not verify_webhook(SECRET, {"X-Hub-Signature-256": good[:-1]}, PUSH)
    assert not verify_webhook(SECRET, {"X-Hub-Signature-256": "sha1=" + good[7:]}, PUSH)


def test_listen_addresses_parse_host_and_port() -> None:
    assert parse_listen("127.0.0.1:8088") == ("127.0.0.1", 8088)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(Exception, match="HOST:PORT"):
        parse_listen("8088x")
