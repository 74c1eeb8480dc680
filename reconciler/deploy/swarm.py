"""The Docker Swarm stack of a fleet (`reconciler fleet render-swarm`, `make fleet-up`).

Per site: `<site>-asterisk` (the PBX), `<site>-reconciler` (the sidecar: `watch --site` with local
control, no Docker socket) and, when fleet.yaml gives the site a carrier, `<site>-carrier`. Swarm
has no pod (no `network_mode`, no `depends_on`), so a site's services meet through the host
network (the external network `host`) and named volumes, and named volumes exist per node: every
service of a site is pinned to one node (`node.hostname == ...`).

Secrets are external Swarm secrets with versioned names (`layout.secret_name`): a changed value is
a new secret and `docker stack deploy` moves the sidecar to it; an unchanged one keeps the service
as it is. The generator gets only names and versions, never a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from reconciler.deploy import layout
from reconciler.deploy.layout import Images
from reconciler.desired.fleet import SECRETS_DIR as SECRETS_SUBDIR
from reconciler.desired.fleet import Fleet, Site
from reconciler.errors import ReconcilerError

COMPOSE_VERSION = "3.8"
# The external network that puts a service on the host's network stack.
HOST_NETWORK = "host"
SERVICE_ROLES = ("asterisk", "reconciler", "carrier")
FLEET_LABEL = "com.asterisk-gitops.fleet"
SITE_LABEL = "com.asterisk-gitops.site"
NAME_LABEL = "com.asterisk-gitops.name"  # a secret's ${NAME}


def service_name(site: str, role: str) -> str:
    """`<site>-<role>`; the stack prefixes it: `<stack>_<site>-<role>`."""
    return f"{site}-{role}"


def volume_name(site: str, suffix: str) -> str:
    return f"{site}_{suffix}"


def _deploy(fleet: Fleet, site: Site, node: str) -> dict[str, Any]:
    return {
        "mode": "replicated",
        "replicas": 1,
        "placement": {"constraints": [f"node.hostname == {node}"]},
        # `any`: a container that exits for any reason (a `core stop`, a crash, a kill) comes back.
        "restart_policy": {"condition": "any", "delay": "2s"},
        # One task per site and fixed host ports: the old task must be gone before the new starts.
        "update_config": {"parallelism": 1, "order": "stop-first", "failure_action": "rollback"},
        "labels": {FLEET_LABEL: fleet.name, SITE_LABEL: site.name},
    }


def _asterisk_healthcheck() -> dict[str, Any]:
    return {
        "test": ["CMD", *layout.ASTERISK_HEALTHCHECK],
        "interval": "5s",
        "timeout": "5s",
        "retries": 3,
        "start_period": "20s",
    }


def _mounts(site: str, volumes: tuple[tuple[str, str], ...]) -> list[str]:
    return [f"{volume_name(site, suffix)}:{path}" for suffix, path in volumes]


def _node_of(site: Site, node: str | None) -> str:
    chosen = site.node or node
    if not chosen:
        raise ReconcilerError(
            f"site {site.name} has no node in fleet.yaml and no --node was given",
            "pass --node HOSTNAME (the Swarm node that runs it: `docker node inspect self "
            "--format '{{.Description.Hostname}}'`), or set `node:` for the site in fleet.yaml",
        )
    return chosen


def site_services(
    fleet: Fleet,
    site: Site,
    images: Images,
    node: str | None,
    secrets: list[tuple[str, str]],
    fleet_host_dir: Path,
) -> dict[str, dict[str, Any]]:
    """The services of one site, in the order asterisk, reconciler, carrier."""
    pinned = _node_of(site, node)
    services: dict[str, dict[str, Any]] = {
        service_name(site.name, "asterisk"): {
            "image": images.asterisk,
            "hostname": service_name(site.name, "asterisk"),
            "environment": layout.asterisk_env(site),
            "volumes": _mounts(site.name, layout.SHARED_VOLUMES),
            "networks": [HOST_NETWORK],
            "healthcheck": _asterisk_healthcheck(),
            "stop_grace_period": "10s",
            "deploy": _deploy(fleet, site, pinned),
        },
        service_name(site.name, "reconciler"): {
            "image": images.sidecar,
            "hostname": service_name(site.name, "reconciler"),
            "command": layout.sidecar_command(site),
            "environment": layout.sidecar_env(site),
            "volumes": [
                *_mounts(site.name, layout.SHARED_VOLUMES),
                f"{volume_name(site.name, 'state')}:{layout.STATE_DIR}",
                {
                    "type": "bind",
                    "source": str(fleet_host_dir),
                    "target": layout.FLEET_MOUNT,
                    "read_only": True,
                },
                # the fleet's env files (every site's values) stay out of the sidecar: its secrets
                # come from /run/secrets, its own only
                {"type": "tmpfs", "target": f"{layout.FLEET_MOUNT}/{SECRETS_SUBDIR}"},
            ],
            "secrets": [{"source": source, "target": target, "mode": 0o400} for source, target in secrets],
            "networks": [HOST_NETWORK],
            "healthcheck": {
                "test": ["CMD", *layout.sidecar_healthcheck(site)],
                "interval": "10s",
                "timeout": "5s",
                "retries": 3,
                "start_period": "60s",
            },
            "stop_grace_period": "20s",
            "deploy": _deploy(fleet, site, pinned),
        },
    }
    if site.carrier is not None:
        services[service_name(site.name, "carrier")] = {
            "image": images.asterisk,
            "hostname": service_name(site.name, "carrier"),
            "command": list(layout.CARRIER_COMMAND),
            "environment": layout.carrier_env(site),
            "volumes": _mounts(site.name, layout.CARRIER_VOLUMES),
            "networks": [HOST_NETWORK],
            "healthcheck": _asterisk_healthcheck(),
            "deploy": _deploy(fleet, site, pinned),
        }
    return services


def render_stack(
    fleet: Fleet,
    *,
    images: Images,
    secret_versions: Mapping[str, Mapping[str, str]],
    node: str | None = None,
    fleet_host_dir: Path | None = None,
) -> dict[str, Any]:
    """The stack as a compose-v3 mapping. `secret_versions`: site -> NAME -> version (the first
    characters of the value's sha256, `layout.SECRET_VERSION_CHARS`). `fleet_host_dir`: the fleet's
    absolute path on the node (default `fleet.dir`), bind-mounted read-only into each sidecar."""
    host_dir = Path(fleet_host_dir or fleet.dir)
    if not host_dir.is_absolute():
        raise ReconcilerError(
            f"the fleet directory {host_dir} is not an absolute path",
            "a Swarm bind mount needs the absolute host path of the fleet: pass --host-dir /abs/path",
        )
    versions = {site: dict(names) for site, names in secret_versions.items()}
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for site in fleet.sites:
        site_secrets = layout.secret_names(fleet, versions, site)
        services.update(site_services(fleet, site, images, node, site_secrets, host_dir))
        suffixes = [s for s, _ in layout.SHARED_VOLUMES] + ["state"]
        if site.carrier is not None:
            suffixes += [s for s, _ in layout.CARRIER_VOLUMES]
        for suffix in suffixes:
            volumes[volume_name(site.name, suffix)] = {
                "labels": {FLEET_LABEL: fleet.name, SITE_LABEL: site.name}
            }
        for source, _ in site_secrets:
            secrets[source] = {"external": True, "name": source}
    return {
        "version": COMPOSE_VERSION,
        "services": services,
        "networks": {HOST_NETWORK: {"external": True, "name": HOST_NETWORK}},
        "volumes": volumes,
        "secrets": secrets,
    }


def dump_stack(stack: Mapping[str, Any], fleet: Fleet) -> str:
    """The stack file's text: a header, then the mapping in a fixed order (same input, same bytes)."""
    header = (
        f"# Swarm stack of fleet {fleet.name}: written by `reconciler fleet render-swarm`; do not edit.\n"
        f"# Deploy: docker stack deploy --resolve-image never -c THIS_FILE {fleet.name}\n"
        "# Secrets are external and versioned (<fleet>_<site>_<NAME>_<sha256[:10]>); `make fleet-up`\n"
        "# creates them. No secret value is in this file.\n"
    )
    return header + yaml.safe_dump(dict(stack), sort_keys=False, default_flow_style=False, width=200)
