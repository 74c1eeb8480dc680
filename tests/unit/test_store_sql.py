"""The realtime store's SQL texts, run by the real sqlite3 shell (the same CLI the exec runs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.asterisk import store
from reconciler.desired.model import DesiredState
from reconciler.settings import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("sqlite3") is None, reason="needs the sqlite3 shell")
KEY = b"k" * 32
HOSTILE = "x'); DROP TABLE ps_aors;--\n.shell touch /tmp/pwned-store\n\r\t'';"


def _sql(db: Path, text: str) -> str:
    done = subprocess.run(
        ["sqlite3", "-bail", str(db)], input=text, text=True, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _state(*numbers: str, voicemail: bool = True) -> DesiredState:
    return DesiredState.model_validate(
        {
            "extensions": [
                {"number": n, "name": "Phone", "password": f"${{EXT_{n}_PASSWORD}}", "voicemail": voicemail}
                for n in numbers
            ]
        }
    )


def _secrets(*numbers: str, value: str = "s3cret-Value-1") -> dict[str, str]:
    return {f"EXT_{n}_PASSWORD": value for n in numbers}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "realtime.sqlite3"
    _sql(path, store.schema_sql())
    return path


def test_the_schema_the_image_ships_is_the_one_store_py_defines() -> None:
    assert (REPO_ROOT / "asterisk" / "realtime-schema.sql").read_text() == store.schema_sql()


def test_a_hostile_value_is_stored_byte_for_byte_and_runs_nothing(db: Path) -> None:
    rows = {store.ENDPOINTS: {"4001": {"id": "4001", "callerid": HOSTILE}}}
    _sql(db, store.delta_sql(["4001"], rows, "t1"))
    read = store.parse_rows(_sql(db, store.read_rows_sql(["4001"])))
    assert read[store.ENDPOINTS]["4001"]["callerid"] == HOSTILE
    assert not Path("/tmp/pwned-store").exists()
    assert "ps_aors" in _sql(db, ".tables")


def test_a_nul_character_is_refused_before_any_sql_is_written() -> None:
    with pytest.raises(store.StoreValueRefused):
        store.sql_quote("a\x00b")


def test_rows_carry_the_settings_the_file_template_gave_an_extension() -> None:
    state = _state("4001")
    rows = store.rows_for(state.extensions[0], state, _secrets("4001"))
    ep = rows[store.ENDPOINTS]
    assert (ep["context"], ep["auth"], ep["aors"], ep["dtmf_mode"]) == (
        "internal",
        "4001-auth",
        "4001",
        "rfc4733",
    )
    assert (ep["direct_media"], ep["rewrite_contact"], ep["mailboxes"]) == ("no", "yes", "4001@default")
    assert rows[store.AUTHS] == {
        "id": "4001-auth",
        "auth_type": "userpass",
        "username": "4001",
        "password": "s3cret-Value-1",
    }
    assert rows[store.AORS]["max_contacts"] == "1" and rows[store.AORS]["qualify_frequency"] == "30"
    assert len(rows[store.VOICEMAIL]["password"]) == 10


def test_a_delta_touches_only_the_changed_extensions_and_its_undo_puts_the_old_rows_back(db: Path) -> None:
    first = store.desired_rows(_state("4001", "4002"), _secrets("4001", "4002"), KEY)
    _sql(db, store.rewrite_sql(first, "t0", KEY))
    before = _sql(db, store.DIGEST_COMMAND)
    changed = store.desired_rows(_state("4002", "4003"), _secrets("4002", "4003", value="other-Value-2"), KEY)
    applied = store.parse_read(_sql(db, store.READ_COMMAND)).applied
    todo = store.changed_numbers(changed, applied)
    assert todo == ["4001", "4002", "4003"]
    delta = store.delta_sql(todo, changed, "t1")
    assert "4004" not in delta
    _sql(db, delta)
    read = store.parse_rows(_sql(db, store.read_rows_sql(["4001", "4002", "4003"])))
    assert sorted(read[store.ENDPOINTS]) == ["4002", "4003"]
    assert read[store.AUTHS]["4002-auth"]["password"] == "other-Value-2"
    _sql(db, store.undo_sql("t1"))
    assert _sql(db, store.DIGEST_COMMAND) == before
    assert store.parse_read(_sql(db, store.READ_COMMAND)).applied == applied


def test_an_undo_for_another_delta_changes_nothing(db: Path) -> None:
    rows = store.desired_rows(_state("4001"), _secrets("4001"), KEY)
    _sql(db, store.rewrite_sql(rows, "t0", KEY))
    after = _sql(db, store.DIGEST_COMMAND)
    _sql(db, store.undo_sql("not-this-one"))
    assert _sql(db, store.DIGEST_COMMAND) == after


def test_the_digest_sees_a_row_edited_behind_the_reconcilers_back(db: Path) -> None:
    rows = store.desired_rows(_state("4001"), _secrets("4001"), KEY)
    _sql(db, store.rewrite_sql(rows, "t0", KEY))
    digest = store.parse_digest(_sql(db, store.DIGEST_COMMAND))
    _sql(db, "UPDATE ps_auths SET password='hacked' WHERE id='4001-auth';")
    assert digest is not None and store.parse_digest(_sql(db, store.DIGEST_COMMAND)) != digest


def test_removed_extensions_are_verified_absent_and_at_most_twenty_are_asked_about() -> None:
    queries, checked, skipped = store.verification_plan([str(4000 + i) for i in range(25)], ["5000"])
    assert len(checked) == store.VERIFY_CAP and skipped == 6
    assert all(q.startswith(("pjsip show endpoint ", "pjsip show aor ")) for q in queries)
    assert "pjsip show endpoints" not in queries
