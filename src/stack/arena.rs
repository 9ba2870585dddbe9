//! The stack arena: reservations (slots) of `kstack.max` bytes, each above a guard gap of
//! `kstack.guard` bytes, packed back to back so that one 4 KiB last-level table serves
//! about a hundred 16 KiB stacks (about 40 bytes of table per thread).
//!
//! A slot's last-level tables are created when the slot is first handed out and are never
//! freed, so mapping or unmapping a page of a stack later is a store into a table found by
//! address arithmetic: no walk, no lock. Owns the arena's virtual space; calls `mm::kspace`
//! (to create the tables) and `mm::frame` (to return pages).
//!
//! Free slots form a list threaded through the slots themselves: each free slot's link is
//! kept in the L3 entry of its lowest guard page, an entry the walker never uses (a guard
//! page is never mapped) and that stays invalid (bit 0 clear: the hardware ignores the other
//! bits of an invalid descriptor). Freeing a slot therefore never allocates and the list
//! costs no memory, however many slots were ever used: after `kill all` the arena holds
//! nothing but its tables.
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{config, StackError};
use crate::mm::layout::{PAGE_SIZE, STACK_ARENA_BASE, STACK_ARENA_SIZE};
use crate::mm::page_table::{Attributes, PageTable, TlbOps};
use crate::sync::IrqMutex;

/// log2 of the span of one L3 table (2 MiB).
pub(super) const CHUNK_SHIFT: u32 = 21;
pub(super) const CHUNK: u64 = 1 << CHUNK_SHIFT;
pub(super) const CHUNKS: usize = (STACK_ARENA_SIZE / CHUNK) as usize;

/// Virtual address of the L3 table serving each 2 MiB chunk of the arena (0: none yet).
/// The growth fast path (`fast`) reads it too.
pub(super) static L3_TABLES: [AtomicU64; CHUNKS] = [const { AtomicU64::new(0) }; CHUNKS];
static TABLE_PAGES: AtomicU64 = AtomicU64::new(0);
static STRIDE: AtomicU64 = AtomicU64::new(0);
static GUARD: AtomicU64 = AtomicU64::new(0);
/// Every bit of a stack page descriptor but the address (normal memory, read-write, never
/// executable), so the fault paths only OR in the frame.
pub(super) const PAGE_BITS: u64 = PageTable::page_bits(Attributes::DATA);

struct Slots {
    next_unused: u32,
    max: u32,
    /// The most recently freed slot, the head of the free list (`NO_SLOT`: empty).
    free_head: u32,
}

/// End of the free list.
const NO_SLOT: u32 = u32::MAX;

static SLOTS: IrqMutex<Slots> = IrqMutex::new(Slots {
    next_unused: 0,
    max: 0,
    free_head: NO_SLOT,
});

/// The L3 entry holding free slot `slot`'s link: its lowest guard page's.
fn link_ptr(slot: u32) -> *mut u64 {
    descriptor_ptr(STACK_ARENA_BASE + slot as u64 * stride())
}

/// A link as an invalid descriptor: `(next + 1) << 1`, so bit 0 (valid) is clear and an
/// entry of 0 (the end of the list) reads as [`NO_SLOT`].
fn encode_link(next: u32) -> u64 {
    if next == NO_SLOT {
        0
    } else {
        (next as u64 + 1) << 1
    }
}

fn decode_link(desc: u64) -> u32 {
    ((desc >> 1) as u32).wrapping_sub(1)
}

/// Sizes the arena for the configured stacks.
pub fn init() {
    let stride = (config().max + config().guard) as u64;
    STRIDE.store(stride, Ordering::Relaxed);
    GUARD.store(config().guard as u64, Ordering::Relaxed);
    SLOTS.lock().max = (STACK_ARENA_SIZE / stride).min(u32::MAX as u64) as u32;
}

/// Bytes from one slot to the next.
pub fn stride() -> u64 {
    STRIDE.load(Ordering::Relaxed)
}

/// How many stacks the arena can hold at once.
pub fn capacity() -> u32 {
    SLOTS.lock().max
}

/// Lowest stack address of `slot` (its guard gap lies just below).
pub fn slot_base(slot: u32) -> u64 {
    STACK_ARENA_BASE + slot as u64 * stride() + GUARD.load(Ordering::Relaxed)
}

/// Pages of translation tables created for the arena.
pub fn table_pages() -> u64 {
    TABLE_PAGES.load(Ordering::Relaxed)
}

