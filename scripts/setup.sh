#!/usr/bin/env bash
# Installs what building, running and testing dynstack needs on a fresh machine:
# the Rust target and components (through rustup) and QEMU (through apt on Debian).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

TARGET=aarch64-unknown-none-softfloat
need_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Rust -------------------------------------------------------------------
if ! command -v rustup >/dev/null 2>&1; then
    echo "setup: rustup is missing; install it from your distribution or rust-lang.org first" >&2
    exit 1
fi
installed_targets=$(rustup target list --installed 2>/dev/null || true)
if ! grep -qx "$TARGET" <<<"$installed_targets"; then
    rustup target add "$TARGET"
fi
installed_components=$(rustup component list --installed 2>/dev/null || true)
for c in rust-src llvm-tools clippy rustfmt; do
    if ! grep -q "^$c" <<<"$installed_components"; then
        rustup component add "$c"
    fi
done
# The host target runs the unit tests; it is rustup's default, but say so plainly if not.
host=$(rustc -vV | sed -n 's/^host: //p')
if ! grep -qx "$host" <<<"$(rustup target list --installed)"; then
    rustup target add "$host"
fi

# --- QEMU -------------------------------------------------------------------
qemu_version() {
    qemu-system-aarch64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1
}
if command -v qemu-system-aarch64 >/dev/null 2>&1 && [ "$(qemu_version)" -ge 9 ]; then
    exit 0
fi

if [ ! -r /etc/os-release ] || ! command -v apt-get >/dev/null 2>&1; then
    if command -v qemu-system-aarch64 >/dev/null 2>&1; then
        echo "setup: QEMU $(qemu_version) found; raspi4b needs QEMU >= 9 (virt and raspi3b work)" >&2
        exit 0
    fi
    echo "setup: qemu-system-aarch64 is missing; install QEMU (package qemu-system-arm or qemu-system-aarch64)" >&2
    exit 1
fi

. /etc/os-release
suite=""
if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    # Debian 12 ships QEMU 7.2; bookworm-backports has a QEMU new enough for raspi4b.
    # The source copies the machine's own Debian entry (URIs, keyring), suite changed.
    suite=bookworm-backports
    list=/etc/apt/sources.list.d/dynstack-backports.sources
    if [ ! -e "$list" ]; then
        src=""
        for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
            [ -r "$f" ] || continue
            if grep -qE '^Suites:.*\bbookworm\b' "$f"; then src=$f; break; fi
        done
        if [ -n "$src" ]; then
            # First stanza whose suites name bookworm: keep its Types/URIs/Components/Signed-By.
            awk -v RS= '/Suites:[^\n]*bookworm( |$|\n)/ && !done { print; done=1 }' "$src" |
                sed -E 's/^Suites:.*/Suites: bookworm-backports/' | need_sudo tee "$list" >/dev/null
        elif [ -r /etc/apt/sources.list ] && grep -qE '^deb .* bookworm( |$)' /etc/apt/sources.list; then
            grep -E '^deb .* bookworm( |$)' /etc/apt/sources.list | head -1 |
                sed -E 's/ bookworm( |$)/ bookworm-backports\1/' |
                need_sudo tee /etc/apt/sources.list.d/dynstack-backports.list >/dev/null
        else
            suite=""
        fi
    fi
fi
export DEBIAN_FRONTEND=noninteractive
need_sudo apt-get update -qq
if [ -n "$suite" ]; then
    need_sudo apt-get install -y -qq -t "$suite" qemu-system-arm ||
        need_sudo apt-get install -y -qq qemu-system-arm
else
    need_sudo apt-get install -y -qq qemu-system-arm
fi
command -v qemu-system-aarch64 >/dev/null || { echo "setup: QEMU install failed" >&2; exit 1; }
echo "setup: $(qemu-system-aarch64 --version | head -1)"
