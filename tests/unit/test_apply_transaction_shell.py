"""The transaction exec's own shell (lease under flock, compare-and-swap, journal, checked staging,
rename, record, last verified copy), run by the real `sh` on a real directory: the same script
`AsteriskClient.transact` sends into the container, minus the container. No Asterisk command runs
here; what Asterisk does with the files is the integration tests' job."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from docker.errors import APIError

from reconciler.asterisk import store
from reconciler.asterisk.client import (
    ARGV_LIMIT_BYTES,
    SCRIPT_FILE,
    STORE_SQL,
    AsteriskClient,
    FileSource,
    TxnOutcome,
    sha256_text,
)
from reconciler.asterisk.executor import DockerExecutor
from reconciler.asterisk.journal import new_journal
from reconciler.asterisk.lease import Holder, parse_lease
from reconciler.desired.model import DesiredState
from reconciler.errors import ManagedWriteFailed


class LocalVolume:
    """`put_archive` of a container, into a local directory; `full` refuses it the way Docker does
    when the volume is full (after creating the archive's directories)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.full = False
        self.uploads: list[list[str]] = []

    def put_archive(self, path: str, data: bytes) -> bool:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            self.uploads.append([m.name for m in members if m.isfile()])
            for member in members:
                if member.isdir():
                    Path(path, member.name).mkdir(parents=True, exist_ok=True)
            if self.full:
                raise APIError("500 Server Error", explanation="write store.sql: no space left on device")
            tar.extractall(path, filter="data")
        return True


class LocalShell(AsteriskClient):
    """An AsteriskClient whose execs run in a local `sh` (dash on Debian, as in the image) and whose
    uploads land in the local managed dir. `scripts` holds every exec's argv script."""

    def __init__(self, root: Path, path: str | None = None) -> None:
        self.volume = LocalVolume(root)
        executor = DockerExecutor("local")
        executor._container = self.volume  # its put_archive lands in the local managed dir
        super().__init__("local", managed_dir=str(root / "managed"), executor=executor)
        (root / "managed").mkdir()
        self.file_owner = f"{os.getuid()}:{os.getgid()}"
        self.control_socket = str(root / "asterisk.ctl")
        Path(self.control_socket).touch()
        self.env = {**os.environ, "PATH": path or os.environ["PATH"]}
        self.scripts: list[str] = []

    def _exec(self, script: str) -> tuple[int, str]:
        self.exec_count += 1
        self.scripts.append(script)
        done = subprocess.run(["sh", "-c", script], capture_output=True, env=self.env, check=False)
        return done.returncode, (done.stdout + done.stderr).decode()

    def _container_went_away(self) -> str | None:
        return None


def shims(root: Path, **scripts: str) -> str:
    """A PATH whose first directory holds the executable `scripts` (name → sh body)."""
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


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


# --- size: every script stays under the argv limit ------------------------------------------------

TEN_THOUSAND = [str(n) for n in range(40000, 50000)]


def _rows(numbers: list[str]) -> store.Rows:
    state = DesiredState.model_validate(
        {"extensions": [{"number": n, "name": f"Phone {n}", "password": f"${{P{n}}}"} for n in numbers]}
    )
    return store.desired_rows(state, {f"P{n}": f"pw-{n}-xxxxxxxx" for n in numbers}, b"k" * 32)


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="needs the sqlite3 shell")
def test_a_rewrite_of_10000_extensions_runs_from_an_uploaded_sql_file_with_a_script_under_the_argv_limit(
    tmp_path: Path,
) -> None:
    db = tmp_path / "realtime.sqlite3"
    # The store step runs `setpriv … sqlite3 -bail <DB_PATH> < file`: here, the real sqlite3 on a
    # local DB (the container's path and uid are the image's business).
    path = shims(tmp_path, setpriv=f"exec sqlite3 -bail {db}\n")
    (tmp_path / "pbx").mkdir()
    client = LocalShell(tmp_path / "pbx", path=path)
    sql = store.rewrite_sql(_rows(TEN_THOUSAND), "t1", b"k" * 32)
    assert len(sql.encode()) > ARGV_LIMIT_BYTES  # the SQL alone would not fit in argv

    out = client.transact(
        Holder.new(),
        "rev",
        files={"pjsip.conf": FileSource(text="[transport-udp]\n")},
        store_sql=sql,
        store_digest=False,
    )

    assert out.ok, (out.stopped, out.detail)
    assert "stored" in out.outputs["store"].splitlines()
    assert client.volume.uploads and client.volume.uploads[0][-1].endswith("/" + STORE_SQL)
    assert max(len(s.encode()) for s in client.scripts) < ARGV_LIMIT_BYTES
    count = subprocess.run(["sqlite3", str(db), "SELECT count(*) FROM ps_endpoints"], capture_output=True)
    assert count.stdout.decode().strip() == "10000"
    assert not [p for p in gitops(client).iterdir() if p.name.startswith("tmp-")]


