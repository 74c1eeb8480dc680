"""The plan on models: snapshots in, the text plan's sentences out, without parsing any file."""

from __future__ import annotations

from pathlib import Path

from reconciler.asterisk import store
from reconciler.desired.load import load_desired
from reconciler.desired.model import DesiredState
from reconciler.desired.render import RENDERED_FILES, render_desired
from reconciler.desired.secrets import resolve_secrets
from reconciler.desired.snapshot import Snapshot, snapshot_of
from reconciler.gitops.plan import make_plan, plan_models
from tests.unit.desired_support import FAKE_SECRETS, fake_settings, phones_only, use_real_provider

KEY = b"k" * 32


def snap(sample: Path, tmp_path: Path, env: dict[str, str] | None = None) -> Snapshot:
    settings = fake_settings(tmp_path, env)
    loaded = load_desired(sample)
    return snapshot_of(loaded.state, resolve_secrets(loaded, settings), KEY)


def both_plans(
    sample: Path, tmp_path: Path, edit: object, env: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """(model plan sentences, text plan sentences) for the edit `edit(sample)`."""
    before_files = render_desired(sample, fake_settings(tmp_path), revision="1111111111111111").files
    before = snap(sample, tmp_path)
    edit(sample)  # type: ignore[operator]
    after = snap(sample, tmp_path, env)
    new = render_desired(sample, fake_settings(tmp_path, env), revision="2222222222222222")
    text = make_plan(new, before_files, new.secret_values)
    return plan_models(before, after).changes, text.changes


def test_an_added_extension_reads_as_in_the_store_plan_and_changes_no_file(
    sample: Path, tmp_path: Path
) -> None:
    before = render_desired(sample, fake_settings(tmp_path), revision="1111111111111111")

    def add(d: Path) -> None:
        with (d / "extensions.yaml").open("a") as f:
            f.write('  - number: "4006"\n    name: New Hire\n    password: ${EXT_4006_PASSWORD}\n')

    env = {**FAKE_SECRETS, "EXT_4006_PASSWORD": "Fake-Phone-Pass-6x"}
    models, text = both_plans(sample, tmp_path, add, env)
    after = render_desired(sample, fake_settings(tmp_path, env), revision="2222222222222222")
    rows = store.row_changes(
        store.extension_rows(before.state, before.secrets), store.extension_rows(after.state, after.secrets)
    )
    assert models == rows == ["extension 4006 added"]
    assert text == []  # the extension is a store row routed by the existing _4XXX pattern


def test_a_rotated_provider_password_reads_as_in_the_text_plan(sample: Path, tmp_path: Path) -> None:
    env = {**FAKE_SECRETS, "PBX_PROVIDER_PASSWORD": "Rotated-Trunk-Pass-1"}
    models, text = both_plans(sample, tmp_path, lambda d: None, env)
    assert models == text == ["provider pbx_provider password changed"]


def test_a_changed_route_reads_as_in_the_text_plan(sample: Path, tmp_path: Path) -> None:
    def edit(d: Path) -> None:
        (d / "routes.yaml").write_text((d / "routes.yaml").read_text().replace('prefix: "9"', 'prefix: "0"'))

    models, text = both_plans(sample, tmp_path, edit)
    assert models == text == ["route external changed"]


def test_a_changed_port_is_a_transport_change_that_needs_a_restart(sample: Path, tmp_path: Path) -> None:
    before = snap(sample, tmp_path)
    (sample / "pbx.yaml").write_text("pbx:\n  port: 5062\n")
    plan = plan_models(before, snap(sample, tmp_path))
    assert plan.changes == ["transport transport-udp changed (restart needed)"]
    assert plan.restart_required and plan.restart_reasons == plan.changes


def test_a_provider_leaving_tls_removes_the_tls_transport(sample: Path, tmp_path: Path) -> None:
    use_real_provider(sample)
    before = snap(sample, tmp_path)
    text = (sample / "providers.yaml").read_text().replace("transport: tls", "transport: udp")
    (sample / "providers.yaml").write_text(text)
    plan = plan_models(before, snap(sample, tmp_path))
    assert "transport transport-tls removed (restart needed)" in plan.changes
    assert plan.restart_required


def test_a_removed_and_a_renamed_extension_name_their_yaml_fields(sample: Path, tmp_path: Path) -> None:
    # 4005 is a member of ring group 600: without the office features its removal is no problem.
    phones_only(sample)
    before = snap(sample, tmp_path)
    text = (sample / "extensions.yaml").read_text().replace("name: Sales", "name: Sales Team")
    (sample / "extensions.yaml").write_text(text[: text.index('  - number: "4005"')])
    plan = plan_models(before, snap(sample, tmp_path))
    assert plan.changes == ["extension 4001 name changed", "extension 4005 removed"]
    assert [(c.key, c.action) for c in plan.objects] == [
        ("extension:4001", "change"),
        ("extension:4005", "remove"),
    ]


def test_nothing_applied_yet_makes_every_object_and_transport_an_addition(
    sample: Path, tmp_path: Path
) -> None:
    plan = plan_models(None, snap(sample, tmp_path))
    assert "extension 4000 added" in plan.changes and "provider pbx_provider added" in plan.changes
    assert "transport transport-udp added (restart needed)" in plan.restart_reasons
    assert not any(c.startswith("pbx ") for c in plan.changes)


def test_the_same_snapshot_plans_nothing(sample: Path, tmp_path: Path) -> None:
    plan = plan_models(snap(sample, tmp_path), snap(sample, tmp_path))
    assert (plan.has_changes, plan.changes, plan.restart_required) == (False, [], False)


def test_a_codec_change_of_the_pbx_is_one_sentence_not_one_per_extension() -> None:
    def state(codecs: list[str]) -> Snapshot:
        data = {
            "pbx": {"codecs": codecs},
            "extensions": [
                {"number": str(n), "name": "P", "password": f"${{E{n}}}"} for n in range(4000, 4100)
            ],
        }
        return snapshot_of(
            DesiredState.model_validate(data), {f"E{n}": "x" * 12 for n in range(4000, 4100)}, KEY
        )

    assert plan_models(state(["ulaw"]), state(["alaw"])).changes == ["pbx codecs changed"]


def test_a_masked_voicemail_pin_change_is_named_by_its_nested_field() -> None:
    def state(pin: str) -> Snapshot:
        ext = {"number": "4001", "name": "P", "password": "${P}", "voicemail": {"pin": "${PIN}"}}
        return snapshot_of(
            DesiredState.model_validate({"extensions": [ext]}), {"P": "x" * 12, "PIN": pin}, KEY
        )

    plan = plan_models(state("583920"), state("720461"))
    assert plan.changes == ["extension 4001 voicemail.pin changed"]
    assert "583920" not in repr(plan) and "720461" not in repr(plan)


def test_the_model_plan_replaces_the_text_sentences_in_make_plan(sample: Path, tmp_path: Path) -> None:
    files = render_desired(sample, fake_settings(tmp_path)).files
    models = plan_models(None, snap(sample, tmp_path))
    plan = make_plan(files, {}, models=models)
    assert plan.changes == models.changes and plan.restart_required
    assert sorted(plan.changed_files) == sorted(RENDERED_FILES)
