"""`apply_desired` against a real Asterisk 22 container: what is written, what is reloaded, what
Asterisk reports afterwards, and that a refused config leaves the previous revision live.

One PBX and one fake provider (a second Asterisk) are shared by the whole module; every test
starts by applying the baseline desired state, which is a no-op when it is already live.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.asterisk.client import AsteriskClient
from reconciler.desired.render import RENDERED_FILES
from reconciler.gitops.apply import ApplyResult, ApplyRolledBack, apply_desired, read_live_state, rev12
from reconciler.settings import REPO_ROOT, Settings
from tests.harness import ports
from tests.harness.containers import (
    MANAGED_DIR,
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

EXTENSIONS = [str(n) for n in range(4000, 4006)]


class Pbx:
    """The shared PBX, its provider, and a desired dir that tests rewrite."""

    def __init__(self, pbx: PbxContainer, provider: ProviderContainer, root: Path, secrets: dict[str, str]):
        self.container = pbx
        self.provider = provider
        self.desired = root / "desired"
        self.desired.mkdir(parents=True, exist_ok=True)
        self.settings = isolated_settings(pbx.name, root, secrets)
        self.client = AsteriskClient(pbx.name)

    def write(self, *, port: int | None = None, edit: dict[str, tuple[str, str]] | None = None) -> None:
        """Write the baseline desired state, with optional (old → new) text edits per file."""
        files = desired_yaml(port or self.container.sip_port, self.provider.sip_port)
        for name, (old, new) in (edit or {}).items():
            assert old in files[name], f"{old!r} not in {name}"
            files[name] = files[name].replace(old, new)
        for old_file in self.desired.glob("*.yaml"):
            old_file.unlink()
        for name, text in files.items():
            (self.desired / name).write_text(text)

    def apply(self, settings: Settings | None = None) -> ApplyResult:
        return apply_desired(settings or self.settings, self.client, self.desired)

    def baseline(self) -> ApplyResult:
        self.write()
        return self.apply()

    def log_size(self) -> int:
        return self.container.log_size()

    def log_since(self, offset: int) -> str:
        return self.container.log_since(offset)

    def managed(self, name: str) -> str:
        return self.container.read_file(f"{MANAGED_DIR}/{name}")


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    secrets = make_secrets(EXTENSIONS)
    container = PbxContainer("pbx", name_prefix="apply")
    provider = ProviderContainer(container.sip_port, secrets["PROVIDER_PASSWORD"], name_prefix="apply")
    try:
        provider.start()
        container.start()
        yield Pbx(container, provider, tmp_path_factory.mktemp("apply"), secrets)
    finally:
        container.stop()
        provider.stop()


def reloads_in(log: str) -> list[str]:
    """Modules whose reload Asterisk logged, without the client's log barrier (udptl)."""
    return [m for m in re.findall(r"Reloading module '([^']+)'", log) if m != "udptl"]


def test_first_apply_creates_the_extensions_and_the_revision_markers(pbx: Pbx) -> None:
    pbx.write()
    result = pbx.apply()

    if not result.unchanged:  # the module's first test: the managed dir started empty
        assert set(result.changed_files) == set(RENDERED_FILES)
        assert all(check.ok for check in result.checks)
    marker = rev12(result.revision)
    endpoints, aor, meta = pbx.container.cli_each(
        "pjsip list endpoints", f"pjsip show aor gitops-rev-{marker}", "dialplan show revision@gitops-meta"
    )
    for number in EXTENSIONS:
        assert re.search(rf"Endpoint:\s+{number}/{number}\s", endpoints), number
    assert "fake_provider" in endpoints
    assert "Unable to find object" not in aor and f"gitops-rev-{marker}" in aor
    assert f"NoOp({marker})" in meta
    state = json.loads(pbx.managed("state.json"))
    assert state["revision"] == result.revision
    assert set(state["files"]) == set(RENDERED_FILES)
    assert read_live_state(pbx.client).revision == result.revision  # type: ignore[union-attr]


def test_apply_without_changes_reloads_nothing(pbx: Pbx) -> None:
    pbx.baseline()
    offset = pbx.log_size()

    result = pbx.apply()

    assert result.unchanged
    assert result.reloads == () and result.changed_files == ()
    assert result.execs == 1 and result.transfers == 0
    assert "Reloading module" not in pbx.log_since(offset)


