"""`reconciler watch --dir` (the `make up` loop): saving a YAML file makes it live, no commit needed."""

from __future__ import annotations

import re
import time

from tests.gitops.conftest import Stack

LIVE_TIMEOUT_S = 60.0


def test_saving_a_new_extension_makes_it_live_through_a_filesystem_event(dir_stack: Stack) -> None:
    path = dir_stack.remote.desired / "extensions.yaml"
    start = dir_stack.watcher.count()
    path.write_text(
        path.read_text() + '  - number: "4006"\n    name: Desk\n    password: ${EXT_4006_PASSWORD}\n'
    )
    saved = time.monotonic()

    seen_at, line = dir_stack.watcher.wait_for(
        lambda x: x["result"] == "applied", LIVE_TIMEOUT_S, after=start
    )

    dir_stack.measure("file saved (fs event, 0.5 s debounce)", seen_at - saved)
    assert "fs" in line["trigger"]
    assert line["revision"] == (dir_stack.live_revision() or "").removeprefix("sha256:")[:12]
    assert re.search(r"Endpoint:\s+4006\b", dir_stack.endpoints())


def test_a_half_written_file_is_invalid_and_the_finished_one_applies(dir_stack: Stack) -> None:
    path = dir_stack.remote.desired / "extensions.yaml"
    good = path.read_text()
    live = dir_stack.live_revision()
    start = dir_stack.watcher.count()
    path.write_text(good + '  - number: "4007"\n    name: [Unfinished\n')

    _, line = dir_stack.watcher.wait_for(lambda x: x["result"] == "invalid", LIVE_TIMEOUT_S, after=start)

    assert re.search(r"extensions\.yaml:\d+", line["reason"]), line["reason"]
    assert dir_stack.live_revision() == live
    start = dir_stack.watcher.count()
    path.write_text(good + '  - number: "4007"\n    name: Finished\n    password: ${EXT_4007_PASSWORD}\n')
    dir_stack.watcher.wait_for(lambda x: x["result"] == "applied", LIVE_TIMEOUT_S, after=start)
    assert re.search(r"Endpoint:\s+4007\b", dir_stack.endpoints())
