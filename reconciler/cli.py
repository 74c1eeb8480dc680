"""The `reconciler` command line. Each verb lives in a module of `reconciler.commands` that
registers itself here; errors of every verb are turned into messages and exit codes in `main()`."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from reconciler.errors import EXIT_ERROR, ReconcilerError

COMMAND_MODULES = (
    "desired",
    "apply",
    "watch",
    "observe",
    "carrier",
    "prcheck",
    "verify",
    "fleet",
    "fleet_deploy",
    "fleet_status",
    "route",
    "calls",
)

app = typer.Typer(
    name="reconciler",
    help="GitOps for the Asterisk PBX: validate, plan and apply desired state kept in git.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"reconciler.commands.{_name}").register(app)


def main() -> None:
    err = Console(stderr=True)
    try:
        app()
    except ReconcilerError as exc:
        # Messages quote config text like "[4001]": print them without Rich markup.
        err.print("error: " + exc.message, style="bold red", markup=False, highlight=False, soft_wrap=True)
        if exc.hint:
            err.print("hint: " + exc.hint, style="yellow", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_ERROR)
