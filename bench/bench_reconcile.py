"""Benchmark the reconciler against Asterisk's own reload, in one run, as ratios.

What it measures (medians of N runs each, all in this one run so the ratios compare like with like):
- Asterisk's bare `module reload res_pjsip.so`, timed inside the container and through one
  `docker exec` (the floor any tool that drives the CLI pays);
- `apply_desired` with nothing changed, and with one extension changed (render, plan, swap,
  reload, verify, record);
- the same at a larger size (`--scale N` extensions);
- render + plan alone (no Docker) for N extensions: time and peak Python memory (tracemalloc);
- the Asterisk container's memory before and after the scale run.

Run: `python bench/bench_reconcile.py [--runs 5] [--scale 1000]` (needs Docker and the image
`asterisk-gitops/asterisk:latest`; `make image` builds it). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reconciler.desired.render import render_desired  # noqa: E402
from reconciler.gitops.apply import apply_desired  # noqa: E402
from reconciler.gitops.plan import make_plan  # noqa: E402
from tests.harness.containers import (  # noqa: E402
    PbxStack,
    desired_yaml,
    make_secrets,
    pbx_stack,
)

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


def write_desired(stack: PbxStack, path: Path, numbers: list[str], suffix: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    names = {n: f"Extension {n}{suffix if n == numbers[-1] else ''}" for n in numbers}
    for name, text in desired_yaml(stack.pbx.sip_port, stack.provider.sip_port, extensions=names).items():
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


def measure_size(stack: PbxStack, workdir: Path, numbers: list[str], runs: int) -> dict[str, float]:
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
    unchanged = median_s(lambda: apply_desired(settings, client, a), runs)

    flip = [a, b]

    def changed_apply() -> None:
        flip.reverse()
        result = apply_desired(replace(settings, desired_dir=flip[0]), client, flip[0])
        assert not result.unchanged, "the benchmark's change was not seen as a change"

    changed = median_s(changed_apply, runs)
    return {
        "extensions": len(numbers),
        "bare_reload_inside_s": bare_inside,
        "bare_reload_exec_s": bare_exec,
        "apply_unchanged_s": unchanged,
        "apply_one_extension_changed_s": changed,
        "ratio_changed_over_bare_exec": changed / bare_exec,
        "ratio_changed_over_bare_inside": changed / bare_inside,
        "ratio_unchanged_over_bare_exec": unchanged / bare_exec,
        "pbx_memory_mib": container_mem_mib(stack),
    }


def measure_render(stack: PbxStack, workdir: Path, count: int) -> dict[str, float]:
    numbers = [str(10000 + i) for i in range(count)]
    add_extension_secrets(stack, numbers)
    path = write_desired(stack, workdir / f"render{count}", numbers)
    settings = stack.settings(path)
    start = time.perf_counter()
    rendered = render_desired(path, settings)
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    make_plan(rendered.files, {}, rendered.secret_values)
    plan_s = time.perf_counter() - start
    # Memory in a second pass: tracemalloc slows allocation-heavy code several-fold.
    tracemalloc.start()
    rendered = render_desired(path, settings)
    make_plan(rendered.files, {}, rendered.secret_values)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = sum(len(t) for t in rendered.files.values())
    return {
        "extensions": count,
        "render_s": render_s,
        "plan_s": plan_s,
        "peak_python_mib": peak / 2**20,
        "rendered_kib": size / 1024,
        "peak_memory_over_output_size": peak / size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1000, help="extensions in the larger run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, pbx_stack(Path(tmp), name_prefix="bench") as stack:
        work = Path(tmp)
        small = [str(n) for n in range(4000, 4006)]
        results["small"] = measure_size(stack, work, small, args.runs)
        results["scale"] = measure_size(
            stack, work, [str(20000 + i) for i in range(args.scale)], max(3, args.runs // 2)
        )
        results["render_only"] = measure_render(stack, work, args.scale * 5)

    for name, row in results.items():
        print(f"\n[{name}]")
        for key, value in row.items():  # type: ignore[union-attr]
            print(f"  {key:34} {value:10.3f}" if isinstance(value, float) else f"  {key:34} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
