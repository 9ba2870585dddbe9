#!/usr/bin/env python3
"""Fills a linked dynstack kernel's `.ksyms` section with its symbol table, so that the
kernel's own reports (PANIC, FAULT, OVERFLOW backtraces) name functions.

    python3 scripts/ksyms.py ELF [-o OUT]

The linker script (linker.ld) reserves `.ksyms`, a fixed-size read-only section between
`__ksyms_start` and `__ksyms_end`, zero after the link. This script reads the ELF's text
symbols with `llvm-nm` (rustup's llvm-tools, as the Makefile's llvm-objcopy), writes the table
src/symbols/mod.rs reads, and puts it into the section with `llvm-objcopy --update-section`,
padded to the section's size: the size does not change, so no address moves and the kernel
need not be linked twice. Writes OUT (default: ELF itself, in place); running it again on a
filled kernel gives the same bytes. Fails, changing nothing, when the table does not fit.

The table (version 1, little-endian; src/symbols/mod.rs is the reader and says the same):

    0   magic      8 bytes  b"DKSYMTAB"
    8   version    u32      1
    12  count      u32      number of entries
    16  base       u64      first address the table covers (__text_start)
    24  end        u64      one past the last (__text_end)
    32  names_len  u32      bytes of the name area
    36  reserved   u32      0
    40  entries    count x (offset u32: address - base, name u32: where its name starts in
                   the name area), sorted by offset, no two alike
    ..  names      names_len bytes: each name UTF-8, ended by a NUL byte

Names are demangled without the hash (`dynstack::shell::run` rather than
`_ZN8dynstack5shell3run17h0123456789abcdefE`). Standard library only.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

MAGIC = b"DKSYMTAB"
VERSION = 1
HEADER = struct.Struct("<8sIIQQII")
ENTRY = struct.Struct("<II")
SECTION = ".ksyms"
# A name longer than this is cut (with "..."), so that one huge generic instantiation cannot
# crowd out the others or a console line.
NAME_MAX = 200
# The linker script's markers: never the name of a function.
MARKER = re.compile(r"^__\w+_(start|end)$")


class KsymsError(Exception):
    """The table could not be made or put in (the message says why)."""


@functools.lru_cache(maxsize=None)
def llvm_tool(name: str) -> str:
    """The llvm-tools binary `name` of the active Rust toolchain (rustup component llvm-tools)."""
    root = Path(__file__).resolve().parent.parent  # rust-toolchain.toml picks the toolchain
    run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, check=True)
    sysroot = run(["rustc", "--print", "sysroot"]).stdout.strip()
    host = re.search(r"host: (\S+)", run(["rustc", "-vV"]).stdout)
    tool = Path(sysroot) / "lib" / "rustlib" / host.group(1) / "bin" / name
    if not tool.exists():
        raise KsymsError(f"{tool} is missing: rustup component add llvm-tools (make setup does)")
    return str(tool)


ESCAPES = {"$LT$": "<", "$GT$": ">", "$C$": ",", "$RF$": "&", "$BP$": "*", "$SP$": "@", "$LP$": "(", "$RP$": ")"}


def readable(name: str) -> str:
    """What llvm-nm -C leaves of a Rust symbol, made readable: Rust's legacy mangling has its
    escapes undone (`$LT$` -> `<`, `$u20$` -> ` `, `..` -> `::`) and its hash dropped, LLVM's
    `.llvm.N` suffixes go (v0 names come out of llvm-nm readable already)."""
    name = re.sub(r" \(\.llvm\.\d+\)$", "", name)
    name = re.sub(r"\.llvm\.\d+$", "", name)
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    if "$" in name:
        name = re.sub(r"(^|::)_\$", r"\1$", name)
        for escape, text in ESCAPES.items():
            name = name.replace(escape, text)
        name = re.sub(r"\$u([0-9a-f]{1,6})\$", lambda m: chr(int(m.group(1), 16)), name)
        name = name.replace("..", "::")
    return name


def text_symbols(nm_output: str) -> tuple[int, int, list[tuple[int, str]], tuple[int, int] | None]:
    """From `llvm-nm -n -C --defined-only` output: the text range (__text_start, __text_end),
    one (address, name) per function address in it (sorted; at an address with several names,
    such as identical functions folded into one, the first name in llvm-nm's order), and the
    .ksyms range (__ksyms_start, __ksyms_end) if the kernel reserves one."""
    marks: dict[str, int] = {}
    symbols: list[tuple[int, str]] = []
    for line in nm_output.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        kind, name = parts[1], parts[2]
        if MARKER.match(name):
            marks[name] = addr
        elif kind in ("t", "T"):
            symbols.append((addr, name))
    if "__text_start" not in marks or "__text_end" not in marks:
        raise KsymsError("no __text_start/__text_end in the ELF's symbols: not a dynstack kernel?")
    start, end = marks["__text_start"], marks["__text_end"]
    chosen: dict[int, str] = {}
    for addr, name in symbols:
        if start <= addr < end and addr not in chosen:
            chosen[addr] = name
    ksyms = None
    if "__ksyms_start" in marks and "__ksyms_end" in marks:
        ksyms = (marks["__ksyms_start"], marks["__ksyms_end"])
    return start, end, sorted(chosen.items()), ksyms


def build_table(base: int, end: int, symbols: list[tuple[int, str]]) -> bytes:
    """The table (the layout in this file's docstring) for `symbols` in [base, end)."""
    if not base < end or end - base > 0xFFFF_FFFF:
        raise ValueError(f"text range {base:#x}..{end:#x} does not fit 32-bit offsets")
    entries = bytearray()
    names = bytearray()
    for addr, name in symbols:
        text = readable(name)
        if len(text) > NAME_MAX:
            text = text[: NAME_MAX - 3] + "..."
        data = text.encode("utf-8", "replace").replace(b"\0", b"?")
        entries += ENTRY.pack(addr - base, len(names))
        names += data + b"\0"
    header = HEADER.pack(MAGIC, VERSION, len(symbols), base, end, len(names), 0)
    return bytes(header + entries + names)


def fill(elf: Path, out: Path, quiet: bool = False) -> int:
    """Writes `elf` with its filled .ksyms section to `out` (which may be `elf`); returns the
    table's size. Raises KsymsError, leaving `out` as it was, when it cannot."""
    nm = subprocess.run(
        [llvm_tool("llvm-nm"), "-n", "-C", "--defined-only", str(elf)], capture_output=True, text=True
    )
    if nm.returncode != 0:
        raise KsymsError(f"llvm-nm {elf} failed: {nm.stderr.strip()}")
    base, end, symbols, ksyms = text_symbols(nm.stdout)
    if ksyms is None:
        raise KsymsError(f"{elf} has no {SECTION} section (__ksyms_start/__ksyms_end): linker.ld reserves it")
    size = ksyms[1] - ksyms[0]
    table = build_table(base, end, symbols)
    if len(table) > size:
        raise KsymsError(
            f"the symbol table of {elf} takes {len(table)} bytes ({len(symbols)} symbols) but "
            f"{SECTION} has {size}: grow KSYMS_SIZE in linker.ld"
        )
    with tempfile.NamedTemporaryFile(prefix="ksyms-", suffix=".bin", delete=False) as f:
        f.write(table + bytes(size - len(table)))
        blob = f.name
    try:
        cmd = [llvm_tool("llvm-objcopy"), f"--update-section={SECTION}={blob}", str(elf), str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise KsymsError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    finally:
        os.unlink(blob)
    if not quiet:
        print(f"ksyms: {len(symbols)} symbols, {len(table)} of {size} bytes of {SECTION}, in {out}")
    return len(table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("elf", type=Path, help="the linked kernel (or test kernel) ELF")
    ap.add_argument("-o", "--out", type=Path, help="write the filled kernel here (default: in place)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print nothing unless it fails")
    args = ap.parse_args()
    if not args.elf.exists():
        print(f"ksyms: no ELF at {args.elf}", file=sys.stderr)
        return 2
    try:
        fill(args.elf, args.out or args.elf, args.quiet)
    except (KsymsError, OSError, subprocess.CalledProcessError) as e:
        print(f"ksyms: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
