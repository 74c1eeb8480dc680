"""`reconciler verify`: load a render into a throwaway Asterisk and judge what Asterisk says.

Validation proves the YAML is right; only Asterisk can say whether it takes the rendered config
(a custom template with an unknown option, a broken section): it reports object errors only in its
log. So verify renders DIR, creates a container from the project's image with **no network**
(`network_mode="none"`: only loopback exists inside, nothing is bound on the host, nothing can
leave), copies the render into its managed directory, starts it, waits until Asterisk is fully
booted, and reads in ONE exec the whole log (after a barrier line, so it is complete) and the same
verification queries an apply asks. The container is always removed, also on Ctrl-C.

Extensions are rows of the realtime store, not lines of a file: the container starts with the
store written from the desired rows (`store.rewrite_sql`, run by the sqlite3 shell as the asterisk
user after the image's entrypoint made the schema and before Asterisk opens the file, so Asterisk
boots with them as after a restart), and verify asks about the first `store.VERIFY_CAP` extensions
one by one (`pjsip show endpoint N`, `pjsip show aor N`, judged by `store.judge`) before it reads
the log, so what Asterisk logs about a row it cannot use is judged too.

Expected effects of that sandbox are notes, not failures: provider hosts do not resolve there (the
classifier of `providers_health`, as for a live apply), and a `pbx.bind` address that the sandbox
does not have (the transport cannot start, nor the registrations that use it).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import posixpath
import re
import secrets as _random
import shlex
import string
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.asterisk import providers_health
from reconciler.asterisk import store as store_mod
from reconciler.asterisk.client import (
    BARRIER_COMMAND,
    LOG_BARRIER,
    AsteriskClient,
    rx_command,
)
from reconciler.asterisk.parsers import LogProblem, parse_reload_log
from reconciler.asterisk.sourcemap import Located, locate
from reconciler.desired import render as render_mod
from reconciler.desired.confparse import parse_conf
from reconciler.desired.fleet import load_tree
from reconciler.desired.load import LoadedState
from reconciler.desired.model import SecretUse, secret_refs
from reconciler.desired.secrets import lookup, read_env_file, resolve_secrets, weakness
from reconciler.errors import AsteriskUnavailable, ReconcilerError
from reconciler.gitops import plan as plan_mod
from reconciler.gitops.checks import Check, expectations, verification_queries, verify
from reconciler.markers import rev12
from reconciler.settings import Settings

DEFAULT_IMAGE = "asterisk-gitops/asterisk:latest"
LABEL = "asterisk-gitops.verify"
MANAGED_DIR = "/etc/asterisk/managed"
LOG_PATH = "/var/log/asterisk/messages.log"
BOOT_TIMEOUT_S = 60.0
# Booting with the store builds every endpoint (MWI, OPTIONS): 24 s for 10,000 rows here (2.4 ms
# each). The wait grows with the rows, with twice that as margin.
BOOT_S_PER_EXTENSION = 0.005
LOG_FLUSH_TIMEOUT_S = 5.0
# `asterisk -rx` in a container without a network interface says this on every call; it is noise.
_NO_EID = "No ethernet interface found for seeding global EID"
_ADDRESS_MISSING = "Cannot assign requested address"
_TRANSPORT_FAILED = re.compile(r"Transport '(?P<id>[^']+)' could not be started: (?P<why>.*)$")
# The image's entrypoint (asterisk/Dockerfile): it makes the store's schema, then starts Asterisk.
ENTRYPOINT = "/usr/local/bin/entrypoint.sh"
# The store's SQL travels into the sandbox here (root-only; it holds passwords), and the sqlite3
# shell's complaints about it, if any, land beside it.
STORE_SQL_DIR = "/run/gitops-verify"
STORE_SQL_FILE = "store.sql"
STORE_ERR_FILE = "store.err"
_ROWS_WORD = "endpoint-rows"

Progress = Callable[[str], None]


class VerifyFailed(ReconcilerError):
    """Asterisk logged errors or warnings about the managed files, or a verification query failed."""


@dataclass(frozen=True)
class Finding:
    """One thing Asterisk said, located: `text` is the line to print (`FILE:LINE: field (what):
    pjsip.conf:144: ERROR ...`), `located` where it points, `problem` Asterisk's own words."""

    text: str
    problem: LogProblem | None = None
    located: Located | None = None

    def annotation(self) -> tuple[str, int] | None:
        """(file, line) for an editor or CI annotation, when the finding has one."""
        if self.located is not None and self.located.source is not None and self.located.source[1] > 0:
            return self.located.source
        return None


