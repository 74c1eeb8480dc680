"""Faults against a real Asterisk 22: a full managed volume, two applies at once, Asterisk killed in
the middle of a reload, revision ids with `_`, `.` and `-`.

The PBX's managed directory is a small tmpfs (1 MiB) that survives `docker restart`, so it can be
filled up and the PBX restarted on what is on disk. Every test starts from the baseline (6
extensions) and leaves it live.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.asterisk import store
from reconciler.asterisk.client import AsteriskClient
from reconciler.desired.render import RENDERED_FILES
from reconciler.errors import EXIT_UNAVAILABLE, ManagedWriteFailed
from reconciler.gitops.apply import ApplyResult, apply_desired, read_live_state, rev12
from tests.harness import storedb
from tests.harness.containers import (
    MANAGED_DIR,
    MESSAGES_LOG,
    PbxContainer,
    ProviderContainer,
    desired_yaml,
    docker_available,
    image_available,
    isolated_settings,
    make_secrets,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not docker_available(), reason="no Docker engine"),
    pytest.mark.skipif(not image_available(), reason="image asterisk-gitops/asterisk:latest not built"),
]

BASELINE = [str(n) for n in range(4000, 4006)]
LARGE = [str(n) for n in range(4000, 4600)]  # ~0.3 MiB of store SQL
MEDIUM = [str(n) for n in range(4000, 4046)]  # more new extensions than store.VERIFY_CAP
# The store's WAL of the large change (its rows, their undo copies and ids, six tables) must fit once
# the filler is gone.
VOLUME_BYTES = 2 * 1024 * 1024


class Pbx:
    """The module's PBX (tmpfs managed volume), its provider, and desired dirs for it."""

    def __init__(self, pbx: PbxContainer, provider: ProviderContainer, root: Path, secrets: dict[str, str]):
        self.container = pbx
        self.provider = provider
        self.root = root
        self.secrets = secrets
        self.settings = isolated_settings(pbx.name, root, secrets)

    def client(self) -> AsteriskClient:
        return AsteriskClient(self.container.name)

    def desired(self, name: str, numbers: list[str], *, label: str = "Extension") -> Path:
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        files = desired_yaml(
            self.container.sip_port, self.provider.sip_port, extensions={n: f"{label} {n}" for n in numbers}
        )
        for file_name, text in files.items():
            (directory / file_name).write_text(text)
        return directory

    def apply(self, directory: Path, **kw: object) -> ApplyResult:
        return apply_desired(self.settings, self.client(), directory, **kw)  # type: ignore[arg-type]

    def reloading_change(self) -> Path:
        """A revision whose apply reloads res_pjsip and then runs long enough to be cut off.

        Extensions are store rows now: adding them reloads nothing. A provider edit rewrites
        pjsip.conf (res_pjsip reloads), and the exec then still asks about 20 of the 40 new
        extensions one by one (store.VERIFY_CAP), long enough after the reload for a kill to land
        inside it. (600 new rows, the SQL a killed exec leaves in its temp dir and the WAL of the
        heal that follows no longer fit the 1 MiB volume.)"""
        return self.provider_edit("provider-edit", MEDIUM)

    def provider_edit(self, name: str, numbers: list[str], *, label: str = "Extension") -> Path:
        """`desired(name, numbers)` with the provider's registration expiry changed: pjsip.conf
        changes beyond its revision marker, so it is rewritten and res_pjsip reloads."""
        directory = self.desired(name, numbers, label=label)
        with (directory / "providers.yaml").open("a") as providers:
            providers.write("    expiration: 1800\n")
        return directory

    def baseline(self) -> ApplyResult:
        return self.apply(self.desired("baseline", BASELINE))

    def sh(self, command: str) -> str:
        return self.container.exec(command)[1]

    def hashes(self) -> dict[str, str]:
        out = self.sh(f"cd {MANAGED_DIR} && sha256sum {' '.join(RENDERED_FILES)}")
        return {name: digest for digest, name in (line.split() for line in out.splitlines())}

    def log_size(self) -> int:
        return self.container.log_size()

    def log_since(self, offset: int) -> str:
        return self.container.log_since(offset)

    def endpoints(self) -> set[str]:
        out = self.container.cli("pjsip list endpoints")
        return set(re.findall(r"^\s*Endpoint:\s+([^/\s]+)", out, re.M)) - {"<Endpoint"}

    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.secrets,
            "RECONCILER_CONTAINER": self.container.name,
            "RECONCILER_ENV_FILE": str(self.root / "no.env"),
            "RECONCILER_SECRETS_DIR": str(self.root / "no-secrets"),
            "RECONCILER_STATE_DIR": str(self.root / "state"),
            "RECONCILER_AMI_PORT": str(self.container.ami_port),  # this PBX's, never another's
            "COLUMNS": "200",
        }

    def cli_apply(self, directory: Path, *args: str) -> subprocess.Popen[str]:
        """`reconciler apply` as a user runs it, in its own process."""
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", str(directory), *args],
            env=self.cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def assert_consistent(self) -> str:
        """state.json names the files on disk, Asterisk runs them, no journal, no lock: the
        revision live. Returns it."""
        state = read_live_state(self.client())
        assert state is not None
        assert state.files == self.hashes(), "state.json disagrees with the files on disk"
        marker = rev12(state.revision)
        pjsip_rev = re.search(r"^\[gitops-rev-([^\]]+)\]", self.sh(f"cat {MANAGED_DIR}/pjsip.conf"), re.M)
        assert pjsip_rev is not None
        assert "Unable to find object" not in self.container.cli(f"pjsip show aor gitops-rev-{pjsip_rev[1]}")
        assert self.sh(f"ls -A {MANAGED_DIR}/.gitops").split().count("journal.json") == 0
        assert "lease" not in self.sh(f"ls -A {MANAGED_DIR}/.gitops").split()
        return marker


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    secrets = make_secrets(LARGE)
    container = PbxContainer("pbx", name_prefix="faults", managed_tmpfs_bytes=VOLUME_BYTES)
    provider = ProviderContainer(container.sip_port, secrets["PROVIDER_PASSWORD"], name_prefix="faults")
    try:
        provider.start()
        container.start()
        yield Pbx(container, provider, tmp_path_factory.mktemp("faults"), secrets)
    finally:
        container.stop()
        provider.stop()


