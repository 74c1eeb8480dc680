"""Waiting for something that should happen soon, with a bound: the one polling helper of the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T], timeout_s: float, interval_s: float = 0.25) -> T:
    """Call `check()` until it returns a truthy value or `timeout_s` passes; return the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)


GENEROUS_S = 20.0  # how long a test waits for something that should happen within a second


def wait_until(
    predicate: Callable[[], object], timeout: float = GENEROUS_S, interval_s: float = 0.01
) -> bool:
    """Whether `predicate()` became true within `timeout` seconds (checked every `interval_s`)."""
    return bool(poll(predicate, timeout, interval_s))
