//! Per-CPU identity: which CPU am I, found through `TPIDR_EL1`.
//!
//! Each subsystem keeps its own per-CPU state in arrays indexed by [`cpu_index`]; this module
//! owns only the small block `TPIDR_EL1` points at (where the emergency stack the vector entry
//! switches to when the exception stack overflows, the CPU's index, and the stack limit the
//! `check` build's function-entry hook compares SP with). Calls nothing else (test kernels:
//! `test_hooks`, after every read).
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::registers::{Readable, Writeable, TPIDR_EL1};

/// Most CPUs the kernel supports.
pub const MAX_CPUS: usize = 8;

const _: () = assert!(MAX_CPUS <= crate::mm::layout::EMERGENCY_STACKS_FIRST_WINDOW);

/// Where `emergency_sp` lies in [`PerCpu`], for `vectors.s`.
pub const EMERGENCY_SP_OFFSET: usize = core::mem::offset_of!(PerCpu, emergency_sp);
/// Where `index` (a `usize`) lies in [`PerCpu`], for the stack growth fast path.
pub const INDEX_OFFSET: usize = core::mem::offset_of!(PerCpu, index);

/// The block `TPIDR_EL1` points at. Assembly reads `emergency_sp` (`vectors.s`) and
/// `index` (the stack growth fast path) through the offsets below.
#[repr(C, align(64))]
pub struct PerCpu {
    emergency_sp: AtomicU64,
    index: AtomicUsize,
    /// MPIDR affinity of this CPU.
    pub mpidr: AtomicU64,
    /// `kstack.strategy=check`: the lowest SP at which a function may start without growing
    /// the running thread's stack first (its mapped bottom plus `kstack.lookahead`; 0 when
    /// nothing needs checking). Written by `stack` in exception context or with IRQs masked;
    /// read by the `mcount` hook at [`STACK_LIMIT_OFFSET`].
    pub stack_limit: AtomicU64,
}

/// Where [`PerCpu::stack_limit`] lies in the block, for the `mcount` hook's assembly.
pub const STACK_LIMIT_OFFSET: usize = core::mem::offset_of!(PerCpu, stack_limit);

static PER_CPU: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        emergency_sp: AtomicU64::new(0),
        index: AtomicUsize::new(0),
        mpidr: AtomicU64::new(0),
        stack_limit: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Points `TPIDR_EL1` of the calling CPU at CPU `index`'s block. Called first thing on every
/// CPU, before anything can fault. The emergency stack (mapped with the exception stacks,
/// guarded and aligned like them: see `mm::layout`) is used only once those are up.
pub fn init_this_cpu(index: usize, mpidr: u64) {
    let block = &PER_CPU[index];
    let top = crate::mm::layout::emergency_stack_top(index);
    block.emergency_sp.store(top, Ordering::Relaxed);
    block.index.store(index, Ordering::Relaxed);
    block.mpidr.store(mpidr, Ordering::Relaxed);
    TPIDR_EL1.set(block as *const PerCpu as u64);
}

/// Index of the calling CPU (0 = the boot CPU).
///
/// A thread that reads it with IRQs unmasked may be preempted and moved to another CPU right
/// after: read it with IRQs masked wherever the answer must still hold when it is used (test
/// kernels move a thread at exactly that point on request: `test_hooks::arm_migration`).
#[inline(always)]
pub fn cpu_index() -> usize {
    let index = raw_cpu_index();
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::after_cpu_read();
    index
}

/// [`cpu_index`] without the test kernels' migration trap (for the trap itself).
#[inline(always)]
pub(crate) fn raw_cpu_index() -> usize {
    let block = TPIDR_EL1.get() as *const PerCpu;
    // SAFETY: init_this_cpu set TPIDR_EL1 to a PER_CPU entry before any caller can run.
    unsafe { (*block).index.load(Ordering::Relaxed) }
}

/// The top of the emergency stack the vector entry switches to on this CPU.
pub fn emergency_stack_top() -> u64 {
    let block = TPIDR_EL1.get() as *const PerCpu;
    // SAFETY: as in cpu_index.
    unsafe { (*block).emergency_sp.load(Ordering::Relaxed) }
}

/// CPU `index`'s block.
pub fn get(index: usize) -> &'static PerCpu {
    &PER_CPU[index]
}
