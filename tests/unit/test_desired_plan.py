"""Plans: semantic changes from parsed sections, masked diffs, reload commands, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.asterisk import store
from reconciler.desired.render import RENDERED_FILES, Rendered, render_desired
from reconciler.gitops.plan import MASK, make_plan, mask, strip_revision
from tests.unit.desired_support import FAKE_SECRETS, fake_settings, phones_only, use_real_provider


@pytest.fixture
def base(sample: Path, tmp_path: Path) -> Rendered:
    return render_desired(sample, fake_settings(tmp_path), revision="1111111111111111")


def rerender(
    sample: Path, tmp_path: Path, env: dict[str, str] | None = None, rev: str = "2222222222222222"
) -> Rendered:
    return render_desired(sample, fake_settings(tmp_path, env), revision=rev)


def _rows(rendered: Rendered) -> dict[str, dict[str, dict[str, str]]]:
    return store.extension_rows(rendered.state, rendered.secrets)


def add_extension_4006(sample: Path) -> None:
    with (sample / "extensions.yaml").open("a") as f:
        f.write('  - number: "4006"\n    name: New Hire\n')
        f.write("    password: ${EXT_4006_PASSWORD}\n    voicemail: true\n")


def test_a_plan_against_its_own_render_has_no_changes(base: Rendered) -> None:
    plan = make_plan(base.files, dict(base.files), base.secret_values)
    assert (plan.has_changes, plan.changes, plan.diff, plan.reloads, plan.revision_only) == (
        False,
        [],
        "",
        [],
        [],
    )


def test_a_new_revision_with_the_same_content_is_revision_only(
    base: Rendered, sample: Path, tmp_path: Path
) -> None:
    new = rerender(sample, tmp_path)
    plan = make_plan(new, base.files, new.secret_values)
    assert not plan.has_changes
    # msmtprc carries no `; revision:` line (it is no Asterisk file): the same content is no change.
    assert plan.revision_only == [
        "pjsip.conf",
        "extensions.conf",
        "voicemail.conf",
        "musiconhold.conf",
        "queues.conf",
    ]
    assert plan.marker_reloads == [
        "module reload res_pjsip.so",
        "dialplan reload",
        "module reload app_voicemail.so",
        "module reload res_musiconhold.so",
        "module reload app_queue.so",
    ]
    assert (plan.new_revision, plan.live_revision) == ("2222222222222222", "1111111111111111")


def test_adding_extension_4006_changes_no_file_and_is_one_store_row_set_with_no_secret_shown(
    base: Rendered, sample: Path, tmp_path: Path
) -> None:
    add_extension_4006(sample)
    new = rerender(sample, tmp_path, {**FAKE_SECRETS, "EXT_4006_PASSWORD": "Fake-Phone-Pass-6x"})
    plan = make_plan(new, base.files, new.secret_values)
    # 4006 is routed by the existing _4XXX pattern and lives in the store: no file, no reload.
    assert plan.changed_files == [] and plan.reloads == [] and not plan.restart_required
    rows = store.row_changes(_rows(base), _rows(new))
    assert rows == ["extension 4006 added"]
    assert not any(value in line for value in new.secret_values for line in rows)


def test_a_changed_provider_password_is_a_masked_password_change(
    base: Rendered, sample: Path, tmp_path: Path
) -> None:
    new = rerender(sample, tmp_path, {**FAKE_SECRETS, "PBX_PROVIDER_PASSWORD": "Rotated-Trunk-Pass-1"})
    plan = make_plan(new, base.files, new.secret_values | base.secret_values)
    assert plan.changes == ["provider pbx_provider password changed"]
    assert plan.reloads == ["module reload res_pjsip.so"]
    assert "Rotated-Trunk-Pass-1" not in plan.diff and FAKE_SECRETS["PBX_PROVIDER_PASSWORD"] not in plan.diff


def test_a_changed_route_is_named_and_needs_only_a_dialplan_reload(
    base: Rendered, sample: Path, tmp_path: Path
) -> None:
    text = (sample / "routes.yaml").read_text().replace('prefix: "9"', 'prefix: "0"')
    (sample / "routes.yaml").write_text(text)
    plan = make_plan(rerender(sample, tmp_path), base.files)
    assert plan.changes == ["route external changed"]
    assert plan.reloads == ["dialplan reload"]


def test_a_changed_transport_needs_a_restart(base: Rendered, sample: Path, tmp_path: Path) -> None:
    (sample / "pbx.yaml").write_text("pbx:\n  port: 5062\n")
    plan = make_plan(rerender(sample, tmp_path), base.files)
    assert plan.changes == ["transport transport-udp changed (restart needed)"]
    assert plan.restart_required


def test_a_removed_transport_needs_a_restart(sample: Path, tmp_path: Path) -> None:
    use_real_provider(sample)
    before = rerender(sample, tmp_path, rev="1111111111111111")
    text = (sample / "providers.yaml").read_text().replace("transport: tls", "transport: udp")
    (sample / "providers.yaml").write_text(text)
    plan = make_plan(rerender(sample, tmp_path), before.files)
    assert "transport transport-tls removed (restart needed)" in plan.changes
    assert "provider pbx_provider changed" not in plan.changes
    assert plan.restart_required


def test_a_removed_extension_and_a_renamed_one_are_described(sample: Path, tmp_path: Path) -> None:
    # 4005 is a member of ring group 600: without the office features its removal is no problem.
    phones_only(sample)
    base = rerender(sample, tmp_path, rev="1111111111111111")
    text = (sample / "extensions.yaml").read_text()
    text = text.replace("name: Sales", "name: Sales Team")
    text = text[: text.index('  - number: "4005"')]
    (sample / "extensions.yaml").write_text(text)
    new = rerender(sample, tmp_path)
    assert store.row_changes(_rows(base), _rows(new)) == [
        "extension 4001 callerid, voicemail changed",
        "extension 4005 removed",
    ]
    assert make_plan(new.files, base.files).changed_files == []


def test_a_changed_password_is_named_as_such_and_no_value_is_shown(
    base: Rendered, sample: Path, tmp_path: Path
) -> None:
    new = rerender(sample, tmp_path, {**FAKE_SECRETS, "EXT_4002_PASSWORD": "Rotated-Phone-Pass-2"})
    rows = store.row_changes(_rows(base), _rows(new))
    assert rows == ["extension 4002 password, voicemail pin changed"]  # the unset PIN derives from it


def test_a_missing_live_directory_means_everything_is_new(base: Rendered) -> None:
    plan = make_plan(base.files, {}, base.secret_values)
    assert plan.changed_files == [
        "pjsip.conf",
        "extensions.conf",
        "voicemail.conf",
        "musiconhold.conf",
        "queues.conf",
        "msmtprc",
    ]
    assert sorted(plan.changed_files) == sorted(RENDERED_FILES)
    assert "provider pbx_provider added" in plan.changes
    assert "transport transport-udp added (restart needed)" in plan.changes
    assert plan.diff.startswith("--- /dev/null\n+++ new/pjsip.conf\n")
    # PJSIP chooses its resolver's transport types at start: a new transport needs a restart.
    assert plan.restart_required
    assert "extension 4000 added" in store.row_changes(None, _rows(base))


def test_a_hand_edit_of_a_live_file_is_a_change(base: Rendered) -> None:
    live = dict(base.files)
    live["extensions.conf"] = live["extensions.conf"].replace(
        "Dial(${DEVICES},20,b(gitops-callee^s^1))", "Dial(${DEVICES},5,b(gitops-callee^s^1))"
    )
    assert live["extensions.conf"] != base.files["extensions.conf"]
    plan = make_plan(base.files, live, base.secret_values)
    assert plan.changed_files == ["extensions.conf"]
    assert plan.reloads == ["dialplan reload"]


def test_masking_hides_password_keys_mailbox_pins_and_any_secret_value() -> None:
    text = "password = abc\nsecret=>zz\nclient_uri = sip:TopSecretUser@h\n4001 => 1234567890,Sales\n"
    masked = mask(text, ["TopSecretUser", "xy"], "voicemail.conf")
    assert masked == f"password = {MASK}\nsecret=>{MASK}\nclient_uri = sip:{MASK}@h\n4001 => {MASK},Sales\n"


def test_strip_revision_removes_only_the_header_and_the_markers(base: Rendered) -> None:
    stripped = strip_revision(base.files["pjsip.conf"])
    assert "gitops-rev" not in stripped and "; revision:" not in stripped
    assert "[pbx_provider-auth]" in stripped
    assert "revision,1" not in strip_revision(base.files["extensions.conf"])
