#!/usr/bin/env bash
# cargo runner: boots a kernel ELF on QEMU virt with semihosting, so the kernel's exit
# status becomes QEMU's. Environment: SMP, MEM, CPU, BOOTARGS, QEMUFLAGS, TIMEOUT.
set -euo pipefail
kernel=$1; shift
args=(-M "virt${MACHINE_OPTS:-}" -cpu "${CPU:-cortex-a72}" -smp "${SMP:-4}" -m "${MEM:-512M}"
      -nographic -semihosting -kernel "$kernel")
[ -n "${BOOTARGS:-}" ] && args+=(-append "$BOOTARGS")
# shellcheck disable=SC2206
extra=(${QEMUFLAGS:-})
if [ -n "${TIMEOUT:-}" ]; then
    exec timeout --foreground -k 5 "$TIMEOUT" qemu-system-aarch64 "${args[@]}" "${extra[@]}" "$@"
fi
exec qemu-system-aarch64 "${args[@]}" "${extra[@]}" "$@"
