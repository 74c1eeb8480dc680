"""Benchmark the reconciler against Asterisk's own reload, in one run, as ratios.

What it measures (medians of N runs each, all in this one run so the ratios compare like with like):
- Asterisk's bare `module reload res_pjsip.so`, timed inside the container and through one
  `docker exec` (the floor any tool that drives the CLI pays);
- the same extensions as one plain pjsip.conf (`bare_pjsip.conf.j2`, what a user without this
  product keeps) in a second PBX of the project's image, reloaded and timed inside it
  (`bare_reload_file_s`);
- `apply_desired` with nothing changed, with one extension changed (render, plan, swap, reload,
  verify, record), and one extension added, removed and re-passworded;
- REGISTERs from 20 other phones sent continuously while those one-extension applies run: the p99
  time to the first answer (`sipprobe.py`);
- the same at a larger size (`--scale N` extensions);
- validate, render and plan alone (no Docker) for `--render-scale` extensions: time, peak memory
  (tracemalloc, and the child process's max RSS) and the rendered size.

Run: `python bench/bench_reconcile.py [--runs 5] [--scale 1000] [--render-scale 50000] [--json F]`
(needs Docker and the image `asterisk-gitops/asterisk:latest`, or `ASTERISK_TEST_IMAGE`; `make image`
builds it). `--render-only` skips every container. Traffic stays on 127.0.0.1; every container is
removed at the end, also on Ctrl-C. Keys are explained in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bare  # noqa: E402
from bench.sipprobe import RegisterProbe  # noqa: E402
from reconciler.asterisk import store  # noqa: E402
from reconciler.desired.load import load_desired  # noqa: E402
from reconciler.desired.render import render_desired  # noqa: E402
from reconciler.desired.secrets import resolve_secrets  # noqa: E402
from reconciler.desired.snapshot import snapshot_of  # noqa: E402
from reconciler.gitops.apply import apply_desired  # noqa: E402
from reconciler.gitops.plan import make_plan, plan_models  # noqa: E402
from tests.harness.containers import (  # noqa: E402
    PbxContainer,
    PbxStack,
    desired_yaml,
    isolated_settings,
    make_secrets,
    pbx_stack,
)

SNAPSHOT_KEY = b"bench-snapshot-key-0123456789abc"
PROBE_USERS = 20

# `touch` first: Asterisk skips parsing a config file whose mtime and size are unchanged, and an
# apply only reloads after a change, so the fair baseline is a reload that really parses the file.
INSIDE_RELOAD = (
    "touch /etc/asterisk/managed/pjsip.conf; "
    "s=$(date +%s%N); asterisk -rx 'module reload res_pjsip.so' >/dev/null; "
    "e=$(date +%s%N); echo $(( (e - s) / 1000 ))"
)


def median_s(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_desired(
    stack: PbxStack | None, path: Path, numbers: list[str], suffix: str = "", ports: tuple[int, int] = (0, 0)
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.yaml"):
        old.unlink()
    names = {n: f"Extension {n}{suffix if n == numbers[-1] else ''}" for n in numbers}
    pbx_port, provider_port = (stack.pbx.sip_port, stack.provider.sip_port) if stack else ports
    for name, text in desired_yaml(pbx_port, provider_port, extensions=names).items():
        (path / name).write_text(text)
    return path


def add_extension_secrets(stack: PbxStack, numbers: list[str]) -> None:
    """Strong passwords for these extensions; the provider's password stays the one it expects."""
    fresh = make_secrets(numbers)
    fresh.pop("PROVIDER_PASSWORD")
    stack.secrets.update(fresh)


def container_mem_mib(stack: PbxStack) -> float:
    stats = stack.pbx.docker_container.stats(stream=False)
    return stats["memory_stats"].get("usage", 0) / 2**20


