"""`reconciler watch --repo` against a bare git remote and the real Asterisk: merges go live by
themselves, broken commits never do, hand edits are healed, bursts collapse.

The tests run in file order on one PBX (module fixture `stack`): each step starts from the state
the previous one left, as in real use. Times are measured and printed, never asserted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from reconciler.asterisk import store
from reconciler.gitops.history import History
from reconciler.gitops.plan import strip_revision
from reconciler.settings import Settings
from tests.gitops.conftest import INTERVAL_S, Stack, git
from tests.harness import containers, sipp, storedb
from tests.harness.containers import MANAGED_DIR

# A poll reconcile starts at most one jittered interval (+10 %) after the previous one ends.
ONE_INTERVAL_S = INTERVAL_S * 1.1
# Generous bounds for "eventually": a stuck loop fails the test instead of hanging it.
LIVE_TIMEOUT_S = 60.0


def rev12(sha: str) -> str:
    return sha[:12]


def extension_yaml(stack: Stack, extra: dict[str, str]) -> str:
    """extensions.yaml of the initial state plus `extra` (number → name)."""
    text = (stack.remote.desired / "extensions.yaml").read_text()
    text = re.sub(r'  - number: "400[67]"\n(?:    .*\n)*', "", text)
    for number, name in extra.items():
        text += f'  - number: "{number}"\n    name: {name}\n    password: ${{EXT_{number}_PASSWORD}}\n'
        text += "    voicemail: true\n"
    return text


def applied(sha: str):
    return lambda line: line["result"] == "applied" and line["revision"] == rev12(sha)


def callerid(stack: Stack, number: str) -> str:
    """The callerid column of extension `number`'s endpoint row in the live store ('' when none):
    an extension's name lives there, not in any rendered file."""
    return storedb.sql(stack.pbx, f"SELECT callerid FROM {store.ENDPOINTS} WHERE id='{number}';").strip()


def api_status(stack: Stack) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.watcher.http_port}/api/status", timeout=30) as r:
        return json.loads(r.read())


def test_a_pushed_commit_adding_extension_4006_goes_live_by_polling_and_a_phone_registers(
    stack: Stack, sipp_installed: str
) -> None:
    assert not re.search(r"Endpoint:\s+4006\b", stack.endpoints())
    start = stack.watcher.count()
    sha = stack.remote.commit_and_push(
        "Add 4006 for the new hire", {"extensions.yaml": extension_yaml(stack, {"4006": "New Hire"})}
    )
    pushed = time.monotonic()

    seen_at, line = stack.watcher.wait_for(applied(sha), LIVE_TIMEOUT_S, after=start)

    stack.measure("poll (interval 2 s)", seen_at - pushed)
    assert line["trigger"] == "poll"
    assert re.search(r"Endpoint:\s+4006\b", stack.endpoints())
    assert stack.live_revision() == sha
    result = sipp.register("4006", stack.secrets["EXT_4006_PASSWORD"], stack.pbx.sip_port)
    assert result.final_status("REGISTER") == 200, result.describe()


def test_a_pushed_commit_with_broken_yaml_is_recorded_as_invalid_with_its_file_and_line_and_4006_stays_live(
    stack: Stack,
) -> None:
    good = stack.live_revision()
    start = stack.watcher.count()
    broken = extension_yaml(stack, {"4006": "New Hire"}) + '  - number: "4007"\n    name: [unclosed\n'
    sha = stack.remote.commit_and_push("Add 4007 (typo)", {"extensions.yaml": broken})
    assert stack.watcher.webhook(sha) == 202

    _, line = stack.watcher.wait_for(lambda x: x["revision"] == rev12(sha), LIVE_TIMEOUT_S, after=start)

    assert line["result"] == "invalid"
    assert re.search(r"desired/extensions\.yaml:\d+", line["reason"]), line["reason"]
    record = History(Settings(state_dir=stack.watcher.state_dir)).last()
    assert record is not None and record["result"] == "invalid" and record["subject"] == "Add 4007 (typo)"
    assert re.search(r"desired/extensions\.yaml:\d+", str(record["reason"]))
    assert stack.live_revision() == good
    assert re.search(r"Endpoint:\s+4006\b", stack.endpoints())
    # The status names the branch head (not any local directory) and that it is not live.
    desired = api_status(stack)["desired"]
    assert (desired["revision"], desired["pending"]) == (sha, True)
    assert desired["subject"] == "Add 4007 (typo)"
    assert re.search(r"desired/extensions\.yaml:\d+", desired["error"] or ""), desired