@pytest.fixture
def baseline(pbx: Pbx) -> Pbx:
    pbx.sh(f"rm -f {MANAGED_DIR}/filler.bin")
    pbx.baseline()
    return pbx


def fill(pbx: Pbx, leave_kib: int) -> None:
    """Fill the managed volume until `leave_kib` KiB are free."""
    free = int(pbx.sh(f"df -Pk {MANAGED_DIR} | awk 'NR==2 {{print $4}}'").strip())
    pbx.sh(f"head -c {(free - leave_kib) * 1024} /dev/zero > {MANAGED_DIR}/filler.bin")
    left = int(pbx.sh(f"df -Pk {MANAGED_DIR} | awk 'NR==2 {{print $4}}'").strip())
    assert left <= leave_kib + 4, left


@pytest.mark.parametrize(
    ("change", "leave_kib"),
    [("large change (uploaded)", 64), ("one extension renamed (written inline)", 12)],
)
def test_an_apply_into_a_full_volume_changes_nothing_even_after_docker_restart(
    baseline: Pbx, change: str, leave_kib: int
) -> None:
    pbx = baseline
    good = pbx.hashes()
    good_state = read_live_state(pbx.client())
    assert good_state is not None
    if change.startswith("large"):
        target = pbx.desired("large", LARGE)
    else:
        target = pbx.desired("renamed", BASELINE, label="Renamed")
    fill(pbx, leave_kib)
    offset = pbx.log_size()
    try:
        with pytest.raises(ManagedWriteFailed) as failure:
            pbx.apply(target)

        message = failure.value.message
        # The upload (Docker), a staged write (dd) or the store's transaction (SQLite: SQLITE_FULL)
        # meets the full volume first, each in its own words; the free space is always said.
        said = ("no space left on device", "database or disk is full")
        assert any(words in message.lower() for words in said), message
        assert "Nothing was renamed or reloaded" in message and failure.value.hint
        assert failure.value.temporary  # the watch loop retries; the revision is not marked failed
        # Nothing renamed, no temp file left, nothing reloaded, nothing recorded.
        assert pbx.hashes() == good
        assert not [e for e in pbx.sh(f"ls -A {MANAGED_DIR}/.gitops").split() if e.startswith("tmp-")]
        assert "Reloading module 'res_pjsip.so'" not in pbx.log_since(offset)
        assert read_live_state(pbx.client()) == good_state
        assert "Extension 4003" in pbx.container.cli("pjsip show endpoint 4003")  # the store's rows too

        # A restart loads what is on disk: still the previous config, complete.
        pbx.container.docker_restart()
        assert pbx.endpoints() == {*BASELINE, "fake_provider"}
        meta = pbx.container.cli("dialplan show revision@gitops-meta")
        assert f"NoOp({rev12(good_state.revision)})" in meta
        assert pbx.hashes() == good
    finally:
        pbx.sh(f"rm -f {MANAGED_DIR}/filler.bin")

    # Once there is space again, the same apply goes through.
    result = pbx.apply(target)
    assert not result.unchanged and all(c.ok for c in result.checks), result.checks
    pbx.assert_consistent()
    pbx.baseline()


