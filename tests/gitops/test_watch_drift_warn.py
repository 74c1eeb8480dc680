"""`--drift=warn`: a hand edit is reported on every poll and in the history, and left alone."""

from __future__ import annotations

from reconciler.gitops.history import History
from reconciler.settings import Settings
from tests.gitops.conftest import Stack
from tests.harness.containers import MANAGED_DIR

LIVE_TIMEOUT_S = 60.0


def test_a_hand_edit_is_reported_as_drift_and_left_in_place(warn_stack: Stack) -> None:
    start = warn_stack.watcher.count()
    edit = "printf '\\n[hand-made]\\nexten => 999,1,NoOp(edited by hand)\\n'"
    code, out = warn_stack.pbx.exec(f"{edit} >> {MANAGED_DIR}/extensions.conf")
    assert code == 0, out

    _, line = warn_stack.watcher.wait_for(lambda x: x["result"] != "unchanged", LIVE_TIMEOUT_S, after=start)
    second = warn_stack.watcher.count()
    _, again = warn_stack.watcher.wait_for(lambda x: x["trigger"] == "poll", LIVE_TIMEOUT_S, after=second)

    assert line["result"] == "drift-detected"
    assert "extensions.conf" in line["reason"]
    assert again["result"] == "drift-detected"
    assert "hand-made" in warn_stack.managed("extensions.conf")
    record = History(Settings(state_dir=warn_stack.watcher.state_dir)).last()
    assert record is not None and record["result"] == "drift-detected" and int(record["count"]) >= 2