def test_a_failed_revision_is_not_retried_on_every_poll(stack: Stack) -> None:
    start = stack.watcher.count()
    # Two poll reconciles later the broken head has still not been tried again.
    stack.watcher.wait_for(lambda x: x["trigger"] == "poll", LIVE_TIMEOUT_S, after=start)
    second = stack.watcher.count()
    _, line = stack.watcher.wait_for(lambda x: x["trigger"] == "poll", LIVE_TIMEOUT_S, after=second)
    assert line["result"] == "skipped"
    assert "reconciler retry" in line["reason"]
    tried = [x for _, x in stack.watcher.lines()[start:] if x["result"] in ("invalid", "failed", "applied")]
    assert tried == []


def test_the_next_good_commit_applies_by_webhook(stack: Stack) -> None:
    start = stack.watcher.count()
    fixed = extension_yaml(stack, {"4006": "New Hire", "4007": "Second Hire"})
    sha = stack.remote.commit_and_push("Add 4007, fixed", {"extensions.yaml": fixed})
    pushed = time.monotonic()
    assert stack.watcher.webhook(sha) == 202

    seen_at, line = stack.watcher.wait_for(applied(sha), LIVE_TIMEOUT_S, after=start)

    stack.measure("webhook", seen_at - pushed)
    assert "webhook" in line["trigger"]
    assert stack.live_revision() == sha
    assert re.search(r"Endpoint:\s+4007\b", stack.endpoints())


def test_a_hand_edit_of_a_managed_file_is_restored_by_the_next_poll(stack: Stack) -> None:
    original = stack.managed("extensions.conf")
    start = stack.watcher.count()
    edit = "printf '\\n[hand-made]\\nexten => 999,1,NoOp(edited by hand)\\n'"
    code, out = stack.pbx.exec(f"{edit} >> {MANAGED_DIR}/extensions.conf")
    assert code == 0, out
    assert "hand-made" in stack.managed("extensions.conf")

    # The first poll may have read the files just before the edit; the one after it must heal.
    _, line = stack.watcher.wait_for(
        lambda x: x["result"] in ("drift-fixed", "drift-detected"), LIVE_TIMEOUT_S, after=start
    )
    polls = [x for _, x in stack.watcher.lines()[start:] if x["trigger"] == "poll"]

    assert line["result"] == "drift-fixed"
    assert "by hand" in line["reason"]
    assert len(polls) <= 2
    healed = stack.managed("extensions.conf")
    assert "hand-made" not in healed
    # The heal writes the render of the live revision: a store-only apply before it left an older
    # revision header in this file (revision lines alone never cause a write), so compare without them.
    assert strip_revision(healed) == strip_revision(original)


def test_a_webhook_with_a_bad_signature_gets_401_and_causes_no_reconcile(stack: Stack) -> None:
    start = stack.watcher.count()
    body = json.dumps({"ref": "refs/heads/main"}).encode()

    assert stack.watcher.webhook("0" * 40, secret="not-the-secret") == 401
    assert stack.watcher.post(body, {}) == 401
    assert stack.watcher.post(body, {"X-Gitlab-Token": "wrong"}) == 401

    # Anything the webhook queued would run before (or with) the next poll.
    stack.watcher.wait_for(lambda x: x["trigger"] == "poll", LIVE_TIMEOUT_S, after=start)
    triggers = [x["trigger"] for _, x in stack.watcher.lines()[start:]]
    assert not any("webhook" in t for t in triggers), triggers


def test_twenty_rapid_pushes_cause_far_fewer_reconciles_and_end_on_the_last_commit(stack: Stack) -> None:
    start = stack.watcher.count()
    shas = []
    for n in range(1, 21):
        text = extension_yaml(stack, {"4006": f"Burst {n}", "4007": "Second Hire"})
        shas.append(stack.remote.commit_and_push(f"Rename 4006, take {n}", {"extensions.yaml": text}))
        assert stack.watcher.webhook(shas[-1]) == 202

    stack.watcher.wait_for(applied(shas[-1]), LIVE_TIMEOUT_S, after=start)

    during = [x for _, x in stack.watcher.lines()[start:]]
    assert len(during) < 10, during
    assert stack.live_revision() == shas[-1]
    assert callerid(stack, "4006") == '"Burst 20" <4006>'


