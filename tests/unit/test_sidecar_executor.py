"""The local executor (`--control local`): the client's own scripts run by `sh -c` in this process's
container against a temp "managed dir", uploads written straight into the temp dir, Asterisk's
going away told by its control socket, and no Docker module imported on the way."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reconciler.asterisk.client import INLINE_LIMIT_BYTES, AsteriskClient, AsteriskWentAway, FileSource
from reconciler.asterisk.executor import LocalExecutor, make_executor
from reconciler.asterisk.lease import Holder, Lease, box_kind, parse_lease


def local_client(root: Path) -> AsteriskClient:
    (root / "managed").mkdir()
    socket = root / "asterisk.ctl"
    socket.touch()
    client = AsteriskClient(
        "unused",
        managed_dir=str(root / "managed"),
        log_path=str(root / "messages.log"),
        executor=LocalExecutor(control_socket=str(socket)),
    )
    client.file_owner = f"{os.getuid()}:{os.getgid()}"
    client.control_socket = str(socket)
    return client


def test_a_transaction_runs_locally_and_renames_the_checked_files_into_place(tmp_path: Path) -> None:
    client = local_client(tmp_path)

    outcome = client.transact(Holder.new(), "rev1", files={"pjsip.conf": FileSource(text="[a]\n")})

    assert outcome.ok and outcome.swapped
    path = tmp_path / "managed" / "pjsip.conf"
    assert path.read_text() == "[a]\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert client.exec_count == 1 and client.transfer_count == 0


def test_large_files_are_written_into_the_temp_dir_directly_instead_of_uploaded(tmp_path: Path) -> None:
    client = local_client(tmp_path)
    big = "x" * (INLINE_LIMIT_BYTES + 10) + "\n"

    outcome = client.transact(Holder.new(), "rev1", files={"extensions.conf": FileSource(text=big)})

    assert outcome.ok and client.transfer_count == 1
    assert (tmp_path / "managed" / "extensions.conf").read_text() == big
    gitops = tmp_path / "managed" / ".gitops"
    assert not [p for p in gitops.iterdir() if p.name.startswith("tmp-")]


def test_the_lease_box_of_a_sidecar_names_its_own_run_and_is_not_a_containers(tmp_path: Path) -> None:
    client = local_client(tmp_path)
    assert client.transact(Holder.new(), "rev1", doing="testing").ok  # an acquired lease stays
    text = (tmp_path / "managed" / ".gitops" / "lease").read_text()
    lease = parse_lease(text)
    assert lease is not None and lease.box.startswith("local:") and box_kind(lease.box) == "local"


def test_a_lease_of_another_box_kind_is_void_only_by_its_expiry() -> None:
    sidecar = Lease("a" * 16, "w", "r", "", 0, 100, "local:host:123")
    assert not sidecar.void(now=50, box="456")  # a docker-exec reader cannot judge a sidecar's run
    assert sidecar.void(now=50, box="local:host:999")  # the sidecar restarted: its scripts died
    assert sidecar.void(now=100, box="456")
    container = Lease("a" * 16, "w", "r", "", 0, 100, "123")
    assert container.void(now=50, box="124") and not container.void(now=50, box="local:h:124")


def test_a_docker_exec_lease_from_the_container_is_respected_by_the_sidecar_shell(tmp_path: Path) -> None:
    client = local_client(tmp_path)
    gitops = tmp_path / "managed" / ".gitops"
    gitops.mkdir()
    far = 4102444800  # 2100-01-01
    (gitops / "lease").write_text(
        f"holder={'b' * 16}\nwho=ci\nrevision=r\ndoing=x\nsince=1\nexpires={far}\nbox=77\n"
    )

    outcome = client.transact(Holder.new(), "rev1", files={"pjsip.conf": FileSource(text="[a]\n")})

    assert outcome.lease.status == "busy" and not (tmp_path / "managed" / "pjsip.conf").exists()


def test_asterisk_restarting_during_a_batch_is_told_by_its_control_socket(tmp_path: Path) -> None:
    client = local_client(tmp_path)
    socket = Path(client.control_socket)
    # The batch renews the socket (a restart) and then dies the way a cut-off batch does.
    step = f"touch -d '2001-01-01' {socket}; kill -9 $$"

    with pytest.raises(AsteriskWentAway) as gone:
        client.run_steps(["echo one", step, "echo three"])

    assert "restarted" in gone.value.message and "docker" not in gone.value.hint
    assert "Asterisk container" in gone.value.hint


def test_a_missing_control_socket_says_asterisk_stopped(tmp_path: Path) -> None:
    executor = LocalExecutor(control_socket=str(tmp_path / "asterisk.ctl"))
    assert executor.went_away() is not None and "stopped" in (executor.went_away() or "")
    assert "docker" not in executor.logs_hint()


def test_make_executor_picks_local_or_docker() -> None:
    assert make_executor("local", "x").kind == "local"
    assert make_executor("docker", "x").kind == "docker"


def test_local_control_imports_no_docker_module(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["docker"] = None  # any `import docker` now raises ImportError
        from pathlib import Path
        import os
        root = Path({str(tmp_path)!r})
        (root / "managed").mkdir()
        (root / "asterisk.ctl").touch()
        from reconciler.asterisk.client import AsteriskClient, FileSource
        from reconciler.asterisk.executor import make_executor
        from reconciler.asterisk.lease import Holder
        client = AsteriskClient("x", managed_dir=str(root / "managed"),
                                executor=make_executor("local", "x"))
        client.file_owner = f"{{os.getuid()}}:{{os.getgid()}}"
        big = "y" * 70000
        out = client.transact(Holder.new(), "r", files={{"pjsip.conf": FileSource(text=big)}})
        assert out.ok, out
        assert (root / "managed" / "pjsip.conf").read_text() == big
        assert not any(m == "docker" or m.startswith("docker.") for m in sys.modules if sys.modules[m])
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