def test_a_new_revision_with_the_same_content_is_recorded_without_a_reload(pbx: Pbx) -> None:
    pbx.baseline()
    offset = pbx.log_size()

    first = apply_desired(pbx.settings, pbx.client, pbx.desired, revision="a" * 40, subject="one")
    second = apply_desired(pbx.settings, pbx.client, pbx.desired, revision="b" * 40, subject="two")

    assert first.unchanged and second.unchanged and second.recorded
    assert first.reloads == second.reloads == ()
    live = read_live_state(pbx.client)
    assert live is not None and (live.revision, live.subject) == ("b" * 40, "two")
    assert reloads_in(pbx.log_since(offset)) == []


def test_a_marker_lost_at_run_time_makes_the_next_apply_reload_the_files(pbx: Pbx) -> None:
    pbx.baseline()
    pbx.container.cli("dialplan remove extension revision@gitops-meta")

    result = pbx.apply()

    assert not result.unchanged
    assert "dialplan reload" in result.reloads
    assert all(check.ok for check in result.checks), result.checks
    assert "NoOp(" in pbx.container.cli("dialplan show revision@gitops-meta")


def test_changing_one_extension_changes_one_store_row_and_reloads_nothing(pbx: Pbx) -> None:
    # Extensions are rows of the realtime store: a change is one SQL transaction, no reload.
    before = pbx.baseline()
    edit = {"extensions.yaml": ("name: Extension 4003\n", "name: Extension 4003\n    codecs: [alaw]\n")}
    pbx.write(edit=edit)
    offset = pbx.log_size()

    result = pbx.apply()

    assert result.changed_files == ()
    assert result.reloads == ()
    assert "store: extension 4003 added or changed" in result.changes
    assert not result.restarted
    assert result.execs == 3  # read; lock + swap + store + verify; record + release
    assert reloads_in(pbx.log_since(offset)) == []
    assert any(c.name == "extension 4003 live in the store" and c.ok for c in result.checks)
    endpoint = pbx.container.cli("pjsip show endpoint 4003")
    assert re.search(r"^\s*allow\s*:\s*\(alaw\)", endpoint, re.MULTILINE)
    assert read_live_state(pbx.client).revision == result.revision != before.revision  # type: ignore[union-attr]


def test_changing_a_route_reloads_only_the_dialplan(pbx: Pbx) -> None:
    pbx.baseline()
    pbx.write(edit={"routes.yaml": ('prefix: "9", strip: 1', 'prefix: "8", strip: 1')})
    offset = pbx.log_size()

    result = pbx.apply()

    assert result.changed_files == ("extensions.conf",)
    assert result.reloads == ("dialplan reload",)
    assert reloads_in(pbx.log_since(offset)) == []  # `dialplan reload` does not log a module reload
    assert "'_8X.'" in pbx.container.cli("dialplan show 81234@internal")
    assert "'_9X.'" not in pbx.container.cli("dialplan show internal")
    # 911 is an exact extension: with the 9 prefix gone it still resolves first to itself.
    assert all(c.ok for c in result.checks if "emergency" in c.name)


BAD_TEMPLATES = {
    # extensions are store rows now: the provider's endpoint is the existing file endpoint
    "invalid option value on an existing endpoint": (
        "dtmf_mode = rfc4733\n",
        "dtmf_mode = bogus\n",
        "dtmf_mode=bogus",
    ),
    "broken section header": (
        "; ---- revision marker",
        "[broken-section\n; ---- revision marker",
        "no closing ']'",
    ),
}


@pytest.mark.parametrize("defect", list(BAD_TEMPLATES))
def test_config_asterisk_refuses_is_rolled_back_and_the_previous_revision_stays_live(
    pbx: Pbx, tmp_path: Path, defect: str
) -> None:
    good = pbx.baseline()
    good_pjsip = pbx.managed("pjsip.conf")
    old, new, logged = BAD_TEMPLATES[defect]
    templates = tmp_path / "templates"
    templates.mkdir()
    for source in (REPO_ROOT / "templates").glob("*.j2"):
        text = source.read_text()
        if source.name == "pjsip.conf.j2":
            assert old in text
            text = text.replace(old, new, 1)
        (templates / source.name).write_text(text)
    # A real change too, so the refused file carries a new revision marker.
    pbx.write(edit={"extensions.yaml": ("name: Extension 4002\n", "name: Extension 4002 New\n")})
    bad_settings = dataclasses.replace(pbx.settings, templates_dir=templates)

    with pytest.raises(ApplyRolledBack) as failure:
        pbx.apply(bad_settings)

    error = failure.value
    assert error.rolled_back
    assert any(logged in p.message for p in error.problems), error.message
    assert logged in error.message and "restored" in error.message
    assert error.hint
    # The previous files and revision are what Asterisk runs.
    assert pbx.managed("pjsip.conf") == good_pjsip
    aor = pbx.container.cli(f"pjsip show aor gitops-rev-{rev12(good.revision)}")
    assert "Unable to find object" not in aor
    assert read_live_state(pbx.client).revision == good.revision  # type: ignore[union-attr]
    assert re.search(r"dtmf_mode\s*:\s*rfc4733", pbx.container.cli("pjsip show endpoint 4005"))
    # And the next apply of the good desired state finds nothing to reload.
    pbx.write()
    assert pbx.apply().unchanged


