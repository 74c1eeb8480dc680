"""Every location and name the reconciler uses, in one object.

Only `Settings.from_env()` reads the environment; every other module takes a Settings, so a test
points all of it at a temporary directory by constructing one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

# The source checkout this module sits in. Meaningful only in a checkout (tests, development); an
# installed package finds its data through importlib.resources instead.
REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_PACKAGE = "reconciler.templates"
# Where asterisk/ami-setup.sh keeps the AMI secret it generated (root-only, in the managed volume).
AMI_CONTAINER_SECRET_PATH = "/etc/asterisk/managed/.gitops/ami.secret"


def packaged_templates_dir() -> Path:
    """The `*.conf.j2` templates shipped in the package (the repository's templates/, installed as
    `reconciler.templates`): the same directory from a wheel, an sdist or an editable install."""
    try:
        root = resources.files(TEMPLATES_PACKAGE)
    except ModuleNotFoundError:
        # A checkout run without installing (PYTHONPATH=.): no installer mapped templates/ yet.
        return REPO_ROOT / "templates"
    # Jinja2's FileSystemLoader needs a directory on disk; pip always installs packages unzipped.
    return Path(str(root))


def _port(value: str | None, default: int) -> int:
    """A TCP port from the environment; a value that is not one falls back to `default`."""
    if value and value.strip().isdigit() and 0 < int(value) < 65536:
        return int(value)
    return default


@dataclass(frozen=True)
class Settings:
    desired_dir: Path = Path("desired")
    templates_dir: Path = field(default_factory=packaged_templates_dir)
    # Docker container that runs Asterisk, and the directory inside it that the reconciler owns.
    container: str = "gitops-pbx"
    managed_dir: str = "/etc/asterisk/managed"
    asterisk_log: str = "/var/log/asterisk/messages.log"
    # Reconciler state on the reconciler's side: history, suspend flag, git cache.
    state_dir: Path = Path(".state")
    # Where secret values come from, in this order: environment, env file, secrets directory.
    env_file: Path = Path(".env")
    secrets_dir: Path = Path("/run/secrets")
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    # The AMI control channel (reconciler.asterisk.control): on loopback beside Asterisk. The secret
    # is RECONCILER_AMI_SECRET, else the file RECONCILER_AMI_SECRET_FILE, else (with Docker) read
    # once from `ami_container_secret_path` in the container.
    ami_enabled: bool = True
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_secret: str | None = field(default=None, repr=False)
    ami_secret_file: Path | None = None
    ami_container_secret_path: str = AMI_CONTAINER_SECRET_PATH
    # host:port of the PBX's own SIP transport (UDP) for the "serves SIP" probe of /healthz.
    sip_probe: str | None = None
    # The site of a fleet directory (`desired_dir` holds fleet.yaml) this reconciler renders:
    # docs/fleet.md. None: `desired_dir` is one PBX's desired directory.
    site: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        base = cls(
            desired_dir=Path(env.get("RECONCILER_DESIRED_DIR", "desired")),
            templates_dir=Path(env["RECONCILER_TEMPLATES"])
            if env.get("RECONCILER_TEMPLATES")
            else packaged_templates_dir(),
            container=env.get("RECONCILER_CONTAINER", "gitops-pbx"),
            managed_dir=env.get("RECONCILER_MANAGED_DIR", "/etc/asterisk/managed"),
            state_dir=Path(env.get("RECONCILER_STATE_DIR", ".state")),
            env_file=Path(env.get("RECONCILER_ENV_FILE", ".env")),
            secrets_dir=Path(env.get("RECONCILER_SECRETS_DIR", "/run/secrets")),
            environ=dict(env),
            ami_enabled=env.get("RECONCILER_AMI", "on").lower() not in ("off", "no", "0", "false"),
            ami_host=env.get("RECONCILER_AMI_HOST", "127.0.0.1"),
            ami_port=_port(env.get("RECONCILER_AMI_PORT"), 5038),
            ami_secret=env.get("RECONCILER_AMI_SECRET") or None,
            ami_secret_file=Path(env["RECONCILER_AMI_SECRET_FILE"])
            if env.get("RECONCILER_AMI_SECRET_FILE")
            else None,
            sip_probe=env.get("RECONCILER_SIP_PROBE") or None,
            site=env.get("RECONCILER_SITE") or None,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