def test_removing_10000_extensions_runs_its_unregister_commands_from_an_uploaded_script(
    tmp_path: Path,
) -> None:
    seen = tmp_path / "cli.log"
    path = shims(tmp_path, asterisk=f'printf "%s\\n" "$2" >> {seen}; echo ok\n')
    (tmp_path / "pbx").mkdir()
    client = LocalShell(tmp_path / "pbx", path=path)
    queries = store.unregister_commands(TEN_THOUSAND)
    assert all(len(q.encode()) <= store.CLI_COMMAND_MAX_BYTES for q in queries)

    out = client.transact(Holder.new(), "rev", queries=queries)

    assert out.ok and out.reload is not None
    assert out.reload.query_outputs == tuple("ok\n" for _ in queries)
    assert max(len(s.encode()) for s in client.scripts) < ARGV_LIMIT_BYTES
    assert any(name.endswith("/" + SCRIPT_FILE) for up in client.volume.uploads for name in up)
    ran = seen.read_text().splitlines()
    assert ran == queries
    numbers = [n for q in ran for n in re.findall(r"'(\d+)'", q)]
    assert sorted(numbers) == sorted(TEN_THOUSAND)
    assert not [p for p in gitops(client).iterdir() if p.name.startswith("tmp-")]


def test_a_store_sql_upload_refused_by_a_full_volume_changes_nothing_and_says_so(pbx: LocalShell) -> None:
    (managed(pbx) / "pjsip.conf").write_text("the good one\n")
    pbx.volume.full = True
    sql = store.rewrite_sql(_rows(TEN_THOUSAND[:2000]), "t1")

    with pytest.raises(ManagedWriteFailed) as failure:
        pbx.transact(Holder.new(), "rev", files={"pjsip.conf": FileSource(text="new\n")}, store_sql=sql)

    assert "no space left on device" in failure.value.message
    assert "Nothing was renamed or reloaded" in failure.value.message and failure.value.hint
    assert failure.value.temporary
    assert (managed(pbx) / "pjsip.conf").read_text() == "the good one\n"
    assert not [p for p in gitops(pbx).iterdir() if p.name.startswith("tmp-")]
    assert not (gitops(pbx) / "lease").exists()


def test_a_restore_from_links_on_a_full_volume_sends_no_file_text_inline(pbx: LocalShell) -> None:
    holder = Holder.new()
    good = "x" * (60 * 1024)
    assert apply_files(pbx, holder, {"pjsip.conf": good}).ok
    assert pbx.transact(holder, "rev", mode="fence", record="{}\n", settle=["pjsip.conf"]).ok
    assert apply_files(pbx, holder, {"pjsip.conf": "broken\n"}).ok
    pbx.volume.full = True
    pbx.scripts.clear()

    back = pbx.transact(
        holder, "rev", files={"pjsip.conf": FileSource(text=good, link_sha=sha256_text(good))}
    )

    assert back.ok and (managed(pbx) / "pjsip.conf").read_text() == good
    assert all(good not in s for s in pbx.scripts)
