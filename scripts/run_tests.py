#!/usr/bin/env python3
"""Runs every dynstack test and prints one line per case, then `N passed, N failed`.

Three kinds of case, in this order:

1. Host unit tests: `cargo test --lib --target <host triple>`; each libtest test is a case,
   named `host::<path>`.
2. Test kernels: each `[[test]]` target of Cargo.toml (tests/<area>.rs or tests/<area>/main.rs, harness = false) is
   booted in QEMU once per configuration that tests/qemu.toml lists for it. Every line
   `TEST <name> ... ok` or `TEST <name> ... FAILED: <reason>` it prints is a case named
   `<kernel>::<name> [<config>]`. The boot itself fails too (with the last lines of its output)
   when it times out, panics (`PANIC`), exits with a status its `TESTS passed= failed=` line
   does not explain, or reports no case at all.
3. Shell cases: the main kernel booted with a command line (`-append`) and, optionally,
   bytes piped to its serial console; each is one case named `shell::<name>`. Its output
   must match the `expect` regexes in order, match no `reject` regex, and QEMU must exit
   with the `exit` status.

QEMU runs with `-M virt -cpu cortex-a72 -smp 4 -m 512M -nographic -semihosting -kernel <elf>`
and the case's own options: `-smp`, `-m` and `-cpu` given there replace the base ones,
`-M virt,...` merges with the base machine, and another machine type (`-M raspi3b`) drops
the base machine, CPU, SMP and memory options. Standard input is /dev/null unless the case
pipes bytes. Each boot has a timeout; on expiry its process group is killed.

A case's `board` (default `virt`) says which build of the kernel it boots and on which
machine: a Raspberry Pi board (`rpi3`, `rpi4`) is built with its cargo feature in its own
target directory (target/<board>) and booted as the firmware boots it, the raw image on
QEMU `raspi3b`/`raspi4b` with the board's real device tree (`-dtb`, which is also how QEMU
passes `-append`), base options `-M <machine> -dtb <tree> -nographic -semihosting -kernel
<image>`. A board whose QEMU machine is missing, or needs a newer QEMU (`raspi4b`: 9.0), is
skipped with a note. `--board` runs one board's QEMU cases only.`virt-check` is QEMU virt with the
kernel built for `kstack.strategy=check` (`-Z instrument-mcount`, RUSTC_BOOTSTRAP=1, the
`kstack-check` feature, in target/check).

Every kernel is booted from a copy of its ELF (`<elf>.ksyms.elf`, beside it) whose symbol
table scripts/ksyms.py has filled, so that PANIC, FAULT and OVERFLOW backtraces name
functions; a raw image is made from that copy.

The production kernel is also checked for test hooks: the test kernels are built with the
cargo feature `test-hooks`, the kernel without it, and its symbols must not name them.

`--repeat N` runs the whole selection N times (built once; host tests included) and ends
with every case that failed in any run and in which runs: the gate against flaky cases.

Python 3.11 standard library only. `--help` lists the options; exit status 0 when at least
one case ran and none failed, 1 otherwise, 2 for a bad manifest or bad usage.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    sys.exit("run_tests.py: needs Python 3.11 or newer (for tomllib)")

ROOT = Path(__file__).resolve().parent.parent
TARGET = "aarch64-unknown-none-softfloat"
KERNEL_BIN = "dynstack"
QEMU = os.environ.get("QEMU", "qemu-system-aarch64")
BASE_MACHINE = "virt"
DEFAULT_BOARD = "virt"
BASE_OPTIONS = {"-cpu": "cortex-a72", "-smp": "4", "-m": "512M"}
TAIL_LINES = 30
DEFAULT_TIMEOUT = 60
MAX_OUTPUT = 32 << 20  # bytes of a boot's output kept (the last ones)

TEST_LINE = re.compile(r"^TEST (.+?) \.\.\. (ok|FAILED)(?::\s*(.*))?$")
TESTS_LINE = re.compile(r"^TESTS passed=(\d+) failed=(\d+)")
PANIC_LINE = re.compile(r"^PANIC")
HOST_TEST_LINE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)")


class ManifestError(Exception):
    pass


@dataclass(frozen=True)
class Board:
    """A board of src/board/: how to build for it and which QEMU machine boots it."""

    name: str
    cargo: tuple[str, ...]  # extra cargo arguments: the board feature and target directory
    machine: str  # QEMU -M
    dtb: str  # the device tree handed to QEMU (-dtb); "" for none
    image: bool  # boots the raw image (as the Pi firmware does) rather than the ELF
    min_qemu: tuple[int, int]  # oldest QEMU with the machine
    env: tuple[tuple[str, str], ...] = ()  # environment for cargo


# Cargo features of the test kernels (and only of them): the test hooks (Cargo.toml).
TEST_FEATURES = "test-hooks"

BOARDS = {
    "virt": Board("virt", (), BASE_MACHINE, "", False, (0, 0)),
    "rpi3": Board(
        "rpi3",
        ("--features", "board-rpi3", "--target-dir", "target/rpi3"),
        "raspi3b",
        "data/dtb/bcm2837-rpi-3-b.dtb",
        True,
        (0, 0),
    ),
    "rpi4": Board(
        "rpi4",
        ("--features", "board-rpi4", "--target-dir", "target/rpi4"),
        "raspi4b",
        "data/dtb/bcm2711-rpi-4-b.dtb",
        True,
        (9, 0),
    ),
    # Not a board: QEMU virt with the kernel built for kstack.strategy=check, a function-entry
    # hook in every function (-Z instrument-mcount, which the stable toolchain takes with
    # RUSTC_BOOTSTRAP=1), in its own target directory (the Makefile's build-check).
    "virt-check": Board(
        "virt-check",
        (
            "--features",
            "kstack-check",
            "--target-dir",
            "target/check",
            "--config",
            'target.aarch64-unknown-none-softfloat.rustflags=["-Z","instrument-mcount"]',
        ),
        BASE_MACHINE,
        "",
        False,
        (0, 0),
        (("RUSTC_BOOTSTRAP", "1"),),
    ),
}


# --------------------------------------------------------------------------------------------
# Reporting


@dataclass
class Result:
    name: str
    ok: bool
    reason: str = ""
    details: list[str] = field(default_factory=list)


class Report:
    """Prints results as they come (from several threads) and counts them."""

    def __init__(self, runs: int = 1) -> None:
        self.lock = threading.Lock()
        self.passed = 0
        self.failed: list[str] = []
        self.runs = runs
        self.run = 1  # which of the `runs` runs of the suite is going on
        self.failed_in: dict[str, list[int]] = {}  # case -> the runs it failed in

    def start_run(self, run: int) -> None:
        with self.lock:
            self.run = run
            if self.runs > 1:
                print(f"\n=== run {run} of {self.runs} ===", flush=True)

    def add(self, results: list[Result], log: list[str] | None = None) -> None:
        with self.lock:
            tag = f"[run {self.run}] " if self.runs > 1 else ""
            for r in results:
                if r.ok:
                    self.passed += 1
                    print(f"PASS {tag}{r.name}")
                else:
                    self.failed.append(r.name)
                    self.failed_in.setdefault(r.name, []).append(self.run)
                    print(f"FAIL {tag}{r.name}: {r.reason}" if r.reason else f"FAIL {tag}{r.name}")
                for line in r.details:
                    print(f"    {line}")
            if log:
                for line in log:
                    print(f"    {line}")
            sys.stdout.flush()

    def note(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)

    def finish(self) -> int:
        with self.lock:
            if self.runs > 1:
                if self.failed_in:
                    print(f"\ncases that failed in any of the {self.runs} runs ({len(self.failed_in)}):")
                    for name, runs in self.failed_in.items():
                        print(f"  {name}  (run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))})")
                print(f"{self.runs} runs: {self.passed} passed, {len(self.failed)} failed", flush=True)
            else:
                if self.failed:
                    print(f"\nfailed ({len(self.failed)}):")
                    for name in self.failed:
                        print(f"  {name}")
                print(f"{self.passed} passed, {len(self.failed)} failed", flush=True)
            return 1 if self.failed or not self.passed else 0


def tail(lines: list[str], n: int = TAIL_LINES) -> list[str]:
    shown = lines[-n:]
    head = [f"--- last {len(shown)} of {len(lines)} output lines ---"] if lines else ["--- no output ---"]
    return head + [f"| {line}" for line in shown]


# --------------------------------------------------------------------------------------------
# Manifest


@dataclass
class KernelSpec:
    name: str
    configs: list[str]
    timeout: float
    bootargs: str
    image: bool
    board: str = DEFAULT_BOARD
    dtb: str | None = None  # None: the board's


@dataclass
class ShellSpec:
    name: str
    qemu: str
    bootargs: str
    stdin: bytes | None
    expect: list[re.Pattern[str]]
    reject: list[re.Pattern[str]]
    exit: int
    timeout: float
    image: bool
    board: str = DEFAULT_BOARD
    dtb: str | None = None  # None: the board's
    kernel: str | None = None  # a test kernel (tests/<name>.rs) instead of the main kernel
    semihosting: bool = True  # False: QEMU without -semihosting, as on a board without a debugger
    last: re.Pattern[str] | None = None  # the last non-empty output line must match
    check: object = None  # a function of the output lines returning problems (the fuzzer's)


def _check_keys(kind: str, entry: dict, allowed: set[str]) -> str:
    name = entry.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ManifestError(f"[[{kind}]] needs a name of letters, digits, '_', '.', '-': {entry!r}")
    unknown = set(entry) - allowed
    if unknown:
        raise ManifestError(f"[[{kind}]] {name}: unknown key(s) {', '.join(sorted(unknown))}")
    return name


def _typed(kind: str, name: str, entry: dict, key: str, typ: type | tuple, default):
    value = entry.get(key, default)
    if typ is float:
        typ = (int, float)
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ManifestError(f"[[{kind}]] {name}: '{key}' has the wrong type: {value!r}")
    return value


def _regexes(kind: str, name: str, key: str, patterns) -> list[re.Pattern[str]]:
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ManifestError(f"[[{kind}]] {name}: '{key}' must be a list of strings")
    try:
        return [re.compile(p) for p in patterns]
    except re.error as e:
        raise ManifestError(f"[[{kind}]] {name}: bad regex in '{key}': {e}") from None


def _board(kind: str, name: str, entry: dict) -> tuple[str, str | None]:
    board = _typed(kind, name, entry, "board", str, DEFAULT_BOARD)
    if board not in BOARDS:
        raise ManifestError(f"[[{kind}]] {name}: unknown board {board!r} (boards: {', '.join(BOARDS)})")
    dtb = entry.get("dtb")
    if dtb is not None and not isinstance(dtb, str):
        raise ManifestError(f"[[{kind}]] {name}: 'dtb' must be a string (a path, or \"\" for none)")
    return board, dtb


def load_manifest(path: Path) -> tuple[list[KernelSpec], list[ShellSpec]]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ManifestError(f"{path}: {e}") from None
    unknown = set(data) - {"kernel", "shell", "fuzz"}
    if unknown:
        raise ManifestError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}")
    kernels: list[KernelSpec] = []
    shells: list[ShellSpec] = []
    seen: set[tuple[str, str]] = set()
    for entry in data.get("kernel", []):
        name = _check_keys("kernel", entry, {"name", "configs", "timeout", "bootargs", "image", "board", "dtb"})
        board, dtb = _board("kernel", name, entry)
        configs = entry.get("configs", [""])
        if not isinstance(configs, list) or not configs or not all(isinstance(c, str) for c in configs):
            raise ManifestError(f"[[kernel]] {name}: 'configs' must be a non-empty list of strings")
        kernels.append(
            KernelSpec(
                name=name,
                configs=configs,
                timeout=_typed("kernel", name, entry, "timeout", float, DEFAULT_TIMEOUT),
                bootargs=_typed("kernel", name, entry, "bootargs", str, ""),
                image=_typed("kernel", name, entry, "image", bool, False),
                board=board,
                dtb=dtb,
            )
        )
        if ("kernel", name, board) in seen:
            raise ManifestError(f"[[kernel]] {name} is listed twice for board {board}")
        seen.add(("kernel", name, board))
    for entry in data.get("shell", []):
        keys = {"name", "qemu", "bootargs", "stdin", "expect", "reject", "exit", "timeout", "image", "kernel"}
        keys |= {"board", "dtb", "semihosting", "last", "check"}
        name = _check_keys("shell", entry, keys)
        board, dtb = _board("shell", name, entry)
        stdin = _typed("shell", name, entry, "stdin", str, "")
        shells.append(
            ShellSpec(
                name=name,
                qemu=_typed("shell", name, entry, "qemu", str, ""),
                bootargs=_typed("shell", name, entry, "bootargs", str, ""),
                stdin=stdin.encode() if stdin else None,
                expect=_regexes("shell", name, "expect", entry.get("expect", [])),
                reject=_regexes("shell", name, "reject", entry.get("reject", ["^PANIC"])),
                exit=_typed("shell", name, entry, "exit", int, 0),
                timeout=_typed("shell", name, entry, "timeout", float, DEFAULT_TIMEOUT),
                image=_typed("shell", name, entry, "image", bool, False),
                board=board,
                dtb=dtb,
                kernel=_typed("shell", name, entry, "kernel", str, None) if "kernel" in entry else None,
                semihosting=_typed("shell", name, entry, "semihosting", bool, True),
                last=_regexes("shell", name, "last", [entry["last"]])[0] if "last" in entry else None,
                check=_fuzz_check(name, entry["check"]) if "check" in entry else None,
            )
        )
        if ("shell", name) in seen:
            raise ManifestError(f"[[shell]] {name} is listed twice")
        seen.add(("shell", name))
    for spec in kernels + shells:
        for config in spec.configs if isinstance(spec, KernelSpec) else [spec.qemu]:
            try:
                shlex.split(config)
            except ValueError as e:
                raise ManifestError(f"{spec.name}: bad QEMU options {config!r}: {e}") from None
    shells += fuzz_shells(data.get("fuzz"))
    return kernels, shells


def _fuzz_module():
    sys.path.insert(0, str(ROOT / "scripts"))
    import fuzz  # noqa: E402 (scripts/fuzz.py, beside this file)

    return fuzz


def _fuzz_check(name: str, check: str):
    """A shell case's `check`: the name of a function in scripts/fuzz.py that takes the
    output lines and returns a list of problems."""
    f = getattr(_fuzz_module(), str(check), None)
    if not callable(f):
        raise ManifestError(f"[[shell]] {name}: check {check!r} is not a function of scripts/fuzz.py")
    return f


def fuzz_shells(table: dict | None) -> list[ShellSpec]:
    """The `[fuzz]` table's runs of scripts/fuzz.py, as shell cases judged by its `check`."""
    if not table:
        return []
    fuzz = _fuzz_module()
    runs, seed, length = int(table["runs"]), int(table["seed"]), int(table.get("length", 6))
    timeout = float(table.get("timeout", 90))
    return [
        ShellSpec(
            name=f"fuzz-{seed}-{i} [-m {mem} -smp {smp}{' ' + extra if extra else ''}]",
            qemu=f"-m {mem} -smp {smp}",
            bootargs=fuzz.bootargs(extra, init),
            stdin=None,
            expect=[],
            reject=[re.compile("^PANIC")],
            exit=0,
            timeout=timeout,
            image=False,
            check=fuzz.check,
        )
        for i, (mem, smp, extra, init) in enumerate(fuzz.sequences(runs, seed, length))
    ]