def test_transport_port_change_restarts_asterisk_and_binds_the_new_port(pbx: Pbx) -> None:
    pbx.baseline()
    new_port = ports.reserve_port()
    try:
        pbx.write(port=new_port)
        offset = pbx.log_size()
        result = pbx.apply()

        # Everything reloadable goes live first; the restart (an idle PBX: at once) follows.
        assert result.restarted
        assert result.reloads == ("module reload res_pjsip.so", "core restart when convenient")
        assert result.restart_pending is None
        assert result.execs == 4  # the restart is its own exec, after the reload was verified
        assert all(check.ok for check in result.checks), result.checks
        transports = pbx.container.cli("pjsip show transports")
        assert f"127.0.0.1:{new_port}" in transports
        assert f"127.0.0.1:{pbx.container.sip_port} " not in transports + " "
        assert "Asterisk is now restarting" in pbx.log_since(offset)
        assert read_live_state(pbx.client).revision == result.revision  # type: ignore[union-attr]
    finally:
        pbx.write()
        back = pbx.apply()
        assert back.unchanged or back.restarted
        ports.release_port(new_port)


@pytest.mark.parametrize("size", ["small (inline in the exec)", "large (uploaded)"])
def test_managed_files_arrive_byte_for_byte_and_readable_by_asterisk(pbx: Pbx, size: str) -> None:
    tricky = '; it\'s 100% "quoted" \\ back\\slash $HOME `id` \\n\ttab ünïcode\nno newline at the end'
    text = tricky if size.startswith("small") else (tricky + "\n") * 2000
    uploads = pbx.client.transfer_count
    pbx.client.write_managed({"zz-test.conf": text})
    assert pbx.client.transfer_count - uploads == (0 if size.startswith("small") else 1)
    try:
        assert pbx.client.read_managed()["zz-test.conf"] == text
        code, out = pbx.container.exec(
            f"cat {MANAGED_DIR}/zz-test.conf > /dev/null && echo readable", user="asterisk"
        )
        assert code == 0 and "readable" in out
        entries = pbx.container.exec(f"ls -A {MANAGED_DIR}")[1].split()
        assert "zz-test.conf" in entries
        assert [e for e in entries if e.startswith(".")] == [".gitops"]  # lock, journal, last good copy
        txn_entries = pbx.container.exec(f"ls -A {MANAGED_DIR}/.gitops")[1].split()
        assert not [e for e in txn_entries if e.startswith("tmp-")]
        mode = pbx.container.exec(f"stat -c '%U:%G %a' {MANAGED_DIR}/zz-test.conf")[1].strip()
        assert mode == "asterisk:asterisk 640"  # managed files hold passwords: never world-readable
    finally:
        pbx.client.remove_managed(["zz-test.conf"])
    assert "zz-test.conf" not in pbx.client.read_managed()


def test_a_transport_port_that_is_taken_is_refused_and_the_old_port_stays_bound(pbx: Pbx) -> None:
    good = pbx.baseline()
    # The provider's Asterisk holds this port: binding it fails, silently but for one log line.
    pbx.write(port=pbx.provider.sip_port)

    with pytest.raises(ApplyRolledBack) as failure:
        pbx.apply()

    assert "Address already in use" in failure.value.message
    assert failure.value.rolled_back
    transports = pbx.container.cli("pjsip show transports")
    assert f"127.0.0.1:{pbx.container.sip_port}" in transports
    assert read_live_state(pbx.client).revision == good.revision  # type: ignore[union-attr]
    pbx.write()
    assert pbx.apply().unchanged
