"""`reconciler pr-check` on a fleet boots each changed site's render in a throwaway Asterisk (the
project's image, no network) and skips the sites the change does not touch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.gitops.fleetcheck import format_fleet_report, run_fleet_pr_check
from reconciler.gitops.prcheck import PrCheckOptions
from tests.harness import containers
from tests.unit.fleet_support import commit, fleet_repo

pytestmark = pytest.mark.integration


def test_a_fleet_pr_check_verifies_the_changed_site_and_skips_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert containers.image_available(), "the Asterisk image is missing: make image"
    root = tmp_path / "pbx-fleet"
    repo = fleet_repo(root)
    path = root / "fleet" / "sites" / "hq" / "extensions.yaml"
    path.write_text(path.read_text().replace("name: Support", "name: Support desk"))
    commit(repo, "rename 4002")
    monkeypatch.chdir(root)

    options = PrCheckOptions(
        desired_dir=Path("fleet"), base="HEAD~1", verify="always", image=containers.IMAGE
    )
    report = run_fleet_pr_check(options, environ=dict(os.environ))

    by_site = {site.name: site for site in report.sites}
    assert by_site["hq"].verify.status == "passed", by_site["hq"].verify
    assert by_site["branch"].verify.status == "skipped"
    assert report.passed
    assert "changes at hq" in format_fleet_report(report)
