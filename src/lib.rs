//! dynstack: a bare-metal AArch64 kernel whose thread stacks grow on demand.
//!
//! The library holds the whole kernel; `main.rs` and each test kernel under `tests/` only
//! choose what runs after boot (through [`kernel_main!`]). Modules that are plain logic
//! (device tree, command line, translation tables and the boot-time MMU values, the
//! scheduler's run queue, sleep queue, park list and balancing, shell parsing) build for the
//! host too and carry the unit tests, and so do the drivers, which the
//! host tests run against fake register blocks; everything else that touches the machine is
//! compiled for the bare-metal target only.
//!
//! The house rules are lints (`[lints]` in `Cargo.toml`): every public item documented, every
//! `unsafe` block with a `// SAFETY:` comment, unsafe operations inside `unsafe fn` in their
//! own `unsafe` block. `make doc` builds this documentation with every warning an error.
//!
//! # The rooms
//!
//! | module | owns | calls |
//! |---|---|---|
//! | `arch::aarch64` | `boot.s` (entry, boot tables, MMU on) and `vectors.s` (exception entry and return), the trap frame and ESR decoding, IRQ masking, the timer, PSCI, TLB maintenance | nothing above it |
//! | `kernel` | the boot sequence on every CPU, the panic handler, [`kernel::exception`] (what each exception means), [`kernel::irq`] (interrupt routing), [`kernel::console`], [`kernel::backtrace`] (the frames of a report, named) | every subsystem's init |
//! | `board` | what the device tree does not say, per board | `dtb` |
//! | [`drivers`] | the register blocks of the UARTs and interrupt controllers (host-tested against fake register blocks; GICv3's `ICC_*` system registers against a fake CPU interface) | nothing |
//! | [`dtb`], [`cmdline`] | the machine description and the command line: total functions over untrusted bytes | `alloc` only |
//! | [`mm`] | physical frames, the heap and a thread's own heap, the translation-table manager ([`mm::page_table`], host-tested), the kernel address space and its layout | `arch::tlb`; the global allocator asks `sched::heap_scope` for the running thread's own heap |
//! | `sched` | threads, per-CPU run queues, the context switch, sleep, kill, the reaper; which lock or CPU owns each field of a control block (the table in its doc); its run queue, sleep queue, park list and balancing are plain logic, host-tested | `stack`, `arch`, `kernel::irq` |
//! | `stack` | the stack arena, growth on a fault, the per-CPU page reserve, trim, statistics | `mm`, `arch` |
//! | [`shell`] | the console user interface (host-tested behind its `Backend` trait) and, on the target, the kernel's backend, workloads, `bench` and `demo` | `cmdline`; the backend calls `sched`, `stack`, `mm` |
//! | `percpu`, `sync` | which CPU am I (`TPIDR_EL1`); locks that mask IRQs and count themselves | `arch` |
//! | [`symbols`] | the kernel's symbol table (the `.ksyms` section the build fills after the link): parsing it as untrusted bytes, address lookup, which frames are the allocator's (host-tested); `kernel::backtrace` names every frame of a report with it | nothing |
//! | [`rng`], `testing` | the seeded generator; the test kernels' harness | `sched`, `kernel::console` |
//! | `test_hooks` | test kernels only (feature `test-hooks`): the holds and the migration trap that make races happen on request | `sched`, `arch` |
//!
//! # Who calls whom
//!
//! Boot: `boot.s` → `kernel::kernel_entry` (per-CPU block, vectors, heap, kernel address
//! space, device tree, console, memory, command line, interrupts, stacks and scheduler,
//! secondary CPUs) → the scheduler runs the binary's main thread, which for the kernel
//! binary is the shell. After boot, only two things enter the kernel: a thread calling an
//! API (`sched::spawn`, `sched::sleep_ms`, a shell command through the backend), and an
//! exception, which always arrives on the CPU's exception stack (EL1h) while threads run on
//! their own stacks (EL1t, `SP_EL0`).
//!
//! # The fault path
//!
//! Top to bottom, in a handful of files: vector 0 in `arch/aarch64/vectors.s` sends a data
//! abort at EL1 to the growth fast path (`stack/fast.rs`, assembly that maps the missing pages
//! from this CPU's reserve and returns before any trap frame exists). Anything it does not
//! handle gets the full trap frame and goes to `kernel::exception::exception_dispatch`, which
//! decodes the syndrome → `stack::on_fault` (the reference path: reservation found by address
//! arithmetic, zeroed pages from the per-CPU reserve in `stack/reserve.rs`, descriptors stored
//! into the arena's prepared last-level table in `stack/arena.rs`, `DSB ISHST; ISB`), or ends
//! the thread with a report on an overflow or a bad access. No lock, no allocation: the
//! scheduler refills the reserve before it switches a dynamic thread in.
//!
//! # The context switch
//!
//! In `sched/switch.rs`, always inside an exception: the interrupted thread's trap frame is
//! copied into its control block and the next thread's over the frame, which
//! `exception_return` in `vectors.s` then restores. Voluntary switches (yield, sleep, park,
//! exit) are `svc` calls, so they take the same way.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
pub mod dtb;
pub mod mm;
pub mod rng;
pub mod shell;
pub mod symbols;

pub mod arch;
pub mod board;
pub mod drivers;
#[cfg(target_os = "none")]
pub mod kernel;
#[cfg(target_os = "none")]
pub mod percpu;
#[cfg(target_os = "none")]
pub mod sched;
/// The scheduler's plain logic, built for the host too so that its unit tests run there:
/// the same files that `sched/mod.rs` declares on the target.
#[cfg(not(target_os = "none"))]
pub mod sched {
    pub mod balance;
    pub mod counted;
    pub mod parklist;
    pub mod runq;
    pub mod sleep;
    #[cfg(test)]
    mod tests;
}
#[cfg(target_os = "none")]
pub mod stack;
#[cfg(target_os = "none")]
pub mod sync;
#[cfg(all(target_os = "none", feature = "test-hooks"))]
pub mod test_hooks;
#[cfg(target_os = "none")]
pub mod testing;
