"""Verbs of `reconciler fleet` (see reconciler.commands.fleet): the deployments of a fleet.

- `render-swarm`: the Docker Swarm stack (`make fleet-up` deploys it);
- `render-k8s`: a kustomize base and one overlay per site;
- `secrets`: which secrets each site needs and their versioned Swarm names (`--create` makes the
  missing ones; `make fleet-up` runs it). Values are read only here, hashed for the version and
  handed to Docker; no value is ever printed or written into a stack or manifest."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from reconciler.commands.fleet import fleet_app
from reconciler.deploy import k8s, layout, swarm
from reconciler.desired.fleet import Fleet, Site, load_fleet, load_site, site_settings
from reconciler.desired.model import secret_refs
from reconciler.desired.secrets import lookup, read_env_file
from reconciler.errors import EXIT_UNAVAILABLE, AsteriskUnavailable, ReconcilerError
from reconciler.gitops.rollout import fetch_status
from reconciler.observe.fleet import site_view
from reconciler.settings import Settings

FLEET_OPT = typer.Option(..., "--fleet", help="The fleet directory (with fleet.yaml).")
IMAGES_OPT = typer.Option(
    None,
    "--images-from",
    help="KEY=VALUE file of image tags (ASTERISK_IMAGE_TAG, SIDECAR_IMAGE_TAG), as scripts/build-images.sh "
    "writes to IMAGE_TAGS_OUT. Default: the :latest tags.",
)


@dataclass(frozen=True)
class SiteSecret:
    """One `${NAME}` a site needs: its value's version and Swarm name (None: no value yet)."""

    site: str
    name: str
    version: str | None
    swarm_name: str | None


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it (no half-written stack file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _images(path: Path | None) -> layout.Images:
    if path is None:
        return layout.Images()
    if not path.is_file():
        raise ReconcilerError(f"no image tags file {path}", "pass the file IMAGE_TAGS_OUT of build-images.sh")
    return layout.Images.from_tags(read_env_file(path))


def _site_secret_names(fleet: Fleet, site: Site) -> list[str]:
    loaded = load_site(fleet, site.name)
    return sorted({use.name for use in secret_refs(loaded.state)})


def site_secrets(fleet: Fleet, settings: Settings) -> list[SiteSecret]:
    """Every secret of every site, in site then NAME order, with the version of its value."""
    out: list[SiteSecret] = []
    for site in fleet.sites:
        site_env = site_settings(settings, fleet, site)
        values = read_env_file(site_env.env_file)
        for name in _site_secret_names(fleet, site):
            value = lookup(name, site_env, values)
            version = layout.secret_version(value) if value else None
            swarm_name = layout.secret_name(fleet.name, site.name, name, version) if version else None
            out.append(SiteSecret(site.name, name, version, swarm_name))
    return out


def _versions(fleet: Fleet, settings: Settings) -> dict[str, dict[str, str]]:
    found = site_secrets(fleet, settings)
    missing = [s for s in found if s.version is None]
    if missing:
        names = ", ".join(f"{s.site}:{s.name}" for s in missing)
        raise ReconcilerError(
            f"{len(missing)} secret(s) have no value: {names}",
            "`make fleet-up` generates them into .secrets/<site>.env; or add NAME=value there yourself",
        )
    versions: dict[str, dict[str, str]] = {}
    for s in found:
        assert s.version is not None
        versions.setdefault(s.site, {})[s.name] = s.version
    return versions


def render_swarm(
    fleet_dir: Path = FLEET_OPT,
    out: Path = typer.Option(..., "--out", help="Stack file to write (`-`: standard output)."),
    node: str | None = typer.Option(
        None, "--node", help="Swarm node hostname for the sites whose fleet.yaml `node` is null."
    ),
    images_from: Path | None = IMAGES_OPT,
    host_dir: Path | None = typer.Option(
        None,
        "--host-dir",
        help="The fleet's absolute path on the Swarm node, bind-mounted into each sidecar "
        "(default: --fleet made absolute; differs when this runs in a container).",
    ),
) -> None:
    """Write the Swarm stack of the fleet: per site its Asterisk, its reconciler sidecar and its
    sandbox carrier, pinned to one node, host network, versioned external secrets (names only)."""
    fleet = load_fleet(fleet_dir)
    stack = swarm.render_stack(
        fleet,
        images=_images(images_from),
        secret_versions=_versions(fleet, Settings.from_env()),
        node=node,
        fleet_host_dir=host_dir or Path(fleet_dir).resolve(),
    )
    text = swarm.dump_stack(stack, fleet)
    if str(out) == "-":
        typer.echo(text, nl=False)
        return
    write_atomic(out, text)
    Console(stderr=True, highlight=False).print(
        f"wrote {escape(str(out))}: {len(stack['services'])} services, {len(stack['secrets'])} secrets "
        f"for {len(fleet.sites)} site(s)"
    )


def render_k8s(
    fleet_dir: Path = FLEET_OPT,
    out: Path = typer.Option(..., "--out", help="Directory to write base/ and overlays/<site>/ into."),
    images_from: Path | None = IMAGES_OPT,
    repo: str = typer.Option(k8s.DEFAULT_REPO, "--repo", help="Git URL of the fleet the sidecars follow."),
    branch: str = typer.Option("main", "--branch", help="Branch of --repo."),
    path: str = typer.Option(".", "--path", help="The fleet's directory inside --repo."),
) -> None:
    """Write Kubernetes manifests: a kustomize base (a StatefulSet of Asterisk + the reconciler
    sidecar) and one overlay per site. Secrets by reference only; validate offline with
    `kubectl kustomize OUT/overlays/SITE | kubernetes-validate --strict -`."""
    fleet = load_fleet(fleet_dir)
    files = k8s.render_k8s(fleet, images=_images(images_from), source=k8s.Source(repo, branch, path))
    for rel, text in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, text)
    Console(stderr=True, highlight=False).print(
        f"wrote {len(files)} files under {escape(str(out))}: base/ and overlays/"
        + ", overlays/".join(s.name for s in fleet.sites)
        + "; each site needs its Secret: "
        + ", ".join(k8s.secret_name(fleet, s) for s in fleet.sites)
    )


