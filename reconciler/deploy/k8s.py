"""Kubernetes manifests of a fleet (`reconciler fleet render-k8s`): a kustomize base and one overlay
per site. Validated offline (`kubectl kustomize` + `kubernetes-validate --strict`), never run on a
real cluster by this project's tests.

One StatefulSet per site (a pod of two containers, `asterisk` and the `reconciler` sidecar):

- the control socket's directory (/var/run/asterisk) and the logs are emptyDirs shared by both;
  the managed config and the voicemail spool are PersistentVolumeClaims (volumeClaimTemplates), so
  a rescheduled pod boots with its last good config before the sidecar has run;
- `hostNetwork: true`, not a Service, for SIP and RTP: a site uses a range of ~100 UDP ports for
  RTP, which a Service cannot express, and SIP carries addresses in its headers (Via, Contact, SDP)
  that must be the address the phones reach; the fleet's distinct ports per site (fleet.yaml) are
  what let several sites share a node. The headless Service only gives the StatefulSet its name;
- secrets by reference only: a Secret volume at /run/secrets (`<fleet>-<site>-secrets`, one key per
  `${NAME}`, created by the operator, e.g. `kubectl create secret generic ... --from-env-file`);
  no value is ever written here;
- `automountServiceAccountToken: false`: nothing in the pod uses the API, and the token's usual
  mount (/var/run/secrets/kubernetes.io/...) would sit inside the secret volume at /run/secrets;
- probes: Asterisk's healthcheck.sh (exec) and the sidecar's GET /healthz (exec, the same check as
  the Swarm stack: the sidecar listens on loopback, which a kubelet httpGet to the pod IP misses).

The sidecar follows the fleet from git (`watch --site S --repo URL --path P`): a pod has no bind
mount of a checkout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from reconciler.deploy import layout
from reconciler.deploy.layout import Images
from reconciler.desired.fleet import Fleet, Site

BASE_NAME = "pbx"
APP_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
FLEET_LABEL = "asterisk-gitops/fleet"
SITE_LABEL = "asterisk-gitops/site"
BASE_SECRET = f"{BASE_NAME}-secrets"
PATCH_FILE = "statefulset-patch.yaml"
# The repository the sidecars follow when none is given: a placeholder that resolves nowhere.
DEFAULT_REPO = "https://git.example.invalid/your-org/your-fleet.git"
KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"
# The API version the manifests are validated against offline (kubernetes-validate ships its schema).
VALIDATED_KUBERNETES_VERSION = "1.32.0"

# (volume name, mount path, how): how is "pvc" (volumeClaimTemplates) or "emptyDir".
_POD_VOLUMES: tuple[tuple[str, str, str], ...] = (
    ("managed", layout.MANAGED_DIR, "pvc"),
    ("spool", layout.SPOOL_DIR, "pvc"),
    ("logs", layout.LOG_DIR, "emptyDir"),
    ("run", layout.RUN_DIR, "emptyDir"),
)
_CLAIMS = {"managed": "1Gi", "spool": "2Gi", "state": "256Mi"}


@dataclass(frozen=True)
class Source:
    """Where the sidecars read the fleet: a git URL, the branch, the fleet's path inside it."""

    repo: str = DEFAULT_REPO
    branch: str = "main"
    path: str = "."


