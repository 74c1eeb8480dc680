"""Benchmark office-feature changes (issue 11) against Asterisk's own reload, in one run, as ratios.

One PBX of the project's image with the test extensions 4000-4005 and an office of `--groups` ring
groups, `--queues` queues and `--menus` menus (each menu a DID of its own). Medians of `--runs`:
- Asterisk's bare reloads of the same rendered files, timed inside the container after a `touch`
  (Asterisk skips an unchanged file): `dialplan reload` (extensions.conf) and
  `module reload app_queue.so` (queues.conf); and the dialplan one through one `docker exec`, the
  floor of any tool that drives Asterisk from outside its container;
- `apply_desired` with nothing changed (it also lists the PBX's sounds for the menus' prompts);
- one ring group's `ring_seconds` changed (extensions.conf: a dialplan reload);
- one queue's `ring_seconds` changed (queues.conf: an app_queue reload);
- one extension's `forward` changed (a store row: no reload at all);
- how many `docker exec`s each of those applies ran (`execs_*`): each costs a process in the
  container and a round trip, whatever it does.

Run: `python bench/bench_office.py [--runs 5] [--groups 100] [--queues 20] [--menus 20] [--json F]`
(Docker and `asterisk-gitops/asterisk:latest`, as bench_reconcile.py). Loopback only; the
containers are removed at the end. Keys are explained in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_reconcile import interrupt_as_exit, median_s, report  # noqa: E402
from reconciler.gitops.apply import apply_desired  # noqa: E402
from tests.harness.containers import EXTENSIONS, PbxStack, desired_yaml, pbx_stack  # noqa: E402

MENU_DID = "+3491555{:04d}"


@dataclass(frozen=True)
class Office:
    groups: int
    queues: int
    menus: int


def office_yaml(office: Office, *, group_ring_s: int = 20, queue_ring_s: int = 15) -> str:
    """Ring groups 6000.. (the first with `group_ring_s`), queues 7000.. (the first with
    `queue_ring_s`), menus m0.. sending 1 to a group and 2 to a queue (at least one of each)."""
    members = '["4001", "4002", "4003"]'
    lines = ["ring_groups:"]
    lines += [
        f'  - {{number: "{6000 + i}", name: Group {i}, members: {members}, '
        f"ring_seconds: {group_ring_s if i == 0 else 20}, fallback: voicemail:4001}}"
        for i in range(office.groups)
    ]
    lines += ["queues:"]
    lines += [
        f'  - {{number: "{7000 + i}", name: q{i}, members: {members}, '
        f"ring_seconds: {queue_ring_s if i == 0 else 15}, max_wait_seconds: 120, fallback: voicemail:4002}}"
        for i in range(office.queues)
    ]
    lines += ["menus:"]
    lines += [
        f"  - {{name: m{i}, prompt: demo-congrats, options: "
        f'{{"1": ring_group:{6000 + i % office.groups}, "2": queue:{7000 + i % office.queues}}}, '
        "timeout: extension:4000, invalid: extension:4000}"
        for i in range(office.menus)
    ]
    return "\n".join(lines) + "\n"


def write_office(
    stack: PbxStack, path: Path, office: Office, *, forward: str | None = None, **changes: int
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    files = desired_yaml(stack.pbx.sip_port, stack.provider.sip_port)
    if forward is not None:
        files["extensions.yaml"] = files["extensions.yaml"].replace(
            '  - number: "4004"\n', f'  - number: "4004"\n    forward: {{no_answer: {forward}}}\n', 1
        )
    files["routes.yaml"] += "".join(
        f'  - {{provider: fake_provider, did: "{MENU_DID.format(i)}", to: menu:m{i}}}\n'
        for i in range(office.menus)
    )
    files["office.yaml"] = office_yaml(office, **changes)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def inside_reload_s(stack: PbxStack, file: str, command: str, runs: int) -> float:
    script = (
        f"touch /etc/asterisk/managed/{file}; s=$(date +%s%N); asterisk -rx '{command}' >/dev/null; "
        "e=$(date +%s%N); echo $(( (e - s) / 1000 ))"
    )
    samples = []
    for _ in range(runs):
        _code, out = stack.pbx.exec(["sh", "-c", script])
        samples.append(int(out.strip().splitlines()[-1]) / 1e6)
    return statistics.median(samples)


def measure(stack: PbxStack, work: Path, office: Office, runs: int) -> dict[str, float | int]:
    base = write_office(stack, work / "base", office)
    variants = {
        "ring_group": write_office(stack, work / "group", office, group_ring_s=25),
        "queue": write_office(stack, work / "queue", office, queue_ring_s=20),
        "forward": write_office(stack, work / "forward", office, forward="extension:4005"),
    }
    client = stack.client()

    execs: dict[str, int] = {}

    def apply(path: Path, changed: bool) -> None:
        result = apply_desired(stack.settings(path), client, path)
        assert result.unchanged is not changed, f"{path.name}: expected changed={changed}"
        execs[path.name] = result.execs

    apply(base, True)
    unchanged = median_s(lambda: apply(base, False), runs)
    execs_unchanged = execs["base"]
    timings: dict[str, float] = {}
    for name, path in variants.items():
        flips = []
        for _ in range(runs):
            start = time.perf_counter()
            apply(path, True)
            flips.append(time.perf_counter() - start)
            apply(base, True)  # back, untimed
        timings[name] = statistics.median(flips)
    dialplan = inside_reload_s(stack, "extensions.conf", "dialplan reload", runs)
    bare_steps = ["touch /etc/asterisk/managed/extensions.conf", "asterisk -rx 'dialplan reload'"]
    dialplan_exec = median_s(lambda: client.run_steps(bare_steps), runs)
    queues = inside_reload_s(stack, "queues.conf", "module reload app_queue.so", runs)
    return {
        "extensions": len(EXTENSIONS),
        "ring_groups": office.groups,
        "queues": office.queues,
        "menus": office.menus,
        "bare_dialplan_reload_inside_s": dialplan,
        "bare_queues_reload_inside_s": queues,
        "bare_dialplan_reload_exec_s": dialplan_exec,
        "apply_unchanged_s": unchanged,
        "apply_ring_group_change_s": timings["ring_group"],
        "apply_queue_change_s": timings["queue"],
        "apply_forward_change_s": timings["forward"],
        "execs_unchanged": execs_unchanged,
        "execs_ring_group_change": execs["group"],
        "execs_queue_change": execs["queue"],
        "execs_forward_change": execs["forward"],
        "ratio_ring_group_change_over_bare_dialplan": timings["ring_group"] / dialplan,
        "ratio_queue_change_over_bare_queues": timings["queue"] / queues,
        "ratio_forward_change_over_bare_dialplan": timings["forward"] / dialplan,
        "ratio_unchanged_over_bare_dialplan": unchanged / dialplan,
        "ratio_ring_group_change_over_bare_dialplan_exec": timings["ring_group"] / dialplan_exec,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--menus", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    office = Office(max(args.groups, 1), max(args.queues, 1), args.menus)
    with interrupt_as_exit(), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with pbx_stack(work / "stack", name_prefix="bench-office") as stack:
            results = {"office": measure(stack, work, office, args.runs)}
    report(results, args.json, width=48)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
