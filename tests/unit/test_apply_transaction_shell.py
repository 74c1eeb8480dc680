"""The transaction exec's own shell (lease under flock, compare-and-swap, journal, checked staging,
rename, record, last verified copy), run by the real `sh` on a real directory: the same script
`AsteriskClient.transact` sends into the container, minus the container. No Asterisk command runs
here; what Asterisk does with the files is the integration tests' job."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.asterisk.client import AsteriskClient, FileSource, TxnOutcome, sha256_text
from reconciler.asterisk.journal import new_journal
from reconciler.asterisk.lease import Holder, parse_lease


class LocalShell(AsteriskClient):
    """An AsteriskClient whose execs run in a local `sh` (dash on Debian, as in the image)."""

    def __init__(self, root: Path, path: str | None = None) -> None:
        super().__init__("local", managed_dir=str(root / "managed"))
        (root / "managed").mkdir()
        self.file_owner = f"{os.getuid()}:{os.getgid()}"
        self.control_socket = str(root / "asterisk.ctl")
        Path(self.control_socket).touch()
        self.env = {**os.environ, "PATH": path or os.environ["PATH"]}

    def _exec(self, script: str) -> tuple[int, str]:
        self.exec_count += 1
        done = subprocess.run(["sh", "-c", script], capture_output=True, env=self.env, check=False)
        return done.returncode, (done.stdout + done.stderr).decode()

    def _container_went_away(self) -> str | None:
        return None


@pytest.fixture
def pbx(tmp_path: Path) -> LocalShell:
    return LocalShell(tmp_path)


def managed(client: LocalShell) -> Path:
    return Path(client.managed_dir)


def gitops(client: LocalShell) -> Path:
    return managed(client) / ".gitops"


def apply_files(client: LocalShell, holder: Holder, files: dict[str, str], **kw: Any) -> TxnOutcome:
    return client.transact(
        holder,
        "rev",
        files={n: FileSource(text=t) for n, t in files.items()},
        journal=new_journal("rev", holder.who, {n: sha256_text(t) for n, t in files.items()}, False),
        **kw,
    )


def test_a_second_apply_is_refused_while_the_first_holds_the_lease_and_is_told_who(pbx: LocalShell) -> None:
    first, second = Holder.new("watch loop"), Holder.new("ci job")
    assert apply_files(pbx, first, {"pjsip.conf": "one\n"}).ok

    out = apply_files(pbx, second, {"pjsip.conf": "two\n"})

    assert out.lease.status == "busy" and not out.swapped
    assert out.lease.lease is not None and out.lease.lease.holder == first.token
    assert "watch loop" in out.lease.lease.describe(out.lease.now)
    assert (managed(pbx) / "pjsip.conf").read_text() == "one\n"


def test_an_expired_lease_or_one_from_an_earlier_container_run_is_taken_over(pbx: LocalShell) -> None:
    crashed, next_one = Holder.new("crashed"), Holder.new("next")
    assert apply_files(pbx, crashed, {"pjsip.conf": "one\n"}).ok
    lease_file = gitops(pbx) / "lease"
    lease = parse_lease(lease_file.read_text())
    assert lease is not None
    lease_file.write_text(lease_file.read_text().replace(f"expires={lease.expires}", "expires=1"))

    out = apply_files(pbx, next_one, {"pjsip.conf": "two\n"})
    assert out.ok and out.lease.took_over is not None and out.lease.took_over.holder == crashed.token

    # A lease written in another run of the container (its PID 1 started at another time) is void.
    text = lease_file.read_text()
    box = parse_lease(text).box  # type: ignore[union-attr]
    lease_file.write_text(text.replace(f"box={box}", "box=1"))
    assert apply_files(pbx, crashed, {"pjsip.conf": "three\n"}).ok


def test_a_holder_whose_lease_was_taken_over_cannot_record(pbx: LocalShell) -> None:
    slow, other = Holder.new("slow"), Holder.new("other")
    assert apply_files(pbx, slow, {"pjsip.conf": "one\n"}).ok
    lease_file = gitops(pbx) / "lease"
    lease_file.write_text(lease_file.read_text().replace(slow.token, other.token))

    out = pbx.transact(slow, "rev", mode="fence", record='{"revision": "rev"}\n', settle=["pjsip.conf"])

    assert out.lease.status == "lost" and not out.recorded
    assert not (managed(pbx) / "state.json").exists()


def test_files_changed_since_the_read_stop_the_swap_before_anything_is_written(pbx: LocalShell) -> None:
    holder = Holder.new()
    (managed(pbx) / "pjsip.conf").write_text("changed by someone else\n")

    out = apply_files(pbx, holder, {"pjsip.conf": "mine\n"}, expect={"pjsip.conf": sha256_text("as read\n")})

    assert out.stopped == "check" and out.detail == "conflict pjsip.conf"
    assert (managed(pbx) / "pjsip.conf").read_text() == "changed by someone else\n"
    assert not (gitops(pbx) / "journal.json").exists() and not (gitops(pbx) / "lease").exists()


def test_a_write_that_fails_halfway_renames_nothing_and_leaves_no_temp_file(tmp_path: Path) -> None:
    # A `dd` that writes half its input and then fails the way a full disk makes it fail.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "dd").write_text(
        "#!/bin/sh\n"
        'for a; do case "$a" in of=*) out="${a#of=}";; esac; done\n'
        'head -c 10 > "$out"; echo "dd: error writing \'$out\': No space left on device" >&2; exit 1\n'
    )
    (shim / "dd").chmod(0o755)
    (tmp_path / "pbx").mkdir()
    client = LocalShell(tmp_path / "pbx", path=f"{shim}:{os.environ['PATH']}")
    (managed(client) / "pjsip.conf").write_text("the good one\n")
    holder = Holder.new()

    out = client.transact(holder, "rev", files={"pjsip.conf": FileSource(text="x" * 4000)})

    assert out.stopped == "stage" and "No space left on device" in out.detail
    assert not out.swapped and out.renamed == ()
    assert (managed(client) / "pjsip.conf").read_text() == "the good one\n"
    assert not [p for p in gitops(client).iterdir() if p.name.startswith("tmp-")]
    assert not (gitops(client) / "lease").exists()  # nothing changed: the lock is free again


def test_recorded_files_are_kept_as_hard_links_and_restored_byte_for_byte_after_the_next_swap(
    pbx: LocalShell,
) -> None:
    holder = Holder.new()
    good = "[4001]\ntype = endpoint ; ünïcode, no newline at the end"
    assert apply_files(pbx, holder, {"pjsip.conf": good}).ok
    assert (gitops(pbx) / "journal.json").exists()  # swapped, not recorded yet
    rec = pbx.transact(holder, "rev", mode="fence", record='{"revision": "rev"}\n', settle=["pjsip.conf"])
    assert rec.ok and rec.recorded and not (gitops(pbx) / "journal.json").exists()
    kept = gitops(pbx) / "last-good" / "pjsip.conf"
    assert kept.read_text() == good and kept.stat().st_ino == (managed(pbx) / "pjsip.conf").stat().st_ino

    assert apply_files(pbx, holder, {"pjsip.conf": "broken\n"}).ok
    assert kept.read_text() == good  # rename(2) left the linked inode alone

    back = pbx.transact(
        holder, "rev", mode="fence", files={"pjsip.conf": FileSource(link_sha=sha256_text(good))}, settle=[]
    )
    assert back.ok and (managed(pbx) / "pjsip.conf").read_text() == good
    assert not (gitops(pbx) / "lease").exists() and not (gitops(pbx) / "journal.json").exists()


def test_a_last_verified_copy_changed_in_place_is_not_restored(pbx: LocalShell) -> None:
    holder = Holder.new()
    assert apply_files(pbx, holder, {"pjsip.conf": "good\n"}).ok
    assert pbx.transact(holder, "rev", mode="fence", record="{}\n", settle=["pjsip.conf"]).ok
    (managed(pbx) / "pjsip.conf").write_text("edited in place\n")  # same inode as the copy

    back = pbx.transact(holder, "rev", files={"pjsip.conf": FileSource(link_sha=sha256_text("good\n"))})

    assert back.stopped == "stage" and "does not match its recorded hash" in back.detail


def test_staged_files_are_not_world_readable(pbx: LocalShell) -> None:
    assert apply_files(pbx, Holder.new(), {"pjsip.conf": "password = s3cret\n"}).ok
    mode = stat.S_IMODE((managed(pbx) / "pjsip.conf").stat().st_mode)
    assert mode == 0o640
