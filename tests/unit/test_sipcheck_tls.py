"""check-provider over TLS: certificate trust and name are checked before any SIP is sent.

The server is a few lines of SIP over Python's ssl (OPTIONS → 200, REGISTER → digest challenge,
then 200 or 403 by recomputing the digest independently), with a throwaway self-signed
certificate for `localhost` made by openssl.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.asterisk.sip import SipTarget
from reconciler.observe.sipcheck import Verdict, all_passed, run_checks

PASSWORD = "Tls-Test-Passw0rd"
REALM = "tls-test"
NONCE = "5f2b1c0d"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


def _expected_response(auth: str) -> tuple[str, str]:
    fields = dict(re.findall(r'(\w+)="?([^",]+)"?', auth))
    ha1 = hashlib.md5(f"{fields['username']}:{REALM}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{fields['uri']}".encode()).hexdigest()
    want = hashlib.md5(f"{ha1}:{NONCE}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}".encode()).hexdigest()
    return want, fields["response"]


def _answer(request: str) -> str:
    head = request.split("\r\n")
    method = head[0].split()[0]
    keep = [
        line for line in head[1:] if line.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")
    ]
    if method == "OPTIONS":
        status = "200 OK"
    elif "Authorization:" not in request:
        status = "401 Unauthorized"
        keep.append(f'WWW-Authenticate: Digest realm="{REALM}",nonce="{NONCE}",qop="auth",algorithm=MD5')
    else:
        want, got = _expected_response(request.split("Authorization:", 1)[1].split("\r\n")[0])
        status = "200 OK" if want == got else "403 Forbidden"
    return "\r\n".join([f"SIP/2.0 {status}", *keep, "Server: tls-test", "Content-Length: 0"]) + "\r\n\r\n"


@pytest.fixture(scope="module")
def tls_server(cert: tuple[Path, Path]) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    buffer = b""
                    while chunk := conn.recv(65535):
                        buffer += chunk
                        while b"\r\n\r\n" in buffer:
                            message, buffer = buffer.split(b"\r\n\r\n", 1)
                            conn.sendall(_answer(message.decode()).encode())
            except (ssl.SSLError, OSError):
                continue  # a client that refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    listener.close()


def _target(
    port: int, host: str = "localhost", password: str = PASSWORD, ca: Path | None = None
) -> SipTarget:
    return SipTarget(
        "tls_provider",
        host,
        port,
        "tls",
        "trunkuser",
        password,
        "TLS_PASSWORD",
        True,
        str(ca) if ca else None,
    )


def test_tls_with_a_trusted_certificate_for_the_host_passes_every_step(
    tls_server: int, cert: tuple[Path, Path]
) -> None:
    steps = run_checks(_target(tls_server, ca=cert[0]), timeout=3)
    assert all_passed(steps), steps
    assert "certificate valid for localhost" in steps[1].detail


def test_untrusted_certificate_fails_at_the_connect_step(tls_server: int) -> None:
    steps = run_checks(_target(tls_server), timeout=3)
    connect = steps[1]
    assert connect.name == "connect" and connect.verdict is Verdict.FAIL
    assert "certificate" in connect.detail and "self-signed" in (connect.fix or "")


def test_certificate_for_another_name_fails_at_the_connect_step(
    tls_server: int, cert: tuple[Path, Path]
) -> None:
    steps = run_checks(_target(tls_server, host="127.0.0.1", ca=cert[0]), timeout=3)
    assert steps[1].verdict is Verdict.FAIL
    assert "127.0.0.1" in steps[1].detail


def test_wrong_password_over_tls_fails_at_register(tls_server: int, cert: tuple[Path, Path]) -> None:
    steps = run_checks(_target(tls_server, password="not-the-password-1", ca=cert[0]), timeout=3)
    register = next(s for s in steps if s.name == "REGISTER")
    assert register.verdict is Verdict.FAIL and "403" in register.detail
    assert "check TLS_PASSWORD" in (register.fix or "")