@dataclass(frozen=True)
class VerifyResult:
    """What the throwaway Asterisk said about a render."""

    revision: str
    image: str
    problems: tuple[Finding, ...]
    notes: tuple[Finding, ...]
    checks: tuple[Check, ...]
    boot_s: float
    duration_s: float
    placeholders: tuple[str, ...] = ()  # secret names that got a generated stand-in value

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        def finding(f: Finding) -> dict[str, Any]:
            where = f.annotation()
            return {
                "text": f.text,
                "file": where[0] if where else None,
                "line": where[1] if where else None,
                "field": f.located.field if f.located else None,
                "rendered": f.located.rendered if f.located else None,
                "asterisk": str(f.problem) if f.problem else None,
            }

        return {
            "ok": self.ok,
            "revision": self.revision,
            "image": self.image,
            "problems": [finding(f) for f in self.problems],
            "notes": [finding(f) for f in self.notes],
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "boot_s": round(self.boot_s, 3),
            "duration_s": round(self.duration_s, 3),
            "placeholder_secrets": list(self.placeholders),
        }


# --- secrets -----------------------------------------------------------------------------------


def _stand_in(use: SecretUse) -> str:
    """A generated value that passes the strength rules for this use of a secret."""
    while True:
        if use.kind == "pin":
            value = "".join(_random.choice(string.digits) for _ in range(10))
        elif use.kind == "username":
            value = "verify-" + _random.token_hex(4)
        else:
            value = "Vf-" + _random.token_urlsafe(18)
        if weakness(use, value) is None:
            return value


def placeholder_secrets(loaded: LoadedState, settings: Settings) -> tuple[Settings, tuple[str, ...]]:
    """Settings in which every secret no source provides has a generated stand-in (never printed).

    Asterisk accepts any password or PIN of the right shape, so a pull request can be verified
    without production secrets. Returns the settings and the names that got a stand-in.
    """
    env_file = read_env_file(settings.env_file)
    added: dict[str, str] = {}
    for use in secret_refs(loaded.state):
        if use.name in added or lookup(use.name, settings, env_file) is not None:
            continue
        added[use.name] = _stand_in(use)
    return replace(settings, environ={**settings.environ, **added}), tuple(sorted(added))


# --- the sandbox -------------------------------------------------------------------------------


def _docker(docker_client: Any) -> Any:
    import docker
    from docker.errors import DockerException

    try:
        client = docker_client or docker.from_env()
        client.ping()
    except DockerException as exc:
        raise AsteriskUnavailable(
            f"cannot reach the Docker engine: {exc}",
            "start Docker (`systemctl start docker`, or `dockerd &`); verify needs it to run Asterisk",
        ) from exc
    return client


def _image(client: Any, image: str) -> None:
    from docker.errors import DockerException, ImageNotFound

    try:
        client.images.get(image)
    except ImageNotFound:
        raise AsteriskUnavailable(
            f"the Asterisk image {image} is not on this machine",
            "build it with `scripts/build-images.sh` (or `make up`), or pass --image NAME of yours",
        ) from None
    except DockerException as exc:
        raise AsteriskUnavailable(f"cannot look up the image {image}: {exc}", "retry; check Docker") from exc


