//! AArch64: boot entry, exception vectors, trap frames, system registers, TLB maintenance,
//! the generic timer and PSCI.
mod boot;
pub mod irq;
pub mod probe;
pub mod psci;
pub mod timer;
pub mod tlb;
pub mod trap;
mod vectors;

use aarch64_cpu::registers::{Readable, MPIDR_EL1};

/// MPIDR_EL1's affinity fields (Aff3, Aff2, Aff1, Aff0): a CPU's identity, as device trees,
/// PSCI and interrupt routing name it.
pub const MPIDR_AFFINITY_MASK: u64 = (MPIDR_EL1::Aff3.mask << MPIDR_EL1::Aff3.shift)
    | (MPIDR_EL1::Aff2.mask << MPIDR_EL1::Aff2.shift)
    | (MPIDR_EL1::Aff1.mask << MPIDR_EL1::Aff1.shift)
    | (MPIDR_EL1::Aff0.mask << MPIDR_EL1::Aff0.shift);

/// This CPU's affinity: MPIDR_EL1 through [`MPIDR_AFFINITY_MASK`].
pub fn mpidr_affinity() -> u64 {
    MPIDR_EL1.get() & MPIDR_AFFINITY_MASK
}

/// The current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reads the stack pointer.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}
