//! AArch64: boot entry, exception vectors, trap frames, system registers, TLB maintenance,
//! the generic timer and PSCI.
core::arch::global_asm!(include_str!("boot.s"));

pub mod irq;
pub mod probe;
pub mod psci;
pub mod timer;
pub mod tlb;
pub mod trap;
mod vectors;

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
