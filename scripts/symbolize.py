#!/usr/bin/env python3
"""Adds function names to the addresses in a dynstack report (PANIC, FAULT, OVERFLOW
backtraces, elr=...), using llvm-nm from rustup's llvm-tools on the kernel ELF. The kernels
the Makefile and scripts/run_tests.py build name their backtrace frames themselves (their
symbol table, scripts/ksyms.py); this is for the other addresses in a report and for
kernels booted without their table filled (`cargo run`, `cargo test`).

    make run ... 2>&1 | python3 scripts/symbolize.py [path/to/kernel-elf]

Reads the console log on standard input and prints it with `<function+offset>` after every
kernel-image address. Standard library only.
"""
import bisect
import re
import subprocess
import sys
from pathlib import Path

from ksyms import llvm_tool, readable  # scripts/ksyms.py: the same names the kernel's table holds

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ELF = ROOT / "target/aarch64-unknown-none-softfloat/release/dynstack"
ADDRESS = re.compile(r"0x(ffffffff8[0-9a-f]{7})")


def symbols(elf: Path) -> tuple[list[int], list[str]]:
    out = subprocess.run([llvm_tool("llvm-nm"), "-n", "-C", "--defined-only", str(elf)], capture_output=True, text=True, check=True).stdout
    addrs, names = [], []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1].lower() == "t":
            addrs.append(int(parts[0], 16))
            names.append(readable(parts[2]))
    return addrs, names


def main() -> int:
    elf = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ELF
    if not elf.exists():
        print(f"symbolize: no kernel ELF at {elf} (build it, or name it)", file=sys.stderr)
        return 2
    addrs, names = symbols(elf)

    def name(match: re.Match) -> str:
        addr = int(match.group(1), 16)
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0:
            return match.group(0)
        return f"{match.group(0)} <{names[i]}+{addr - addrs[i]:#x}>"

    for line in sys.stdin:
        sys.stdout.write(ADDRESS.sub(name, line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