/// Takes a free slot, creating the tables for it if it was never used.
pub fn alloc_slot() -> Result<u32, StackError> {
    let mut slots = SLOTS.lock();
    if slots.free_head != NO_SLOT {
        let slot = slots.free_head;
        let link = link_ptr(slot);
        // SAFETY: a free slot's guard entry, in a table that exists (the slot was handed out
        // before), written only under the slots lock while the slot is free.
        slots.free_head = decode_link(unsafe { core::ptr::read_volatile(link) });
        // SAFETY: as above; the entry is left as every guard entry is, empty.
        unsafe { core::ptr::write_volatile(link, 0) };
        return Ok(slot);
    }
    if slots.next_unused >= slots.max {
        return Err(StackError::ArenaFull);
    }
    let slot = slots.next_unused;
    let start = STACK_ARENA_BASE + slot as u64 * stride();
    let end = start + stride();
    let mut chunk_va = start & !(CHUNK - 1);
    while chunk_va < end {
        let index = ((chunk_va - STACK_ARENA_BASE) / CHUNK) as usize;
        if L3_TABLES[index].load(Ordering::Relaxed) == 0 {
            let created = crate::mm::kspace::prepare_tables(chunk_va, CHUNK)
                .map_err(|_| StackError::OutOfMemory)?;
            TABLE_PAGES.fetch_add(created as u64, Ordering::Relaxed);
            let table = crate::mm::kspace::leaf_table(chunk_va).ok_or(StackError::OutOfMemory)?;
            // Release: a CPU that later finds this slot's thread also sees the table.
            L3_TABLES[index].store(table, Ordering::Release);
        }
        chunk_va += CHUNK;
    }
    slots.next_unused += 1;
    Ok(slot)
}

/// Returns a slot whose pages are all unmapped. Never allocates.
pub fn free_slot(slot: u32) {
    let mut slots = SLOTS.lock();
    debug_assert!(slot < slots.next_unused, "slot {slot} was never handed out");
    let head = slots.free_head;
    // SAFETY: the slot's guard entry (its tables exist since alloc_slot handed it out); the
    // slot is free from now on, so nobody else reads or writes it outside this lock. An
    // invalid descriptor: no TLB maintenance needed.
    unsafe { core::ptr::write_volatile(link_ptr(slot), encode_link(head)) };
    slots.free_head = slot;
}

fn descriptor_ptr(va: u64) -> *mut u64 {
    let index = ((va - STACK_ARENA_BASE) / CHUNK) as usize;
    let table = L3_TABLES[index].load(Ordering::Acquire);
    (table + ((va >> 12) & 511) * 8) as *mut u64
}

/// Maps the page at `va` (inside a slot handed out by [`alloc_slot`]) to frame `pa`,
/// read-write and never executable. Visible after [`publish`].
pub fn map_page(va: u64, pa: u64) {
    let desc = PAGE_BITS | pa;
    // SAFETY: the slot's L3 table exists (alloc_slot) and this entry belongs to the slot's
    // owner, the only writer.
    unsafe { core::ptr::write_volatile(descriptor_ptr(va), desc) };
}

/// Makes the pages mapped so far visible to the table walker: `DSB ISHST; ISB`.
pub fn publish() {
    crate::arch::tlb::HardwareTlb.after_map();
}

/// Clears the entries of `pages` pages from `va` up without invalidating the TLB, and adds
/// their frames to `frames`. The caller must invalidate before the frames or the slot are
/// used again (see `ReleaseBatch`).
pub fn clear_pages(va: u64, pages: u32, frames: &mut Vec<u64>) {
    for i in 0..pages {
        let slot = descriptor_ptr(va + i as u64 * PAGE_SIZE as u64);
        // SAFETY: as in map_page.
        let desc = unsafe { core::ptr::read_volatile(slot) };
        // SAFETY: as in map_page.
        unsafe { core::ptr::write_volatile(slot, 0) };
        let pa = desc & crate::mm::page_table::OUTPUT_ADDRESS_MASK;
        if pa != 0 {
            frames.push(pa);
        }
    }
}

/// Clears the entry of the page at `va` without invalidating the TLB and returns its frame
/// (0 if it was not mapped). The caller invalidates before the frame is used again.
pub fn take_page(va: u64) -> u64 {
    let slot = descriptor_ptr(va);
    // SAFETY: as in map_page.
    let desc = unsafe { core::ptr::read_volatile(slot) };
    // SAFETY: as in map_page.
    unsafe { core::ptr::write_volatile(slot, 0) };
    desc & 0x0000_FFFF_FFFF_F000
}

/// Unmaps `pages` pages from `va` up, invalidates them on every CPU and frees the frames.
pub fn unmap_pages(va: u64, pages: u32) {
    if pages == 0 {
        return;
    }
    let tlb = crate::arch::tlb::HardwareTlb;
    let mut frames: [u64; 16] = [0; 16];
    let mut done = 0u32;
    while done < pages {
        let n = (pages - done).min(16);
        for i in 0..n {
            let page_va = va + (done + i) as u64 * PAGE_SIZE as u64;
            let slot = descriptor_ptr(page_va);
            // SAFETY: as in map_page.
            let desc = unsafe { core::ptr::read_volatile(slot) };
            // SAFETY: as in map_page.
            unsafe { core::ptr::write_volatile(slot, 0) };
            tlb.invalidate_page(page_va);
            frames[i as usize] = desc & crate::mm::page_table::OUTPUT_ADDRESS_MASK;
        }
        // Frames go back only once no CPU can still reach them through a stale entry.
        tlb.sync();
        for &pa in &frames[..n as usize] {
            if pa != 0 {
                crate::mm::frame::free(pa, 1);
            }
        }
        done += n;
    }
}