def test_twenty_rapid_pushes_without_webhooks_are_followed_by_polling_to_the_last_commit(
    stack: Stack,
) -> None:
    # The previous test's webhooks may still be queued: start once a reconcile ran on a poll alone.
    stack.watcher.wait_for(lambda x: x["trigger"] == "poll", LIVE_TIMEOUT_S, after=stack.watcher.count())
    start = stack.watcher.count()
    shas = []
    for n in range(1, 21):
        text = extension_yaml(stack, {"4006": f"Polled {n}", "4007": "Second Hire"})
        shas.append(stack.remote.commit_and_push(f"Rename 4006, polled take {n}", {"extensions.yaml": text}))

    stack.watcher.wait_for(applied(shas[-1]), LIVE_TIMEOUT_S, after=start)

    during = [x for _, x in stack.watcher.lines()[start:]]
    assert {x["trigger"] for x in during} == {"poll"}
    assert len(during) < 10, during
    assert callerid(stack, "4006") == '"Polled 20" <4006>'


@pytest.mark.parametrize("how", ["webhook", "poll"])
def test_push_to_live_time_is_measured(stack: Stack, how: str) -> None:
    """Not a check of speed (nothing is asserted about time): records numbers for the report."""
    for n in range(3):
        start = stack.watcher.count()
        text = extension_yaml(stack, {"4006": f"Measured {how} {n}", "4007": "Second Hire"})
        sha = stack.remote.commit_and_push(f"Measure {how} {n}", {"extensions.yaml": text})
        pushed = time.monotonic()
        if how == "webhook":
            assert stack.watcher.webhook(sha) == 202
        seen_at, _ = stack.watcher.wait_for(applied(sha), LIVE_TIMEOUT_S, after=start)
        stack.measure(how if how == "webhook" else f"poll (interval {INTERVAL_S:.0f} s)", seen_at - pushed)
        time.sleep(0.3 + n * 0.5)  # spread the poll phase
    assert git("rev-parse", "HEAD", cwd=stack.remote.work) == stack.live_revision()


def test_a_wiped_managed_volume_is_restored_and_logged_as_drift(stack: Stack) -> None:
    live = stack.live_revision()
    name = callerid(stack, "4006")
    start = stack.watcher.count()
    # The store lives in the managed volume: a wipe takes its rows with the rendered files.
    code, out = stack.pbx.exec(
        f"rm -f {MANAGED_DIR}/*.conf {MANAGED_DIR}/state.json {MANAGED_DIR}/{store.STORE_DIR}/*"
    )
    assert code == 0, out
    assert stack.managed("pjsip.conf") == ""

    _, line = stack.watcher.wait_for(lambda x: x["result"] == "drift-fixed", LIVE_TIMEOUT_S, after=start)
    # A poll whose read exec ran while `rm` was at work saw part of the wipe (state.json read, then
    # the store gone): it heals that part and names it; the next poll heals the rest.
    assert re.search(r"wiped|realtime store is missing|changed by hand", line["reason"]), line

    def restored() -> bool:
        if stack.live_revision() != live or "[transport-udp]" not in stack.managed("pjsip.conf"):
            return False
        # Never open a missing store: the sqlite3 shell would create an empty one.
        if stack.pbx.exec(f"test -s {store.DB_PATH}")[0] != 0:
            return False
        try:
            return {"4006", "4007"} <= storedb.endpoint_ids(stack.pbx)
        except AssertionError:  # read while the heal's sqlite3 was creating its schema
            return False

    assert containers.poll(restored, LIVE_TIMEOUT_S, 0.2), stack.watcher.log_tail()
    assert callerid(stack, "4006") == name
    result = sipp.register("4006", stack.secrets["EXT_4006_PASSWORD"], stack.pbx.sip_port)
    assert result.final_status("REGISTER") == 200, result.describe()

    # The next change must reach Asterisk itself (not only the store file on disk).
    start = stack.watcher.count()
    text = extension_yaml(stack, {"4006": "After Wipe", "4007": "Second Hire"})
    sha = stack.remote.commit_and_push("Rename 4006 after the wipe", {"extensions.yaml": text})
    assert stack.watcher.webhook(sha) == 202
    stack.watcher.wait_for(applied(sha), LIVE_TIMEOUT_S, after=start)
    assert '"After Wipe" <4006>' in stack.pbx.cli("pjsip show endpoint 4006")


