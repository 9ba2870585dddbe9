# dynstack: build, run and test. GNU make; `make help` lists the targets.
# Every variable below can be set on the command line: make run SMP=2 MEM=1G BOOTARGS='init="mem; poweroff"'

BOARD     ?= virt
SMP       ?= 4
MEM       ?= 512M
CPU       ?= cortex-a72
BOOTARGS  ?=
QEMUFLAGS ?=
PROFILE   ?= release
# make test: T=substring runs only the cases whose name contains it; TESTFLAGS go to
# scripts/run_tests.py (e.g. TESTFLAGS='-j 1 -v').
T         ?=
TESTFLAGS ?=
# make gdb: the port QEMU's gdb stub listens on, and extra gdb options (e.g. GDBFLAGS='-batch -ex bt').
GDBPORT   ?= 1234
GDBFLAGS  ?=

SHELL         := bash
.SHELLFLAGS   := -eu -o pipefail -c
.DEFAULT_GOAL := help

TARGET      := aarch64-unknown-none-softfloat
PROFILE_DIR := $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
OUT         := target/$(TARGET)/$(PROFILE_DIR)
KERNEL      := $(OUT)/dynstack
IMAGE       := $(OUT)/Image

# Computed once, and only by the targets that need them (so `make help` runs no rustc).
HOST    = $(eval HOST := $(shell rustc -vV | sed -n 's/^host: //p'))$(HOST)
OBJCOPY = $(eval OBJCOPY := $(shell rustc --print sysroot)/lib/rustlib/$(HOST)/bin/llvm-objcopy)$(OBJCOPY)
# The test kernels ([[test]] targets of Cargo.toml), for clippy.
TEST_KERNELS = $(eval TEST_KERNELS := $(shell python3 scripts/run_tests.py --list-test-targets))$(TEST_KERNELS)

# $(call sh,TEXT): TEXT as one single-quoted shell word, whatever quotes it contains.
sh = '$(subst ','\'',$(1))'
# The environment scripts/qemu-run.sh reads.
QEMU_ENV = SMP=$(call sh,$(SMP)) MEM=$(call sh,$(MEM)) CPU=$(call sh,$(CPU)) \
           BOOTARGS=$(call sh,$(BOOTARGS)) QEMUFLAGS=$(call sh,$(QEMUFLAGS))
# $(call need,COMMAND,DEBIAN PACKAGE): installs the package through apt when the command is
# missing (as scripts/setup.sh does for QEMU), or says what to install.
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)
need = command -v $(1) >/dev/null 2>&1 || { \
	if command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing $(2)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(2) >/dev/null; \
	else echo "make: $(1) is missing: install $(2)" >&2; exit 1; fi; }

.PHONY: help setup build run test gdb image clippy fmt fmt-check clean board

help:
	@echo 'dynstack: a bare-metal AArch64 kernel whose thread stacks grow on demand'
	@echo
	@echo '  make run         build and boot on QEMU $(BOARD) (console here; Ctrl-A x quits QEMU)'
	@echo '  make test        every test: host unit tests, test kernels and shell cases in QEMU'
	@echo '  make build       build the kernel ($(KERNEL))'
	@echo '  make image       raw arm64 Linux Image for -kernel, booti and firmware ($(IMAGE))'
	@echo '  make gdb         QEMU waiting on :$(GDBPORT) and gdb-multiarch attached, with symbols'
	@echo '  make clippy      lints, warnings are errors (target and host)'
	@echo '  make fmt         format the code (fmt-check: only check)'
	@echo '  make setup       install the Rust target and components, QEMU (run, test do it)'
	@echo '  make clean       remove build output'
	@echo
	@echo 'Variables, set on the command line (now):'
	@printf '  %-10s %s\n' BOARD $(call sh,$(BOARD)) SMP $(call sh,$(SMP)) MEM $(call sh,$(MEM)) \
		CPU $(call sh,$(CPU)) BOOTARGS $(call sh,$(BOOTARGS)) QEMUFLAGS $(call sh,$(QEMUFLAGS)) \
		PROFILE $(call sh,$(PROFILE)) T $(call sh,$(T)) TESTFLAGS $(call sh,$(TESTFLAGS)) \
		GDBPORT $(call sh,$(GDBPORT)) GDBFLAGS $(call sh,$(GDBFLAGS))
	@echo "e.g. make run BOOTARGS='init=\"mem; cpus; poweroff\"'    make test T=shell"

# Only QEMU virt for now; the Raspberry Pi boards come with their port.
board:
	@if [ $(call sh,$(BOARD)) != virt ]; then \
		echo "make: BOARD=$(BOARD) is not supported yet: only BOARD=virt (QEMU virt) builds and runs for now" >&2; \
		exit 2; \
	fi

setup:
	@bash scripts/setup.sh

build: board setup
	cargo build --profile $(PROFILE)

run: build
	$(QEMU_ENV) scripts/qemu-run.sh $(KERNEL)

# Host unit tests and everything in tests/qemu.toml; the output ends with `N passed, N failed`.
test: setup
	@$(call need,python3,python3)
	python3 scripts/run_tests.py $(if $(T),-k $(call sh,$(T))) $(TESTFLAGS)

image: build
	$(OBJCOPY) -O binary $(KERNEL) $(IMAGE)
	@echo "make: $(IMAGE) ($$(stat -c %s $(IMAGE)) bytes); boot it with: qemu-system-aarch64 -M virt -cpu $(CPU) -nographic -semihosting -kernel $(IMAGE)"

# QEMU starts halted in its own session (so Ctrl-C in gdb does not reach it), its console
# output shares this terminal, and it stops when gdb exits.
gdb: build
	@$(call need,gdb-multiarch,gdb-multiarch)
	$(QEMU_ENV) setsid scripts/qemu-run.sh $(KERNEL) -S -gdb tcp::$(GDBPORT) </dev/null & qemu=$$!; \
	trap 'kill $$qemu 2>/dev/null || true' EXIT; \
	port=$$(printf ':%04X ' $(GDBPORT)); \
	for _ in $$(seq 50); do \
		grep -qs "$$port[0-9A-F:]* 0A " /proc/net/tcp /proc/net/tcp6 && break; \
		kill -0 $$qemu 2>/dev/null || { echo "make: QEMU did not start" >&2; exit 1; }; \
		sleep 0.1; \
	done; \
	gdb-multiarch -q $(KERNEL) -ex 'target remote :$(GDBPORT)' $(GDBFLAGS)

# For the target: the library, the kernel and the test kernels (the library's unit tests
# need std, so they are linted on the host, in test mode).
clippy: setup
	cargo clippy --lib --bins $(foreach t,$(TEST_KERNELS),--test $(t)) -- -D warnings
	cargo clippy --lib --profile test --target $(HOST) -- -D warnings

fmt: setup
	cargo fmt

fmt-check: setup
	cargo fmt --check

clean:
	cargo clean
