"""`reconciler fleet status` and a site's `/api/fleet`: every site asked over real HTTP on
127.0.0.1 (fake peers: `http.server` answering canned `/api/status`), an unreachable one reported
as such; and `watch --dir FLEET` snapshots the whole fleet tree."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.desired.fleet import load_site
from reconciler.desired.revision import content_hash
from reconciler.gitops.sources import DirectorySource
from reconciler.observe.fleet import Peer, fleet_ok, gather_fleet

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"
R = "c" * 40


def status_of(
    site: str, *, live: str | None = R, ok: str | None = R, healthy: bool = True, state: str = "done"
) -> dict[str, Any]:
    return {
        "asterisk": {"reachable": True, "error": None},
        "live": {"revision": live},
        "desired": {"revision": R},
        "summary": {
            "healthy": healthy,
            "problems": [] if healthy else ["provider p is Rejected"],
            "providers_registered": 1,
            "providers_total": 1,
            "extensions_online": 0,
            "extensions_total": 2,
        },
        "last_reconcile": {"result": "applied"},
        "fleet": {
            "site": site,
            "ok_revision": ok,
            "failed_revision": None,
            "desired_revision": R,
            "rollout": {"state": state, "waiting_for": None, "reason": None},
        },
    }


class Peers:
    """Fake site reconcilers on 127.0.0.1: `answers[port]` is what GET /api/status returns."""

    def __init__(self) -> None:
        self.answers: dict[int, dict[str, Any]] = {}
        self.servers: list[ThreadingHTTPServer] = []

    def add(self, answer: dict[str, Any]) -> str:
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(answers[self.server.server_address[1]]).encode()
                code = 200 if self.path == "/api/status" else 404
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.answers[server.server_address[1]] = answer
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def peers() -> Iterator[Peers]:
    p = Peers()
    yield p
    p.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_site_in_sync_and_healthy_is_a_done_rollout_and_ok(peers: Peers) -> None:
    urls = [peers.add(status_of("hq")), peers.add(status_of("branch"))]
    view = gather_fleet("example", ["hq", "branch"], [Peer("hq", urls[0]), Peer("branch", urls[1])])
    assert view["rollout"] == {"order": ["hq", "branch"], "revision": R, "state": "done"}
    assert [s["name"] for s in view["sites"]] == ["hq", "branch"]
    hq = view["sites"][0]
    assert (
        hq["reachable"] and hq["in_sync"] and hq["providers_registered"] == 1 and hq["extensions_total"] == 2
    )
    assert fleet_ok(view)


def test_an_unreachable_site_is_reported_with_its_error_and_the_fleet_is_not_ok(peers: Peers) -> None:
    url = peers.add(status_of("hq"))
    view = gather_fleet(
        "example",
        ["hq", "branch"],
        [Peer("hq", url), Peer("branch", f"http://127.0.0.1:{free_port()}")],
        timeout_s=1.0,
    )
    branch = view["sites"][1]
    assert branch["reachable"] is False and branch["error"] and "127.0.0.1" in branch["error"]
    assert view["rollout"]["state"] == "rolling" and not fleet_ok(view)


def test_a_held_site_makes_the_rollout_held(peers: Peers) -> None:
    hq = peers.add(status_of("hq", ok="d" * 40, live="d" * 40, state="failed"))
    branch = peers.add(status_of("branch", ok="d" * 40, live="d" * 40, state="held"))
    view = gather_fleet("example", ["hq", "branch"], [Peer("hq", hq), Peer("branch", branch)])
    assert view["rollout"]["state"] == "held"
    assert not view["sites"][0]["in_sync"]


def test_fleet_status_prints_the_contract_json_and_exits_1_when_a_site_is_unhealthy(
    tmp_path: Path, peers: Peers
) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet)
    hq, branch = peers.add(status_of("hq")), peers.add(status_of("branch", healthy=False))
    text = (fleet / "fleet.yaml").read_text()
    text = text.replace("http: 127.0.0.1:8181", f"http: 127.0.0.1:8181\n    status_url: {hq}")
    text = text.replace("http: 127.0.0.1:8182", f"http: 127.0.0.1:8182\n    status_url: {branch}")
    (fleet / "fleet.yaml").write_text(text)

    result = CliRunner().invoke(app, ["fleet", "status", "--fleet", str(fleet), "--json"])

    assert result.exit_code == 1, result.output
    view = json.loads(result.output)
    assert set(view) == {"fleet", "rollout", "sites"} and view["fleet"] == "example"
    keys = {
        "name",
        "reachable",
        "live_revision",
        "desired_revision",
        "in_sync",
        "providers_registered",
        "providers_total",
        "extensions_online",
        "extensions_total",
        "last_reconcile",
        "rollout",
        "error",
    }
    assert all(keys <= set(s) for s in view["sites"])
    table = CliRunner().invoke(app, ["fleet", "status", "--fleet", str(fleet)])
    assert table.exit_code == 1 and "branch" in table.output and "hq" in table.output


def test_a_directory_source_snapshots_the_whole_fleet_tree_and_a_site_loads_from_it(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet)
    (fleet / ".secrets").mkdir()
    (fleet / ".secrets" / "hq.env").write_text("SECRET=1\n")
    source = DirectorySource(fleet, cache_dir=tmp_path / "cache")

    snap = source.snapshot()

    assert (snap.path / "fleet.yaml").is_file() and (snap.path / "bases" / "common" / "pbx.yaml").is_file()
    assert (snap.path / "sites" / "hq").is_dir() and not (snap.path / ".secrets").exists()
    assert snap.revision == content_hash(fleet) == content_hash(snap.path)
    assert load_site(snap.path, "hq").state == load_site(fleet, "hq").state


def test_an_edit_in_a_site_folder_is_a_new_fleet_revision(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet)
    source = DirectorySource(fleet, cache_dir=tmp_path / "cache")
    first = source.snapshot()
    edited = next((fleet / "sites" / "branch").glob("*.yaml"))
    edited.write_text(edited.read_text() + "\n# edited\n")
    assert source.snapshot().revision != first.revision


def test_a_plain_desired_directory_snapshot_is_unchanged(tmp_path: Path) -> None:
    from tests.unit.desired_support import SAMPLE_DIR

    desired = tmp_path / "desired"
    shutil.copytree(SAMPLE_DIR, desired)
    snap = DirectorySource(desired, cache_dir=tmp_path / "cache").snapshot()
    assert sorted(p.name for p in snap.path.iterdir()) == sorted(p.name for p in desired.glob("*.y*ml"))
