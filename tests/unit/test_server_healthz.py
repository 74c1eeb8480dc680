"""`/healthz` tells the truth: a real WatchLoop (whose reconcile blocks) behind the real server.

Thresholds are made small through `HealthPolicy`, so each case needs a fraction of a second.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.gitops.health import HealthPolicy, LoopProbe, ThreadProbe, assess, slow_limit
from reconciler.gitops.history import History, Record
from reconciler.gitops.loop import Outcome, WatchLoop, WatchOptions
from reconciler.observe.server import ServerContext, make_server, serve_in_background
from reconciler.settings import Settings
from tests.harness.waiting import GENEROUS_S, wait_until


class Blocking:
    """A reconcile that runs until released (like one wedged by an alias bomb)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls = 0

    def __call__(self, trigger: str) -> Outcome:
        self.calls += 1
        self.started.set()
        self.release.wait(GENEROUS_S)
        return Outcome(result="unchanged")


class Stack:
    """A WatchLoop and the server that reports on it, as `reconciler watch --http` wires them."""

    def __init__(self, tmp_path: Path, reconcile: Callable[[str], Outcome], policy: HealthPolicy) -> None:
        settings = Settings(state_dir=tmp_path / "state")
        self.loop = WatchLoop(
            settings, reconcile, WatchOptions(interval_s=3600, control_poll_s=0.05), health_policy=policy
        )
        ctx = ServerContext(
            settings=settings,
            trigger=self.loop.trigger,
            webhook_secret=None,
            health=self.loop.health,
            loop_info=lambda: {"busy": self.loop.busy.is_set(), "pending": self.loop.queue.pending()},
        )
        self.httpd = make_server("127.0.0.1:0", ctx)
        serve_in_background(self.httpd)

    def healthz(self) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.httpd.server_address[1], timeout=GENEROUS_S)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.loop.stop(timeout=GENEROUS_S)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(reconcile: Callable[[str], Outcome], **policy: float) -> Stack:
        s = Stack(tmp_path, reconcile, HealthPolicy(**policy))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_healthz_is_ok_while_a_reconcile_runs_within_its_usual_time(stack) -> None:
    fn = Blocking()
    s = stack(fn, slow_floor_s=3600)
    s.loop.start()
    try:
        assert fn.started.wait(GENEROUS_S)
        status, body = s.healthz()
        assert status == 200
        assert body["ok"] is True and body["reason"] is None and body["reasons"] == []
        assert body["busy"] is True and body["running_s"] is not None
    finally:
        fn.release.set()


def test_healthz_turns_503_with_a_reason_when_a_reconcile_runs_far_longer_than_usual(stack) -> None:
    fn = Blocking()
    s = stack(fn, slow_floor_s=0.2)
    s.loop.start()
    try:
        assert fn.started.wait(GENEROUS_S)
        assert wait_until(lambda: (s.loop.probe().running_s or 0) > 0.3)
        status, body = s.healthz()
        assert status == 503
        assert body["ok"] is False
        assert "a reconcile (trigger startup) has run for" in body["reason"]
        assert body["slow_after_s"] == 0.2
    finally:
        fn.release.set()
    # Once it finishes, the loop is healthy again.
    assert wait_until(lambda: not s.loop.busy.is_set())
    assert s.healthz()[0] == 200


def test_healthz_turns_503_when_the_worker_thread_has_died(stack, monkeypatch: pytest.MonkeyPatch) -> None:
    class Fatal(BaseException):
        """Gets past the worker's `except Exception`, as a bug in the loop itself would."""

    def fatal(trigger: str) -> Outcome:
        raise Fatal

    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the death is expected
    s = stack(fatal)
    s.loop.start()
    assert wait_until(lambda: not s.loop.alive())
    status, body = s.healthz()
    assert status == 503
    assert "the worker thread is not running" in body["reasons"]


