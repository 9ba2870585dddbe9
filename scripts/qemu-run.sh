#!/usr/bin/env bash
# Boots a kernel (ELF, or a raw Image) on QEMU virt with semihosting, so the kernel's exit
# status becomes QEMU's: 0 after PSCI SYSTEM_OFF, the semihosting exit code otherwise (a
# panic exits non-zero). Used by `make run`/`make gdb` and as cargo's runner.
#
#   scripts/qemu-run.sh KERNEL [QEMU OPTION...]
#
# Environment (all optional): SMP (4), MEM (512M), CPU (cortex-a72), BOOTARGS (the kernel
# command line, passed with -append when non-empty, as one argument whatever it contains),
# QEMUFLAGS (extra QEMU options, split like a shell command line: quotes work),
# MACHINE_OPTS (appended to -M virt, e.g. ",gic-version=3"), TIMEOUT (seconds, then QEMU is
# killed), QEMU (the emulator binary), KSYMS (1: boot a copy of the ELF, KERNEL.ksyms.elf,
# with its symbol table filled by scripts/ksyms.py, so that its reports name functions; for
# kernels cargo built, as `make stress` boots them; the Makefile fills its own kernels).
#
# The console is QEMU's standard input and output (-nographic; Ctrl-A x quits). Standard
# input need not be a terminal: a pipe or /dev/null works, and a closed one is replaced by
# /dev/null (QEMU refuses to start on a closed descriptor 0).
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 KERNEL [QEMU OPTION...]" >&2
    exit 2
fi
kernel=$1; shift
{ : 3<&0; } 2>/dev/null || exec </dev/null
if [ "${KSYMS:-}" = 1 ]; then
    python3 "$(dirname "$0")/ksyms.py" --quiet "$kernel" -o "$kernel.ksyms.elf"
    kernel=$kernel.ksyms.elf
fi

args=(-M "virt${MACHINE_OPTS:-}" -cpu "${CPU:-cortex-a72}" -smp "${SMP:-4}" -m "${MEM:-512M}"
      -nographic -semihosting -kernel "$kernel")
if [ -n "${BOOTARGS:-}" ]; then
    args+=(-append "$BOOTARGS")
fi
extra=()
if [ -n "${QEMUFLAGS:-}" ]; then
    # Shell-style splitting, without globbing, so QEMUFLAGS='-append "a b"' stays one argument.
    set -f
    eval "extra=(${QEMUFLAGS})"
    set +f
fi
qemu=${QEMU:-qemu-system-aarch64}
if [ -n "${TIMEOUT:-}" ]; then
    exec timeout --foreground -k 5 "$TIMEOUT" "$qemu" "${args[@]}" "${extra[@]}" "$@"
fi
exec "$qemu" "${args[@]}" "${extra[@]}" "$@"
