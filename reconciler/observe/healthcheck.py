"""The sidecar image's own health check: `python3 -m reconciler.observe.healthcheck`.

GET /healthz of the reconciler's HTTP address; exit 0 on 200, else 1. The address is
$RECONCILER_HTTP when set, else the one `watch` wrote into its state dir when it started listening
(`HTTP_ADDRESS_FILE`; a `--site` without `--http` listens on the site's fleet.yaml address), else
DEFAULT_HTTP. Standard library only: it runs every few seconds and must start fast. It never asks
Asterisk's health check: a sidecar that is up while Asterisk restarts is healthy enough to stay.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

DEFAULT_HTTP = "127.0.0.1:8088"
HTTP_ENV = "RECONCILER_HTTP"
HTTP_ADDRESS_FILE = "http.address"  # in the state dir: HOST:PORT the running watch listens on
TIMEOUT_S = 4.0


def address(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get(HTTP_ENV):
        return env[HTTP_ENV]
    state = env.get("RECONCILER_STATE_DIR")
    if state:
        try:
            written = (Path(state) / HTTP_ADDRESS_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            written = ""
        if written:
            return written
    return DEFAULT_HTTP


def main() -> int:
    url = f"http://{address()}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
            ok = reply.status == 200
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
