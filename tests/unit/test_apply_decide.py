"""The decide stage, without Docker: what an apply does, from a render and what was observed."""

from __future__ import annotations

from pathlib import Path

from reconciler.asterisk import store as store_mod
from reconciler.asterisk.client import LiveMarkers, LiveRead, sha256_text
from reconciler.asterisk.lease import Holder
from reconciler.asterisk.restart import RestartPolicy
from reconciler.asterisk.store import StoreRead
from reconciler.desired.render import Rendered, render_desired
from reconciler.gitops.apply import ApplyOptions
from reconciler.gitops.decide import decide, observe, plan_store
from reconciler.gitops.livestate import LiveState
from reconciler.markers import declared_dialplan_rev12, declared_pjsip_rev12
from tests.unit.desired_support import edit, fake_settings

KEY = b"k" * 32
DIGEST = "d" * 64


def _rendered(sample: Path, tmp_path: Path, revision: str = "r1") -> Rendered:
    return render_desired(sample, fake_settings(tmp_path), revision)


def _live_of(applied: Rendered, *, digest: str = DIGEST, store_digest: str | None = DIGEST) -> LiveRead:
    """What the read exec sees on a PBX that runs `applied`, verified and recorded."""
    files = dict(applied.files)
    hashes = {n: r["hash"] for n, r in store_mod.desired_rows(applied.state, applied.secrets, KEY)[
        store_mod.APPLIED].items()}  # fmt: skip
    state = LiveState(
        applied.revision, None, "t", {n: sha256_text(t) for n, t in files.items()}, store=store_digest
    )
    markers = LiveMarkers(
        declared_pjsip_rev12(files["pjsip.conf"]),
        declared_dialplan_rev12(files["extensions.conf"]),
        declared_pjsip_rev12(files["pjsip.conf"]),
    )
    return LiveRead({**files, "state.json": state.to_json()}, markers, store=StoreRead(digest, KEY, hashes))


def _decide(rendered: Rendered, live: LiveRead, restart: RestartPolicy = RestartPolicy.IDLE):
    obs = observe(live, rendered.files)
    store = plan_store(rendered, obs, Holder.new())
    return decide(rendered, obs, ApplyOptions(restart=restart), store), store


def test_a_pbx_that_runs_the_render_already_needs_nothing(sample: Path, tmp_path: Path) -> None:
    rendered = _rendered(sample, tmp_path)
    decision, store = _decide(rendered, _live_of(rendered))
    assert decision.no_change and store.sql is None and decision.reloads == ()


def test_one_extension_re_passworded_is_a_store_delta_with_no_reload_and_no_file(
    sample: Path, tmp_path: Path
) -> None:
    live = _live_of(_rendered(sample, tmp_path))
    rendered = _rendered(sample, tmp_path, "r2")
    rendered = Rendered(rendered.revision, rendered.files, rendered.state, rendered.secret_values,
                        {**rendered.secrets, "EXT_4001_PASSWORD": "Another-Phone-Pass-1"})  # fmt: skip
    decision, store = _decide(rendered, live)
    assert not decision.no_change
    assert store.present == ("4001",) and store.absent == () and store.heal is None
    assert decision.written == () and decision.commands == () and not decision.restart
    assert "store: extension 4001 added or changed" in decision.changes


def test_an_added_extension_changes_no_file_when_its_pattern_exists(sample: Path, tmp_path: Path) -> None:
    live = _live_of(_rendered(sample, tmp_path))
    edit(sample, "extensions.yaml", "extensions:\n", 'extensions:\n  - {number: "4099", name: New, '
         'password: "${EXT_4000_PASSWORD}"}\n')  # fmt: skip
    decision, store = _decide(_rendered(sample, tmp_path, "r2"), live)
    assert store.present == ("4099",) and store.added == 1
    assert decision.written == () and decision.commands == ()


def test_a_store_that_differs_from_its_record_is_rewritten_whole(sample: Path, tmp_path: Path) -> None:
    rendered = _rendered(sample, tmp_path)
    decision, store = _decide(rendered, _live_of(rendered, digest="e" * 64))
    assert store.heal == "the store's rows differ from those recorded (drift)"
    assert not decision.no_change and decision.commands == ()


def test_a_transport_change_restarts_and_refuse_is_honoured_by_policy(sample: Path, tmp_path: Path) -> None:
    live = _live_of(_rendered(sample, tmp_path))
    edit(sample, "pbx.yaml", "port: 5060", "port: 5062")
    decision, _ = _decide(_rendered(sample, tmp_path, "r2"), live, RestartPolicy.REFUSE)
    assert decision.restart and decision.written == ("pjsip.conf",)
    assert decision.reloads[-1] == RestartPolicy.REFUSE.command
    assert "transport" in decision.reason
