//! Masking interrupts on the local CPU (PSTATE.DAIF).
//!
//! Calls only `aarch64-cpu`.
use aarch64_cpu::registers::{Readable, Writeable, DAIF};

/// The `#imm` of `msr daifset`/`daifclr` for the I bit: DAIF.I moved down from PSTATE's bit
/// positions (D, A, I, F at 9..6) to the instruction's (3..0).
const DAIF_IMM_I: u64 = DAIF::I::Masked.value >> DAIF::F.shift;

/// Masks IRQs on this CPU and returns the previous DAIF value for [`restore`].
#[inline(always)]
pub fn save_and_disable() -> u64 {
    let daif = DAIF.get();
    // SAFETY: masking IRQs on the local CPU has no memory effects.
    unsafe {
        core::arch::asm!("msr daifset, #{i}", i = const DAIF_IMM_I, options(nomem, nostack, preserves_flags))
    };
    daif
}

/// Restores the DAIF value returned by [`save_and_disable`].
#[inline(always)]
pub fn restore(daif: u64) {
    DAIF.set(daif);
}

/// Unmasks IRQs on this CPU.
#[inline(always)]
pub fn enable() {
    // SAFETY: unmasking IRQs is what the caller asks for; handlers are installed.
    unsafe {
        core::arch::asm!("msr daifclr, #{i}", i = const DAIF_IMM_I, options(nomem, nostack, preserves_flags))
    };
}

/// Whether IRQs are masked on this CPU.
#[inline(always)]
pub fn are_masked() -> bool {
    DAIF.is_set(DAIF::I)
}
