# dynstack: build, run and test. GNU make; `make help` lists the targets.
# Every variable below can be set on the command line: make run SMP=2 MEM=1G BOOTARGS='init="mem; poweroff"'

BOARD     ?= virt
SMP       ?= 4
MEM       ?= 512M
CPU       ?= cortex-a72
BOOTARGS  ?=
QEMUFLAGS ?=
PROFILE   ?= release
# make test: T=substring runs only the cases whose name contains it; REPEAT=N runs the whole
# selection N times and lists every case that failed in any run; TESTFLAGS go to
# scripts/run_tests.py (e.g. TESTFLAGS='-j 1 -v').
T         ?=
REPEAT    ?= 1
TESTFLAGS ?=
# make gdb: the port QEMU's gdb stub listens on, and extra gdb options (e.g. GDBFLAGS='-batch -ex bt').
GDBPORT   ?= 1234
GDBFLAGS  ?=
QEMU      ?= qemu-system-aarch64

SHELL         := bash
.SHELLFLAGS   := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The boards (src/board/). A Pi build has its cargo feature and its own build directory (so
# it never overwrites the virt kernel), its image is called kernel8.img as the firmware
# wants, and QEMU boots that image on its raspi machine with the real device tree from
# data/dtb/ (QEMU hands -append to the kernel only inside a DTB). SMP, MEM and CPU are the
# machine's own there. DTB= (empty) boots without a tree: the board's built-in description.
BOARDS := virt rpi3 rpi4
ifeq ($(BOARD),rpi3)
  BOARD_CARGO  := --features board-rpi3 --target-dir target/rpi3
  BUILD_DIR    := target/rpi3
  IMAGE_NAME   := kernel8.img
  QEMU_MACHINE := raspi3b
  DTB          ?= data/dtb/bcm2837-rpi-3-b.dtb
else ifeq ($(BOARD),rpi4)
  BOARD_CARGO  := --features board-rpi4 --target-dir target/rpi4
  BUILD_DIR    := target/rpi4
  IMAGE_NAME   := kernel8.img
  QEMU_MACHINE := raspi4b
  DTB          ?= data/dtb/bcm2711-rpi-4-b.dtb
else
  BOARD_CARGO  :=
  BUILD_DIR    := target
  IMAGE_NAME   := Image
  QEMU_MACHINE := virt
endif

TARGET      := aarch64-unknown-none-softfloat
PROFILE_DIR := $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
OUT         := $(BUILD_DIR)/$(TARGET)/$(PROFILE_DIR)
KERNEL      := $(OUT)/dynstack
IMAGE       := $(OUT)/$(IMAGE_NAME)

# The kstack.strategy=check build: QEMU virt's kernel with a function-entry hook in every
# function (-Z instrument-mcount, which the stable toolchain accepts with RUSTC_BOOTSTRAP=1)
# and the hook itself (feature kstack-check), in its own directory so that it never
# overwrites the normal kernel. The flag is added to .cargo/config.toml's rustflags.
CHECK_CARGO  := --features kstack-check --target-dir target/check \
                --config 'target.$(TARGET).rustflags=["-Z","instrument-mcount"]'
CHECK_KERNEL := target/check/$(TARGET)/release/dynstack

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
# The command that boots the kernel on QEMU for BOARD, console on this terminal; more QEMU
# options may follow it. virt: the ELF through scripts/qemu-run.sh; a Pi: the raw image
# (which `run` and `gdb` make first) as the firmware loads it, with the DTB in x0.
ifeq ($(QEMU_MACHINE),virt)
QEMU_BOOT = env $(QEMU_ENV) scripts/qemu-run.sh $(KERNEL)
else
QEMU_PI   = $(QEMU) -M $(QEMU_MACHINE) -nographic -semihosting -kernel $(IMAGE) \
            $(if $(DTB),-dtb $(call sh,$(DTB)))
QEMU_BOOT = $(QEMU_PI) $(if $(BOOTARGS),-append $(call sh,$(BOOTARGS))) $(QEMUFLAGS)
endif
# What `run` and `gdb` boot: the ELF on virt, the raw image on a Pi.
BOOTABLE := $(if $(filter virt,$(QEMU_MACHINE)),build,image)
# $(call need,COMMAND,DEBIAN PACKAGE): installs the package through apt when the command is
# missing (as scripts/setup.sh does for QEMU), or says what to install.
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)
need = command -v $(1) >/dev/null 2>&1 || { \
	if command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing $(2)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(2) >/dev/null; \
	else echo "make: $(1) is missing: install $(2)" >&2; exit 1; fi; }

.PHONY: help setup build build-check run test bench bench-strategies stress fuzz gdb image clippy doc fmt fmt-check clean board board-dtbs

