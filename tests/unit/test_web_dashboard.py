"""The dashboard page is one self-contained, responsive document that polls api/status."""

from __future__ import annotations

import re

from reconciler.observe.web import dashboard_html


def test_dashboard_loads_nothing_from_other_hosts() -> None:
    html = dashboard_html()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "fonts.googleapis" not in html
    assert "<script src" not in html and "<link" not in html


def test_dashboard_fetches_the_status_api_and_refreshes_itself() -> None:
    html = dashboard_html()
    assert 'fetch("api/status"' in html
    assert "setInterval(refresh" in html


def test_dashboard_is_readable_on_a_phone() -> None:
    html = dashboard_html()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "@media (max-width: 600px)" in html


def test_dashboard_has_places_for_providers_extensions_revision_and_history() -> None:
    html = dashboard_html()
    for element in ('id="providers"', 'id="extensions"', 'id="revision"', 'id="history"'):
        assert element in html
