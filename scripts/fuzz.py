#!/usr/bin/env python3
"""Seeded shell-sequence fuzzer for dynstack: random command sequences that start by
exhausting memory, booted on QEMU virt at 48-128 MiB on 1-4 CPUs.

Each run boots the main kernel with a parking setting (`kstack.park_after=0` in half the
runs, the default or `off` in the others) and `init="..."`: `mem` (the baseline), a spawn
that runs memory out, then random valid, invalid and memory-hungry commands, then `kill all`, and the
final `stacks` and `mem`. A run passes when the boot prints no `PANIC`, ends with its final
`STACKS` and `MEM` lines, powers off with status 0, and free memory after the last
`kill all` is back at the baseline within 256 KiB plus the stack arena's page tables
(`pt_kib`) and the pages the per-CPU reserves hold (`reserve_kib`).

`make test` runs a short fixed set of these through scripts/run_tests.py (which imports
`sequences` and `check`); `make fuzz` runs many more:

    scripts/fuzz.py [--runs N] [--seed S] [-j JOBS] [--kernel ELF] [-v]

and prints one line per failing run, then `FUZZ runs=N panics=P failed=F seed=S`.
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "target/aarch64-unknown-none-softfloat/release/dynstack"
QEMU = os.environ.get("QEMU", "qemu-system-aarch64")

# Baseline slack the issue allows after `kill all`, on top of the arena's tables.
SLACK_KIB = 256

EXHAUST = [
    "spawn 100000 idle dynamic",
    "spawn 100000 idle fixed",
    "spawn 100000 idle",
    "spawn 30000 mix",
]

VALID = [
    "mem",
    "cpus",
    "ps",
    "ps 5",
    "stacks",
    "trim",
    "kill all",
    "help",
    "spawn 10 idle",
    "spawn 200 mix",
    "spawn 20 deep:12k",
    "spawn 5 overflow",
    "spawn 50 churn",
    "spawn 100 idle fixed",
    "spawn 4 json",
    "spawn 4 inflate",
]

INVALID = [
    "frobnicate",
    "spawn",
    "spawn 0 idle",
    "spawn 10 nosuch",
    "spawn 10 deep:zz",
    "spawn 10 idle sideways",
    "ps -1",
    "ps many",
    "kill",
    "kill 999999999",
    "kill 1",
    "kill none",
    "bench slow",
    "mem extra",
    "trim now",
]

HUNGRY = [
    "ps 100000",
    "spawn 100000 idle",
    "spawn 100000 idle fixed",
    "spawn 20000 mix",
    "spawn 2000 deep:12k",
    "spawn 200 json",
    "spawn 200 inflate",
    "stacks",
]


# Parked stacks in the fuzzed boots: most runs park every sleeping thread at once
# (`kstack.park_after=0`, the setting that parks most and so holds the most parked-block
# memory that `kill all` must give back), some keep the default (10 s: parking starts only in
# long runs), some have parking off (the stacks stay mapped).
PARKING = ["kstack.park_after=0", "kstack.park_after=0", "", "kstack.park_after=off"]


def sequence(rng: random.Random, length: int) -> tuple[str, int, str, str]:
    """One run: (memory, CPUs, command-line arguments before init=, init= commands)."""
    mem = rng.choice([48, 64, 96, 128])
    smp = rng.randint(1, 4)
    cmds = ["mem", rng.choice(EXHAUST)]
    for _ in range(length):
        kind = rng.random()
        pool = VALID if kind < 0.5 else INVALID if kind < 0.75 else HUNGRY
        cmds.append(rng.choice(pool))
    cmds += ["kill all", "stacks", "mem", "poweroff"]
    # Drawn last, so the memory, CPUs and commands of a seed are what they were before.
    args = rng.choice(PARKING)
    return f"{mem}M", smp, args, "; ".join(cmds)


def bootargs(args: str, init: str) -> str:
    """The whole command line of a run."""
    return f'{args} init="{init}"'.lstrip()


def sequences(runs: int, seed: int, length: int = 6) -> list[tuple[str, int, str, str]]:
    """`runs` runs drawn from `seed` (the same seed always gives the same runs)."""
    rng = random.Random(seed)
    return [sequence(rng, length) for _ in range(runs)]


def _kv(line: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", line)}


def check(lines: list[str]) -> list[str]:
    """Problems with one run's output (empty when it passed)."""
    problems = []
    panic = next((l for l in lines if l.startswith("PANIC")), None)
    if panic:
        problems.append(f"panic: {panic.strip()[:200]}")
    mems = [_kv(l) for l in lines if l.startswith("MEM ")]
    stacks = [_kv(l) for l in lines if l.startswith("STACKS ")]
    tail = [l for l in lines if l.startswith(("MEM ", "STACKS "))][-2:]
    if len(tail) < 2 or not tail[0].startswith("STACKS ") or not tail[1].startswith("MEM "):
        problems.append("no final STACKS and MEM lines")
        return problems
    base, final, st = mems[0], mems[-1], stacks[-1]
    allowed = SLACK_KIB + st.get("pt_kib", 0) + st.get("reserve_kib", 0)
    lost = base["free_kib"] - final["free_kib"]
    if lost > allowed:
        problems.append(
            f"free memory not back at baseline: {base['free_kib']} KiB at first, {final['free_kib']} KiB "
            f"after kill all ({lost} KiB short, {allowed} KiB allowed)"
        )
    return problems