# --------------------------------------------------------------------------------------------
# Building


def host_triple() -> str:
    out = subprocess.run(["rustc", "-vV"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("host:"))


def test_targets() -> list[str]:
    """Names of the `[[test]]` targets (the test kernels) of the package in ROOT."""
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    meta = json.loads(out)
    manifest = str(ROOT / "Cargo.toml")
    return [
        t["name"]
        for p in meta["packages"]
        if p["manifest_path"] == manifest
        for t in p["targets"]
        if "test" in t["kind"]
    ]


def cargo_artifacts(args: list[str], env: tuple[tuple[str, str], ...] = ()) -> tuple[bool, dict[str, str]]:
    """Runs cargo with JSON messages (and `env` added to the environment); returns success
    and {target name: executable}. Compiler diagnostics go to the terminal (stderr) as cargo
    renders them."""
    cmd = ["cargo", *args, "--message-format=json-render-diagnostics"]
    print(f"$ {' '.join(f'{k}={v}' for k, v in env)}{' ' if env else ''}{shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, **dict(env)})
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            found[msg["target"]["name"]] = msg["executable"]
    return proc.returncode == 0, found


def _ksyms_module():
    sys.path.insert(0, str(ROOT / "scripts"))
    import ksyms  # noqa: E402 (scripts/ksyms.py, beside this file)

    return ksyms


def fill_symbols(elf: str) -> Path:
    """A copy of the ELF beside it (`<elf>.ksyms.elf`) with its symbol table filled
    (scripts/ksyms.py), so the kernel's reports name functions. Raises RuntimeError."""
    ksyms = _ksyms_module()
    out = Path(elf).with_name(Path(elf).name + ".ksyms.elf")
    try:
        ksyms.fill(Path(elf), out, quiet=True)
    except (ksyms.KsymsError, OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"could not fill the symbol table of {elf}: {e}") from None
    return out


def make_image(elf: str, out: Path, host: str) -> None:
    """A raw binary of the ELF (the same command as `make image`): the kernel starts with an
    arm64 Linux Image header, so QEMU boots it in Linux mode and passes the DTB in x0."""
    sysroot = subprocess.run(
        ["rustc", "--print", "sysroot"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    objcopy = Path(sysroot) / "lib" / "rustlib" / host / "bin" / "llvm-objcopy"
    subprocess.run([str(objcopy), "-O", "binary", elf, str(out)], cwd=ROOT, check=True)


# --------------------------------------------------------------------------------------------
# QEMU


# Names of the test hooks (Cargo feature test-hooks) as they appear in an ELF's symbols.
TEST_HOOK_SYMBOLS = (b"exhaust_exception_stack", b"inject_fault_in_growth_path", b"INJECT_FAULT", b"test_hooks")


def check_no_test_hooks(board: str, elf: str) -> Result | None:
    """The production kernel (built without the test-hooks feature) contains none of the test
    hooks: their names are absent from its symbols (release builds keep them: debug = true)."""
    name = "kernel has no test hooks" + ("" if board == DEFAULT_BOARD else f" [{board}]")
    try:
        data = Path(elf).read_bytes()
    except OSError as e:
        return Result(name, False, f"cannot read {elf}: {e}")
    if b"exception_dispatch" not in data:
        return Result(name, False, f"{elf} has no symbols to look at (exception_dispatch is missing)")
    found = [h.decode() for h in TEST_HOOK_SYMBOLS if h in data]
    if found:
        return Result(name, False, f"{elf} contains {', '.join(found)}")
    return Result(name, True)


def machine_type(value: str) -> str | None:
    """The machine type named in a -M/-machine value, if any ('virt,gic-version=3' -> 'virt')."""
    for part in value.split(","):
        if part.startswith("type="):
            return part[len("type=") :]
        if part and "=" not in part:
            return part
    return None


def qemu_command(
    kernel: str,
    options: str,
    bootargs: str,
    board: Board = BOARDS[DEFAULT_BOARD],
    dtb: str | None = None,
    semihosting: bool = True,
) -> list[str]:
    """The QEMU command line that boots `kernel` with a case's options on `board`'s machine,
    with the board's device tree or `dtb` ("" for none)."""
    extra = shlex.split(options)
    flags = [t[1:] if t.startswith("--") else t for t in extra]  # QEMU takes --smp as -smp
    other_machine = any(
        f in ("-M", "-machine") and i + 1 < len(extra) and machine_type(extra[i + 1]) not in (None, board.machine)
        for i, f in enumerate(flags)
    )
    cmd = [QEMU]
    if not other_machine:
        cmd += ["-M", board.machine]
        if board.machine == BASE_MACHINE:
            for opt, value in BASE_OPTIONS.items():
                if opt not in flags:
                    cmd += [opt, value]
    tree = board.dtb if dtb is None else dtb
    if tree:
        cmd += ["-dtb", tree]
    cmd += ["-nographic", *(["-semihosting"] if semihosting else []), "-kernel", kernel, *extra]
    if bootargs:
        cmd += ["-append", bootargs]
    return cmd


@dataclass
class Boot:
    command: list[str]
    status: int | None  # None: timed out
    lines: list[str]
    seconds: float


class Runner:
    """Runs QEMU processes, each in its own process group so that a timeout or an interrupt
    kills QEMU and anything it started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: set[int] = set()
        self.stopping = False

    def boot(self, command: list[str], stdin: bytes | None, timeout: float) -> Boot:
        start = time.monotonic()
        with tempfile.TemporaryFile() as out:
            with self.lock:
                if self.stopping:
                    raise KeyboardInterrupt
                proc = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self.live.add(proc.pid)
            try:
                proc.communicate(input=stdin, timeout=timeout)
                status: int | None = proc.returncode
            except subprocess.TimeoutExpired:
                self._kill(proc.pid)
                proc.wait()
                status = None
            finally:
                with self.lock:
                    self.live.discard(proc.pid)
            if self.stopping:  # killed by stop_all: nothing to report
                raise KeyboardInterrupt
            size = out.seek(0, os.SEEK_END)
            out.seek(max(0, size - MAX_OUTPUT))
            data = out.read()
        text = data.decode("utf-8", "replace")
        lines = [line.rstrip("\r") for line in text.split("\n")]
        if lines and lines[-1] == "":
            lines.pop()
        if size > MAX_OUTPUT:  # a runaway kernel: keep the end
            lines[0] = f"[run_tests.py: the first {size - MAX_OUTPUT} bytes of output were dropped]"
        return Boot(command, status, lines, time.monotonic() - start)

    @staticmethod
    def _kill(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        with self.lock:
            self.stopping = True
            for pid in self.live:
                self._kill(pid)


# --------------------------------------------------------------------------------------------
# Judging output


def config_label(config: str, board: str = DEFAULT_BOARD) -> str:
    if board == DEFAULT_BOARD:
        return config if config.strip() else "default"
    return f"{board} {config}" if config.strip() else board


def qemu_version() -> tuple[int, int] | None:
    try:
        out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def qemu_machines() -> set[str]:
    try:
        out = subprocess.run([QEMU, "-machine", "help"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}


def unusable_boards(boards: set[str]) -> dict[str, str]:
    """Boards this QEMU cannot boot, with the reason."""
    version = qemu_version()
    machines = qemu_machines()
    reasons: dict[str, str] = {}
    for name in sorted(boards):
        b = BOARDS[name]
        if b.machine == BASE_MACHINE:
            continue
        if version is not None and version < b.min_qemu:
            have = ".".join(map(str, version))
            need = ".".join(map(str, b.min_qemu))
            reasons[name] = f"QEMU {have} has no usable {b.machine} (needs {need} or newer)"
        elif machines and b.machine not in machines:
            reasons[name] = f"this QEMU has no {b.machine} machine"
    return reasons


def judge_kernel(kernel: str, config: str, boot: Boot, timeout: float, board: str = DEFAULT_BOARD) -> list[Result]:
    label = f"[{config_label(config, board)}]"
    results: list[Result] = []
    reported = {"ok": 0, "FAILED": 0}
    summary: tuple[int, int] | None = None
    panic: str | None = None
    for line in boot.lines:
        if m := TEST_LINE.match(line):
            name, verdict, why = m.groups()
            reported[verdict] += 1
            if verdict == "ok":
                results.append(Result(f"{kernel}::{name} {label}", True))
            else:
                results.append(Result(f"{kernel}::{name} {label}", False, why or "FAILED"))
        elif m := TESTS_LINE.match(line):
            summary = (int(m.group(1)), int(m.group(2)))
        elif panic is None and PANIC_LINE.match(line):
            panic = line

    # The boot itself fails when something other than its reported cases went wrong; a
    # non-zero exit is expected exactly when the kernel reported failed cases.
    problems = []
    if boot.status is None:
        problems.append(f"timed out after {timeout:g}s")
    if panic is not None:
        problems.append(f"kernel panicked: {panic}")
    if summary is None:
        if boot.status is not None and panic is None:
            problems.append(f"exited with status {boot.status} without a 'TESTS passed= failed=' line")
    else:
        if summary != (reported["ok"], reported["FAILED"]):
            problems.append(
                f"'TESTS passed={summary[0]} failed={summary[1]}' but the TEST lines say "
                f"passed={reported['ok']} failed={reported['FAILED']}"
            )
        if boot.status is not None and panic is None and (boot.status == 0) != (summary[1] == 0):
            problems.append(f"exit status {boot.status} with failed={summary[1]}")
    if not results and not problems:
        problems.append("the kernel reported no TEST case")
    if problems:
        results.append(Result(f"{kernel} {label}", False, "; ".join(problems)))
    return results


def judge_shell(spec: ShellSpec, boot: Boot) -> Result:
    name = f"shell::{spec.name}"
    problems = []
    if boot.status is None:
        problems.append(f"timed out after {spec.timeout:g}s")
    for i, line in enumerate(boot.lines, 1):
        bad = next((r for r in spec.reject if r.search(line)), None)
        if bad:
            problems.append(f"line {i} matches reject /{bad.pattern}/: {line.strip()[:160]}")
            break
    at = 0
    for regex in spec.expect:
        hit = next((i for i in range(at, len(boot.lines)) if regex.search(boot.lines[i])), None)
        if hit is None:
            where = f" after line {at}" if at else ""
            problems.append(f"no line{where} matches /{regex.pattern}/")
            break
        at = hit + 1
    if spec.check is not None:
        problems += spec.check(boot.lines)
    if spec.last is not None:
        lines = [line for line in boot.lines if line.strip()]
        if not lines or not spec.last.search(lines[-1]):
            got = lines[-1].strip()[:160] if lines else "no output"
            problems.append(f"last line does not match /{spec.last.pattern}/: {got}")
    if boot.status is not None and boot.status != spec.exit:
        problems.append(f"exit status {boot.status}, expected {spec.exit}")
    if problems:
        return Result(name, False, "; ".join(problems))
    return Result(name, True)


# --------------------------------------------------------------------------------------------
# Host unit tests


def host_filter(substring: str | None) -> str | None:
    """The libtest filter for `-k`: host cases are named host::<path>."""
    if not substring:
        return None
    if substring.startswith("host::"):
        return substring[len("host::") :]
    if substring in "host::":
        return ""
    return substring


def run_host_tests(host: str, substring: str | None, report: Report) -> None:
    cmd = ["cargo", "test", "--lib", "--target", host]
    libtest_filter = host_filter(substring)
    cmd += ["--", "--color", "never"] + ([libtest_filter] if libtest_filter else [])
    print(f"$ {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = proc.stdout.splitlines()
    results: list[Result] = []
    for line in lines:
        if m := HOST_TEST_LINE.match(line):
            name, verdict = m.groups()
            if verdict != "ignored":
                results.append(Result(f"host::{name}", verdict == "ok"))
    # libtest prints each failure's captured output under '---- <name> stdout ----'.
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if m := re.match(r"^---- (\S+) stdout ----$", line):
            current = sections.setdefault(m.group(1), [])
        elif current is not None and (line == "failures:" or line.startswith("test result:")):
            current = None
        elif current is not None:
            current.append(f"| {line}")
    for r in results:
        if not r.ok:
            r.details = sections.get(r.name[len("host::") :], [])[-TAIL_LINES:]
    if proc.returncode != 0 and all(r.ok for r in results):
        results.append(
            Result("host unit tests", False, f"cargo test exited with status {proc.returncode}", tail(lines))
        )
    report.add(results)


# --------------------------------------------------------------------------------------------
# Main


def interrupt(signum, frame) -> None:
    """SIGTERM and SIGHUP stop the run like Ctrl-C does: no QEMU is left behind."""
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="QEMU boots at once (default: cores)")
    ap.add_argument("-k", "--filter", metavar="SUBSTRING", help="run only cases whose name contains SUBSTRING")
    ap.add_argument("--manifest", type=Path, default=ROOT / "tests" / "qemu.toml", help="default: tests/qemu.toml")
    ap.add_argument("--kernel", metavar="ELF", help="boot this ELF for virt shell cases instead of building one")
    ap.add_argument("--board", choices=sorted(BOARDS), help="run only this board's QEMU cases")
    ap.add_argument("--no-host", action="store_true", help="skip the host unit tests")
    ap.add_argument("--host", metavar="TRIPLE", help="host target triple (default: from rustc -vV)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every boot's whole output")
    ap.add_argument("--list", action="store_true", help="list the QEMU cases that would run, and stop")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the whole selection N times (built once) and report every case that failed in any run",
    )
    ap.add_argument(
        "--list-test-targets", action="store_true", help="print the [[test]] targets of Cargo.toml, and stop"
    )
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    args.manifest = args.manifest.resolve()
    if args.kernel:
        args.kernel = str(Path(args.kernel).resolve())
    os.chdir(ROOT)

    if args.list_test_targets:
        print("\n".join(test_targets()))
        return 0
    try:
        kernel_specs, shell_specs = load_manifest(args.manifest)
    except ManifestError as e:
        print(f"run_tests.py: {e}", file=sys.stderr)
        return 2

    def wanted(key: str) -> bool:
        return not args.filter or args.filter in key

    if args.repeat < 1:
        print("run_tests.py: --repeat wants a count of at least 1", file=sys.stderr)
        return 2
    report = Report(args.repeat)
    host = args.host or host_triple()

    # Kernels declared in Cargo.toml but missing from the manifest still run, once, as they are.
    declared = test_targets()
    # A test kernel only judged by [[shell]] entries (one that ends in a panic on purpose)
    # counts as listed.
    listed = {k.name for k in kernel_specs} | {s.kernel for s in shell_specs if s.kernel}
    for name in declared:
        if name not in listed:
            kernel_specs.append(KernelSpec(name, [""], DEFAULT_TIMEOUT, "", False))
            report.note(f"note: test kernel '{name}' is not in {args.manifest.name}; booting it once as it is")

    def on_board(board: str) -> bool:
        return not args.board or board == args.board

    kernel_runs = [
        (k, c)
        for k in kernel_specs
        for c in k.configs
        if on_board(k.board) and wanted(f"{k.name} [{config_label(c, k.board)}]")
    ]
    shell_runs = [s for s in shell_specs if on_board(s.board) and wanted(f"shell::{s.name}")]
    if args.list:
        for k, c in kernel_runs:
            print(f"{k.name} [{config_label(c, k.board)}]")
        for s in shell_runs:
            print(f"shell::{s.name}" + (f" [{s.board}]" if s.board != DEFAULT_BOARD else ""))
        return 0

    # Boards this QEMU cannot boot are skipped, and say so.
    skipped = unusable_boards({k.board for k, _ in kernel_runs} | {s.board for s in shell_runs})
    for board, why in skipped.items():
        cases = sum(k.board == board for k, _ in kernel_runs) + sum(s.board == board for s in shell_runs)
        report.note(f"note: skipping the {cases} {board} boot(s): {why}")
    kernel_runs = [(k, c) for k, c in kernel_runs if k.board not in skipped]
    shell_runs = [s for s in shell_runs if s.board not in skipped]

    # Build what the selected cases boot, per board (each in its own target directory).
    # Keys: (board, KERNEL_BIN) for the kernel, (board, "test:<name>") for a test kernel.
    kernels: dict[tuple[str, str], str] = {}
    build_failed: dict[tuple[str, str], str] = {}
    for board in sorted({s.board for s in shell_runs} | {k.board for k, _ in kernel_runs}):
        cargo = list(BOARDS[board].cargo)
        suffix = "" if board == DEFAULT_BOARD else f" for {board}"
        names = sorted(
            {k.name for k, _ in kernel_runs if k.name in declared and k.board == board}
            | {s.kernel for s in shell_runs if s.kernel in declared and s.board == board}
        )
        if names:
            ok, found = cargo_artifacts(
                # The test kernels, with the test hooks the production kernel leaves out.
                ["test", "--release", "--no-run", "--no-fail-fast", "--features", TEST_FEATURES, *cargo,
                 *(a for n in names for a in ("--test", n))],
                BOARDS[board].env,
            )
            for n in names:
                if n in found:
                    kernels[(board, f"test:{n}")] = found[n]
                else:
                    build_failed[(board, f"test:{n}")] = f"test kernel '{n}' did not build{suffix}"
        # The kernel after the test kernels: `cargo test` also builds the kernel binary (with
        # the test hooks) and puts it where `cargo build` puts it; building it again last
        # puts the production one back there.
        if args.kernel and board == DEFAULT_BOARD:
            kernels[(board, KERNEL_BIN)] = args.kernel
        elif any(s.board == board for s in shell_runs):
            ok, found = cargo_artifacts(["build", "--release", *cargo], BOARDS[board].env)
            if KERNEL_BIN in found and ok:
                kernels[(board, KERNEL_BIN)] = found[KERNEL_BIN]
            else:
                build_failed[(board, KERNEL_BIN)] = f"the kernel did not build{suffix}"
    for k, _ in kernel_runs:
        if k.name not in declared:
            build_failed[(k.board, f"test:{k.name}")] = f"no [[test]] target named '{k.name}' in Cargo.toml"
    for s in shell_runs:
        if s.kernel and s.kernel not in declared:
            build_failed[(s.board, f"test:{s.kernel}")] = f"no [[test]] target named '{s.kernel}' in Cargo.toml"

    images: dict[tuple[str, str], str] = {}
    filled: dict[tuple[str, str], str] = {}
    images_lock = threading.Lock()

    def bootable(key: tuple[str, str], image: bool) -> str:
        """The file QEMU boots: the ELF with its symbol table filled (a copy), or the raw
        image made from that next to it (on a Pi board always, named as the firmware wants
        it for the kernel). Raises RuntimeError when the table cannot be filled."""
        board, name = key
        with images_lock:
            if key not in filled:
                filled[key] = str(fill_symbols(kernels[key]))
            elf = filled[key]
            if not (image or BOARDS[board].image):
                return os.path.relpath(elf, ROOT)
            if key not in images:
                main_name = "Image" if board == DEFAULT_BOARD else "kernel8.img"
                plain = Path(kernels[key])
                out = plain.parent / (main_name if name == KERNEL_BIN else plain.name + ".Image")
                make_image(elf, out, host)
                images[key] = os.path.relpath(out, ROOT)
            return images[key]

    runner = Runner()

    def boot_log(boot: Boot, ok: bool) -> list[str] | None:
        """What to print below a boot's results: everything with -v, the tail when it failed."""
        if args.verbose:
            return [f"$ {shlex.join(boot.command)}  ({boot.seconds:.1f}s)"] + [f"| {line}" for line in boot.lines]
        return None if ok else [f"$ {shlex.join(boot.command)}"] + tail(boot.lines)

    def run_kernel(spec: KernelSpec, config: str) -> None:
        key = (spec.board, f"test:{spec.name}")
        if key in build_failed:
            report.add([Result(f"{spec.name} [{config_label(config, spec.board)}]", False, build_failed[key])])
            return
        board = BOARDS[spec.board]
        try:
            kernel = bootable(key, spec.image)
        except RuntimeError as e:
            report.add([Result(f"{spec.name} [{config_label(config, spec.board)}]", False, str(e))])
            return
        command = qemu_command(kernel, config, spec.bootargs, board, spec.dtb)
        boot = runner.boot(command, None, spec.timeout)
        results = judge_kernel(spec.name, config, boot, spec.timeout, spec.board)
        report.add(results, boot_log(boot, all(r.ok for r in results)))

    def run_shell(spec: ShellSpec) -> None:
        key = (spec.board, f"test:{spec.kernel}" if spec.kernel else KERNEL_BIN)
        if key in build_failed:
            report.add([Result(f"shell::{spec.name}", False, build_failed[key])])
            return
        board = BOARDS[spec.board]
        try:
            kernel = bootable(key, spec.image)
        except RuntimeError as e:
            report.add([Result(f"shell::{spec.name}", False, str(e))])
            return
        command = qemu_command(kernel, spec.qemu, spec.bootargs, board, spec.dtb, spec.semihosting)
        boot = runner.boot(command, spec.stdin, spec.timeout)
        result = judge_shell(spec, boot)
        report.add([result], boot_log(boot, result.ok))

    hooks = [check_no_test_hooks(key[0], elf) for key, elf in sorted(kernels.items()) if key[1] == KERNEL_BIN]
    hooks = [r for r in hooks if r and wanted(r.name)]

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs))
    try:
        for run in range(1, args.repeat + 1):
            report.start_run(run)
            if not args.no_host:
                run_host_tests(host, args.filter, report)
            report.add(hooks)
            futures = [pool.submit(run_kernel, k, c) for k, c in kernel_runs]
            futures += [pool.submit(run_shell, s) for s in shell_runs]
            for f in concurrent.futures.as_completed(futures):
                if exc := f.exception():
                    if isinstance(exc, KeyboardInterrupt):
                        raise exc
                    report.add([Result("run_tests.py", False, f"internal error: {exc!r}")])
    except KeyboardInterrupt:
        runner.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        print("\ninterrupted", file=sys.stderr)
        report.finish()
        return 130
    pool.shutdown()

    if args.filter and not report.passed and not report.failed:
        print(f"run_tests.py: no case matches '{args.filter}'", file=sys.stderr)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
