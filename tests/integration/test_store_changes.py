"""Extensions are rows of the realtime store: an apply that adds, re-passwords or removes one is
live at once with no reload of anything; a store change the checks refuse is rolled back to the
previous rows; a row edited behind the reconciler's back is found and healed by the next apply.

One PBX for the module (4000-4005 applied by `live_pbx`); each test starts by applying the state it
needs and leaves the baseline (4000-4005, their passwords) live.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.asterisk import store
from reconciler.errors import EXIT_ERROR, ManagedWriteFailed
from reconciler.gitops.apply import ApplyRolledBack
from tests.harness import sipp, storedb
from tests.harness.containers import EXTENSIONS, PbxStack, poll

pytestmark = pytest.mark.integration

BASELINE = list(EXTENSIONS)
NEW = "4006"


@pytest.fixture
def stack(live_pbx: PbxStack, tmp_path: Path) -> Iterator[PbxStack]:
    """The module's PBX with the baseline live; the baseline is applied again afterwards."""
    saved = {n: live_pbx.password(n) for n in BASELINE}
    live_pbx.apply(storedb.desired_with(live_pbx, tmp_path / "start", BASELINE))
    yield live_pbx
    storedb.set_passwords(live_pbx, saved)
    live_pbx.apply(storedb.desired_with(live_pbx, tmp_path / "baseline", BASELINE))


def register_status(stack: PbxStack, number: str, password: str) -> int | None:
    return sipp.register(number, password, stack.pbx.sip_port).final_status("REGISTER")


def store_changes(result: object) -> list[str]:
    return [c for c in getattr(result, "changes", ()) if c.startswith("store:")]


def test_an_added_extension_registers_and_answers_at_once_with_no_reload(
    stack: PbxStack, tmp_path: Path
) -> None:
    desired = storedb.desired_with(stack, tmp_path / "added", [*BASELINE, NEW])
    files = storedb.managed_files(stack.pbx)
    offset = stack.pbx.log_size()

    result = stack.apply(desired)

    assert not result.unchanged and result.recorded, result
    assert store_changes(result) == [f"store: extension {NEW} added or changed"], result.changes
    assert result.reloads == (), result.reloads
    assert any(c.name == f"extension {NEW} live in the store" and c.ok for c in result.checks), result.checks
    # Its mailbox row is live: with no phone registered yet, voicemail answers the call ...
    to_voicemail = sipp.call("4001", stack.password("4001"), NEW, stack.pbx.sip_port, hold_s=0.5)
    assert to_voicemail.answered, to_voicemail.describe()
    # ... while a number with no rows gets no answer at all (the pattern's existence check).
    nowhere = sipp.call("4001", stack.password("4001"), "4099", stack.pbx.sip_port, hold_s=0.5)
    assert not nowhere.answered, nowhere.describe()
    registered = sipp.register(NEW, stack.password(NEW), stack.pbx.sip_port)
    assert registered.final_status("REGISTER") == 200, registered.describe()
    assert storedb.reloads_logged(stack.pbx.log_since(offset)) == []
    assert storedb.managed_files(stack.pbx) == files  # no file changed: no dialplan to reload
    assert NEW in storedb.endpoint_ids(stack.pbx)

    # The pattern dialplan routes the new number to the new phone, and that phone answers.
    with sipp.answering_phone(NEW, stack.password(NEW), stack.pbx.sip_port) as phone:
        called = sipp.call("4001", stack.password("4001"), NEW, stack.pbx.sip_port, hold_s=0.5)
        assert called.answered, called.describe()
        assert phone.wait_answered(1, timeout_s=5), called.describe()
    assert storedb.reloads_logged(stack.pbx.log_since(offset)) == []


def test_a_changed_password_refuses_the_old_one_and_takes_the_new_one_with_no_reload(
    stack: PbxStack, tmp_path: Path
) -> None:
    old, new = storedb.new_password(stack, "4002")
    files = storedb.managed_files(stack.pbx)
    offset = stack.pbx.log_size()

    result = stack.apply(storedb.desired_with(stack, tmp_path / "repassworded", BASELINE))

    assert store_changes(result) == ["store: extension 4002 added or changed"], result.changes
    assert result.reloads == (), result.reloads
    assert register_status(stack, "4002", old) in (401, 403)
    assert register_status(stack, "4002", new) == 200
    assert storedb.password_row(stack.pbx, "4002") == new
    assert storedb.reloads_logged(stack.pbx.log_since(offset)) == []
    assert storedb.managed_files(stack.pbx) == files