def test_a_deleted_store_is_rewritten_and_asterisk_takes_the_next_change_from_it(stack: Stack) -> None:
    start = stack.watcher.count()
    code, out = stack.pbx.exec(f"rm -f {MANAGED_DIR}/{store.STORE_DIR}/*")
    assert code == 0, out

    _, line = stack.watcher.wait_for(lambda x: x["result"] == "drift-fixed", LIVE_TIMEOUT_S, after=start)
    # The heal says why. A reconcile already under way when the file went (one noticing the
    # previous test's restart) finds the store missing in its apply and heals it under that reason.
    assert "realtime store is missing" in line["reason"] or "restarted" in line["reason"], line
    assert containers.poll(lambda: {"4006", "4007"} <= storedb.endpoint_ids(stack.pbx), LIVE_TIMEOUT_S)
    # Asterisk kept the deleted file open: the change after the heal must reach it all the same.
    start = stack.watcher.count()
    text = extension_yaml(stack, {"4006": "New Store", "4007": "Second Hire"})
    sha = stack.remote.commit_and_push("Rename 4006 after the store was deleted", {"extensions.yaml": text})
    assert stack.watcher.webhook(sha) == 202
    stack.watcher.wait_for(applied(sha), LIVE_TIMEOUT_S, after=start)
    assert '"New Store" <4006>' in stack.pbx.cli("pjsip show endpoint 4006")


def test_a_restarted_asterisk_is_noticed_and_still_runs_the_live_revision(stack: Stack) -> None:
    live = stack.live_revision()
    start = stack.watcher.count()
    stack.pbx.docker_container.restart(timeout=10)
    stack.pbx.wait_booted()

    _, line = stack.watcher.wait_for(
        lambda x: "restarted" in (x.get("reason") or "") and x["result"] in ("unchanged", "drift-fixed"),
        LIVE_TIMEOUT_S,
        after=start,
    )

    assert line["revision"] == rev12(live or "")
    assert re.search(r"Endpoint:\s+4006\b", stack.endpoints())
    assert stack.live_revision() == live


def test_a_suspended_loop_applies_nothing_until_resumed(stack: Stack) -> None:
    live = stack.live_revision()
    state = ["--state-dir", str(stack.watcher.state_dir)]
    cli = [sys.executable, "-m", "reconciler"]
    subprocess.run(
        [*cli, "suspend", "--reason", "carrier maintenance", *state], check=True, capture_output=True
    )
    start = stack.watcher.count()
    text = extension_yaml(stack, {"4006": "While suspended", "4007": "Second Hire"})
    sha = stack.remote.commit_and_push("Rename 4006 during the window", {"extensions.yaml": text})
    assert stack.watcher.webhook(sha) == 202

    _, line = stack.watcher.wait_for(lambda x: "webhook" in x["trigger"], LIVE_TIMEOUT_S, after=start)

    assert line["result"] == "skipped"
    assert "carrier maintenance" in line["reason"]
    assert stack.live_revision() == live
    start = stack.watcher.count()
    subprocess.run([*cli, "resume", *state], check=True, capture_output=True)
    _, line = stack.watcher.wait_for(applied(sha), LIVE_TIMEOUT_S, after=start)
    assert stack.live_revision() == sha


def test_status_metrics_and_dashboard_are_served_next_to_the_webhook(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.watcher.http_port}"
    head = git("rev-parse", "HEAD", cwd=stack.remote.work)
    status = api_status(stack)
    assert status["live"]["revision"] == stack.live_revision() == head
    # The desired side is the pushed branch head, live: nothing pending.
    assert status["desired"]["revision"] == head
    assert status["desired"]["pending"] is False
    assert status["last_reconcile"]["result"] in ("applied", "unchanged", "drift-fixed")
    applied_before = sum(1 for _, x in stack.watcher.lines() if x["result"] == "applied")
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    applied_after = sum(1 for _, x in stack.watcher.lines() if x["result"] == "applied")
    assert "# TYPE reconciler_reconciles_total counter" in text
    # The counter counts every applied reconcile of the story (running totals, not the kept history).
    total = re.search(r'^reconciler_reconciles_total\{result="applied"\} (\d+)$', text, re.M)
    assert total is not None and applied_before <= int(total[1]) <= applied_after
    with urllib.request.urlopen(f"{base}/", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/html")
    with urllib.request.urlopen(f"{base}/healthz", timeout=30) as response:
        assert json.loads(response.read())["ok"] is True


def test_no_secret_value_ever_appears_in_the_watch_log_or_history(stack: Stack) -> None:
    log = stack.watcher.log_path.read_text(errors="replace")
    history = (stack.watcher.state_dir / "history.jsonl").read_text()
    assert stack.watcher.count() > 10  # the story above ran and logged
    for name, value in stack.secrets.items():
        assert value not in log, name
        assert value not in history, name