def test_two_applies_started_together_leave_exactly_one_revision_live(baseline: Pbx) -> None:
    pbx = baseline
    a = pbx.desired("concurrent-a", BASELINE, label="Alpha")
    b = pbx.desired("concurrent-b", BASELINE, label="Bravo")
    runs = [pbx.cli_apply(a, "--revision", "rev-a"), pbx.cli_apply(b, "--revision", "rev-b")]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    codes = [run.returncode for run in runs]

    for code, out in zip(codes, outputs, strict=True):
        # Each one either applied (after waiting for the other's lock, if it lost the race) or,
        # had the wait run out, said so with exit 4: never a half of each.
        assert code in (0, 4), out
        if code == 4:
            assert "holds the lock of the PBX" in out, out
    assert 0 in codes
    waited = [
        float(m[1]) for out in outputs for m in [re.search(r"waited ([\d.]+) s for the PBX's lock", out)] if m
    ]
    print(f"exit codes {codes}; lock waits {waited} s")

    live = pbx.assert_consistent()
    assert live in ("rev-a", "rev-b")
    winner = a if live == "rev-a" else b
    label = "Alpha" if live == "rev-a" else "Bravo"
    assert f"{label} 4003" in pbx.container.cli("pjsip show endpoint 4003")
    # The labels are store rows now (the files of the two differ in their revision only): every
    # extension's endpoint and mailbox is the winner's, never a half of each.
    callerids = storedb.sql(pbx.container, f"SELECT callerid FROM {store.ENDPOINTS} ORDER BY id;")
    assert callerids.splitlines() == [f'"{label} {n}" <{n}>' for n in BASELINE], callerids
    names = storedb.sql(pbx.container, f"SELECT fullname FROM {store.VOICEMAIL} ORDER BY mailbox;")
    assert names.splitlines() == [f"{label} {n}" for n in BASELINE], names
    dry = pbx.apply(winner, revision=f"rev-{live[-1]}", dry_run=True)
    assert dry.unchanged, dry.changes
    pbx.baseline()


def kill_during_reload(pbx: Pbx, done: threading.Event) -> dict[str, float]:
    """Kill the PBX's container as soon as Asterisk logs that res_pjsip's reload began."""
    seen: dict[str, float] = {}
    code, _ = pbx.container.exec(
        f"timeout 60 tail -n 0 -F {MESSAGES_LOG} 2>/dev/null "
        "| grep -m 1 -q \"Reloading module 'res_pjsip.so'\""
    )
    if code == 0 and not done.is_set():
        seen["killed_at"] = time.monotonic()
        pbx.container.docker_kill()
    return seen


def test_asterisk_killed_mid_reload_exits_3_and_the_next_apply_settles_the_files_on_disk(
    baseline: Pbx,
) -> None:
    pbx = baseline
    good = read_live_state(pbx.client())
    assert good is not None
    target = pbx.reloading_change()
    done = threading.Event()
    seen: dict[str, float] = {}
    killer = threading.Thread(target=lambda: seen.update(kill_during_reload(pbx, done)))
    killer.start()
    time.sleep(0.3)  # the watcher is polling inside the container
    run = pbx.cli_apply(target, "--revision", "killed_1")
    out = run.communicate(timeout=120)[0]
    done.set()
    killer.join()
    assert "killed_at" in seen, f"the reload was not caught; apply said: {out}"

    print(f"apply killed mid-reload said:\n{out}")
    assert run.returncode == EXIT_UNAVAILABLE, out
    assert "went away" in out and "not verified" in out and "journal" in out, out
    assert "batch stopped" not in out

    pbx.container.docker_start()
    # The unverified files are what Asterisk loaded at start; state.json still names the old revision.
    assert read_live_state(pbx.client()) == good
    status = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "--json"],
        env=pbx.cli_env(),
        capture_output=True,
        text=True,
    )
    shown = json.loads(status.stdout)
    assert shown["transaction"]["interrupted"].startswith("an apply of revision killed_1 by ")
    assert any("was interrupted" in p for p in shown["summary"]["problems"]), shown["summary"]
    assert status.returncode == 1

    result = pbx.apply(target, revision="killed_1")
    assert result.settled and "interrupted" in result.settled, result
    assert not result.unchanged and result.recorded
    assert {"module reload res_pjsip.so", "dialplan reload", "module reload app_voicemail.so"} <= set(
        result.reloads
    )
    assert all(c.ok for c in result.checks) and len(result.checks) >= 4, result.checks
    assert pbx.assert_consistent() == "killed_1"
    assert pbx.endpoints() == {*MEDIUM, "fake_provider"}
    assert storedb.endpoint_ids(pbx.container) == set(MEDIUM)
    pbx.baseline()


