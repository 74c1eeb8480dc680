"""The dashboard page served at `/` by `reconciler watch --http` (and `/fleet` with `--site`).

One self-contained HTML file (inline CSS and JavaScript, no CDN, no web fonts) that fetches
`api/status` every few seconds and renders provider cards, the extension grid, the live revision and
the recent reconciles. It works from a phone (responsive grid) and keeps working while Asterisk is
down (it shows the error and retries).
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def dashboard_html() -> str:
    """The dashboard page as one HTML document."""
    return resources.files("reconciler.observe").joinpath("web/dashboard.html").read_text(encoding="utf-8")


@cache
def fleet_html() -> str:
    """The fleet page (`/fleet` of a site reconciler, `watch --site`): every site of the fleet,
    from `api/fleet`."""
    return resources.files("reconciler.observe").joinpath("web/fleet.html").read_text(encoding="utf-8")
