"""The revision of a fleet directory covers fleet.yaml and every base and site file; a plain desired
directory hashes exactly as before fleets existed."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from reconciler.desired.fleet import fleet_entries
from reconciler.desired.load import desired_entries, read_entry
from reconciler.desired.revision import content_hash, site_revision
from reconciler.safeio import FileRefused
from reconciler.settings import REPO_ROOT
from tests.unit.fleet_support import commit, copy_example, fleet_repo


def old_content_hash(directory: Path) -> str:
    """The content hash as it was computed before fleets (kept here, frozen, to compare)."""
    digest = hashlib.sha256()
    for entry in desired_entries(directory):
        try:
            data = read_entry(entry)
        except FileRefused as exc:
            digest.update(entry.name.encode() + b"\0refused\0" + exc.reason.encode() + b"\0")
            continue
        digest.update(entry.name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return "sha256:" + digest.hexdigest()


def test_a_plain_desired_directory_hashes_byte_identically_to_before(tmp_path: Path) -> None:
    plain = tmp_path / "desired"
    shutil.copytree(REPO_ROOT / "desired", plain)
    (plain / "dangling.yaml").symlink_to(tmp_path / "nothing")
    assert content_hash(plain) == old_content_hash(plain)
    assert content_hash(REPO_ROOT / "desired") == old_content_hash(REPO_ROOT / "desired")


def test_the_fleet_hash_lists_every_file_by_relative_path(tmp_path: Path) -> None:
    fleet = copy_example(tmp_path / "fleet")
    assert [name for name, _ in fleet_entries(fleet)] == [
        "bases/common/pbx.yaml",
        "bases/common/providers.yaml",
        "bases/common/routes.yaml",
        "fleet.yaml",
        "sites/branch/extensions.yaml",
        "sites/branch/providers.yaml",
        "sites/hq/extensions.yaml",
    ]


def test_a_change_in_a_base_a_site_or_fleet_yaml_changes_the_fleet_revision(tmp_path: Path) -> None:
    fleet = copy_example(tmp_path / "fleet")
    seen = {content_hash(fleet)}
    assert content_hash(fleet) in seen  # stable
    for name in ("bases/common/routes.yaml", "sites/branch/providers.yaml", "fleet.yaml"):
        path = fleet / name
        path.write_text(path.read_text() + "# touched\n")
        now = content_hash(fleet)
        assert now not in seen, name
        seen.add(now)
    (fleet / "sites" / "hq" / "more.yaml").write_text("inbound: []\n")
    assert content_hash(fleet) not in seen
    # a file moved between two folders with the same name and bytes is a change too
    before = content_hash(fleet)
    (fleet / "sites" / "hq" / "more.yaml").rename(fleet / "sites" / "branch" / "more.yaml")
    assert content_hash(fleet) != before


def test_a_fleet_folder_that_leaves_the_fleet_counts_by_name_and_is_not_read(tmp_path: Path) -> None:
    fleet = copy_example(tmp_path / "fleet")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.yaml").write_text("a: 1\n")
    (fleet / "bases" / "evil").symlink_to(outside)
    before = content_hash(fleet)
    (outside / "x.yaml").write_text("a: 2\n")
    assert content_hash(fleet) == before
    assert dict(fleet_entries(fleet))["bases/evil"].refused is not None


def test_a_sites_revision_changes_with_its_bases_and_files_and_not_with_another_sites(tmp_path: Path) -> None:
    fleet = copy_example(tmp_path / "fleet")
    hq, branch = site_revision(fleet, "hq"), site_revision(fleet, "branch")
    assert hq != branch and hq.startswith("sha256:")

    touch(fleet / "sites" / "branch" / "extensions.yaml")
    assert site_revision(fleet, "hq") == hq
    assert site_revision(fleet, "branch") != branch

    branch = site_revision(fleet, "branch")
    touch(fleet / "bases" / "common" / "routes.yaml")
    assert site_revision(fleet, "hq") != hq
    assert site_revision(fleet, "branch") != branch


def test_in_a_clean_git_work_tree_a_sites_revision_is_the_last_commit_that_changed_it(tmp_path: Path) -> None:
    repo = fleet_repo(tmp_path / "repo")
    fleet = tmp_path / "repo" / "fleet"
    first = repo.head.commit.hexsha
    touch(fleet / "sites" / "branch" / "extensions.yaml")
    second = commit(repo, "branch only")
    assert site_revision(fleet, "hq") == first
    assert site_revision(fleet, "branch") == second
    touch(fleet / "sites" / "hq" / "extensions.yaml")  # not committed: a content hash
    assert site_revision(fleet, "hq").startswith("sha256:")


def touch(path: Path) -> None:
    path.write_text(path.read_text() + "# touched\n")