def one_extension_applies(
    stack: PbxStack, workdir: Path, numbers: list[str], runs: int, probe: RegisterProbe
) -> dict[str, float]:
    """Add one extension, remove it, change one password: each `runs` times through the product's
    apply path, with the REGISTER probe marking the time each apply runs."""
    extra = str(int(numbers[-1]) + 1)
    add_extension_secrets(stack, [extra])
    base = write_desired(stack, workdir / f"base{len(numbers)}", numbers)
    more = write_desired(stack, workdir / f"more{len(numbers)}", [*numbers, extra])

    def timed_apply(desired: Path) -> float:
        settings = stack.settings(desired)  # environ: a copy of the secrets as they are now
        probe.active.set()
        start = time.perf_counter()
        try:
            result = apply_desired(settings, stack.client(), desired)
        finally:
            took = time.perf_counter() - start
            probe.active.clear()
        assert not result.unchanged, "the benchmark's change was not seen as a change"
        return took

    adds, removes, passwords = [], [], []
    for _ in range(runs):
        adds.append(timed_apply(more))
        removes.append(timed_apply(base))
    victim = f"EXT_{numbers[0]}_PASSWORD"
    for _ in range(runs):
        stack.secrets[victim] = make_secrets([numbers[0]])[victim]
        passwords.append(timed_apply(base))
    return {
        "add_s": statistics.median(adds),
        "remove_s": statistics.median(removes),
        "password_change_s": statistics.median(passwords),
    }


def restart_to_register(stack: PbxStack, user: str, limit_s: float = 180.0) -> dict[str, float | None]:
    """`core restart now`, then (a) until `core waitfullybooted` answers and (b) until a REGISTER
    sent after that gets its first answer (a realtime PBX drops requests for a while after "fully
    booted" while it builds every endpoint). Seconds from the restart command."""
    started = time.perf_counter()
    stack.pbx.exec(["asterisk", "-rx", "core restart now"])
    booted: float | None = None
    while time.perf_counter() - started < limit_s:
        code, out = stack.pbx.exec(["sh", "-c", "timeout 5 asterisk -rx 'core waitfullybooted' 2>&1"])
        if code == 0 and "fully booted" in out:
            booted = time.perf_counter() - started
            break
        time.sleep(0.2)
    answered: float | None = None
    if booted is not None:
        with RegisterProbe(stack.pbx.sip_port, [user], timeout_s=1.0, gap_s=0.1) as probe:
            while time.perf_counter() - started < limit_s and answered is None:
                time.sleep(0.05)
                if any(took < probe.timeout_s for _, took in probe.samples):
                    answered = time.perf_counter() - started
    return {"restart_fully_booted_s": booted, "restart_register_answered_s": answered}


def measure_size(
    stack: PbxStack, bare_pbx: PbxContainer, workdir: Path, numbers: list[str], runs: int
) -> dict[str, float | int | None]:
    add_extension_secrets(stack, numbers)
    a = write_desired(stack, workdir / f"a{len(numbers)}", numbers)
    b = write_desired(stack, workdir / f"b{len(numbers)}", numbers, suffix=" (moved)")
    settings = stack.settings(a)
    client = stack.client()
    apply_desired(settings, client, a)  # first load of this size

    def inside_reload_ms() -> float:
        _code, out = stack.pbx.exec(["sh", "-c", INSIDE_RELOAD])
        return int(out.strip().splitlines()[-1]) / 1000

    bare_inside = statistics.median(inside_reload_ms() for _ in range(runs)) / 1000
    bare_exec = median_s(
        lambda: client.run_steps(
            ["touch /etc/asterisk/managed/pjsip.conf", "asterisk -rx 'module reload res_pjsip.so'"]
        ),
        runs,
    )
    loaded = load_desired(a)
    bare.install(
        bare_pbx, bare.render_bare(loaded.state, resolve_secrets(loaded, settings), bare_pbx.sip_port)
    )
    bare_file = bare.reload_inside_s(bare_pbx, runs)
    unchanged = median_s(lambda: apply_desired(settings, client, a), runs)

    flip = [a, b]

    def changed_apply() -> None:
        flip.reverse()
        result = apply_desired(replace(settings, desired_dir=flip[0]), client, flip[0])
        assert not result.unchanged, "the benchmark's change was not seen as a change"

    changed = median_s(changed_apply, runs)
    apply_desired(stack.settings(a), client, a)  # back to `a` for the one-extension applies
    users = numbers[1 : 1 + PROBE_USERS] or numbers
    with RegisterProbe(stack.pbx.sip_port, users) as probe:
        singles = one_extension_applies(stack, workdir, numbers, runs, probe)
    restart = restart_to_register(stack, users[0])
    return {
        "extensions": len(numbers),
        "bare_reload_inside_s": bare_inside,
        "bare_reload_exec_s": bare_exec,
        "bare_reload_file_s": bare_file,
        "apply_unchanged_s": unchanged,
        "apply_one_extension_changed_s": changed,
        **singles,
        "register_p99_during_apply_s": probe.p99_active_s(),
        "register_samples_during_apply": probe.count_active(),
        "ratio_changed_over_bare_exec": changed / bare_exec,
        "ratio_changed_over_bare_inside": changed / bare_inside,
        "ratio_changed_over_bare_file": changed / bare_file,
        "ratio_add_over_bare_file": singles["add_s"] / bare_file,
        "ratio_remove_over_bare_file": singles["remove_s"] / bare_file,
        "ratio_password_change_over_bare_file": singles["password_change_s"] / bare_file,
        "ratio_unchanged_over_bare_exec": unchanged / bare_exec,
        "pbx_memory_mib": container_mem_mib(stack),
        **restart,
    }


