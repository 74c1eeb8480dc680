"""The trigger queue and worker: a burst of triggers collapses into one or two reconciles."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

from reconciler.gitops import history
from reconciler.gitops.loop import Outcome, TriggerQueue, WatchLoop, WatchOptions
from reconciler.settings import Settings
from tests.harness import waiting

wait_until = functools.partial(waiting.wait_until, timeout=10.0)


class SlowReconcile:
    """Stands in for our own Reconciler.reconcile: records its calls, takes a little while."""

    def __init__(self, seconds: float = 0.2, temporary: bool = False) -> None:
        self.seconds = seconds
        self.temporary = temporary
        self.calls: list[str] = []
        self.started = threading.Event()
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def __call__(self, trigger: str) -> Outcome:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls.append(trigger)
        self.started.set()
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return Outcome(result="failed" if self.temporary else "unchanged", temporary=self.temporary)


def make_loop(tmp_path: Path, fn: SlowReconcile, **options: float) -> WatchLoop:
    settings = Settings(state_dir=tmp_path / "state")
    opts = WatchOptions(
        interval_s=options.get("interval_s", 3600),
        control_poll_s=0.05,
        backoff_initial_s=options.get("backoff_initial_s", 2.0),
    )
    return WatchLoop(settings, fn, opts)


def test_take_returns_every_pending_reason_at_once_without_duplicates() -> None:
    queue = TriggerQueue()
    for reason in ["webhook", "poll", "webhook", "fs", "webhook"]:
        queue.put(reason)
    assert queue.take(timeout=0) == ["webhook", "poll", "fs"]
    assert queue.take(timeout=0) is None


def test_a_burst_during_a_reconcile_causes_at_most_one_more_reconcile(tmp_path: Path) -> None:
    fn = SlowReconcile(seconds=0.3)
    loop = make_loop(tmp_path, fn)
    loop.start(startup=False)
    try:
        loop.trigger("webhook")
        assert fn.started.wait(5)
        for _ in range(50):
            loop.trigger("webhook")
        assert wait_until(
            lambda: loop.reconciles >= 2 and not loop.queue.pending() and not loop.busy.is_set()
        )
        time.sleep(0.5)  # nothing else may follow
    finally:
        loop.stop()
    assert len(fn.calls) == 2
    assert loop.queue.received == 51


def test_a_burst_of_twenty_triggers_from_many_threads_gives_at_most_two_reconciles(tmp_path: Path) -> None:
    fn = SlowReconcile(seconds=0.2)
    loop = make_loop(tmp_path, fn)
    barrier = threading.Barrier(20)

    def push() -> None:
        barrier.wait()
        loop.trigger("webhook")

    threads = [threading.Thread(target=push) for _ in range(20)]
    loop.start(startup=False)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wait_until(
            lambda: loop.reconciles >= 1 and not loop.queue.pending() and not loop.busy.is_set()
        )
        time.sleep(0.5)
    finally:
        loop.stop()
    assert 1 <= len(fn.calls) <= 2
    assert fn.max_running == 1


def test_reconciles_never_overlap_even_with_a_steady_stream_of_triggers(tmp_path: Path) -> None:
    fn = SlowReconcile(seconds=0.05)
    loop = make_loop(tmp_path, fn)
    loop.start(startup=False)
    try:
        for _ in range(100):
            loop.trigger("poll")
            time.sleep(0.005)
        assert wait_until(lambda: not loop.queue.pending() and not loop.busy.is_set())
    finally:
        loop.stop()
    assert fn.max_running == 1
    assert len(fn.calls) < 100


def test_startup_triggers_one_reconcile(tmp_path: Path) -> None:
    fn = SlowReconcile(seconds=0.0)
    loop = make_loop(tmp_path, fn)
    loop.start()
    try:
        assert wait_until(lambda: loop.reconciles == 1)
    finally:
        loop.stop()
    assert fn.calls == ["startup"]


def test_the_poll_timer_triggers_reconciles_by_itself(tmp_path: Path) -> None:
    fn = SlowReconcile(seconds=0.0)
    loop = make_loop(tmp_path, fn, interval_s=0.1)
    loop.start(startup=False)
    try:
        assert wait_until(lambda: loop.reconciles >= 3)
    finally:
        loop.stop()
    assert set(fn.calls) == {"poll"}


def test_a_temporary_failure_is_retried_with_backoff_before_the_next_poll(tmp_path: Path) -> None:
    fn = SlowReconcile(seconds=0.0, temporary=True)
    loop = make_loop(tmp_path, fn, backoff_initial_s=0.05)
    loop.start()
    try:
        assert wait_until(lambda: "backoff" in fn.calls)
    finally:
        loop.stop()
    assert fn.calls[0] == "startup"


def test_a_cli_retry_request_reaches_the_running_loop(tmp_path: Path) -> None:
    fn = SlowReconcile(seconds=0.0)
    loop = make_loop(tmp_path, fn)
    loop.start(startup=False)
    try:
        history.request_retry(loop.settings)
        assert wait_until(lambda: fn.calls == ["retry"])
    finally:
        loop.stop()
    assert history.LoopState.load(loop.settings).retry_requested


def test_a_reconcile_function_that_raises_does_not_stop_the_worker(tmp_path: Path) -> None:
    calls: list[str] = []

    def explode(trigger: str) -> Outcome:
        calls.append(trigger)
        raise RuntimeError("bug")

    loop = WatchLoop(Settings(state_dir=tmp_path), explode, WatchOptions(interval_s=3600))
    loop.start()
    try:
        assert wait_until(lambda: loop.reconciles == 1)
        loop.trigger("webhook")
        assert wait_until(lambda: loop.reconciles == 2)
        assert loop.alive()
    finally:
        loop.stop()
