"""The `reconciler fleet ...` group: one repository, many PBXs (docs/fleet.md).

The group is defined here alone; its verbs live in `fleet_deploy` (render-swarm, render-k8s) and
`fleet_status` (status), which add themselves to `fleet_app`."""

from __future__ import annotations

import typer

fleet_app = typer.Typer(
    name="fleet",
    help="Many PBXs from one repository: status, Swarm stack, Kubernetes manifests.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `fleet` group to the CLI."""
    app.add_typer(fleet_app, name="fleet")