# ---- validate, render and plan alone ---------------------------------------------------------------


def render_fixture(workdir: Path, count: int) -> tuple[Path, Any]:
    """A desired dir of `count` extensions and settings with their secrets (no container)."""
    numbers = [str(10000 + i) for i in range(count)]
    path = write_desired(None, workdir / f"render{count}", numbers, ports=(5060, 5070))
    settings = replace(isolated_settings("bench-none", workdir, make_secrets(numbers)), desired_dir=path)
    return path, settings


def _validate_render_plan(
    path: Path, settings: Any, edit: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Time validate (load + secrets), render, and the plan of one change (`edit`, default: one
    extension renamed) the way the PR check and a dry run make it: snapshots → model plan, plus the
    masked diff of the changed files."""
    start = time.perf_counter()
    loaded = load_desired(path)
    secrets = resolve_secrets(loaded, settings)
    validate_s = time.perf_counter() - start
    start = time.perf_counter()
    rendered = render_desired(path, settings, revision="1" * 16)
    render_s = time.perf_counter() - start  # render_desired loads and resolves again: it is the CLI's
    start = time.perf_counter()
    rows = store.export_rows(store.extension_rows(rendered.state, rendered.secrets))
    rows_s = time.perf_counter() - start  # the store's rows: what the render of extensions now is
    before = snapshot_of(loaded.state, secrets, SNAPSHOT_KEY)
    start = time.perf_counter()
    initial = make_plan(rendered.files, {}, rendered.secret_values, models=plan_models(None, before))
    initial_s = time.perf_counter() - start
    numbers = [e.number for e in loaded.state.extensions]
    if edit is None:
        text = (path / "extensions.yaml").read_text()
        (path / "extensions.yaml").write_text(
            text.replace(f"Extension {numbers[len(numbers) // 2]}\n", "Renamed\n")
        )
    else:
        edit()
    loaded2 = load_desired(path)
    secrets2 = resolve_secrets(loaded2, settings)
    rendered2 = render_desired(path, settings, revision="2" * 16)
    start = time.perf_counter()
    after = snapshot_of(loaded2.state, secrets2, SNAPSHOT_KEY)
    plan = make_plan(
        rendered2.files, rendered.files, rendered2.secret_values, models=plan_models(before, after)
    )
    plan_s = time.perf_counter() - start
    assert plan.has_changes and plan.changes
    return {
        "validate_s": validate_s,
        "render_s": render_s,
        "rows_s": rows_s,
        "plan_s": plan_s,
        "plan_initial_s": initial_s,
        "plan_changes": len(plan.changes),
        "initial_diff_mib": len(initial.diff) / 2**20,
        "rendered_bytes": sum(len(t) for t in rendered.files.values()) + len(rows),
    }


def measure_render(workdir: Path, count: int) -> dict[str, float | int]:
    path, settings = render_fixture(workdir, count)
    times = _validate_render_plan(path, settings)
    numbers = [str(10000 + i) for i in range(count)]

    path2, settings2 = render_fixture(workdir / "rename", count)

    def rename_2000() -> None:
        text = (path2 / "extensions.yaml").read_text()
        for n in numbers[:: max(1, count // 2000)][:2000]:
            text = text.replace(f"name: Extension {n}\n", f"name: Moved {n}\n")
        (path2 / "extensions.yaml").write_text(text)

    rename = _validate_render_plan(path2, settings2, rename_2000)
    rss = _child_max_rss(path, settings)
    # Python memory in a separate pass: tracemalloc slows allocation-heavy code several-fold.
    tracemalloc.start()
    child_render(path, None, settings)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = times["rendered_bytes"]
    return {
        "extensions": count,
        "validate_s": times["validate_s"],
        "render_s": times["render_s"],
        "store_rows_s": times["rows_s"],
        # render_desired validates (load + secrets) then renders the files; the rows are the rest
        "validate_plus_render_s": times["render_s"] + times["rows_s"],
        "plan_s": times["plan_s"],
        "plan_initial_s": times["plan_initial_s"],
        "plan_rename_2000_s": rename["plan_s"],
        "plan_rename_2000_changes": rename["plan_changes"],
        "initial_diff_mib": times["initial_diff_mib"],
        "peak_python_mib": peak / 2**20,
        "peak_rss_mib": rss / 2**20,
        "rendered_kib": size / 1024,
        "peak_memory_over_output_size": peak / size,
        "peak_rss_over_output_size": rss / size,
    }


def _child_max_rss(path: Path, settings: Any) -> int:
    """Max RSS (bytes) of a fresh Python that validates, renders and plans `path` against nothing:
    the whole process, interpreter and libraries included. The secrets go in a 0600 file (50,000
    of them do not fit in an environment)."""
    secrets_file = path.parent / f"{path.name}.secrets.json"
    secrets_file.touch(mode=0o600)
    secrets_file.write_text(json.dumps(settings.environ))
    code = (
        f"import resource, sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from bench.bench_reconcile import child_render\n"
        f"child_render(Path({str(path)!r}), Path({str(secrets_file)!r}))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    finally:
        secrets_file.unlink()
    return int(out.stdout.strip().splitlines()[-1])


def child_render(path: Path, secrets_file: Path | None, settings: Any = None) -> None:
    """What the memory peaks measure: validate, render, plan against nothing (the model plan and
    the masked diff of every file)."""
    if settings is None:
        assert secrets_file is not None
        environ = json.loads(secrets_file.read_text())
        settings = replace(isolated_settings("bench-none", path.parent, environ), desired_dir=path)
    rendered = render_desired(path, settings)
    store.export_rows(store.extension_rows(rendered.state, rendered.secrets))
    snapshot = snapshot_of(rendered.state, rendered.secrets, SNAPSHOT_KEY)
    make_plan(rendered.files, {}, rendered.secret_values, models=plan_models(None, snapshot))


@contextmanager
def interrupt_as_exit() -> Iterator[None]:
    """SIGTERM and Ctrl-C unwind through every `finally` (the containers are removed)."""

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1000, help="extensions in the larger run")
    parser.add_argument(
        "--render-scale", type=int, default=None, help="extensions for render_only (default 5 x --scale)"
    )
    parser.add_argument("--render-only", action="store_true", help="only render_only.*: no container")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    render_scale = args.render_scale or args.scale * 5

    results: dict[str, dict[str, Any]] = {}
    with interrupt_as_exit(), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.render_only:
            with (
                pbx_stack(work / "stack", name_prefix="bench") as stack,
                bare.file_mode_pbx(work / "bare") as bare_pbx,
            ):
                small = [str(n) for n in range(4000, 4006)]
                results["small"] = measure_size(stack, bare_pbx, work, small, args.runs)
                results["scale"] = measure_size(
                    stack, bare_pbx, work, [str(20000 + i) for i in range(args.scale)], max(3, args.runs // 2)
                )
        results["render_only"] = measure_render(work / "render", render_scale)

    report(results, args.json)
    return 0


def report(results: dict[str, dict[str, Any]], json_path: Path | None, width: int = 38) -> None:
    """Print each group of results (`[name]`, then `key value` lines); also write them to `json_path`."""
    for name, row in results.items():
        print(f"\n[{name}]")
        for key, value in row.items():
            shown = f"{value:10.3f}" if isinstance(value, float) else str(value)
            print(f"  {key:{width}} {shown}")
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
