"""The one domain error type, and the exit codes the CLI maps it to.

Every error carries a message that says what went wrong and a hint that says what to do next.
`temporary` tells the watch loop whether retrying later can help (Docker down, remote unreachable)
or whether only a new revision can (bad YAML, a refused secret, a config Asterisk rejected).
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.textrules import no_command, one_line

# Documented exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_ERROR = 1  # invalid input, failed apply (rolled back), failed check
EXIT_CHANGES = 2  # `plan`: there are changes to apply
EXIT_UNAVAILABLE = 3  # Docker engine or the Asterisk container cannot be reached


# A problem line echoes names and values from files that nobody reviewed as text (keys, file names):
# each part is escaped to one line and bounded.
PROBLEM_FILE_LIMIT = 200
PROBLEM_FIELD_LIMIT = 120
PROBLEM_MESSAGE_LIMIT = 400


@dataclass(frozen=True, order=True)
class Problem:
    """One validation problem, located in a desired-state file. Every part is made one printable,
    bounded line when the problem is made, so `str(problem)` is always exactly one short line that
    cannot start a CI workflow command, whatever a file name, key or value contained."""

    file: str
    line: int
    field: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "file", one_line(self.file, PROBLEM_FILE_LIMIT))
        object.__setattr__(self, "field", one_line(self.field, PROBLEM_FIELD_LIMIT))
        object.__setattr__(self, "message", one_line(self.message, PROBLEM_MESSAGE_LIMIT))

    def __str__(self) -> str:
        return no_command(f"{self.file}:{self.line}: {self.field}: {self.message}")


class ReconcilerError(Exception):
    exit_code: int = EXIT_ERROR
    temporary: bool = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ValidationFailed(ReconcilerError):
    """The desired state is invalid; `problems` lists every problem found, in file/line order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        lines = "\n".join(str(p) for p in self.problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the desired state:\n{lines}",
            "fix the lines above; nothing was rendered or applied",
        )


class AsteriskUnavailable(ReconcilerError):
    """Docker or the Asterisk container is not reachable: retrying later may succeed."""

    exit_code = EXIT_UNAVAILABLE
    temporary = True


class ApplyFailed(ReconcilerError):
    """Asterisk refused the change or verification failed; the previous config was restored."""


# --- the apply transaction (issue 9 §5, §7) ------------------------------------------------------

EXIT_BUSY = 4  # another apply holds the PBX's lock; waited --lock-wait seconds


class LockBusy(ReconcilerError):
    """Another apply holds the PBX's lock and did not release it within the wait: try later."""

    exit_code = EXIT_BUSY
    temporary = True


class ManagedWriteFailed(ApplyFailed):
    """Writing into the managed volume failed (full, read-only, permissions): nothing was renamed
    or reloaded, or what was renamed was put back. Retrying after fixing the volume can help."""

    temporary = True


class RestartRefused(ApplyFailed):
    """`--restart refuse`: a transport change needs a restart and calls are up; nothing changed."""

    temporary = True


class LeaseLost(ApplyFailed):
    """Another apply took the PBX's lock over (ours had expired) before this one recorded."""

    temporary = True