def test_a_removed_extension_is_refused_its_live_contact_is_dropped_and_calls_to_it_fail(
    stack: PbxStack, tmp_path: Path
) -> None:
    stack.apply(storedb.desired_with(stack, tmp_path / "with-new", [*BASELINE, NEW]))
    password = stack.password(NEW)
    with sipp.answering_phone(NEW, password, stack.pbx.sip_port) as phone:
        contact = f"{NEW}/sip:{NEW}@127.0.0.1:{phone.local_port}"
        assert contact in stack.pbx.contacts()
        files = storedb.managed_files(stack.pbx)
        offset = stack.pbx.log_size()

        result = stack.apply(storedb.desired_with(stack, tmp_path / "removed", BASELINE))

        assert store_changes(result) == [f"store: extension {NEW} removed"], result.changes
        assert result.reloads == (), result.reloads
        assert any(c.name == f"extension {NEW} removed" and c.ok for c in result.checks), result.checks
        # the store.unregister_commands the apply ran dropped the contact the phone still holds
        assert not [c for c in stack.pbx.contacts() if c.startswith(f"{NEW}/")], stack.pbx.cli(
            "pjsip show contacts"
        )
        assert NEW not in storedb.endpoint_ids(stack.pbx)
        called = sipp.call("4001", stack.password("4001"), NEW, stack.pbx.sip_port, hold_s=0.5)
        assert not called.answered, called.describe()
        assert phone.answered_calls() == []
    refused = sipp.register(NEW, password, stack.pbx.sip_port)
    assert refused.final_status("REGISTER") in (401, 403, 404), refused.describe()
    assert storedb.reloads_logged(stack.pbx.log_since(offset)) == []
    assert storedb.managed_files(stack.pbx) == files


def hide_endpoint_when_auth_gets(stack: PbxStack, password: str) -> str:
    """A fault in the store (a trigger, as a broken migration could leave one): once an auth row
    with `password` is inserted, its extension's endpoint row is deleted, so the rows the apply
    wrote are not the rows Asterisk finds. Returns the trigger's name."""
    name = "gitops_test_fault"
    quoted = store.sql_quote(password)
    storedb.sql(
        stack.pbx,
        f"CREATE TRIGGER {name} AFTER INSERT ON {store.AUTHS} WHEN NEW.password = {quoted} "
        f"BEGIN DELETE FROM {store.ENDPOINTS} WHERE id = NEW.username; END;",
    )
    return name


def test_a_store_change_asterisk_does_not_show_is_rolled_back_to_the_previous_rows(
    stack: PbxStack, tmp_path: Path
) -> None:
    old, new = storedb.new_password(stack, "4003")
    desired = storedb.desired_with(stack, tmp_path / "faulty", BASELINE)
    trigger = hide_endpoint_when_auth_gets(stack, new)
    digest_before = storedb.sql(stack.pbx, f".sha3sum {store.DIGEST_PATTERN}")
    try:
        with pytest.raises(ApplyRolledBack) as failed:
            stack.apply(desired)
        # the same, as a user runs it: exit code 1 as for a file rollback
        run = storedb.cli(stack, "apply", str(desired))
    finally:
        storedb.sql(stack.pbx, f"DROP TRIGGER IF EXISTS {trigger};")

    message = failed.value.message
    assert failed.value.exit_code == EXIT_ERROR and failed.value.rolled_back, message
    assert "extension 4003 live in the store" in message and "endpoint not found" in message, message
    assert "and the previous store rows was restored and reloaded: the last good config is live." in message
    assert new not in message and old not in message  # no secret in the message
    assert run.returncode == EXIT_ERROR, run.stdout + run.stderr
    assert "the last good config is live" in run.stdout + run.stderr, run.stdout + run.stderr

    # The previous rows are back, exactly: the phone with the old password still registers.
    assert storedb.sql(stack.pbx, f".sha3sum {store.DIGEST_PATTERN}") == digest_before
    assert storedb.password_row(stack.pbx, "4003") == old
    assert register_status(stack, "4003", old) == 200
    assert register_status(stack, "4003", new) in (401, 403)
    # and the store is still the one state.json records: the next apply of the fixed state works
    result = stack.apply(desired)
    assert store_changes(result) == ["store: extension 4003 added or changed"], result.changes
    assert register_status(stack, "4003", new) == 200


