"""A real call leaves a record in the PBX's CDR database, and `reconciler calls --json --container
NAME` lists it: who called, what was dialled, the target and provider, how it ended. A record table
made by an older image gains the new columns when the PBX starts (the last test: it restarts it)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from reconciler.observe.calls import cdr_db_path
from reconciler.settings import REPO_ROOT
from tests.harness import sipp
from tests.harness.containers import PbxStack, poll

pytestmark = pytest.mark.integration


def reconciler_calls(container: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """`reconciler calls --json --container NAME ARGS` as a user runs it: (exit code, list, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "calls", "--json", "--container", container, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    listed = json.loads(done.stdout) if done.returncode == 0 else []
    return done.returncode, listed, done.stderr


def test_the_pbx_starts_with_an_empty_call_record_table(live_pbx: PbxStack) -> None:
    code, listed, err = reconciler_calls(live_pbx.pbx.name, "--since", "1h")

    assert code == 0, err
    assert listed == [] or all(c["dialled"] for c in listed)  # earlier tests of this module may have called


def test_an_answered_call_between_extensions_is_listed(live_pbx: PbxStack) -> None:
    port = live_pbx.pbx.sip_port
    with sipp.answering_phone("4002", live_pbx.password("4002"), port) as phone:
        result = sipp.call("4001", live_pbx.password("4001"), "4002", port, hold_s=1)
        assert result.answered, result.describe()
        assert poll(lambda: phone.hung_up_calls() == phone.answered_calls(), timeout_s=10)

    def listed() -> list[dict[str, Any]]:
        code, calls, err = reconciler_calls(live_pbx.pbx.name, "--since", "10m", "--limit", "20")
        assert code == 0, err
        return [c for c in calls if c["from"] == "4001" and c["dialled"] == "4002"]

    assert poll(lambda: bool(listed()), timeout_s=10), live_pbx.pbx.log_tail(40)
    call = listed()[0]
    assert call["disposition"] == "ANSWERED"
    assert call["duration_s"] >= call["billsec_s"] >= 0
    assert call["time"].endswith("Z") and call["uniqueid"]
    assert call["target"] == "extension:4002"
    assert set(call) == {
        "time",
        "from",
        "dialled",
        "target",
        "provider",
        "duration_s",
        "billsec_s",
        "disposition",
        "uniqueid",
    }


def test_a_call_out_through_the_provider_is_listed_with_the_number_dialled(
    provider_inbox: PbxStack,
) -> None:
    stack = provider_inbox
    result = sipp.call("4001", stack.password("4001"), "91234567890", stack.pbx.sip_port, hold_s=0.5)
    assert result.ok, result.describe()

    def found() -> list[dict[str, Any]]:
        code, calls, err = reconciler_calls(stack.pbx.name, "--since", "10m")
        assert code == 0, err
        return [c for c in calls if c["dialled"] == "91234567890"]

    assert poll(lambda: bool(found()), timeout_s=10), stack.pbx.log_tail(40)
    call = found()[0]
    assert call["from"] == "4001"
    assert call["disposition"] == "ANSWERED"
    assert call["provider"] == "fake_provider" and call["target"] == "route:external"


def test_a_future_since_lists_nothing_and_says_so(live_pbx: PbxStack) -> None:
    code, listed, err = reconciler_calls(live_pbx.pbx.name, "--since", "2999-01-01")

    assert code == 0
    assert listed == []
    assert "no calls since 2999-01-01 00:00:00 UTC" in err


def test_a_record_table_from_an_older_image_gains_the_new_columns_when_the_pbx_starts(
    live_pbx: PbxStack,
) -> None:
    pbx = live_pbx.pbx
    db = cdr_db_path("/var/log/asterisk/messages.log")

    def columns() -> list[str]:
        code, out = pbx.exec(["sqlite3", db, "SELECT name FROM pragma_table_info('cdr')"], user="asterisk")
        assert code == 0, out
        return out.split()

    code, out = pbx.exec(["sqlite3", db, "ALTER TABLE cdr DROP COLUMN dialled"], user="asterisk")
    assert code == 0 and "dialled" not in columns(), out
    pbx.docker_restart()
    assert columns()[-1] == "dialled"
    test_an_answered_call_between_extensions_is_listed(live_pbx)  # and calls are recorded again