help:
	@echo 'dynstack: a bare-metal AArch64 kernel whose thread stacks grow on demand'
	@echo
	@echo '  make run         build and boot on QEMU $(QEMU_MACHINE) (console here; Ctrl-A x quits QEMU)'
	@echo '  make test        every test: host unit tests, test kernels and shell cases in QEMU'
	@echo '  make bench       benchmarks on QEMU virt: bench/results.txt and the chart docs/memory.svg'
	@echo '  make bench-strategies  kstack.strategy fault, expand, check side by side: bench/strategies.txt, docs/strategies.svg'
	@echo '  make build-check the kstack.strategy=check kernel, hooks in every function ($(CHECK_KERNEL))'
	@echo '  make stress      the churn torture (tests/stress.rs) for STRESS_SECONDS (600) on 4 CPUs'
	@echo '  make fuzz        FUZZ_RUNS (200) random shell sequences from FUZZ_SEED (1): scripts/fuzz.py'
	@echo '  make build       build the kernel ($(KERNEL))'
	@echo '  make image       raw arm64 Linux Image for -kernel, booti and firmware ($(IMAGE))'
	@echo '  make board-dtbs  rebuild the Pi boards'"'"' built-in device trees (src/board/*.dts, dtc)'
	@echo '  make gdb         QEMU waiting on :$(GDBPORT) and gdb-multiarch attached, with symbols'
	@echo '  make clippy      lints, warnings are errors (target and host)'
	@echo '  make doc         the API documentation for the target (target/$(TARGET)/doc), warnings are errors'
	@echo '  make fmt         format the code (fmt-check: only check)'
	@echo '  make setup       install the Rust target and components, QEMU (run, test do it)'
	@echo '  make clean       remove build output'
	@echo
	@echo 'Variables, set on the command line (now):'
	@printf '  %-10s %s\n' BOARD $(call sh,$(BOARD)) SMP $(call sh,$(SMP)) MEM $(call sh,$(MEM)) \
		CPU $(call sh,$(CPU)) BOOTARGS $(call sh,$(BOOTARGS)) QEMUFLAGS $(call sh,$(QEMUFLAGS)) \
		PROFILE $(call sh,$(PROFILE)) T $(call sh,$(T)) REPEAT $(call sh,$(REPEAT)) TESTFLAGS $(call sh,$(TESTFLAGS)) \
		GDBPORT $(call sh,$(GDBPORT)) GDBFLAGS $(call sh,$(GDBFLAGS)) DTB $(call sh,$(DTB))
	@echo "e.g. make run BOOTARGS='init=\"mem; cpus; poweroff\"'    make test T=shell"
	@echo "     make run BOARD=rpi3    make image BOARD=rpi4 (kernel8.img: docs/raspberry-pi.md)"

board:
	@if [ -z "$(filter $(BOARDS),$(BOARD))" ] || [ $(call sh,$(BOARD)) != '$(firstword $(filter $(BOARDS),$(BOARD)))' ]; then \
		echo "make: BOARD=$(BOARD) is not a board: use one of $(BOARDS)" >&2; \
		exit 2; \
	fi

setup:
	@bash scripts/setup.sh

# Every kernel built here gets its symbol table filled in after the link (scripts/ksyms.py:
# the .ksyms section that linker.ld reserves, same size, no address moves), so that its
# PANIC, FAULT and OVERFLOW backtraces name functions; the raw image is made from that ELF.
FILL_KSYMS = python3 scripts/ksyms.py

build: board setup
	@$(call need,python3,python3)
	cargo build --profile $(PROFILE) $(BOARD_CARGO)
	$(FILL_KSYMS) $(KERNEL)

build-check: setup
	@$(call need,python3,python3)
	RUSTC_BOOTSTRAP=1 cargo build --release $(CHECK_CARGO)
	$(FILL_KSYMS) $(CHECK_KERNEL)

run: $(BOOTABLE)
	$(QEMU_BOOT)

# Host unit tests and everything in tests/qemu.toml; the output ends with `N passed, N failed`.
# Every board's QEMU cases run, unless BOARD is given: then only that board's.
test: setup
	@$(call need,python3,python3)
	python3 scripts/run_tests.py $(if $(T),-k $(call sh,$(T))) --repeat $(call sh,$(REPEAT)) \
		$(if $(filter command line environment,$(origin BOARD)),--board $(call sh,$(BOARD))) $(TESTFLAGS)

# The benchmarks on QEMU virt, written with how they were made (QEMU version, options, date,
# commit) to bench/results.txt, then the memory chart docs/memory.svg drawn from that file.
# scripts/bench.py boots three times: `bench` under -icount shift=0 (deterministic), `bench
# scale` without icount (one host thread per CPU), one million idle threads with -m 6G.
# About 3 minutes on 2 host cores.
# On a Pi machine (BOARD=rpi3, rpi4): the `bench` command in one boot under -icount shift=0,
# on the console only (the recorded results are QEMU virt's).
bench: $(BOOTABLE)
ifeq ($(QEMU_MACHINE),virt)
	@$(call need,python3,python3)
	python3 scripts/bench.py --kernel $(KERNEL) --cpu $(call sh,$(CPU)) --out bench/results.txt
	python3 scripts/plot_memory.py bench/results.txt docs/memory.svg
