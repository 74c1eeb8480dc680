"""Call records: the image's CDR config and table agree with the reader; the reader's shell step
runs read-only against a real SQLite file (the local executor), bounded, with --since bound as a
parameter; rows become the JSON and table the CLI prints."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.asterisk.client import AsteriskClient
from reconciler.asterisk.executor import LocalExecutor
from reconciler.cli import app
from reconciler.observe import calls as calls_mod
from reconciler.observe.calls import (
    CDR_COLUMNS,
    DISPOSITIONS,
    MAX_LIMIT,
    NO_CALLS_NOTE,
    CallsUnavailable,
    cdr_db_path,
    format_duration,
    parse_counts,
    parse_step_output,
    query_step,
    read_calls,
    record_from_row,
    records_sql,
    table_rows,
)
from reconciler.settings import REPO_ROOT

ASTERISK = REPO_ROOT / "asterisk"
needs_sqlite3 = pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 CLI is not installed")


def _conf_value(text: str, key: str) -> str:
    match = re.search(rf"^{key}\s*=>?\s*(.+)$", text, re.M)
    assert match, key
    return match[1].strip()


def test_the_cdr_config_writes_the_columns_the_reader_reads_in_order() -> None:
    conf = (ASTERISK / "conf" / "cdr_sqlite3_custom.conf").read_text()
    assert re.search(r"^\[master\]$", conf, re.M)  # master.db in the log directory
    assert _conf_value(conf, "table") == "cdr"
    columns = tuple(c.strip() for c in _conf_value(conf, "columns").split(","))
    assert columns == CDR_COLUMNS
    values = re.findall(r"'([^']*)'", _conf_value(conf, "values"))
    assert len(values) == len(CDR_COLUMNS)
    assert values[CDR_COLUMNS.index("target")] == "${CDR(gitops_target)}"
    assert values[CDR_COLUMNS.index("provider")] == "${CDR(gitops_provider)}"
    assert "UTC" in values[CDR_COLUMNS.index("calldate")]


def test_the_entrypoint_table_has_the_columns_in_the_config_order() -> None:
    # Asterisk 22 inserts positionally (VALUES (NULL, ?, ...)): the order must be the config's.
    db = sqlite3.connect(":memory:")
    db.executescript((ASTERISK / "cdr-schema.sql").read_text())
    db.executescript((ASTERISK / "cdr-schema.sql").read_text())  # idempotent
    names = [row[1] for row in db.execute("PRAGMA table_info(cdr)")]
    assert names == ["AcctId", *CDR_COLUMNS]


def test_the_modules_it_needs_are_loaded_by_the_image() -> None:
    modules = (ASTERISK / "conf" / "modules.conf").read_text()
    for name in ("func_cdr", "res_cdrel_custom", "cdr_sqlite3_custom"):
        assert re.search(rf"^load = {name}\.so$", modules, re.M), name
    cdr = (ASTERISK / "conf" / "cdr.conf").read_text()
    for line in ("enable = yes", "unanswered = yes", "congestion = yes", "batch = no"):
        assert line in cdr


def test_the_database_is_beside_the_asterisk_log() -> None:
    assert cdr_db_path("/var/log/asterisk/messages.log") == "/var/log/asterisk/master.db"
    assert cdr_db_path("/shared/log/messages.log") == "/shared/log/master.db"


def test_the_select_is_bounded_and_filters_only_by_the_bound_parameter() -> None:
    assert records_sql(10**9, with_since=False).endswith(f"LIMIT {MAX_LIMIT};")
    assert records_sql(0, with_since=False).endswith("LIMIT 1;")
    assert "WHERE calldate >= @since" in records_sql(5, with_since=True)
    step = query_step("/var/log/asterisk/master.db", records_sql(5, True), datetime(2026, 12, 2, tzinfo=UTC))
    assert "-readonly" in step
    assert "2026-12-02 00:00:00" in step


# --- parsing ---------------------------------------------------------------------------------


ROW = {
    "calldate": "2026-12-02 10:23:43",
    "src": "4001",
    "dst": "4002",
    "dcontext": "internal",
    "channel": "PJSIP/4001-00000001",
    "dstchannel": "PJSIP/4002-00000002",
    "lastapp": "Dial",
    "duration": 12,
    "billsec": "9",
    "disposition": "ANSWERED",
    "uniqueid": "1796207023.1",
    "target": "extension:4002",
    "provider": None,
}


def test_a_row_becomes_the_json_the_cli_prints() -> None:
    assert record_from_row(ROW).as_json() == {
        "time": "2026-12-02T10:23:43Z",
        "from": "4001",
        "dialled": "4002",
        "target": "extension:4002",
        "provider": "",
        "duration_s": 12,
        "billsec_s": 9,
        "disposition": "ANSWERED",
        "uniqueid": "1796207023.1",
    }


def test_a_row_from_an_untyped_table_still_parses() -> None:
    record = record_from_row({"calldate": "", "duration": "x", "billsec": None})
    assert (record.time, record.duration_s, record.billsec_s, record.caller) == ("", 0, 0, "")


def test_the_step_output_markers() -> None:
    assert parse_step_output("gitops-calls: no-db\n") is None
    assert parse_step_output("gitops-calls: rc=0\n\n") == []
    assert parse_step_output(f"gitops-calls: rc=0\n{json.dumps([ROW])}\n") == [ROW]
    assert parse_step_output("gitops-calls: rc=1\nParse error: no such table: cdr\n") is None
    with pytest.raises(CallsUnavailable, match="sqlite3 exit 5"):
        parse_step_output("gitops-calls: rc=5\nRuntime error: database is locked\n")
    with pytest.raises(CallsUnavailable, match="unexpected answer"):
        parse_step_output("sh: sqlite3: not found\n")
    with pytest.raises(CallsUnavailable, match="not JSON"):
        parse_step_output("gitops-calls: rc=0\n[{broken\n")


def test_counts_have_every_disposition_even_at_zero() -> None:
    counts = parse_counts([{"disposition": "ANSWERED", "n": 3}, {"disposition": "", "n": 1}])
    assert counts == {**dict.fromkeys(DISPOSITIONS, 0), "ANSWERED": 3, "UNKNOWN": 1}
    assert parse_counts(None) == dict.fromkeys(DISPOSITIONS, 0)


def test_the_table_rows() -> None:
    assert format_duration(0) == "0:00"
    assert format_duration(65) == "1:05"
    assert format_duration(3723) == "1:02:03"
    empty = record_from_row({"disposition": "NO ANSWER"})
    assert table_rows([record_from_row(ROW), empty]) == [
        ("2026-12-02 10:23:43", "4001", "4002", "extension:4002", "-", "0:12", "ANSWERED"),
        ("?", "-", "-", "-", "-", "0:00", "NO ANSWER"),
    ]


# --- a real SQLite file, read by the real shell step (the local executor) -------------------------


def _client(root: Path) -> AsteriskClient:
    return AsteriskClient(
        "unused", log_path=str(root / "messages.log"), executor=LocalExecutor(str(root / "no.ctl"))
    )


def _db(root: Path, rows: list[dict]) -> Path:
    path = root / "master.db"
    db = sqlite3.connect(path)
    db.executescript((ASTERISK / "cdr-schema.sql").read_text())
    for row in rows:
        db.execute(
            f"INSERT INTO cdr VALUES (NULL, {', '.join('?' for _ in CDR_COLUMNS)})",
            [row.get(c, "") for c in CDR_COLUMNS],
        )
    db.commit()
    db.close()
    return path


@needs_sqlite3
def test_no_database_means_no_calls_recorded_yet(tmp_path: Path) -> None:
    found = read_calls(_client(tmp_path), with_counts=True)
    assert found.records == () and not found.recorded
    assert found.note == NO_CALLS_NOTE
    assert found.counts == dict.fromkeys(DISPOSITIONS, 0)
    assert not (tmp_path / "master.db").exists()  # read-only: nothing was created


@needs_sqlite3
def test_newest_first_bounded_and_filtered_by_time(tmp_path: Path) -> None:
    rows = [
        {**ROW, "calldate": f"2026-12-02 10:0{i}:00", "uniqueid": f"u{i}", "disposition": d}
        for i, d in enumerate(["ANSWERED", "BUSY", "NO ANSWER", "ANSWERED"])
    ]
    _db(tmp_path, rows)
    client = _client(tmp_path)

    found = read_calls(client, limit=3, with_counts=True)
    assert [r.uniqueid for r in found.records] == ["u3", "u2", "u1"]
    assert found.counts["ANSWERED"] == 2 and found.counts["BUSY"] == 1
    since = read_calls(client, since=datetime(2026, 12, 2, 10, 2, tzinfo=UTC))
    assert [r.uniqueid for r in since.records] == ["u3", "u2"]
    later = read_calls(client, since=datetime(2027, 1, 1, tzinfo=UTC))
    assert later.recorded and later.records == ()


@needs_sqlite3
def test_hostile_text_in_a_record_stays_text(tmp_path: Path) -> None:
    nasty = "'); DROP TABLE cdr; -- $(touch pwned) `id`"
    _db(tmp_path, [{**ROW, "src": nasty, "target": '"\\n'}])
    found = read_calls(_client(tmp_path))
    assert found.records[0].caller == nasty
    assert found.records[0].target == '"\\n'
    assert not Path("pwned").exists()


@needs_sqlite3
def test_a_database_without_the_table_is_nothing_recorded(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "master.db").close()
    found = read_calls(_client(tmp_path))
    assert not found.recorded and found.records == ()


@needs_sqlite3
def test_the_reader_never_writes(tmp_path: Path) -> None:
    path = _db(tmp_path, [ROW])
    step = query_step(str(path), "DELETE FROM cdr;")
    out = subprocess.run(["sh", "-c", step], capture_output=True, text=True, check=False).stdout
    with pytest.raises(CallsUnavailable, match="readonly"):
        parse_step_output(out)
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM cdr").fetchone() == (1,)


# --- the CLI ---------------------------------------------------------------------------------


class FakeClient:
    def __init__(self, *args: object, **kwargs: object) -> None:
        self.log_path = "/var/log/asterisk/messages.log"


def _cli_with(monkeypatch: pytest.MonkeyPatch, found: calls_mod.CallsRead) -> CliRunner:
    monkeypatch.setattr("reconciler.asterisk.client.AsteriskClient", FakeClient)
    monkeypatch.setattr(calls_mod, "read_calls", lambda client, since=None, limit=50: found)
    return CliRunner()


def test_cli_json_lists_the_records(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _cli_with(monkeypatch, calls_mod.CallsRead((record_from_row(ROW),), recorded=True))
    result = runner.invoke(app, ["calls", "--json", "--container", "x", "--control", "local"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["dialled"] == "4002"


def test_cli_with_nothing_recorded_says_so_and_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _cli_with(monkeypatch, calls_mod.CallsRead((), recorded=False))
    result = runner.invoke(app, ["calls", "--json", "--control", "local"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert NO_CALLS_NOTE in result.stderr
    table = runner.invoke(app, ["calls", "--control", "local"])
    assert table.exit_code == 0 and NO_CALLS_NOTE in table.stdout


def test_cli_table_shows_the_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _cli_with(monkeypatch, calls_mod.CallsRead((record_from_row(ROW),), recorded=True))
    result = runner.invoke(app, ["calls", "--control", "local"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("time (UTC)", "dialled", "disposition", "4001", "4002", "extension:4002", "ANSWERED"):
        assert text in result.stdout
