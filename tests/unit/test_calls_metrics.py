"""/metrics counts the call records by disposition and the channels up, /api/calls serves the
newest records, both from one cached read (a scrape storm costs one exec per few seconds), and the
dashboard shows the last calls."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.asterisk.client import ExecResult
from reconciler.errors import AsteriskUnavailable
from reconciler.observe.calls import DISPOSITIONS, CallsCache
from reconciler.observe.metrics import render_metrics
from reconciler.observe.server import ServerContext, make_server, serve_in_background
from reconciler.observe.web import dashboard_html
from reconciler.settings import Settings
from tests.harness.waiting import GENEROUS_S

STATUS = {"asterisk": {"reachable": True}, "summary": {}, "providers": [], "extensions": []}
ROWS = [
    {"calldate": "2026-12-02 10:23:43", "src": "4001", "dst": "4002", "duration": 3, "billsec": 2,
     "disposition": "ANSWERED", "uniqueid": "u1", "target": "", "provider": ""},
]  # fmt: skip


@dataclass
class FakeClient:
    """Answers the calls reader's steps, counting execs."""

    log_path: str = "/var/log/asterisk/messages.log"
    execs: int = 0
    down: bool = False

    def run_steps(self, steps: Sequence[str]) -> ExecResult:
        self.execs += 1
        if self.down:
            raise AsteriskUnavailable("the Asterisk container 'x' is exited, not running", "start it")
        outs = []
        for step in steps:
            if "GROUP BY disposition" in step:
                outs.append(
                    'gitops-calls: rc=0\n[{"disposition":"ANSWERED","n":4},{"disposition":"BUSY","n":1}]\n'
                )
            else:
                outs.append("gitops-calls: rc=0\n" + json.dumps(ROWS) + "\n")
        return ExecResult(tuple(outs), 0)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_calls_are_counted_by_disposition_and_channels_are_a_gauge() -> None:
    text = render_metrics(
        STATUS, [], calls={**dict.fromkeys(DISPOSITIONS, 0), "ANSWERED": 4}, active_channels=2
    )
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["asterisk_gitops_calls"] == "counter"
    assert families["asterisk_gitops_active_channels"] == "gauge"
    samples = _samples(text)
    assert samples[("asterisk_gitops_calls_total", (("disposition", "ANSWERED"),))] == 4
    assert samples[("asterisk_gitops_calls_total", (("disposition", "NO ANSWER"),))] == 0
    assert samples[("asterisk_gitops_active_channels", ())] == 2


def test_unreadable_calls_leave_the_families_without_samples() -> None:
    text = render_metrics(STATUS, [])
    assert "# TYPE asterisk_gitops_calls_total counter" in text
    assert not any(name.startswith("asterisk_gitops") for name, _ in _samples(text))


def test_the_cache_reads_once_per_ttl_also_when_it_fails() -> None:
    now = [100.0]
    cache = CallsCache(ttl_s=5.0, clock=lambda: now[0])
    client = FakeClient()
    for _ in range(50):
        read = cache.get(client)
    assert client.execs == 1
    assert read.counts["ANSWERED"] == 4 and read.records[0].dialled == "4002"
    now[0] += 5.1
    cache.get(client)
    assert client.execs == 2

    client.down = True
    now[0] += 5.1
    for _ in range(3):
        with pytest.raises(AsteriskUnavailable):
            cache.get(client)
    assert client.execs == 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, FakeClient]]:
    client = FakeClient()
    ctx = ServerContext(
        settings=Settings(state_dir=tmp_path / "state"),
        trigger=lambda _: None,
        webhook_secret=None,
        client=client,
    )
    httpd = make_server("127.0.0.1:0", ctx)
    serve_in_background(httpd)
    try:
        yield httpd.server_address[1], client
    finally:
        httpd.shutdown()
        httpd.server_close()


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=GENEROUS_S)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_api_calls_serves_the_newest_records(server: tuple[int, FakeClient]) -> None:
    port, _ = server
    status, body = _get(port, "/api/calls")
    assert status == 200
    payload = json.loads(body)
    assert payload["calls"][0]["dialled"] == "4002"
    assert payload["recorded"] is True and payload["note"] is None


def test_a_scrape_storm_reads_the_call_records_once(server: tuple[int, FakeClient]) -> None:
    port, client = server
    for _ in range(5):
        status, _ = _get(port, "/api/calls")
        assert status == 200
    assert client.execs == 1


def test_api_calls_is_503_while_asterisk_is_away(server: tuple[int, FakeClient]) -> None:
    port, client = server
    client.down = True
    status, _ = _get(port, "/api/calls")
    assert status == 503


def test_the_dashboard_shows_the_last_ten_calls() -> None:
    html = dashboard_html()
    assert 'id="calls"' in html
    assert 'fetch("api/calls"' in html
    assert "const CALLS_SHOWN = 10;" in html