def _create_missing(fleet: Fleet, settings: Settings, found: list[SiteSecret]) -> list[str]:
    """Create each Swarm secret of `found` that Docker does not have; return the names created."""
    try:
        import docker  # the commands layer's own use of Docker: the deploy generators never touch it
        from docker.errors import APIError, DockerException
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        raise AsteriskUnavailable("the docker package is not installed", "pip install docker") from exc
    try:
        client = docker.from_env()
        existing = {s.name for s in client.secrets.list()}
    except DockerException as exc:
        err = AsteriskUnavailable(
            f"cannot list Swarm secrets: {exc}",
            "is the Docker socket mounted, and is this node a Swarm manager (`docker swarm init`)?",
        )
        err.exit_code = EXIT_UNAVAILABLE
        raise err from None
    created: list[str] = []
    for s in found:
        if s.swarm_name is None or s.swarm_name in existing:
            continue
        site = fleet.site(s.site)
        site_env = site_settings(settings, fleet, site)
        value = lookup(s.name, site_env, read_env_file(site_env.env_file))
        assert value is not None
        try:
            client.secrets.create(
                name=s.swarm_name,
                data=value.encode("utf-8"),
                labels={
                    swarm.FLEET_LABEL: fleet.name,
                    swarm.SITE_LABEL: s.site,
                    "com.asterisk-gitops.name": s.name,
                },
            )
        except APIError as exc:
            raise ReconcilerError(f"Docker refused the secret {s.swarm_name}: {exc.explanation}") from None
        created.append(s.swarm_name)
    return created


