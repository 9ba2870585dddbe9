#!/usr/bin/env python3
"""Adds function names to the addresses in a dynstack report (PANIC, FAULT, OVERFLOW
backtraces, elr=...), using llvm-nm from rustup's llvm-tools on the kernel ELF.

    make run ... 2>&1 | python3 scripts/symbolize.py [path/to/kernel-elf]

Reads the console log on standard input and prints it with `<function+offset>` after every
kernel-image address. Standard library only.
"""
import bisect
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ELF = ROOT / "target/aarch64-unknown-none-softfloat/release/dynstack"
ADDRESS = re.compile(r"0x(ffffffff8[0-9a-f]{7})")


def llvm_nm() -> str:
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    host = re.search(r"host: (\S+)", subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout)
    return str(Path(sysroot) / "lib/rustlib" / host.group(1) / "bin/llvm-nm")


ESCAPES = {"$LT$": "<", "$GT$": ">", "$u20$": " ", "$u7b$": "{", "$u7d$": "}", "$C$": ",", "$RF$": "&", "$BP$": "*"}


def readable(name: str) -> str:
    """What llvm-nm leaves of Rust's legacy mangling: escapes undone, the hash dropped."""
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    for escape, text in ESCAPES.items():
        name = name.replace(escape, text)
    return name.replace("..", "::")


def symbols(elf: Path) -> tuple[list[int], list[str]]:
    out = subprocess.run([llvm_nm(), "-n", "-C", "--defined-only", str(elf)], capture_output=True, text=True, check=True).stdout
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
