"""Verbs of the GitOps loop: `watch`, `history`, `suspend`, `resume`, `retry`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from reconciler.asterisk.executor import CONTROL_ENV, CONTROL_MODES, DEFAULT_CONTROL, ControlMode
from reconciler.commands.apply import lock_wait_option, restart_option, restart_policy, restart_wait_option
from reconciler.errors import ReconcilerError
from reconciler.gitops import history
from reconciler.observe.healthcheck import DEFAULT_HTTP, HTTP_ADDRESS_FILE
from reconciler.settings import Settings

DEFAULT_SECRET_ENV = "RECONCILER_WEBHOOK_SECRET"


def _settings(
    container: str | None = None, env_file: Path | None = None, state_dir: Path | None = None
) -> Settings:
    return Settings.from_env(container=container, env_file=env_file, state_dir=state_dir)


def _configure_logging() -> None:
    # One line per event, on stderr: the reconcile lines are JSON already, so no decoration
    # beyond a timestamp and the level.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def watch(
    repo: str | None = typer.Option(None, "--repo", help="Git URL or path to follow (bare or not)."),
    branch: str = typer.Option("main", "--branch", help="Branch of --repo to follow."),
    path: str = typer.Option("desired", "--path", help="Directory of the desired state inside --repo."),
    directory: Path | None = typer.Option(
        None, "--dir", help="Local desired-state directory to watch instead of a repo."
    ),
    container: str | None = typer.Option(None, "--container", help="Asterisk container name."),
    interval: float = typer.Option(30.0, "--interval", min=1.0, help="Seconds between polls (jittered)."),
    http: str | None = typer.Option(
        None,
        "--http",
        envvar="RECONCILER_HTTP",
        help="HOST:PORT for the webhook, status and metrics ('off' disables; default: the site's "
        f"`http` of fleet.yaml with --site, else {DEFAULT_HTTP}).",
    ),
    site: str | None = typer.Option(
        None,
        "--site",
        envvar="RECONCILER_SITE",
        help="The fleet site to keep live: --dir / --path is then a fleet directory (fleet.yaml).",
    ),
    control: str = typer.Option(
        DEFAULT_CONTROL,
        "--control",
        envvar=CONTROL_ENV,
        help="docker: run the apply's steps by `docker exec` in --container; local: run them here, "
        "beside Asterisk (the sidecar: shared volumes, no Docker socket).",
    ),
    drift: str = typer.Option("fix", "--drift", help="fix: restore hand edits; warn: only report them."),
    env_file: Path | None = typer.Option(None, "--env-file", help="KEY=VALUE file with the secrets."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="History, loop state and git cache."),
    webhook_secret_env: str = typer.Option(
        DEFAULT_SECRET_ENV, "--webhook-secret-env", help="Name of the secret holding the webhook secret."
    ),
    restart: str = restart_option(),
    restart_wait: float = restart_wait_option(),
    lock_wait: float = lock_wait_option(),
    stuck_after: float = typer.Option(
        300.0,
        "--stuck-after",
        min=1.0,
        help="/healthz turns 503 when a reconcile runs longer than this (or 10x the usual, if more; "
        "never less than --lock-wait + --restart-wait + 60).",
    ),
    http_max_connections: int = typer.Option(
        32, "--http-max-connections", min=1, help="Connections the HTTP server serves at once."
    ),
) -> None:
    """Follow a git branch (or a directory) and keep Asterisk on its head revision."""
    from reconciler.asterisk.client import AsteriskClient, client_for
    from reconciler.asterisk.control import open_control
    from reconciler.desired import secrets
    from reconciler.gitops.apply import ApplyOptions
    from reconciler.gitops.health import HealthPolicy
    from reconciler.gitops.loop import Reconciler, WatchLoop, WatchOptions
    from reconciler.gitops.rollout import RolloutTracker
    from reconciler.gitops.sources import DirectorySource, GitSource, Source
    from reconciler.observe.fleet import gather_fleet, peers_of
    from reconciler.observe.server import (
        ServerContext,
        ServerLimits,
        make_server,
        serve_in_background,
        sip_probe_from,
    )

    if (repo is None) == (directory is None):
        raise ReconcilerError(
            "give exactly one of --repo and --dir", "e.g. --repo ../pbx-config.git or --dir desired"
        )
    if control not in CONTROL_MODES:
        raise ReconcilerError(
            f"--control {control!r} is not {' or '.join(CONTROL_MODES)}",
            "use --control docker (default; needs the Docker socket) or --control local (the sidecar)",
        )
    if drift not in ("fix", "warn"):
        raise ReconcilerError(
            f"--drift {drift!r} is not fix or warn", "use --drift fix (default) or --drift warn"
        )
    _configure_logging()
    log = logging.getLogger("reconciler.watch")
    settings = _settings(container, env_file, state_dir)
    if directory is not None:
        # `status` (and /api/status) compare this directory's revision with the live one.
        settings = replace(settings, desired_dir=directory)
    settings = replace(settings, site=site)
    # Everything this process creates (history, the git cache, snapshots, temp files) is owner-only;
    # what an older version or a person left readable in the state directory is tightened, once.
    os.umask(history.PRIVATE_UMASK)
    history.secure_state_dir(settings)

    if directory is not None and not directory.is_dir():
        raise ReconcilerError(
            f"--dir {directory} is not a directory",
            "pass the directory that holds the desired *.yaml files, e.g. --dir desired",
        )
    source: Source
    if repo is not None:
        source = GitSource(repo, branch, path, cache_dir=Path(settings.state_dir) / "git", site=settings.site)
    else:
        assert directory is not None
        source = DirectorySource(directory, cache_dir=Path(settings.state_dir) / "dir", site=settings.site)
    mode: ControlMode = "local" if control == "local" else "docker"

    def new_client() -> AsteriskClient:
        # --control local: no Docker import, the scripts run beside Asterisk (reconciler.asterisk.executor).
        return client_for(settings, mode)

    client = new_client()
    rollout = None
    fleet_view = None
    if site is not None:
        fleet = _site_fleet(source, directory, site)
        me = fleet.site(site)
        if env_file is None and "RECONCILER_ENV_FILE" not in os.environ and directory is not None:
            settings = replace(settings, env_file=me.env_file)  # the site's own secrets file
        before = fleet.predecessor(site)
        rollout = RolloutTracker(settings, site, (before.name, before.status_url) if before else None)
        http = http or me.http
        peers, order, fleet_name = peers_of(fleet), list(fleet.rollout), fleet.name

        def fleet_view() -> dict[str, Any]:
            return gather_fleet(fleet_name, order, peers)

    http = http or DEFAULT_HTTP
    options = WatchOptions(interval_s=interval, drift=drift)  # type: ignore[arg-type]
    apply_options = ApplyOptions(restart_policy(restart), restart_wait, lock_wait)
    reconciler = Reconciler(settings, source, client, options, apply_options, rollout=rollout)
    # A reconcile may legitimately wait for the PBX's lock and then for calls to end before a restart.
    policy = HealthPolicy(slow_floor_s=max(stuck_after, lock_wait + restart_wait + 60))
    loop = WatchLoop(settings, reconciler.reconcile, options, health_policy=policy)

    server = None
    if http != "off":
        secret = secrets.lookup(webhook_secret_env, settings)
        if not secret:
            log.warning(
                "no webhook secret in %s: POST /hooks/git answers 401 to everything; polling still works",
                webhook_secret_env,
            )

        def loop_info() -> dict[str, Any]:
            last = loop.last_outcome
            return {
                "source": source.describe(),
                "reconciles": loop.reconciles,
                "busy": loop.busy.is_set(),
                "pending": loop.queue.pending(),
                "last_result": last.result if last else None,
            }

        status_client = new_client()
        context = ServerContext(
            settings=settings,
            trigger=loop.trigger,
            webhook_secret=secret,
            branch=branch if repo is not None else None,
            # --repo: status reports the fetched branch head (kept in the loop state) as desired;
            # --dir: the directory itself, as `reconciler status --dir` does.
            head_from_loop=repo is not None,
            # Its own client: status queries from HTTP threads never mix into an apply's exec counts.
            client=status_client,
            health=loop.health,
            loop_info=loop_info,
            # /healthz is 503 until the PBX answers SIP (after a restart with many extensions,
            # REGISTERs go unanswered for a while after "fully booted").
            sip_probe=sip_probe_from(settings),
            open_channel=lambda: open_control(settings, status_client),
            fleet_info=rollout.fleet_json if rollout is not None else None,
            fleet_view=fleet_view,
        )
        server = make_server(http, context, ServerLimits(max_connections=http_max_connections))
        host, port = server.server_address[:2]
        log.info("listening on http://%s:%s (webhook POST /hooks/git)", host, port)
        # The sidecar image's health check reads it (reconciler.observe.healthcheck).
        shown = host.decode() if isinstance(host, bytes) else str(host)
        shown = "127.0.0.1" if shown in ("0.0.0.0", "") else shown
        with contextlib.suppress(OSError):
            (Path(settings.state_dir) / HTTP_ADDRESS_FILE).write_text(f"{shown}:{port}\n", encoding="utf-8")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "watching %s every %.0f s (drift=%s)%s into %s",
        source.describe(),
        interval,
        drift,
        f" as site {site}" if site else "",
        client.label if mode == "local" else f"container {settings.container}",
    )
    loop.start()
    if server is not None:
        serve_in_background(server)
    if isinstance(source, DirectorySource) and not source.watch(lambda: loop.trigger("fs")):
        log.warning("cannot watch %s for changes: polling every %.0f s only", directory, interval)
    try:
        stop.wait()
    finally:
        log.info("stopping: waiting for a running reconcile to finish")
        if server is not None:
            server.shutdown()
            server.server_close()
        source.close()
        loop.stop()


def _site_fleet(source: Any, directory: Path | None, site: str) -> Any:
    """The fleet of `watch --site`: fleet.yaml of --dir, or of the source's first snapshot (--repo).
    Its sites, ports and rollout order are read once: restart the reconciler after changing them."""
    from reconciler.desired.fleet import is_fleet_dir, load_fleet

    where = directory if directory is not None else source.snapshot().path
    if not is_fleet_dir(where):
        raise ReconcilerError(
            f"--site {site}: {directory if directory is not None else source.describe()} has no fleet.yaml",
            "pass the fleet directory (--dir FLEETDIR, or --repo URL --path FLEETPATH), or drop --site",
        )
    fleet = load_fleet(where)
    if site not in fleet.names:
        raise ReconcilerError(
            f"--site {site}: no such site in fleet {fleet.name} (sites: {', '.join(fleet.names)})",
            "pass one of the sites of fleet.yaml",
        )
    return fleet


def history_cmd(
    limit: int = typer.Option(20, "--limit", min=1, help="How many reconciles to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="State directory of the watch loop."),
) -> None:
    """Show the last reconciles, newest first."""
    settings = _settings(state_dir=state_dir)
    records = history.History(settings).records(limit=limit)
    if as_json:
        for record in records:
            typer.echo(json.dumps(record))
        return
    console = Console()
    state = history.LoopState.load(settings)
    if state.suspended:
        console.print(
            f"[bold yellow]suspended[/] since {state.suspended_at}"
            + (f": {state.suspended_reason}" if state.suspended_reason else ""),
            highlight=False,
        )
    if not records:
        console.print(f"no reconciles recorded in {settings.state_dir}")
        return
    table = Table(show_lines=False)
    for column in ("started", "revision", "subject", "trigger", "result", "took", "changes / reason"):
        table.add_column(column, overflow="fold")
    styles = {"applied": "green", "unchanged": "dim", "drift-fixed": "yellow", "drift-detected": "yellow"}
    for r in records:
        result = str(r["result"]) + (f" x{r['count']}" if _number(r.get("count"), 1) > 1 else "")
        detail = r.get("reason") or ", ".join(r.get("changes") or [])  # type: ignore[arg-type]
        table.add_row(
            str(r["started_at"]).replace("+00:00", "Z"),
            str(r.get("revision") or "")[:12],
            str(r.get("subject") or ""),
            str(r["trigger"]),
            f"[{styles.get(str(r['result']), 'red')}]{result}[/]",
            f"{_number(r.get('duration_s'), 0):.2f}s",
            str(detail),
        )
    console.print(table)


def suspend_cmd(
    reason: str | None = typer.Option(None, "--reason", help="Why (shown in status and history)."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="State directory of the watch loop."),
) -> None:
    """Hold the watch loop (a maintenance window): nothing is applied until `resume`."""
    state = history.suspend(_settings(state_dir=state_dir), reason)
    typer.echo(f"suspended at {state.suspended_at}" + (f": {reason}" if reason else ""))


def resume_cmd(
    state_dir: Path | None = typer.Option(None, "--state-dir", help="State directory of the watch loop."),
) -> None:
    """Release the watch loop; it reconciles right away."""
    history.resume(_settings(state_dir=state_dir))
    typer.echo("resumed; the loop reconciles within a second")


def retry_cmd(
    state_dir: Path | None = typer.Option(None, "--state-dir", help="State directory of the watch loop."),
) -> None:
    """Try the head revision again although it failed before (e.g. after fixing a secret)."""
    state = history.request_retry(_settings(state_dir=state_dir))
    failed = ", ".join(rev[:12] for rev in state.failed) or "none"
    typer.echo(f"retry requested (revisions marked failed: {failed}); the loop reconciles within a second")


def register(app: typer.Typer) -> None:
    """Add the loop's verbs to the CLI."""
    app.command("watch")(watch)
    app.command("history")(history_cmd)
    app.command("suspend")(suspend_cmd)
    app.command("resume")(resume_cmd)
    app.command("retry")(retry_cmd)


def _number(value: object, default: float) -> float:
    """A number from a history record field (`count`, `duration_s`); `default` when it is empty."""
    if not value or not isinstance(value, int | float | str):
        return default
    return float(value)