def _env(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _exec_probe(command: list[str], *, period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _sidecar_args(site: Site, source: Source) -> list[str]:
    command = layout.sidecar_command(site, repo=source.repo, path=source.path)
    return [*command, "--branch", source.branch]


def _statefulset(images: Images, site: Site, source: Source) -> dict[str, Any]:
    """The base StatefulSet, with the first site's values as placeholders every overlay replaces."""
    shared = [{"name": name, "mountPath": path} for name, path, _ in _POD_VOLUMES]
    asterisk = {
        "name": "asterisk",
        "image": images.asterisk,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(layout.asterisk_env(site)),
        "volumeMounts": shared,
        "startupProbe": _exec_probe(layout.ASTERISK_HEALTHCHECK, period=2, failures=60),
        "livenessProbe": _exec_probe(layout.ASTERISK_HEALTHCHECK, period=10, failures=3),
        "readinessProbe": _exec_probe(layout.ASTERISK_HEALTHCHECK, period=5, failures=2),
    }
    sidecar = {
        "name": "reconciler",
        "image": images.sidecar,
        "imagePullPolicy": "IfNotPresent",
        "args": _sidecar_args(site, source),
        "env": _env(layout.sidecar_env(site)),
        "volumeMounts": [
            *shared,
            {"name": "state", "mountPath": layout.STATE_DIR},
            {"name": "secrets", "mountPath": layout.SECRETS_DIR, "readOnly": True},
        ],
        "startupProbe": _exec_probe(layout.sidecar_healthcheck(site), period=5, failures=36),
        "livenessProbe": _exec_probe(layout.sidecar_healthcheck(site), period=15, failures=4),
        "readinessProbe": _exec_probe(layout.sidecar_healthcheck(site), period=10, failures=2),
    }
    volumes: list[dict[str, Any]] = [
        {"name": name, "emptyDir": {}} for name, _, how in _POD_VOLUMES if how == "emptyDir"
    ]
    volumes.append(
        {"name": "secrets", "secret": {"secretName": BASE_SECRET, "defaultMode": 0o400, "optional": False}}
    )
    claims = [
        {
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        }
        for name, size in _CLAIMS.items()
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": BASE_NAME},
        "spec": {
            "serviceName": BASE_NAME,
            "replicas": 1,
            "podManagementPolicy": "OrderedReady",
            "selector": {"matchLabels": {APP_LABEL: BASE_NAME}},
            "template": {
                "metadata": {"labels": {APP_LABEL: BASE_NAME}},
                "spec": {
                    "hostNetwork": True,
                    # Neither container talks to the Kubernetes API; and the token's mount would
                    # land inside the read-only secret volume at /run/secrets (/var/run -> /run).
                    "automountServiceAccountToken": False,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "terminationGracePeriodSeconds": 20,
                    "containers": [asterisk, sidecar],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": claims,
        },
    }


def _service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": BASE_NAME},
        "spec": {
            "clusterIP": "None",
            "selector": {APP_LABEL: BASE_NAME},
        },
    }


def secret_name(fleet: Fleet, site: Site) -> str:
    """The Kubernetes Secret a site's sidecar mounts (the operator creates it)."""
    return f"{fleet.name}-{site.name}-secrets"


def _site_patch(fleet: Fleet, site: Site, source: Source) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "containers": [
            {"name": "asterisk", "env": _env(layout.asterisk_env(site))},
            {
                "name": "reconciler",
                "args": _sidecar_args(site, source),
                "env": _env(layout.sidecar_env(site)),
                "startupProbe": {"exec": {"command": layout.sidecar_healthcheck(site)}},
                "livenessProbe": {"exec": {"command": layout.sidecar_healthcheck(site)}},
                "readinessProbe": {"exec": {"command": layout.sidecar_healthcheck(site)}},
            },
        ],
        "volumes": [{"name": "secrets", "secret": {"secretName": secret_name(fleet, site)}}],
    }
    if site.node:
        pod["nodeSelector"] = {"kubernetes.io/hostname": site.node}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": BASE_NAME},
        "spec": {"template": {"spec": pod}},
    }


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=200)


_HEADER = "# Written by `reconciler fleet render-k8s` from fleet.yaml; do not edit (render again).\n"


def render_k8s(fleet: Fleet, *, images: Images, source: Source | None = None) -> dict[str, str]:
    """Every file of the kustomize tree, relative posix path -> text (same input, same bytes)."""
    src = source or Source()
    first = fleet.sites[0]
    files: dict[str, str] = {
        "base/kustomization.yaml": _HEADER
        + _dump(
            {
                "apiVersion": KUSTOMIZE_API,
                "kind": "Kustomization",
                "labels": [{"pairs": {PART_OF_LABEL: "asterisk-gitops"}}],
                "resources": ["statefulset.yaml", "service.yaml"],
            }
        ),
        "base/statefulset.yaml": _HEADER + _dump(_statefulset(images, first, src)),
        "base/service.yaml": _HEADER + _dump(_service()),
    }
    for site in fleet.sites:
        overlay = f"overlays/{site.name}"
        files[f"{overlay}/kustomization.yaml"] = (
            _HEADER
            + f"# Site {site.name}: needs the Secret {secret_name(fleet, site)} (one key per ${{NAME}}).\n"
            + _dump(
                {
                    "apiVersion": KUSTOMIZE_API,
                    "kind": "Kustomization",
                    "resources": ["../../base"],
                    "namePrefix": f"{fleet.name}-{site.name}-",
                    "labels": [
                        {
                            "pairs": {FLEET_LABEL: fleet.name, SITE_LABEL: site.name},
                            "includeSelectors": True,
                            "includeTemplates": True,
                        }
                    ],
                    "patches": [{"path": PATCH_FILE}],
                }
            )
        )
        files[f"{overlay}/{PATCH_FILE}"] = _HEADER + _dump(_site_patch(fleet, site, src))
    return files
