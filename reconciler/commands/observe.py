"""Verbs that look at the PBX without changing it: `status`, `check-provider`, `softphones`, `doctor`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconciler.errors import EXIT_ERROR, EXIT_OK, EXIT_UNAVAILABLE, ReconcilerError
from reconciler.settings import Settings

VERDICT_STYLE = {"PASS": "bold green", "FAIL": "bold red", "SKIP": "dim", "WARN": "bold yellow"}


def _settings(
    container: str | None = None,
    desired_dir: Path | None = None,
    env_file: Path | None = None,
    state_dir: Path | None = None,
) -> Settings:
    return Settings.from_env(
        container=container, desired_dir=desired_dir, env_file=env_file, state_dir=state_dir
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def _short(revision: object) -> str:
    return str(revision).removeprefix("sha256:")[:12]


def _rtt(ms: float | None) -> str:
    return "" if ms is None else f"{ms:.1f} ms"


# --- status --------------------------------------------------------------------------------------


def print_status(status: dict[str, Any], console: Console) -> None:
    """The status dict as Rich tables: revision, providers, extensions, problems."""
    asterisk = status["asterisk"]
    live = status.get("live") or {}
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim")
    head.add_column()
    up = asterisk.get("uptime_s")
    head.add_row(
        "asterisk",
        Text(f"up {up // 60} min" if up is not None else "up", style="green")
        if asterisk["reachable"]
        else Text(f"UNREACHABLE: {asterisk.get('error')}", style="bold red"),
    )
    if live.get("revision"):
        head.add_row(
            "live", f"{_short(live['revision'])}  {live.get('subject') or ''}  ({_age(live.get('age_s'))})"
        )
    elif asterisk["reachable"]:
        head.add_row("live", Text("no revision applied yet (no state.json)", style="yellow"))
    desired = status.get("desired")
    if desired and desired.get("revision"):
        pending = desired.get("pending")
        head.add_row(
            "desired",
            Text(f"{_short(desired['revision'])} pending: not live yet", style="yellow")
            if pending
            else Text(f"{_short(desired['revision'])} (live)" if live else _short(desired["revision"])),
        )
    last = status.get("last_reconcile")
    if last:
        style = "red" if last.get("result") in ("failed", "invalid") else "green"
        reason = f": {last['reason']}" if last.get("reason") else ""
        head.add_row(
            "last reconcile", Text(f"{last.get('result')} at {last.get('started_at')}{reason}", style=style)
        )
    if status.get("suspended"):
        head.add_row("loop", Text("SUSPENDED (reconciler resume)", style="bold yellow"))
    pending = status.get("restart_pending")
    if pending:
        head.add_row(
            "restart",
            Text(f"PENDING since {pending.get('since')}: {pending.get('reason')}", style="yellow"),
        )
    lock = (status.get("transaction") or {}).get("lock")
    if lock:
        head.add_row("lock", Text(f"held by {lock}", style="yellow"))
    console.print(head)

    if status["providers"]:
        table = Table(title="Providers", title_justify="left")
        for col in ("provider", "registration", "server", "RTT", "note"):
            table.add_column(col)
        for p in status["providers"]:
            state = p["state"] or ("-" if not p["register"] else "missing")
            style = "green" if p["registered"] or not p["register"] else "red"
            detail = f" ({p['detail']})" if p.get("detail") else ""
            note = Text()
            if p.get("problem"):
                note.append(p["problem"] + "\n", style="bold red")
            if p.get("reason"):
                note.append(p["reason"] + "\n")
            note.append(p.get("hint") or "")
            note.rstrip()
            table.add_row(
                p["name"],
                Text(state + detail, style=style),
                p.get("server_uri") or "",
                _rtt(p["rtt_ms"]),
                note,
            )
        console.print(table)

    if status["extensions"]:
        summary = status["summary"]
        table = Table(
            title=f"Extensions ({summary['extensions_online']} of {summary['extensions_total']} online)",
            title_justify="left",
        )
        for col in ("ext", "name", "state", "contact", "user agent", "RTT", "calls"):
            table.add_column(col)
        for e in status["extensions"]:
            c = (e.get("contacts") or [{}])[0]
            style = {"online": "green", "unreachable": "yellow"}.get(e["state"], "dim")
            devices = len(e.get("contacts") or [])
            table.add_row(
                e["number"],
                e.get("name") or "",
                Text(e["state"] + (f" ({devices} devices)" if devices > 1 else ""), style=style),
                c.get("address") or "",
                c.get("user_agent") or "",
                _rtt(c.get("rtt_ms")),
                call_settings_text(e.get("calls") or {}),
            )
        console.print(table)
    if status.get("queues"):
        table = Table(title="Queues", title_justify="left")
        for col in ("queue", "waiting", "strategy", "members"):
            table.add_column(col)
        for q in status["queues"]:
            members = ", ".join(
                f"{m['interface'].split('/')[1].split('@')[0]} {m['state']}" for m in q["members"]
            )
            table.add_row(q["name"], str(q["waiting"]), q["strategy"], members)
        console.print(table)
    for problem in status["summary"]["problems"]:
        console.print(Text("problem: " + problem, style="bold red"))


_SETTING_WORDS = {
    "dnd": "DND",
    "forward_always": "forward always",
    "forward_busy": "forward busy",
    "forward_no_answer": "forward no answer",
}


def call_settings_text(calls: dict[str, Any]) -> str:
    """`DND on (phone), forward busy → voicemail:4002` for the settings that act; "" for none."""
    parts = []
    for key, word in _SETTING_WORDS.items():
        setting = calls.get(key) or {}
        value = setting.get("value")
        if value:
            shown = "on" if key == "dnd" else f"→ {value}"
            parts.append(f"{word} {shown}" + (" (phone)" if setting.get("source") == "phone" else ""))
        elif setting.get("source") == "phone" and setting.get("desired"):
            parts.append(f"{word} off (phone)")
    return ", ".join(parts)


def status_exit_code(status: dict[str, Any]) -> int:
    """3 when Asterisk is unreachable, 1 when a provider is not registered or the last reconcile failed."""
    if not status["asterisk"]["reachable"]:
        return EXIT_UNAVAILABLE
    return EXIT_OK if status["summary"]["healthy"] else EXIT_ERROR


def status(
    container: str | None = typer.Option(None, "--container", help="Asterisk container name."),
    directory: Path | None = typer.Option(
        None, "--dir", help="Desired-state directory (for pending changes)."
    ),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="State directory of the watch loop."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON (the /api/status shape)."),
) -> None:
    """What is live: revision, provider registrations, extensions online. Exit 1 on a problem, 3 when
    Asterisk cannot be reached."""
    from reconciler.asterisk.client import client_for
    from reconciler.observe.status import collect_status

    settings = _settings(container, directory, state_dir=state_dir)
    client = client_for(settings)
    result = collect_status(settings, client)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        print_status(result, Console())
        if not result["asterisk"]["reachable"] and result["asterisk"].get("hint"):
            Console(stderr=True).print("hint: " + result["asterisk"]["hint"], style="yellow", markup=False)
    raise typer.Exit(status_exit_code(result))


# --- check-provider ------------------------------------------------------------------------------


def _provider_target(name: str, settings: Settings, ca_file: Path | None) -> Any:
    from reconciler.asterisk.sip import SipTarget
    from reconciler.desired import secrets
    from reconciler.desired.load import load_desired
    from reconciler.desired.model import SecretRef

    state = load_desired(Path(settings.desired_dir)).state
    provider = next((p for p in state.providers if p.name == name), None)
    if provider is None:
        known = ", ".join(p.name for p in state.providers) or "none"
        raise ReconcilerError(
            f"no provider named {name!r} in {settings.desired_dir} (known: {known})",
            "pass the provider's `name` as written in the desired state, or --dir for another directory",
        )

    def value(field: str, text: str) -> str:
        if not isinstance(text, SecretRef):
            return text
        found = secrets.lookup(text.name, settings)
        if found is None:
            raise ReconcilerError(
                f"secret {text.name} ({name}.{field}) is not set",
                f"set {text.name} in the environment, in {settings.env_file} (--env-file) or in "
                f"{settings.secrets_dir / text.name}",
            )
        return found

    password_ref = SecretRef(provider.password).name
    return SipTarget(
        name=provider.name,
        host=provider.host,
        port=provider.port,
        transport=provider.transport,
        username=value("username", provider.username),
        password=value("password", provider.password),
        password_ref=password_ref,
        register=True,  # the account is tested even when the PBX does not keep a registration
        ca_file=str(ca_file) if ca_file else None,
    )


def check_provider(
    name: str = typer.Argument(..., help="Provider name as declared in the desired state."),
    directory: Path | None = typer.Option(None, "--dir", help="Desired-state directory (default: desired)."),
    env_file: Path | None = typer.Option(None, "--env-file", help="KEY=VALUE file with the secrets."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.5, help="Seconds to wait for each answer."),
    ca_file: Path | None = typer.Option(
        None, "--ca-file", help="Extra CA certificate (PEM) for a TLS provider."
    ),
    container: str | None = typer.Option(
        None, "--container", help="The PBX's Asterisk container, re-registered after the test."
    ),
    no_restore: bool = typer.Option(
        False, "--no-restore", help="Do not make the PBX register again after the test REGISTER."
    ),
) -> None:
    """Test the connection to a provider step by step: DNS, connect (TLS certificate), OPTIONS,
    REGISTER with the configured credentials (then unregister), then make the PBX register again
    (the test may have replaced its binding). Exit 0 when all pass, 1 otherwise."""
    from reconciler.asterisk.client import client_for
    from reconciler.observe.sipcheck import (
        Step,
        Verdict,
        all_passed,
        register_was_sent,
        registration_name,
        restore_pbx_registration,
        run_checks,
    )

    settings = _settings(container, desired_dir=directory, env_file=env_file)
    target = _provider_target(name, settings, ca_file)
    console = Console(highlight=False)
    console.print(
        f"checking provider [bold]{target.name}[/bold]: {target.host}:{target.port}/{target.transport}"
    )

    def show(step: Step) -> None:
        line = Text()
        line.append(f"{step.verdict.value:<5}", style=VERDICT_STYLE[step.verdict.value])
        line.append(f"{step.name:<11} ")
        line.append(step.detail)
        console.print(line, soft_wrap=True)
        if step.fix:
            console.print(Text(f"{'':17}fix: {step.fix}", style="yellow"), soft_wrap=True)

    steps = run_checks(target, timeout=timeout, on_step=show)
    if register_was_sent(steps):
        if no_restore:
            restore = Step(
                "restore",
                Verdict.SKIP,
                f"--no-restore: if {target.name} keeps one binding per account, the PBX is not registered "
                f'there until it refreshes; `asterisk -rx "pjsip send register '
                f'{registration_name(target.name)}"` in the PBX fixes it now',
            )
        else:
            client = client_for(settings)
            restore = restore_pbx_registration(client, target.name)
        steps.append(restore)
        show(restore)
    raise typer.Exit(EXIT_OK if all_passed(steps) else EXIT_ERROR)


# --- softphones ----------------------------------------------------------------------------------


def softphones(
    directory: Path | None = typer.Option(None, "--dir", help="Desired-state directory (default: desired)."),
    server: str | None = typer.Option(None, "--server", help="Address phones dial (default: pbx.bind)."),
    show_passwords: bool = typer.Option(False, "--show-passwords", help="Print the SIP passwords (careful)."),
    qr: bool = typer.Option(False, "--qr", help="Print a QR code of each account in the terminal."),
    qr_dir: Path | None = typer.Option(
        None, "--qr-dir", help="Write each account's QR code as <number>.svg here."
    ),
    env_file: Path | None = typer.Option(None, "--env-file", help="KEY=VALUE file with the secrets."),
    extension: list[str] = typer.Option([], "--extension", "-e", help="Only these extensions (repeatable)."),
    fleet_dir: Path | None = typer.Option(None, "--fleet", help="A fleet directory (with --site)."),
    site: str | None = typer.Option(
        None, "--site", help="The site of --fleet (its secrets: .secrets/<site>.env)."
    ),
) -> None:
    """What to type into a softphone for each extension, and a QR code of the account."""
    from reconciler.desired import secrets
    from reconciler.desired.fleet import load_fleet, load_tree, site_settings
    from reconciler.observe.softphones import accounts, qr_ascii, server_address, write_qr_svg

    settings = _settings(desired_dir=fleet_dir or directory, env_file=env_file)
    if site is not None:
        fleet = load_fleet(Path(settings.desired_dir))
        settings = site_settings(settings, fleet, site) if env_file is None else replace(settings, site=site)
    state = load_tree(Path(settings.desired_dir), settings.site).state
    err = Console(stderr=True)
    _, warning = server_address(state, server)
    if warning:
        err.print("warning: " + warning, style="yellow", markup=False)
    passwords = None
    if show_passwords:
        err.print(
            "warning: passwords are shown below: do not paste this output into tickets or chats",
            style="bold yellow",
            markup=False,
        )
        passwords = {e_ref: secrets.lookup(e_ref, settings) for e_ref in _password_refs(state)}
    chosen = [
        a
        for a in accounts(state, server=server, passwords=passwords)
        if not extension or a.number in extension
    ]
    if extension and not chosen:
        raise ReconcilerError(
            f"no extension {', '.join(extension)} in {settings.desired_dir}", "check the numbers"
        )

    console = Console(highlight=False)
    # One block per extension rather than a table: nothing gets truncated on a narrow terminal.
    for a in chosen:
        if show_passwords:
            password = a.password if a.password is not None else f"(not set: {a.password_ref})"
        else:
            password = f"******** (secret {a.password_ref})"
        console.print(Text(f"{a.number}  {a.display_name}", style="bold"))
        for label, value in (
            ("server", a.server),
            ("port", str(a.port)),
            ("transport", a.transport.upper()),
            ("user", a.username),
            ("auth user", a.auth_username),
            ("password", password),
            ("voicemail", "dial *97" if a.voicemail else "no"),
        ):
            console.print(Text(f"  {label:<10} {value}"), soft_wrap=True)
    if not show_passwords:
        console.print("passwords hidden: add --show-passwords to print them", style="dim")
    for a in chosen:
        payload = a.uri(with_password=show_passwords)
        if qr:
            console.print(f"\n{a.number} {a.display_name}: {payload if show_passwords else a.uri()}")
            console.print(qr_ascii(payload), markup=False, highlight=False)
        if qr_dir is not None:
            path = write_qr_svg(payload, qr_dir / f"{a.number}.svg")
            console.print(f"wrote {path}")


def _password_refs(state: Any) -> list[str]:
    from reconciler.desired.model import SecretRef

    return [SecretRef(e.password).name for e in state.extensions]


# --- doctor --------------------------------------------------------------------------------------


def doctor(
    container: str | None = typer.Option(None, "--container", help="Asterisk container name."),
    directory: Path | None = typer.Option(None, "--dir", help="Desired-state directory (default: desired)."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="State directory of the watch loop."),
) -> None:
    """Troubleshoot the PBX from the engine up; each failing check says how to fix it. Exit 1 on a failure."""
    from reconciler.observe.doctor import Verdict, run_doctor

    settings = _settings(container, directory, state_dir=state_dir)
    console = Console(highlight=False)

    def show(check: Any) -> None:
        line = Text()
        line.append(f"{check.verdict.value:<5}", style=VERDICT_STYLE[check.verdict.value])
        line.append(f"{check.name:<26} ")
        line.append(check.detail)
        console.print(line, soft_wrap=True)
        if check.fix and check.verdict is not Verdict.PASS:
            console.print(Text(f"{'':32}fix: {check.fix}", style="yellow"), soft_wrap=True)

    checks = run_doctor(settings, on_check=show)
    failed = [c for c in checks if c.verdict is Verdict.FAIL]
    warned = sum(1 for c in checks if c.verdict is Verdict.WARN)
    note = f" ({warned} warning(s))" if warned else ""
    if failed:
        console.print(
            Text(f"{len(failed)} check(s) failed{note}: fix the first FAIL first", style="bold red")
        )
    else:
        console.print(Text(f"all checks passed{note}", style="bold green"))
    raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add the observe verbs to the CLI."""
    app.command("status")(status)
    app.command("check-provider")(check_provider)
    app.command("softphones")(softphones)
    app.command("doctor")(doctor)
