"""Verbs of `reconciler fleet` (see reconciler.commands.fleet)."""

from __future__ import annotations

import typer

from reconciler.commands.fleet import fleet_app


def register(app: typer.Typer) -> None:
    """Add this module's verbs to `reconciler fleet`."""
    del app  # no verbs yet: they are added with `@fleet_app.command(...)`
    assert fleet_app is not None