def test_healthz_turns_503_when_triggers_wait_for_a_worker_that_takes_nothing(stack) -> None:
    fn = Blocking()
    fn.release.set()  # each reconcile returns at once...
    s = stack(fn, pending_slack_s=0.2, tick_slack_s=3600)
    wedged = threading.Event()
    unwedge = threading.Event()

    def stuck_after(outcome: Outcome) -> None:  # ...but the worker then wedges in its own code
        wedged.set()
        unwedge.wait(GENEROUS_S)

    s.loop._after = stuck_after  # type: ignore[method-assign]
    s.loop.start()
    try:
        assert wedged.wait(GENEROUS_S)
        s.loop.trigger("webhook")
        assert wait_until(lambda: (s.loop.probe().pending_idle_s or 0) > 0.3)
        status, body = s.healthz()
        assert status == 503
        assert any("webhook have waited" in r for r in body["reasons"]), body
        assert body["pending"] == ["webhook"]
    finally:
        unwedge.set()
    assert wait_until(lambda: s.loop.reconciles >= 2)
    assert wait_until(lambda: s.healthz()[0] == 200)


def test_triggers_that_arrive_during_a_reconcile_do_not_count_as_waiting(stack) -> None:
    fn = Blocking()
    s = stack(fn, pending_slack_s=0.1, slow_floor_s=3600)
    s.loop.start()
    try:
        assert fn.started.wait(GENEROUS_S)
        s.loop.trigger("poll")
        time.sleep(0.3)  # longer than the slack: still fine, the worker is busy, not stuck
        probe = s.loop.probe()
        assert probe.pending == ("poll",) and probe.pending_idle_s is None
        assert s.healthz()[0] == 200
    finally:
        fn.release.set()


def test_the_usual_duration_comes_from_the_history_so_a_restarted_loop_knows_it(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    history = History(settings)
    for n, duration in enumerate([2.0, 3.0, 40.0, 2.5, 3.5]):
        history.append(Record(revision=f"{n:040x}", trigger="poll", result="applied", duration_s=duration))
    loop = WatchLoop(settings, Blocking(), WatchOptions())
    assert loop.probe().recent_durations_s == (2.0, 3.0, 40.0, 2.5, 3.5)
    # The median (3 s) is typical; one slow outlier does not move it.
    assert slow_limit(HealthPolicy(slow_floor_s=10, slow_factor=10), loop.probe().recent_durations_s) == 30


# -- the verdict itself (pure) --------------------------------------------------------------------


def threads(**ages: float | None) -> tuple[ThreadProbe, ...]:
    periods = {"worker": 1.0, "poll": 33.0, "control": 1.0}
    return tuple(ThreadProbe(n, True, periods[n], ages.get(n, 0.0)) for n in periods)


def test_the_slow_limit_is_the_floor_until_k_times_the_typical_duration_exceeds_it() -> None:
    policy = HealthPolicy(slow_floor_s=300, slow_factor=10)
    assert slow_limit(policy, []) == 300
    assert slow_limit(policy, [0.4, 0.5, 0.3]) == 300
    assert slow_limit(policy, [45.0, 50.0, 55.0]) == 500


def test_a_poll_thread_that_stopped_going_round_its_loop_is_unhealthy() -> None:
    policy = HealthPolicy(tick_slack_s=30)
    fine = assess(LoopProbe(started=True, threads=threads(poll=90.0)), policy)  # within 2 x 33 + 30
    stuck = assess(LoopProbe(started=True, threads=threads(poll=200.0)), policy)
    assert fine.ok
    assert not stuck.ok
    assert stuck.reasons == ("the poll thread has not gone round its loop for 200 s (it should every 33 s)",)


def test_a_loop_that_has_not_started_is_unhealthy() -> None:
    health = assess(LoopProbe(started=False), HealthPolicy())
    assert not health.ok and health.reasons == ("the loop has not started",)


def test_every_reason_is_reported_at_once() -> None:
    probe = LoopProbe(
        started=True,
        threads=(ThreadProbe("control", False, 1.0, None), *threads()[:2]),
        running_s=900.0,
        running_trigger="poll",
        recent_durations_s=(1.0,),
    )
    health = assess(probe, HealthPolicy())
    assert not health.ok
    assert len(health.reasons) == 2
    assert health.as_json()["reason"] == "; ".join(health.reasons)
