#!/usr/bin/env python3
"""Runs dynstack's benchmarks on QEMU virt and writes them, with how they were made, to a file.

`make bench` calls it after building the release kernel, then draws the chart with
scripts/plot_memory.py. Three boots, each through scripts/qemu-run.sh:

1. `bench`: every benchmark, on 8 CPUs under `-icount shift=0`. QEMU then counts one
   instruction as one nanosecond of virtual time, so the figures repeat from run to run; it
   also runs every CPU round robin on one host thread, so `scale` (`mode=icount`) gives growth
   faults per 10^9 instructions with 1, 2, 4 and 8 CPUs: serialisation costs instructions,
   whatever the host.
2. `bench scale`: the growth-fault rate per second with 1, 2 and 4 CPUs faulting at once,
   without icount, so each virtual CPU has its own host thread (`mode=wall`). These figures
   depend on the host and mean something only with at least 4 free host cores: its core
   count and load at the time are recorded next to them.
3. `million`: the brief's "millions of threads" goal, one million `idle` threads alive at once
   with `-m 6G` (`spawn 1000000 idle; settle; stacks; mem`, then `trim` (which parks them
   all), `stacks; mem`, and `kill all; stacks; mem`), skipped with a note when the host
   has too little free memory.

The output file holds a header (date, git commit, QEMU version, host), then one section per
boot: the QEMU options, the kernel command line, the wall time and the kernel's result lines
(`BENCH ...` and the summary lines). Exit status: 0 when every boot worked and every expected
line is there, 1 otherwise (the file is still written, with what went wrong), 2 for bad usage.

Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QEMU = os.environ.get("QEMU", "qemu-system-aarch64")

# Benchmarks the first boot must print, and the second.
DETERMINISTIC = ["create", "fault", "updown", "switch", "density", "park", "memory", "scale"]
SCALE = ["scale"]
# Kernel lines worth keeping: results, the bench header, notes about skipped sizes, and
# anything that went wrong.
KEEP = re.compile(
    r"^(BENCH |SPAWN |SETTLE |STACKS |MEM |CPUS |TRIM |KILL |benchmarks, |bench: |error: |PANIC|OVERFLOW |OOM )"
)
MILLION_THREADS = 1_000_000
MILLION_MEM = "6G"
MILLION_HOST_KIB = 8 * 1024 * 1024  # free host memory needed to try it


@dataclass
class Boot:
    """One QEMU boot of the kernel and what it printed."""

    title: str
    about: str
    smp: int
    mem: str
    icount: bool
    bootargs: str
    timeout: int
    expect: list[str] = field(default_factory=list)
    # BENCH lines of this boot left out of the results, with why.
    drop: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    status: int | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def qemu_options(self, cpu: str) -> str:
        opts = f"-M virt -cpu {cpu} -smp {self.smp} -m {self.mem} -nographic -semihosting"
        return opts + (" -icount shift=0" if self.icount else "")


def run_boot(boot: Boot, kernel: Path, cpu: str) -> None:
    """Boots `kernel`, echoing its console here as it goes, and checks the result."""
    env = dict(os.environ)
    env.update(
        SMP=str(boot.smp),
        MEM=boot.mem,
        CPU=cpu,
        BOOTARGS=boot.bootargs,
        QEMUFLAGS="-icount shift=0" if boot.icount else "",
        TIMEOUT=str(boot.timeout),
        MACHINE_OPTS="",
    )
    print(f"bench.py: {boot.title}: {boot.qemu_options(cpu)} -append {shlex.quote(boot.bootargs)}",
          flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "qemu-run.sh"), str(kernel)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\r\n")
        print(f"  {line}", flush=True)
        m = re.match(r"^BENCH name=(\S+)", line)
        if m and m.group(1) in boot.drop:
            continue
        if KEEP.match(line):
            boot.lines.append(line)
    boot.status = proc.wait()
    boot.seconds = time.monotonic() - start
    if boot.status == 124:
        boot.problems.append(f"timed out after {boot.timeout} s")
    elif boot.status != 0:
        boot.problems.append(f"QEMU exited with status {boot.status}")
    for line in boot.lines:
        if line.startswith(("PANIC", "error: ")):
            boot.problems.append(f"the kernel printed: {line}")
    names = [m.group(1) for m in (re.match(r"^BENCH name=(\S+)", l) for l in boot.lines) if m]
    for name in boot.expect:
        if name not in names:
            boot.problems.append(f"no BENCH name={name} line")


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def host_free_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def header(cpu: str) -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    if dirty:
        commit += " (with uncommitted changes)"
    try:
        qemu = subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                              check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        qemu = "unknown"
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "unknown"
    return [
        "# dynstack benchmark results: written by `make bench` (scripts/bench.py), not by hand.",
        f"date: {now}",
        f"commit: {commit}",
        f"qemu: {qemu}",
        f"machine: QEMU virt (-M virt), cpu {cpu}; SMP and memory per boot below",
        f"host: {platform.machine()}, {os.cpu_count()} CPUs, load average {load} at the start",
    ]


def section(boot: Boot, cpu: str) -> list[str]:
    out = [
        "",
        f"## {boot.title}",
        f"# {boot.about}",
        f"qemu options: {boot.qemu_options(cpu)}",
        f"kernel command line: {boot.bootargs}",
        f"smp: {boot.smp}",
        f"memory: {boot.mem}",
        f"icount: {'shift=0' if boot.icount else 'off'}",
        f"wall time: {boot.seconds:.1f} s",
    ]
    if boot.status is None:
        out.append("skipped: " + "; ".join(boot.problems))
        return out
    out.extend(f"problem: {p}" for p in boot.problems)
    out.extend(f"# BENCH name={name} of this boot is left out: {why}"
               for name, why in boot.drop.items())
    out.extend(boot.lines)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", type=Path, required=True, help="the kernel ELF to boot")
    ap.add_argument("--out", type=Path, required=True, help="results file to write")
    ap.add_argument("--cpu", default="cortex-a72", help="QEMU -cpu (default cortex-a72)")
    ap.add_argument("--mem", default="2G",
                    help="QEMU -m for the first two boots (default 2G: memory at 100,000 threads "
                         "needs about 1.7 GiB; a smaller machine skips the larger sizes)")
    ap.add_argument("--no-million", action="store_true",
                    help="skip the boot with one million threads")
    args = ap.parse_args()
    if not args.kernel.is_file():
        print(f"bench.py: no kernel at {args.kernel} (make build first)", file=sys.stderr)
        return 2

    boots = [
        Boot("bench", "every benchmark; deterministic: one instruction is one ns, and scale "
             "counts the instructions of all CPUs (mode=icount)",
             smp=8, mem=args.mem, icount=True, bootargs='init="bench; poweroff"', timeout=600,
             expect=DETERMINISTIC),
        Boot("bench scale", "growth faults per second with 1, 2 and 4 CPUs faulting at once, "
             "each CPU on its own host thread (mode=wall: needs at least 4 free host cores; "
             "depends on the host's cores and load)",
             smp=4, mem=args.mem, icount=False, bootargs='init="bench scale; poweroff"',
             timeout=180, expect=SCALE),
        Boot("million", f"{MILLION_THREADS} idle threads alive at once (dynamic stacks)",
             smp=4, mem=MILLION_MEM, icount=False,
             bootargs=f'init="mem; spawn {MILLION_THREADS} idle; settle; stacks; mem; trim; '
                      'stacks; mem; kill all; stacks; mem; poweroff"',
             timeout=900),
    ]
    started = time.monotonic()
    for boot in boots:
        if boot.title == "million":
            if args.no_million:
                boot.problems.append("--no-million")
                continue
            free = host_free_kib()
            if free < MILLION_HOST_KIB:
                boot.problems.append(
                    f"the host has {free // 1024} MiB available, {MILLION_HOST_KIB // 1024} needed")
                continue
        run_boot(boot, args.kernel, args.cpu)
        if boot.title == "million" and not boot.problems:
            spawned = [l for l in boot.lines if l.startswith("SPAWN ")]
            if not spawned or f"created={MILLION_THREADS} " not in spawned[0] + " ":
                boot.problems.append(f"not all {MILLION_THREADS} threads were created")

    text = header(args.cpu)
    for boot in boots:
        text.extend(section(boot, args.cpu))
    text.append("")
    text.append(f"# total wall time: {time.monotonic() - started:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text) + "\n")
    problems = [f"{b.title}: {p}" for b in boots if b.status is not None for p in b.problems]
    print(f"bench.py: wrote {args.out} ({time.monotonic() - started:.0f} s)")
    for p in problems:
        print(f"bench.py: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
