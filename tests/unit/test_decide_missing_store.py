"""A store whose file is missing is rewritten AND Asterisk restarted: Asterisk keeps the deleted
file open (its reload does not reopen it), so without a restart the rewritten rows, and every
change after them, would never reach it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler.asterisk.restart import RestartPolicy
from reconciler.asterisk.store import StoreRead
from reconciler.gitops.decide import STORE_REOPEN_REASON
from tests.unit.test_apply_decide import _decide, _live_of, _rendered


def test_a_missing_store_file_is_rewritten_and_asterisk_restarted_to_open_it(
    sample: Path, tmp_path: Path
) -> None:
    rendered = _rendered(sample, tmp_path)
    live = replace(_live_of(rendered), store=StoreRead(None, None, {}))

    decision, store = _decide(rendered, live)

    assert store.sql is not None and store.heal
    assert decision.restart and STORE_REOPEN_REASON in decision.reason
    assert decision.reloads[-1] == RestartPolicy.IDLE.command


def test_a_store_that_is_there_but_drifted_is_rewritten_with_no_restart(sample: Path, tmp_path: Path) -> None:
    rendered = _rendered(sample, tmp_path)
    live = _live_of(rendered, digest="e" * 64)

    decision, store = _decide(rendered, live)

    assert store.sql is not None and store.heal
    assert not decision.restart
