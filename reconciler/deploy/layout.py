"""What every deployment of a site has in common, whatever runs it (Swarm or Kubernetes): the
images, the paths Asterisk and its sidecar share, the sidecar's command and environment, and the
health checks. Each fact is defined here once; `swarm` and `k8s` only arrange it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from reconciler.desired.fleet import Fleet, Site
from reconciler.errors import ReconcilerError
from reconciler.settings import AMI_CONTAINER_SECRET_PATH, Settings

_DEFAULTS = Settings(environ={})

ASTERISK_REPO = "asterisk-gitops/asterisk"
SIDECAR_REPO = "asterisk-gitops/sidecar"
RECONCILER_REPO = "asterisk-gitops/reconciler"
# KEY=VALUE lines scripts/build-images.sh appends to IMAGE_TAGS_OUT (`<NAME>_IMAGE_TAG=<sha12>`).
IMAGE_TAG_KEYS = {"asterisk": "ASTERISK_IMAGE_TAG", "sidecar": "SIDECAR_IMAGE_TAG"}

MANAGED_DIR = _DEFAULTS.managed_dir
SPOOL_DIR = "/var/spool/asterisk"
LOG_DIR = "/var/log/asterisk"
# Asterisk's control socket (asterisk.ctl): the sidecar's `asterisk -rx` reaches it here.
RUN_DIR = "/var/run/asterisk"
STATE_DIR = "/state"
SECRETS_DIR = str(_DEFAULTS.secrets_dir)
# Where the sidecar sees the fleet repository (read-only).
FLEET_MOUNT = "/fleet"

# The volumes a site's Asterisk shares with its sidecar: (suffix, mount path).
SHARED_VOLUMES: tuple[tuple[str, str], ...] = (
    ("managed", MANAGED_DIR),
    ("spool", SPOOL_DIR),
    ("logs", LOG_DIR),
    ("run", RUN_DIR),
)
# The sandbox carrier's own volumes (it shares nothing with the site).
CARRIER_VOLUMES: tuple[tuple[str, str], ...] = (
    ("carrier_managed", MANAGED_DIR),
    ("carrier_spool", SPOOL_DIR),
    ("carrier_logs", LOG_DIR),
)

ASTERISK_HEALTHCHECK = ["/usr/local/bin/healthcheck.sh"]
CARRIER_COMMAND = ["carrier"]

# Swarm secret names: [a-zA-Z0-9-_.], at most 64 characters.
SECRET_NAME_MAX = 64
SECRET_VERSION_CHARS = 10
_SECRET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Images:
    """The image references of a deployment (tags pinned by scripts/build-images.sh)."""

    asterisk: str = f"{ASTERISK_REPO}:latest"
    sidecar: str = f"{SIDECAR_REPO}:latest"

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Images:
        """From the KEY=VALUE lines of IMAGE_TAGS_OUT (a missing key keeps :latest)."""
        asterisk = tags.get(IMAGE_TAG_KEYS["asterisk"]) or "latest"
        sidecar = tags.get(IMAGE_TAG_KEYS["sidecar"]) or "latest"
        return cls(f"{ASTERISK_REPO}:{asterisk}", f"{SIDECAR_REPO}:{sidecar}")


def secret_name(fleet: str, site: str, name: str, version: str) -> str:
    """The versioned Swarm secret of `name` at `site`: `<fleet>_<site>_<NAME>_<version>`.
    Swarm secrets are immutable, so a new value is a new name and the service is updated to it."""
    full = f"{fleet}_{site}_{name}_{version}"
    if not _SECRET_NAME.fullmatch(full):
        raise ReconcilerError(
            f"the Swarm secret name {full!r} is longer than {SECRET_NAME_MAX} characters or has "
            "characters Swarm refuses",
            "shorten the fleet name, the site name or the secret's ${NAME}",
        )
    return full


def sidecar_command(site: Site, *, repo: str | None = None, path: str | None = None) -> list[str]:
    """`reconciler watch` for one site with local control (no Docker socket): following the fleet
    mounted at FLEET_MOUNT, or a git repository (`repo`, the fleet at `path` inside it)."""
    source = ["--dir", FLEET_MOUNT] if repo is None else ["--repo", repo, "--path", path or "."]
    return ["reconciler", "watch", "--site", site.name, *source, "--control", "local", "--http", site.http]


def sidecar_env(site: Site) -> dict[str, str]:
    """The sidecar's environment: secrets only from /run/secrets, AMI on the site's port with the
    secret Asterisk generated in the shared managed volume."""
    return {
        "RECONCILER_SITE": site.name,
        "RECONCILER_SECRETS_DIR": SECRETS_DIR,
        "RECONCILER_ENV_FILE": "/dev/null",
        "RECONCILER_STATE_DIR": STATE_DIR,
        "RECONCILER_AMI_PORT": str(site.ami_port),
        "RECONCILER_AMI_SECRET_FILE": AMI_CONTAINER_SECRET_PATH,
        "RECONCILER_HTTP": site.http,
        "RECONCILER_CONTROL": "local",
    }


def asterisk_env(site: Site) -> dict[str, str]:
    """The site's Asterisk: its RTP range and AMI port (asterisk/entrypoint.sh, ami-setup.sh)."""
    return {"RTP_START": str(site.rtp_start), "RTP_END": str(site.rtp_end), "AMI_PORT": str(site.ami_port)}


def carrier_env(site: Site) -> dict[str, str]:
    """The site's sandbox carrier: its own RTP range (it has no AMI of its own to share)."""
    assert site.carrier is not None
    return {"RTP_START": str(site.carrier.rtp_start), "RTP_END": str(site.carrier.rtp_end)}


def healthz_url(site: Site) -> str:
    return f"http://{site.http}/healthz"


def sidecar_healthcheck(site: Site) -> list[str]:
    """The sidecar's own health check (never Asterisk's, which its image would inherit)."""
    return [
        "python3",
        "-c",
        f"import urllib.request as u; u.urlopen({healthz_url(site)!r}, timeout=4)",
    ]


def secret_names(fleet: Fleet, versions: dict[str, dict[str, str]], site: Site) -> list[tuple[str, str]]:
    """(swarm secret name, target NAME) for each secret of `site`, sorted by NAME."""
    return [
        (secret_name(fleet.name, site.name, name, version), name)
        for name, version in sorted(versions.get(site.name, {}).items())
    ]


def secret_version(value: str) -> str:
    """The version part of a secret's Swarm name: the first characters of sha256(value). Only the
    caller that reads the value calls it; the generators get the result."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:SECRET_VERSION_CHARS]
