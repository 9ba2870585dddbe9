//! TLB maintenance and the barriers around translation-table edits, on the real machine.
//!
//! Owns every `TLBI` the kernel issues. [`HardwareTlb`] is the [`TlbOps`] the
//! translation-table manager (`mm::page_table`) uses on the target, and the barriers the
//! stack arena issues after its own descriptor stores (`stack::arena::publish`; the growth
//! fast path in `stack::fast` issues the same `DSB ISHST; ISB` in assembly). Calls only
//! aarch64-cpu's barriers and inline `TLBI` instructions.
//!
//! Every invalidation is the inner-shareable (broadcast) form, so one CPU's unmap reaches
//! the TLBs of all CPUs; every mapping is global, so invalidating by VA needs no ASID.

use core::arch::asm;

use aarch64_cpu::asm::barrier::{dsb, isb, ISH, ISHST, SY};

use crate::mm::page_table::TlbOps;

/// The bits of a virtual address that `TLBI VAE1IS` takes: VA[55:12] in bits 43:0 of the
/// operand. The ASID field above them stays 0, which global entries ignore.
const TLBI_VA_MASK: u64 = 0xFFF_FFFF_FFFF;

/// The operand of a by-VA `TLBI` for the page holding `va`.
const fn tlbi_operand(va: u64) -> u64 {
    (va >> 12) & TLBI_VA_MASK
}

/// Barriers and broadcast TLB invalidation with the real instructions.
#[derive(Debug, Clone, Copy, Default)]
pub struct HardwareTlb;

impl TlbOps for HardwareTlb {
    fn after_map(&self) {
        // Stores to the tables reach the walker's observers before anything that follows,
        // and later instructions are fetched and translated with the new entries.
        dsb(ISHST);
        isb(SY);
    }

    fn invalidate_page(&self, va: u64) {
        // The cleared entry must be visible to every walker before the invalidation, or a
        // walk in between could reload the old entry.
        dsb(ISHST);
        // SAFETY: `TLBI VAE1IS` only drops cached translations (of every level) for this
        // address on the inner-shareable domain; it touches no memory and no registers
        // besides its operand, and losing a cached translation is always safe.
        unsafe {
            asm!("tlbi vae1is, {}", in(reg) tlbi_operand(va), options(nostack, preserves_flags));
        }
    }

    fn sync(&self) {
        dsb(ISH);
        isb(SY);
    }
}

/// Invalidates every EL1 translation on every CPU and waits for it: for after the boot
/// tables change wholesale (the identity map going away, a new root in TTBR1).
pub fn invalidate_all() {
    dsb(ISHST);
    // SAFETY: `TLBI VMALLE1IS` only drops cached EL1&0 translations on the inner-shareable
    // domain; the walker reloads them from the tables, so nothing is lost.
    unsafe {
        asm!("tlbi vmalle1is", options(nostack, preserves_flags));
    }
    dsb(ISH);
    isb(SY);
}