def density(lines: list[str]) -> list[str]:
    """The density path as users take it (a shell case): a fixed round, `kill all`, then a
    dynamic round in the same boot; the dynamic round must create at least 3.5 times as
    many threads."""
    spawns = [_kv(l) for l in lines if l.startswith("SPAWN ")]
    if len(spawns) < 2:
        return ["fewer than two SPAWN lines"]
    fixed, dynamic = spawns[0]["created"], spawns[1]["created"]
    ratio = dynamic / max(1, fixed)
    print(f"density after a fixed round: {dynamic} / {fixed} = {ratio:.2f}")
    return [] if ratio >= 3.5 else [f"dynamic / fixed = {dynamic} / {fixed} = {ratio:.2f}, below 3.5"]


# What a default boot at -m 512M uses (MEM used_kib after boot, 3.3 MiB measured) plus the
# 4 MiB a kstack.max=64M boot may use beyond it.
BIG_MAX_USED_KIB = 3400 + 4096


def big_max(lines: list[str]) -> list[str]:
    """A `kstack.max=64M` boot: uses at most 4 MiB more than a default boot, and its `deep`
    thread grew past 60 MiB (its `ps` row)."""
    problems = []
    mems = [_kv(l) for l in lines if l.startswith("MEM ")]
    if not mems:
        return ["no MEM line"]
    if mems[0]["used_kib"] > BIG_MAX_USED_KIB:
        problems.append(f"boot uses {mems[0]['used_kib']} KiB, more than {BIG_MAX_USED_KIB}")
    rows = [l.split() for l in lines if re.match(r"^\s*\d+\s+deep\s", l)]
    if not rows or int(rows[0][5]) < 60 * 1024:
        problems.append(f"no deep thread with 60 MiB mapped: {rows[:1]}")
    return problems


def boot(kernel: Path, mem: str, smp: int, cmdline: str, timeout: float) -> tuple[int | None, list[str]]:
    cmd = [QEMU, "-M", "virt", "-cpu", "cortex-a72", "-smp", str(smp), "-m", mem, "-nographic",
           "-semihosting", "-kernel", str(kernel), "-append", cmdline]
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode(errors="replace").splitlines()
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace").splitlines()
        return None, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("FUZZ_RUNS", "100")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")))
    ap.add_argument("--length", type=int, default=10, help="random commands per run")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--kernel", type=Path, default=KERNEL)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    runs = sequences(args.runs, args.seed, args.length)

    def one(i: int) -> tuple[int, bool, list[str], list[str]]:
        mem, smp, extra, init = runs[i]
        status, lines = boot(args.kernel, mem, smp, bootargs(extra, init), args.timeout)
        problems = check(lines)
        if status is None:
            problems.append(f"timed out after {args.timeout:g}s")
        elif status != 0:
            problems.append(f"exit status {status}")
        panicked = any(l.startswith("PANIC") for l in lines)
        return i, panicked, problems, lines

    panics = failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for i, panicked, problems, lines in pool.map(one, range(len(runs))):
            mem, smp, extra, init = runs[i]
            panics += panicked
            if problems:
                failed += 1
                print(f"FAIL run {i} (-m {mem} -smp {smp} -append '{bootargs(extra, init)}'): {'; '.join(problems)}")
                if args.verbose:
                    for l in lines[-30:]:
                        print(f"    | {l}")
            elif args.verbose:
                print(f"ok   run {i} (-m {mem} -smp {smp} {extra})")
    print(f"FUZZ runs={len(runs)} panics={panics} failed={failed} seed={args.seed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