def secrets(
    fleet_dir: Path = FLEET_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (names and versions, never values)."),
    create: bool = typer.Option(
        False, "--create", help="Create the missing versioned Swarm secrets (needs the Docker socket)."
    ),
) -> None:
    """The secrets every site needs (`${NAME}` references of its merged desired state), where their
    values come from, and their versioned Swarm names. Never prints a value. Exit 1 when a value is
    missing (with --create) or the fleet is invalid."""
    settings = Settings.from_env()
    fleet = load_fleet(fleet_dir)
    found = site_secrets(fleet, settings)
    created: list[str] = []
    if create:
        _versions(fleet, settings)  # every value present, or one error naming the missing ones
        created = _create_missing(fleet, settings, found)
    if as_json:
        sites: list[dict[str, Any]] = []
        for site in fleet.sites:
            env_file = site_settings(settings, fleet, site).env_file
            try:
                shown = str(env_file.resolve().relative_to(fleet.dir.resolve()))
            except ValueError:
                shown = str(env_file)
            sites.append(
                {
                    "name": site.name,
                    "env_file": shown,
                    "secrets": [
                        {"name": s.name, "version": s.version, "swarm": s.swarm_name}
                        for s in found
                        if s.site == site.name
                    ],
                }
            )
        typer.echo(json.dumps({"fleet": fleet.name, "sites": sites, "created": created}, indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    for s in found:
        state = s.swarm_name or "[red]no value[/red]"
        mark = " [green](created)[/green]" if s.swarm_name in created else ""
        console.print(f"{escape(s.site)}  {escape(s.name)}  {state}{mark}")


def sites(
    fleet_dir: Path = FLEET_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One line per site (for scripts): name, SIP port, HTTP address, carrier port or `-`."""
    fleet = load_fleet(fleet_dir)
    rows = [
        {
            "name": s.name,
            "sip_port": s.sip_port,
            "tls_port": s.tls_port,
            "http": s.http,
            "status_url": s.status_url,
            "carrier_port": s.carrier.port if s.carrier else None,
            "node": s.node,
        }
        for s in fleet.sites
    ]
    if as_json:
        typer.echo(json.dumps({"fleet": fleet.name, "sites": rows}, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['name']} {r['sip_port']} {r['http']} {r['carrier_port'] or '-'}")


def _healthz_code(site: Site, timeout: float) -> int:
    """The HTTP status of the site's /healthz (0: no answer)."""
    try:
        with urllib.request.urlopen(site.status_url.rstrip("/") + "/healthz", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def site_progress(site: Site, *, registered: bool, timeout: float = 3.0) -> tuple[bool, str]:
    """(ready, what it is waiting for) of one site, asked over its status_url."""
    code = _healthz_code(site, timeout)
    if code != 200:
        return False, "reconciler not answering /healthz yet" if code == 0 else f"/healthz says {code}"
    try:
        status = fetch_status(site.status_url, timeout)
    except (OSError, ValueError):
        return False, "no /api/status yet"
    view = site_view(site.name, status)  # in sync as `fleet status` says it
    live = view["live_revision"]
    if not view["in_sync"]:
        return False, f"live revision {str(live)[:12]} != desired {str(view['desired_revision'])[:12]}"
    if registered:
        providers = [p for p in status.get("providers") or [] if isinstance(p, dict) and p.get("register")]
        waiting = [str(p.get("name")) for p in providers if not p.get("registered")]
        if waiting:
            return False, "trunk(s) not registered: " + ", ".join(waiting)
    return True, f"live {str(live)[:12]}" + (", trunks registered" if registered else "")


def wait(
    fleet_dir: Path = FLEET_OPT,
    timeout: float = typer.Option(180.0, "--timeout", min=1.0, help="Give up after this many seconds."),
    registered: bool = typer.Option(False, "--registered", help="Also wait until every trunk is registered."),
    site_names: list[str] = typer.Option([], "--site", help="Only these sites (repeatable)."),
) -> None:
    """Wait until every site's reconciler answers /healthz and its live revision is the desired one
    (with --registered: its trunks registered too), printing one progress line per change. Exit 0
    when all are; 1 after --timeout, naming what each site still waits for."""
    fleet = load_fleet(fleet_dir)
    chosen = [fleet.site(n) for n in site_names] if site_names else list(fleet.sites)
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last: dict[str, str] = {}
    while True:
        pending: dict[str, str] = {}
        for site in chosen:
            ready, what = site_progress(site, registered=registered)
            if last.get(site.name) != what:
                typer.echo(f"[fleet] {time.monotonic() - started:5.1f}s {site.name}: {what}", err=True)
                last[site.name] = what
            if not ready:
                pending[site.name] = what
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise ReconcilerError(
                f"after {timeout:.0f}s: " + "; ".join(f"{k}: {v}" for k, v in pending.items()),
                "look at the site's reconciler: `docker service logs <stack>_<site>-reconciler`",
            )
        time.sleep(1.0)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to `reconciler fleet`."""
    del app
    fleet_app.command("render-swarm")(render_swarm)
    fleet_app.command("render-k8s")(render_k8s)
    fleet_app.command("secrets")(secrets)
    fleet_app.command("sites")(sites)
    fleet_app.command("wait")(wait)
