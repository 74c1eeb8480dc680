"""/healthz with a "PBX serves SIP" probe: a fake SIP server on 127.0.0.1 answers or stays silent."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.asterisk.sipready import answers_to, sip_answers, wait_sip_ready
from reconciler.errors import AsteriskUnavailable
from reconciler.gitops.health import Health, SipProbe, with_sip
from reconciler.observe.server import ServerContext, make_server, serve_in_background, sip_probe_from
from reconciler.settings import Settings


class FakeSip:
    """A UDP socket on 127.0.0.1 that answers every request with 401 while `answering`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answering = True
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            self.requests += 1
            if not self.answering:
                continue
            head = data.split(b"\r\n\r\n")[0].split(b"\r\n")
            keep = [
                h
                for h in head[1:]
                if h.split(b":")[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
            ]
            self.sock.sendto(
                b"SIP/2.0 401 Unauthorized\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n", peer
            )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_sip() -> Iterator[FakeSip]:
    server = FakeSip()
    yield server
    server.close()


def test_any_sip_response_even_a_401_counts_as_answering(fake_sip: FakeSip) -> None:
    assert sip_answers("127.0.0.1", fake_sip.port, 2.0) is not None


def test_a_silent_pbx_is_retransmitted_to_and_then_reported_as_not_answering(fake_sip: FakeSip) -> None:
    fake_sip.answering = False
    assert sip_answers("127.0.0.1", fake_sip.port, 0.8) is None
    assert fake_sip.requests >= 2  # T1 retransmission


def test_wait_sip_ready_raises_a_temporary_error_with_a_hint_when_no_answer_comes(fake_sip: FakeSip) -> None:
    fake_sip.answering = False
    with pytest.raises(AsteriskUnavailable) as caught:
        wait_sip_ready("127.0.0.1", fake_sip.port, 0.6)
    assert caught.value.temporary and caught.value.hint


def test_a_response_to_someone_elses_call_id_does_not_count() -> None:
    data = b"SIP/2.0 200 OK\r\nCall-ID: other@x\r\n\r\n"
    assert not answers_to(data, "mine@x") and answers_to(data.replace(b"other", b"mine"), "mine@x")


def test_with_sip_adds_a_reason_only_when_the_pbx_is_silent() -> None:
    ok = with_sip(Health(), SipProbe("127.0.0.1:5060/udp", 0.002))
    assert ok.ok and ok.details["sip"]["answers"]
    bad = with_sip(Health(), SipProbe("127.0.0.1:5060/udp", None))
    assert not bad.ok and "does not answer SIP on 127.0.0.1:5060/udp" in bad.reasons[0]
    assert with_sip(Health(), None) == Health()


def _healthz(port: int) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_healthz_is_503_while_the_pbx_does_not_answer_sip_and_200_once_it_does(
    tmp_path: Path, fake_sip: FakeSip
) -> None:
    settings = Settings(state_dir=tmp_path, sip_probe=f"127.0.0.1:{fake_sip.port}", environ={})
    probe = sip_probe_from(settings, timeout_s=0.6)
    assert probe is not None
    ctx = ServerContext(settings=settings, trigger=lambda t: None, webhook_secret=None, sip_probe=probe)
    httpd = make_server("127.0.0.1:0", ctx)
    serve_in_background(httpd)
    try:
        fake_sip.answering = False
        status, body = _healthz(httpd.server_address[1])
        assert status == 503 and body["sip"]["answers"] is False and "SIP" in body["reason"]
        fake_sip.answering = True
        status, body = _healthz(httpd.server_address[1])
        assert status == 200 and body["sip"]["answers"] is True
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_no_probe_is_made_when_no_sip_target_is_configured(tmp_path: Path) -> None:
    assert sip_probe_from(Settings(state_dir=tmp_path, environ={})) is None