def test_a_store_write_the_database_refuses_changes_nothing_and_says_so(
    stack: PbxStack, tmp_path: Path
) -> None:
    old, new = storedb.new_password(stack, "4005")
    desired = storedb.desired_with(stack, tmp_path / "refused", BASELINE)
    quoted = store.sql_quote(new)
    storedb.sql(
        stack.pbx,
        f"CREATE TRIGGER gitops_test_refuse BEFORE INSERT ON {store.AUTHS} WHEN NEW.password = {quoted} "
        "BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
    )
    digest_before = storedb.sql(stack.pbx, f".sha3sum {store.DIGEST_PATTERN}")
    try:
        with pytest.raises(ManagedWriteFailed) as failed:
            stack.apply(desired)
    finally:
        storedb.sql(stack.pbx, "DROP TRIGGER IF EXISTS gitops_test_refuse;")

    message = failed.value.message
    assert "writing the store" in message and "injected fault" in message, message
    assert new not in message and old not in message
    # ONE transaction: the rows deleted before the refused insert are back too
    assert storedb.sql(stack.pbx, f".sha3sum {store.DIGEST_PATTERN}") == digest_before
    assert register_status(stack, "4005", old) == 200
    result = stack.apply(desired)
    assert store_changes(result) == ["store: extension 4005 added or changed"], result.changes
    assert register_status(stack, "4005", new) == 200


def test_a_row_edited_behind_the_reconcilers_back_is_detected_and_healed_by_the_next_apply(
    stack: PbxStack, tmp_path: Path
) -> None:
    desired = storedb.desired_with(stack, tmp_path / "baseline-again", BASELINE)
    assert stack.apply(desired).unchanged
    storedb.sql(stack.pbx, f"UPDATE {store.AUTHS} SET password='hand-edited' WHERE id='4004-auth';")
    assert register_status(stack, "4004", stack.password("4004")) in (401, 403)  # the edit is live

    dry = storedb.cli(stack, "apply", "--dry-run", str(desired))
    assert "(drift)" in dry.stdout, dry.stdout + dry.stderr  # a dry run names it
    assert storedb.password_row(stack.pbx, "4004") == "hand-edited"  # and changes nothing

    result = stack.apply(desired)

    assert store_changes(result) == [
        "store: rewriting every row: the store's rows differ from those recorded (drift)"
    ], result.changes
    assert result.reloads == (), result.reloads
    assert storedb.password_row(stack.pbx, "4004") == stack.password("4004")
    assert poll(lambda: register_status(stack, "4004", stack.password("4004")) == 200, timeout_s=5)
    assert stack.apply(desired).unchanged


def test_the_watch_loops_drift_check_finds_a_hand_edited_row_and_heals_it(
    stack: PbxStack, tmp_path: Path
) -> None:
    from reconciler.gitops.loop import Reconciler, WatchOptions
    from reconciler.gitops.sources import DirectorySource

    desired = storedb.desired_with(stack, tmp_path / "watched", BASELINE)
    settings = stack.settings(desired)
    source = DirectorySource(desired, cache_dir=tmp_path / "dir-cache")
    loop = Reconciler(settings, source, stack.client(), WatchOptions())
    first = loop.reconcile("startup")
    assert first.result in ("applied", "unchanged"), first
    assert loop.reconcile("poll").result == "unchanged"
    storedb.sql(stack.pbx, f"UPDATE {store.AUTHS} SET password='hand-edited' WHERE id='4005-auth';")

    healed = loop.reconcile("poll")

    assert healed.result == "drift-fixed", healed
    assert storedb.password_row(stack.pbx, "4005") == stack.password("4005")
    assert register_status(stack, "4005", stack.password("4005")) == 200
    assert loop.reconcile("poll").result == "unchanged"


def test_status_names_a_hand_edited_store_row_as_a_problem(stack: PbxStack, tmp_path: Path) -> None:
    desired = storedb.desired_with(stack, tmp_path / "status", BASELINE)
    assert stack.apply(desired).unchanged
    clean = json.loads(storedb.cli(stack, "status", "--json", "--dir", str(desired)).stdout)
    assert clean["summary"]["problems"] == [], clean["summary"]
    storedb.sql(stack.pbx, f"UPDATE {store.AUTHS} SET password='hand-edited' WHERE id='4001-auth';")
    try:
        shown = json.loads(storedb.cli(stack, "status", "--json", "--dir", str(desired)).stdout)
    finally:
        stack.apply(desired)  # heal it whatever status said
    assert any("store" in p for p in shown["summary"]["problems"]), shown["summary"]
