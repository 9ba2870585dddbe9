#!/usr/bin/env python3
"""Measures the LWN article's three stack-growth options side by side and writes the table.

`make bench-strategies` calls it after building the normal kernel and the check build
(`-Z instrument-mcount`, in target/check). One boot per strategy, each on QEMU virt with one
CPU under `-icount shift=0` (one instruction per nanosecond: the figures are instruction
counts and repeat exactly for a given build), running `bench strategies`:

    fault        the normal kernel, kstack.strategy=fault (also gives the fixed baseline)
    expand       the normal kernel, kstack.strategy=expand
    check-512    the check build, kstack.strategy=check kstack.lookahead=512
    check-2048   ... kstack.lookahead=2048
    check-4096   ... kstack.lookahead=4096

Parking is off in every boot (`kstack.park_after=off`: it exists under `fault` only). Every
boot prints a `fixed` line and a line for its strategy per workload; the fixed lines of
the normal kernel's first boot are the baseline for all (the check build's own fixed lines
pay the hook too, so they are not). The output holds a header (date, commit, QEMU), then one
line per strategy and workload,

    STRATEGY name= lookahead= workload= threads= stack_kib= instr_per_op= overhead_pct=
             misses= growths= high_water_kib= ops= checked= wrong=

with `overhead_pct` recomputed against that baseline, then each boot's options and wall
time. Exit status: 0 when every boot worked and printed every line, 1 otherwise (the file is
still written, saying what went wrong), 2 for bad usage. Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QEMU = os.environ.get("QEMU", "qemu-system-aarch64")
WORKLOADS = ["mix", "churn", "chain", "bigframe", "inflate", "json", "switch", "spawn", "svc"]
LOOKAHEADS = [512, 2048, 4096]
LINE = re.compile(r"^STRATEGY (.*)$")


def fields(text: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def overhead(value: int, base: int) -> str:
    if value == 0 or base == 0:
        return "0.0"
    return f"{(value - base) * 100 / base:.1f}"


def boot(kernel: Path, bootargs: str, cpu: str, timeout: int, quick: bool) -> tuple[list[str], list[str], float, str]:
    """Boots once; returns (STRATEGY lines, problems, seconds, QEMU options)."""
    init = "bench strategies quick; poweroff" if quick else "bench strategies; poweroff"
    args = f'{bootargs} init="{init}"'
    env = dict(os.environ, SMP="1", MEM="512M", CPU=cpu, BOOTARGS=args,
               QEMUFLAGS="-icount shift=0", TIMEOUT=str(timeout))
    options = f"-M virt -cpu {cpu} -smp 1 -m 512M -nographic -semihosting -icount shift=0"
    print(f"bench_strategies.py: {kernel}: {options} -append {shlex.quote(args)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run([str(ROOT / "scripts" / "qemu-run.sh"), str(kernel)], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")
    seconds = time.monotonic() - start
    lines, problems = [], []
    for raw in proc.stdout.splitlines():
        line = raw.rstrip("\r")
        if LINE.match(line):
            lines.append(line)
        elif line.startswith(("PANIC", "error: ")):
            problems.append(line)
    if proc.returncode != 0:
        problems.append(f"QEMU exited with status {proc.returncode}")
    return lines, problems, seconds, f"{options} -append {shlex.quote(args)}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", required=True, type=Path, help="the normal kernel ELF")
    p.add_argument("--check-kernel", required=True, type=Path, help="the check build's kernel ELF")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cpu", default="cortex-a72")
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--quick", action="store_true", help="bench strategies quick (a smoke run)")
    a = p.parse_args()

    # Parking (kstack.park_after) is off in every boot: it exists under `fault` only, and the
    # comparison is of how stacks grow.
    off = "kstack.park_after=off"
    runs = [("fault", a.kernel, f"kstack.strategy=fault {off}"), ("expand", a.kernel, f"kstack.strategy=expand {off}")]
    runs += [(f"check-{n}", a.check_kernel, f"kstack.strategy=check kstack.lookahead={n} {off}") for n in LOOKAHEADS]

    baseline: dict[str, dict[str, str]] = {}
    rows: list[dict[str, str]] = []
    notes: list[str] = []
    problems: list[str] = []
    for title, kernel, bootargs in runs:
        lines, trouble, seconds, options = boot(kernel, bootargs, a.cpu, a.timeout, a.quick)
        problems += [f"{title}: {t}" for t in trouble]
        notes.append(f"# {title}: {options} ({seconds:.1f} s)")
        seen = set()
        for line in lines:
            f = fields(LINE.match(line).group(1))
            if f.get("name") == "fixed":
                if title == "fault":
                    baseline[f["workload"]] = f
                    rows.append(f)
                continue
            seen.add(f.get("workload"))
            rows.append(f)
        missing = [w for w in WORKLOADS if w not in seen]
        if missing:
            problems.append(f"{title}: no STRATEGY line for {', '.join(missing)}")

    order = {"fixed": 0, "fault": 1, "expand": 2, "check": 3}
    rows.sort(key=lambda f: (WORKLOADS.index(f["workload"]) if f["workload"] in WORKLOADS else 99,
                             order.get(f["name"], 9), int(f.get("lookahead", 0))))
    keys = ["name", "lookahead", "workload", "threads", "stack_kib", "instr_per_op", "overhead_pct",
            "misses", "growths", "high_water_kib", "ops", "checked", "wrong"]
    out = []
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    qemu = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    out.append(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
    out.append(f"commit: {commit}")
    out.append(f"qemu: {qemu[0] if qemu else '?'}")
    out.append("machine: QEMU virt, 1 CPU, 512 MiB, -icount shift=0 (ns = instructions); kstack.max=16k")
    out.append("# overhead_pct: instr_per_op against the fixed line of the same workload (normal build)")
    for f in rows:
        base = baseline.get(f["workload"])
        if base is not None:
            f["overhead_pct"] = overhead(int(f["instr_per_op"]), int(base["instr_per_op"]))
        out.append("STRATEGY " + " ".join(f"{k}={f.get(k, '0')}" for k in keys))
    out += notes
    out += [f"problem: {p}" for p in problems]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(out) + "\n")
    print("\n".join(out))
    if problems:
        print(f"bench_strategies.py: {len(problems)} problem(s), see {a.out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
