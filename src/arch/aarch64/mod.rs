//! AArch64: boot entry, exception vectors, trap frames, system registers, TLB maintenance,
//! the generic timer and PSCI. Only the MPIDR affinity mask builds for the host too (the
//! drivers' host tests use it); everything else is for the target.
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
pub mod irq;
#[cfg(target_os = "none")]
pub mod probe;
#[cfg(target_os = "none")]
pub mod psci;
#[cfg(target_os = "none")]
pub mod timer;
#[cfg(target_os = "none")]
pub mod tlb;
#[cfg(target_os = "none")]
pub mod trap;
#[cfg(target_os = "none")]
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
#[cfg(target_os = "none")]
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reads the stack pointer.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}
