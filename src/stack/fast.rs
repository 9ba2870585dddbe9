//! The growth fast path: a stack growth handled in a few dozen instructions, before the trap
//! frame is pushed.
//!
//! Vector 0 (`vectors.s`, a thread's synchronous exception) branches to `stack_grow_fast`
//! when ESR_EL1 says "data abort at EL1". The fast path saves only the eight registers it
//! uses (x0 is already in TPIDR_EL0), and handles the fault itself when all of these hold:
//!
//! 1. growth on fault is allowed and the fast path is on (`GROW_CTL` is exactly
//!    `CTL_FAST_GROWS`; tested before anything is saved, see [`super::set_fast_path`] and
//!    [`super::set_grow_on_fault`]);
//! 2. the fault is a translation fault (DFSC `0b0001xx`);
//! 3. this CPU has a current thread, and FAR lies inside its reservation, below the mapped
//!    part: `top - kstack.max <= FAR < top - mapped_pages * 4096`;
//! 4. this CPU's reserve (`reserve`, whose layout is documented there) holds every page from
//!    FAR's page up to the mapped part.
//!
//! It then takes those pages from the reserve, stores one descriptor per page into the
//! arena's L3 tables (which exist for every handed-out slot, see `arena`), updates the
//! stack's and this CPU's counters (the same ones [`super::on_fault`] updates, plus
//! `fast_faults`), and makes the mapping visible with `DSB ISHST; ISB` before `eret` retries
//! the instruction. Anything else restores what it saved and continues at
//! `thread_sync_full`, which pushes the full frame and dispatches as if the fast path did not
//! exist: overflows, faults that are not growths, a short reserve and growth switched off
//! all go to the slow path, which stays the reference.
//!
//! Nothing here locks or writes shared state: the reserve and the counters belong to this
//! CPU, the stack to the thread that runs on it, and IRQs stay masked throughout. Every
//! offset, size and descriptor bit the assembly uses comes from the Rust definitions below.
use core::mem::{offset_of, size_of};

use super::{arena, reserve, GrowthCounters, Stack, CTL_FAST_GROWS, GROWTH, GROW_CTL, MAX_BYTES};
use crate::arch::trap::{DFSC_TRANSLATION, DFSC_TRANSLATION_MASK};
use crate::mm::layout::{PAGE_SHIFT, PAGE_SIZE, STACK_ARENA_BASE, STACK_ARENA_SIZE};
use crate::sched::Thread;

/// Offsets in the current thread's control block.
const T_TOP: usize = offset_of!(Thread, stack) + offset_of!(Stack, top);
const T_MAPPED: usize = offset_of!(Thread, stack) + offset_of!(Stack, mapped_pages);
const T_HIGH: usize = offset_of!(Thread, stack) + offset_of!(Stack, high_water_pages);
const T_FAULTS: usize = offset_of!(Thread, stack) + offset_of!(Stack, grow_faults);

/// This CPU's growth counters: `GROWTH[cpu]` is `1 << G_SHIFT` bytes.
const G_SHIFT: u32 = size_of::<GrowthCounters>().trailing_zeros();
const G_PAGES: usize = offset_of!(GrowthCounters, grown_pages);
const G_FAULTS: usize = offset_of!(GrowthCounters, grow_faults);
const G_FAST: usize = offset_of!(GrowthCounters, fast_faults);

/// The arena's L3 tables: one per 2 MiB chunk, found by bits [21, 21 + CHUNK_INDEX_BITS) of
/// the address, since the arena is aligned to its (power-of-two) size.
const CHUNK_INDEX_BITS: u32 = arena::CHUNKS.trailing_zeros();

const _: () = {
    assert!(size_of::<GrowthCounters>() == 1 << G_SHIFT);
    // One `ldp`/`stp` updates both.
    assert!(G_FAULTS == G_PAGES + 8);
    assert!(arena::CHUNKS.is_power_of_two());
    assert!(arena::CHUNK == 1 << arena::CHUNK_SHIFT);
    assert!(STACK_ARENA_BASE.is_multiple_of(STACK_ARENA_SIZE));
    assert!(PAGE_SIZE == 1 << PAGE_SHIFT);
    // A 4 KiB granule: 512 entries per table, indexed by the 9 bits above the page offset.
    assert!(PAGE_SIZE == 4096);
};