else
	$(QEMU_PI) -append 'init="bench; poweroff"' -icount shift=0 $(QEMUFLAGS) </dev/null
endif

# The LWN article's three options side by side (scripts/bench_strategies.py): the normal
# kernel under kstack.strategy=fault (and the fixed baseline) and expand, the check build
# with kstack.lookahead=512, 2048 and 4096; one boot each on QEMU virt, 1 CPU, -icount
# shift=0. Writes bench/strategies.txt, then the chart docs/strategies.svg from it.
bench-strategies: setup
	@$(call need,python3,python3)
	cargo build --release
	$(FILL_KSYMS) target/$(TARGET)/release/dynstack
	RUSTC_BOOTSTRAP=1 cargo build --release $(CHECK_CARGO)
	$(FILL_KSYMS) $(CHECK_KERNEL)
	python3 scripts/bench_strategies.py --kernel target/$(TARGET)/release/dynstack \
		--check-kernel $(CHECK_KERNEL) --cpu $(call sh,$(CPU)) --out bench/strategies.txt
	python3 scripts/plot_strategies.py bench/strategies.txt docs/strategies.svg

# The churn torture of tests/stress.rs (20 s in `make test`) for STRESS_SECONDS on QEMU virt:
# thousands of threads growing, sleeping, trimmed, killed and respawned on 4 CPUs, every frame
# checked after each wake-up, and all memory back at the end. Prints a STRESS summary line.
STRESS_SECONDS ?= 600
stress: setup
	SMP=4 MEM=512M KSYMS=1 TIMEOUT=$$(( $(STRESS_SECONDS) + 300 )) BOOTARGS='stress.seconds=$(STRESS_SECONDS)' \
		cargo test --release --features test-hooks --test stress

# The shell-sequence fuzzer (scripts/fuzz.py; 24 of its runs are in `make test`): FUZZ_RUNS
# seeded sequences that start by running memory out, at 48-128 MiB on 1-4 CPUs. Prints a
# `FUZZ runs= panics=` line; fails if any run panicked, lost memory or missed its summaries.
FUZZ_RUNS ?= 200
FUZZ_SEED ?= 1
fuzz: build
	python3 scripts/fuzz.py --runs $(FUZZ_RUNS) --seed $(FUZZ_SEED) --kernel $(KERNEL)

image: build
	$(OBJCOPY) -O binary $(KERNEL) $(IMAGE)
ifeq ($(QEMU_MACHINE),virt)
	@echo "make: $(IMAGE) ($$(stat -c %s $(IMAGE)) bytes); boot it with: qemu-system-aarch64 -M virt -cpu $(CPU) -nographic -semihosting -kernel $(IMAGE)"
else
	@echo "make: $(IMAGE) ($$(stat -c %s $(IMAGE)) bytes) for the $(BOARD) SD card (docs/raspberry-pi.md); in QEMU: make run BOARD=$(BOARD), or qemu-system-aarch64 -M $(QEMU_MACHINE) -nographic -semihosting -kernel $(IMAGE) -dtb $(DTB)"
endif

# The Pi boards' built-in device trees, for a boot without one (checked in, with the source).
board-dtbs:
	@$(call need,dtc,device-tree-compiler)
	for b in rpi3 rpi4; do dtc -q -W no-unit_address_vs_reg -I dts -O dtb -o src/board/$$b.dtb src/board/$$b.dts; done

# QEMU starts halted in its own session (so Ctrl-C in gdb does not reach it), its console
# output shares this terminal, and it stops when gdb exits.
gdb: $(BOOTABLE)
	@$(call need,gdb-multiarch,gdb-multiarch)
	setsid $(QEMU_BOOT) -S -gdb tcp::$(GDBPORT) </dev/null & qemu=$$!; \
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
	cargo clippy --lib --bins -- -D warnings
	cargo clippy --lib --features test-hooks $(foreach t,$(TEST_KERNELS),--test $(t)) -- -D warnings
	cargo clippy --lib --profile test --target $(HOST) -- -D warnings
	RUSTC_BOOTSTRAP=1 cargo clippy --lib $(CHECK_CARGO) -- -D warnings

# The library's documentation as rustdoc builds it for the target, with every rustdoc
# warning (broken or private intra-doc links, bad markup) an error.
doc: setup
	RUSTDOCFLAGS='-D warnings' cargo doc --no-deps --lib

fmt: setup
	cargo fmt

fmt-check: setup
	cargo fmt --check

clean:
	cargo clean