def wait_for_log(pbx: Pbx, line: str) -> bool:
    """Block until Asterisk logs `line` (at most 60 s)."""
    code, _ = pbx.container.exec(
        f"timeout 60 tail -n 0 -F {MESSAGES_LOG} 2>/dev/null | grep -m 1 -qF {shlex.quote(line)}"
    )
    return code == 0


def test_a_reconciler_killed_mid_apply_leaves_a_lock_that_expires_and_a_journal_the_next_apply_settles(
    baseline: Pbx,
) -> None:
    pbx = baseline
    target = pbx.reloading_change()
    seen = threading.Event()
    watcher = threading.Thread(
        target=lambda: wait_for_log(pbx, "Reloading module 'res_pjsip.so'") and seen.set()
    )
    watcher.start()
    time.sleep(0.3)
    run = pbx.cli_apply(target, "--revision", "orphaned_1")
    watcher.join(timeout=90)
    run.kill()  # SIGKILL: no finally, no release; the exec already running in the container goes on
    run.communicate(timeout=30)
    assert seen.is_set()
    txn = pbx.sh(f"ls -A {MANAGED_DIR}/.gitops").split()
    assert "journal.json" in txn and "lease" in txn

    started = time.monotonic()
    result = pbx.apply(target, revision="orphaned_1")
    took = time.monotonic() - started
    print(
        f"the next apply waited {result.lock_waited_s:.1f} s for the dead holder's lease "
        f"({took:.1f} s in all)"
    )
    assert result.settled and "interrupted" in result.settled, result
    assert all(c.ok for c in result.checks), result.checks
    assert pbx.assert_consistent() == "orphaned_1"
    pbx.baseline()


def test_a_second_apply_waits_for_the_lock_then_exits_4_naming_the_holder(baseline: Pbx) -> None:
    pbx = baseline
    before = pbx.hashes()
    # Another apply holds the lease (as a CI job on another host would, mid-apply).
    pbx.sh(
        f"printf 'holder=0123456789abcdef\\nwho=ci@runner-7 pid 42 (reconciler apply)\\nrevision=other\\n"
        f"doing=reloading pjsip.conf\\nsince=%s\\nexpires=%s\\n' $(date +%s) $(( $(date +%s) + 600 )) "
        f"> {MANAGED_DIR}/.gitops/lease"
    )
    try:
        run = pbx.cli_apply(pbx.desired("renamed", BASELINE, label="Renamed"), "--lock-wait", "3")
        out = run.communicate(timeout=60)[0]
    finally:
        pbx.sh(f"rm -f {MANAGED_DIR}/.gitops/lease")
    assert run.returncode == 4, out
    assert "ci@runner-7 pid 42 (reconciler apply)" in out and "reloading pjsip.conf" in out, out
    assert re.search(r"waited [34] s", out), out
    assert pbx.hashes() == before


@pytest.mark.parametrize("revision", ["release_7", "v1.2-rc"])
def test_revision_ids_with_underscores_dots_and_dashes_apply_and_verify(baseline: Pbx, revision: str) -> None:
    pbx = baseline
    # A label is a store row now; the provider edit is what makes pjsip.conf (and its marker) new.
    target = pbx.provider_edit(f"rev-{revision}", BASELINE, label=f"Rev {revision}")

    result = pbx.apply(target, revision=revision)

    assert not result.unchanged and all(c.ok for c in result.checks), result.checks
    assert any(c.name.startswith("pjsip.conf live") for c in result.checks)
    assert pbx.assert_consistent() == revision
    # pjsip.conf changed (the provider), so its marker carries the new id; Asterisk finds it.
    assert f"gitops-rev-{revision}" in pbx.container.cli(f"pjsip show aor gitops-rev-{revision}")
    # and a second apply of it finds nothing to do
    assert pbx.apply(target, revision=revision).unchanged


def test_state_json_and_the_managed_files_are_not_world_readable(baseline: Pbx) -> None:
    modes = baseline.sh(f"cd {MANAGED_DIR} && stat -c '%n %U:%G %a' *.conf state.json").split("\n")
    for line in filter(None, modes):
        _name, owner, mode = line.split()
        assert (owner, mode) == ("asterisk:asterisk", "640"), line
    digest = hashlib.sha256(
        baseline.sh(f"cat {MANAGED_DIR}/.gitops/last-good/state.json").encode()
    ).hexdigest()
    assert digest == hashlib.sha256(baseline.sh(f"cat {MANAGED_DIR}/state.json").encode()).hexdigest()