core::arch::global_asm!(
    r#"
.section .text
.balign 64
// In: x0 scratch (the thread's x0 is in TPIDR_EL0), every other register the thread's,
// SP = the top of this CPU's exception stack, which is empty (see vectors.s).
.global stack_grow_fast
stack_grow_fast:
    // 1. Growth allowed and the fast path on, before anything is saved.
    adrp    x0, {ctl}
    ldr     w0, [x0, :lo12:{ctl}]
    cmp     w0, #{CTL_FAST_GROWS}
    b.ne    thread_sync_full
    stp     x1, x2, [sp, #-64]!
    stp     x3, x4, [sp, #16]
    stp     x5, x6, [sp, #32]
    stp     x7, x8, [sp, #48]
    // 2. A translation fault.
    mrs     x0, esr_el1
    and     x0, x0, #{DFSC_TRANSLATION_MASK}
    cmp     x0, #{DFSC_TRANSLATION}
    b.ne    9f
    // 3. The current thread, and FAR inside its reservation below the mapped part.
    mrs     x1, tpidr_el1
    ldr     x1, [x1, #{PERCPU_INDEX}]           // x1 = this CPU's index
    adrp    x2, {current}
    add     x2, x2, :lo12:{current}
    ldr     x2, [x2, x1, lsl #3]                // x2 = the current thread
    cbz     x2, 9f
    ldr     x3, [x2, #{T_TOP}]                  // x3 = its stack's top
    mrs     x4, far_el1
    sub     x4, x3, x4
    sub     x4, x4, #1                          // x4 = top - 1 - FAR (huge if FAR >= top)
    adrp    x5, {max_bytes}
    ldr     x5, [x5, :lo12:{max_bytes}]
    cmp     x4, x5
    b.hs    9f                                  // below the reservation or above it
    ldr     w5, [x2, #{T_MAPPED}]               // x5 = pages mapped, from the top
    lsr     x4, x4, #{PAGE_SHIFT}               // x4 = FAR's page, counted from the top
    subs    x4, x4, x5
    b.lo    9f                                  // inside the mapped part: not a growth
    add     x4, x4, #1                          // x4 = pages to map
    // 4. This CPU's reserve must hold them all (layout: stack/reserve.rs).
    adrp    x6, {reserves}
    add     x6, x6, :lo12:{reserves}
    add     x6, x6, x1, lsl #{R_SHIFT}
    ldr     x7, [x6, #{R_LEN}]
    subs    x7, x7, x4                          // x7 = pages the reserve keeps
    b.lo    9f                                  // short: the slow path decides
    str     x7, [x6, #{R_LEN}]
    ldr     x6, [x6, #{R_PAGES}]
    add     x6, x6, x7, lsl #3                  // x6 = the pages taken: pages[len - n..len]
    // 5. Count, as on_fault does: the stack, then this CPU.
    sub     x3, x3, x5, lsl #{PAGE_SHIFT}       // x3 = the lowest mapped address
    add     w5, w5, w4
    str     w5, [x2, #{T_MAPPED}]
    ldr     w7, [x2, #{T_HIGH}]
    cmp     w5, w7
    csel    w7, w5, w7, hi
    str     w7, [x2, #{T_HIGH}]
    ldr     w7, [x2, #{T_FAULTS}]
    add     w7, w7, #1
    str     w7, [x2, #{T_FAULTS}]
    adrp    x2, {growth}
    add     x2, x2, :lo12:{growth}
    add     x2, x2, x1, lsl #{G_SHIFT}
    ldp     x7, x8, [x2, #{G_PAGES}]            // grown pages, grow faults
    add     x7, x7, x4
    add     x8, x8, #1
    stp     x7, x8, [x2, #{G_PAGES}]
    ldr     x7, [x2, #{G_FAST}]
    add     x7, x7, #1
    str     x7, [x2, #{G_FAST}]
    // 6. One descriptor per page, from just below the mapped part down to FAR's page.
    adrp    x0, {l3_tables}
    add     x0, x0, :lo12:{l3_tables}
    ldr     x1, ={PAGE_BITS}
1:  ldr     x2, [x6], #8                        // a zeroed frame from the reserve
    orr     x2, x2, x1                          // its descriptor
    sub     x3, x3, #{PAGE_SIZE}                // the page it maps
    ubfx    x5, x3, #{CHUNK_SHIFT}, #{CHUNK_INDEX_BITS}
    ldr     x5, [x0, x5, lsl #3]                // that 2 MiB chunk's L3 table
    ubfx    x7, x3, #{PAGE_SHIFT}, #9
    str     x2, [x5, x7, lsl #3]
    subs    x4, x4, #1
    b.ne    1b
    // 7. Visible to the table walker, then retry the instruction.
    dsb     ishst
    isb
    ldp     x7, x8, [sp, #48]
    ldp     x5, x6, [sp, #32]
    ldp     x3, x4, [sp, #16]
    ldp     x1, x2, [sp], #64
    mrs     x0, tpidr_el0
    eret
    // Not ours: everything as it was, then the full frame and the slow path.
9:  ldp     x7, x8, [sp, #48]
    ldp     x5, x6, [sp, #32]
    ldp     x3, x4, [sp, #16]
    ldp     x1, x2, [sp], #64
    b       thread_sync_full
.ltorg
"#,
    ctl = sym GROW_CTL,
    CTL_FAST_GROWS = const CTL_FAST_GROWS,
    DFSC_TRANSLATION_MASK = const DFSC_TRANSLATION_MASK,
    DFSC_TRANSLATION = const DFSC_TRANSLATION,
    PERCPU_INDEX = const crate::percpu::INDEX_OFFSET,
    current = sym crate::sched::CURRENT,
    T_TOP = const T_TOP,
    T_MAPPED = const T_MAPPED,
    T_HIGH = const T_HIGH,
    T_FAULTS = const T_FAULTS,
    max_bytes = sym MAX_BYTES,
    PAGE_SHIFT = const PAGE_SHIFT,
    PAGE_SIZE = const PAGE_SIZE,
    reserves = sym reserve::RESERVES,
    R_SHIFT = const reserve::SHIFT,
    R_LEN = const reserve::LEN_OFFSET,
    R_PAGES = const reserve::PAGES_OFFSET,
    growth = sym GROWTH,
    G_SHIFT = const G_SHIFT,
    G_PAGES = const G_PAGES,
    G_FAST = const G_FAST,
    l3_tables = sym arena::L3_TABLES,
    PAGE_BITS = const arena::PAGE_BITS,
    CHUNK_SHIFT = const arena::CHUNK_SHIFT,
    CHUNK_INDEX_BITS = const CHUNK_INDEX_BITS,
);

/// Test hook: the next growth on this CPU faults inside the fast path itself (its reserve's
/// buffer pointer is replaced by an unmapped address), which must end in a clear report of a
/// fault in exception context, never a hang. Call it from a thread pinned to this CPU with
/// IRQs masked, and grow the stack right after: the kernel stops there. Only in kernels built
/// with the `test-hooks` feature (the test kernels).
#[cfg(feature = "test-hooks")]
pub fn inject_fault_in_fast_path() {
    reserve::poison(crate::percpu::cpu_index());
}
