"""The outcome of one check, shared by `doctor` and `check-provider`: a verdict and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "PASS"
    WARN = "WARN"  # not a failure: something to know or do by hand
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Finding:
    """One check: what was looked at, what was found, and (`fix`) what to do when it failed."""

    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None
