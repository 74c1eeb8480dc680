"""A site's reconciler follows the whole fleet, but its snapshots carry the site's own revision:
a change to another site's files gives the same revision (nothing to apply here), while the
source revision, which the rollout gate compares, is the whole fleet's."""

from __future__ import annotations

from pathlib import Path

from reconciler.desired.revision import revision_of, site_revision
from reconciler.gitops.sources import DirectorySource, GitSource
from tests.unit.fleet_support import commit, copy_example, fleet_repo


def touch(path: Path) -> None:
    path.write_text(path.read_text() + "# touched\n")


def test_a_directory_snapshot_of_a_site_carries_the_sites_and_the_fleets_revision(tmp_path: Path) -> None:
    fleet = copy_example(tmp_path / "fleet")
    source = DirectorySource(fleet, cache_dir=tmp_path / "cache", site="hq")
    first = source.snapshot()
    assert first.revision == site_revision(fleet, "hq")
    assert first.source_revision == first.fleet_revision == revision_of(fleet)

    touch(fleet / "sites" / "branch" / "extensions.yaml")
    second = source.snapshot()
    assert second.revision == first.revision, "another site's change is not this site's"
    assert second.source_revision == revision_of(fleet) != first.source_revision
    assert (second.path / "sites" / "branch" / "extensions.yaml").read_text().endswith("# touched\n")


def test_a_plain_directory_snapshot_has_no_source_revision(tmp_path: Path) -> None:
    fleet = copy_example(tmp_path / "fleet")
    snap = DirectorySource(fleet / "sites" / "hq", cache_dir=tmp_path / "cache").snapshot()
    assert snap.source_revision is None and snap.fleet_revision == snap.revision


def test_a_git_snapshot_of_a_site_is_the_last_commit_that_changed_the_site(tmp_path: Path) -> None:
    work = tmp_path / "work"
    repo = fleet_repo(work, "the fleet")
    first = repo.head.commit.hexsha
    touch(work / "fleet" / "sites" / "branch" / "extensions.yaml")
    head = commit(repo, "branch: a comment")

    hq = GitSource(str(work), "main", "fleet", cache_dir=tmp_path / "hq", site="hq").snapshot()
    branch = GitSource(str(work), "main", "fleet", cache_dir=tmp_path / "branch", site="branch").snapshot()
    assert (hq.revision, hq.source_revision, hq.subject) == (first, head, "the fleet")
    assert (branch.revision, branch.source_revision) == (head, head)