def _tar(files: Mapping[str, str], mode: int = 0o644, directory: str | None = None) -> bytes:
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if directory is not None:
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, now
            tar.addfile(info)
        for name, text in sorted(files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(posixpath.join(directory, name) if directory else name)
            info.size, info.mode, info.mtime = len(data), mode, now
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def store_boot_command(sql_path: str, err_path: str) -> list[str]:
    """The container's command (run by the image's entrypoint once the schema exists): load the
    store from `sql_path` as the asterisk user, keep sqlite3's complaints in `err_path`, remove the
    SQL (it holds passwords), then start Asterisk the image's own way (the entrypoint again, which
    is idempotent). A failed load still boots, so verify can report what sqlite3 said."""
    script = (
        f"{store_mod.sqlite_step(sql_path)} > /dev/null 2> {shlex.quote(err_path)}; "
        f"rm -f {shlex.quote(sql_path)}; exec {shlex.quote(ENTRYPOINT)}"
    )
    return ["sh", "-c", script]


@contextlib.contextmanager
def sandbox(client: Any, image: str, files: Mapping[str, str], store_sql: str | None = None) -> Any:
    """A started container of `image` with no network and `files` as its managed config (and,
    with `store_sql`, its realtime store written by that SQL before Asterisk starts); removed on
    exit whatever happens (Ctrl-C included)."""
    from docker.errors import DockerException

    # The pid lets a person (or a test) tell which run a container belongs to.
    name = f"reconciler-verify-{os.getpid()}-{_random.token_hex(3)}"
    sql_path = posixpath.join(STORE_SQL_DIR, STORE_SQL_FILE)
    err_path = posixpath.join(STORE_SQL_DIR, STORE_ERR_FILE)
    command = store_boot_command(sql_path, err_path) if store_sql is not None else None
    try:
        container = client.containers.create(
            image, command=command, name=name, network_mode="none", labels={LABEL: "1"}, detach=True
        )
        container.put_archive(MANAGED_DIR, _tar(files))
        if store_sql is not None:
            parent, base = posixpath.split(STORE_SQL_DIR)
            container.put_archive(parent, _tar({STORE_SQL_FILE: store_sql}, 0o600, base))
        container.start()
        yield container
    except DockerException as exc:
        raise AsteriskUnavailable(
            f"cannot run a container of {image}: {exc}", "check Docker (`docker info`) and retry"
        ) from exc
    finally:
        _remove(client, name)


REMOVE_GRACE_S = 3.0


def _remove(client: Any, name: str) -> None:
    """Remove the sandbox `name` with its volumes. By name: an interrupt can land after Docker
    created it but before `create` returned, or while the daemon is still creating it (the name
    is listed, removal says not found or conflict): then it is asked again for a few seconds."""
    from docker.errors import DockerException

    deadline = time.monotonic() + REMOVE_GRACE_S
    while True:
        try:
            client.api.remove_container(name, force=True, v=True)
            return
        except DockerException:
            if time.monotonic() >= deadline:
                return
        time.sleep(0.1)


def _clean(out: str) -> str:
    return "\n".join(x for x in out.splitlines() if _NO_EID not in x)


@dataclass(frozen=True)
class SandboxAnswers:
    """What the read exec brought back: the log lines, the file queries' answers, the store
    queries' answers, what the store load said, and whether the log barrier was seen."""

    lines: list[str]
    outputs: list[str]
    store_outputs: list[str]
    store_load: str
    complete: bool


def _read_log_and_query(
    asterisk: AsteriskClient, queries: Sequence[str], store_queries: Sequence[str] = ()
) -> SandboxAnswers:
    """ONE exec: the store's load report (sqlite3's complaints, the endpoint row count), the
    store's per-object queries (first: a row Asterisk cannot use is logged when it is looked up),
    then wait until every line logged so far is in the file (barrier), the whole log, and each
    file query."""
    log = shlex.quote(LOG_PATH)
    tries = int(LOG_FLUSH_TIMEOUT_S / 0.01)
    barrier = (
        f"{rx_command(BARRIER_COMMAND)} >/dev/null; i=0; while [ $i -lt {tries} ]; do "
        f"grep -qF {shlex.quote(LOG_BARRIER)} {log} 2>/dev/null && {{ echo flushed; break; }}; "
        "sleep 0.01; i=$((i+1)); done"
    )
    err = shlex.quote(posixpath.join(STORE_SQL_DIR, STORE_ERR_FILE))
    count = store_mod.digest_step(f"SELECT '{_ROWS_WORD} '||count(*) FROM {store_mod.ENDPOINTS};\n")
    load = f"head -c 400 {err} 2>/dev/null; {count}"
    steps = [load, *(rx_command(q) for q in store_queries), barrier, f"cat {log} 2>/dev/null"]
    outputs = asterisk.run_steps([*steps, *(rx_command(q) for q in queries)]).outputs
    n = len(store_queries)
    barrier_out, log_out = outputs[1 + n], outputs[2 + n]
    return SandboxAnswers(
        lines=[line for line in log_out.splitlines() if LOG_BARRIER not in line],
        outputs=[_clean(out) for out in outputs[3 + n :]],
        store_outputs=[_clean(out) for out in outputs[1 : 1 + n]],
        store_load=outputs[0],
        complete="flushed" in barrier_out,
    )


def store_checks(
    extensions: int, load: str, checked: Sequence[str], outputs: Sequence[str], skipped: int
) -> list[Check]:
    """The store's part of the verdict: every desired extension's endpoint row is in the store
    (sqlite3 took the SQL), and the sampled extensions are live (`store.judge`)."""
    said = [x for x in load.splitlines() if x.strip() and not x.startswith(_ROWS_WORD)]
    rows = re.search(rf"^{_ROWS_WORD} (\d+)\s*$", load, re.M)
    found = int(rows[1]) if rows else None
    problems = []
    if said:
        problems.append("sqlite3: " + " ".join(said)[:300])
    if found != extensions:
        problems.append(f"{found if found is not None else 'no'} endpoint row(s), {extensions} desired")
    name = f"realtime store loaded ({extensions} extension(s))"
    out = [Check(name, not problems, "; ".join(problems))]
    return out + [Check(c.name, c.ok, c.detail) for c in store_mod.judge(checked, outputs, skipped)]


# --- judging -----------------------------------------------------------------------------------


def _missing_bind(problem: LogProblem, files: Mapping[str, str]) -> str | None:
    """The transport that could not start because the sandbox lacks its bind address, else None."""
    match = _TRANSPORT_FAILED.search(problem.message)
    if not match or _ADDRESS_MISSING not in match["why"]:
        return None
    for section in parse_conf(files.get("pjsip.conf", "")):
        if section.name == match["id"] and section.type == "transport":
            host = (section.get("bind") or "").rsplit(":", 1)[0].strip("[]")
            with contextlib.suppress(ValueError):
                address = ipaddress.ip_address(host)
                if not (address.is_loopback or address.is_unspecified):
                    return match["id"]
    return None


def _uses_transport(problem: LogProblem, files: Mapping[str, str], transports: set[str]) -> bool:
    """The transport itself, or a registration that could not be created because it uses it."""
    failed = problem.failed_object
    if failed is None:
        return False
    if failed[0] == "transport":
        return failed[1] in transports
    for section in parse_conf(files.get("pjsip.conf", "")):
        if section.name == failed[1] and section.type == failed[0] == "registration":
            return (section.get("transport") or "") in transports
    return False


def judge(
    lines: Sequence[str], loaded: LoadedState, files: Mapping[str, str], secrets: Iterable[str]
) -> tuple[list[Finding], list[Finding]]:
    """(problems, notes) of a boot's log lines about the managed files, each located."""
    secret_values = list(secrets)

    def finding(problem: LogProblem, note: str | None = None) -> Finding:
        where = locate(problem, files, loaded)
        said = f"{problem.level} {problem.module}: {problem.message}"
        if where.source is not None and where.rendered:
            said = f"{where.rendered}: {said}"  # the desired item first, then the rendered line
        text = where.prefix() + said + (f" ({note})" if note else "")
        return Finding(plan_mod.mask(text, secret_values), problem, where)

    problems = parse_reload_log(lines)
    judged = providers_health.judge_reload(problems, lines, loaded.state, files)
    notes = [
        finding(p, "expected here: the sandbox has no network, provider hosts do not resolve")
        for p in judged.excused
    ]
    missing = {t for p in judged.fatal if (t := _missing_bind(p, files))}
    fatal = []
    for problem in judged.fatal:
        if missing and (_missing_bind(problem, files) or _uses_transport(problem, files, missing)):
            notes.append(finding(problem, "expected here: the sandbox does not have the pbx.bind address"))
        else:
            fatal.append(finding(problem))
    return fatal, notes


# --- the whole run -----------------------------------------------------------------------------


def verify_desired(
    settings: Settings,
    desired_dir: Path,
    *,
    revision: str | None = None,
    image: str = DEFAULT_IMAGE,
    placeholders: bool = False,
    progress: Progress | None = None,
    docker_client: Any = None,
    boot_timeout_s: float | None = None,
) -> VerifyResult:
    """Render `desired_dir`, boot it in a throwaway network-less Asterisk, and judge what it logs.

    `boot_timeout_s` defaults to `BOOT_TIMEOUT_S` plus `BOOT_S_PER_EXTENSION` per extension.
    Raises `ValidationFailed`/`RenderFailed` for a bad desired state or template (nothing is
    started), `AsteriskUnavailable` when Docker or the image is missing (exit 3). A result with
    problems is returned, not raised: the caller decides how to show it.
    """
    started = time.monotonic()
    say = progress or (lambda _message: None)
    from reconciler.desired.revision import revision_of

    say("rendering")
    loaded = load_tree(Path(desired_dir), settings.site)
    stand_ins: tuple[str, ...] = ()
    if placeholders:
        settings, stand_ins = placeholder_secrets(loaded, settings)
    secrets = resolve_secrets(loaded, settings)
    rev = revision or revision_of(Path(desired_dir))
    files = render_mod.render(loaded.state, secrets, rev, Path(settings.templates_dir))
    secret_values = render_mod.secret_values(loaded.state, secrets)
    # The sandbox's store as an apply would write it (a throwaway key: nothing compares the hashes).
    rows = store_mod.desired_rows(loaded.state, secrets, _random.token_bytes(16))
    store_sql = store_mod.rewrite_sql(rows, f"verify:{rev12(rev)}")
    numbers = [ext.number for ext in loaded.state.extensions]
    store_queries, store_checked, store_skipped = store_mod.verification_plan(numbers, ())

    client = _docker(docker_client)
    _image(client, image)
    expected = expectations(loaded.state, files)
    queries = verification_queries(expected, files, restarted=True)
    say(f"starting a throwaway Asterisk from {image} (no network)")
    with sandbox(client, image, files, store_sql) as container:
        asterisk = AsteriskClient(container.name, MANAGED_DIR, LOG_PATH, docker_client=client)
        say("waiting for Asterisk to boot")
        try:
            boot_s = asterisk.wait_fully_booted(
                boot_timeout_s or BOOT_TIMEOUT_S + BOOT_S_PER_EXTENSION * len(numbers)
            )
        except AsteriskUnavailable as exc:
            container.reload()
            if container.status != "running":
                tail = container.logs(tail=20).decode(errors="replace").strip()
                raise VerifyFailed(
                    f"Asterisk exited while booting this render (container {container.status}):\n{tail}",
                    "render it (`reconciler render DIR --out out/`) and look at the files it names",
                ) from exc
            raise
        say("reading what Asterisk logged")
        answers = _read_log_and_query(asterisk, queries, store_queries)
    checks = verify(expected, queries, answers.outputs)
    checks += store_checks(
        len(numbers), answers.store_load, store_checked, answers.store_outputs, store_skipped
    )
    checks = [Check(c.name, c.ok, plan_mod.mask(c.detail, secret_values)) for c in checks]
    if not answers.complete:
        checks.append(Check("log lines of the boot read", False, "barrier line never reached the log"))
    problems, notes = judge(answers.lines, loaded, files, secret_values)
    return VerifyResult(
        revision=rev,
        image=image,
        problems=tuple(problems),
        notes=tuple(notes),
        checks=tuple(checks),
        boot_s=boot_s,
        duration_s=time.monotonic() - started,
        placeholders=stand_ins,
    )
