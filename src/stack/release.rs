//! Releasing stacks in batches: the reaper (exit and kill) and parking clear the entries of
//! many stacks, invalidate the TLB once for all of them, then give frames and reservations
//! back.
//!
//! Owns [`ReleaseBatch`]. Calls `arena`, `mm::frame` and `arch::tlb`.
use core::sync::atomic::Ordering;

use super::{arena, count_unmapped, park, Stack, PAGE, STACKS};

/// Stacks of exited threads, released together: their entries are cleared one by one, the
/// TLB is invalidated once for all of them (one broadcast `TLBI VMALLE1IS` when there are
/// many pages, instead of one per page), then frames and reservations go back.
///
/// Its buffers are allocated once, with [`with_room_for`](Self::with_room_for), and reused:
/// the reaper must be able to give memory back when there is none left to allocate.
#[derive(Default)]
pub struct ReleaseBatch {
    frames: alloc::vec::Vec<u64>,
    slots: alloc::vec::Vec<u32>,
    vas: alloc::vec::Vec<u64>,
    /// More pages cleared than `vas` can list: the flush invalidates everything.
    full_flush: bool,
}

/// Beyond this many pages one full invalidation is cheaper than one per page.
const BATCH_FULL_FLUSH_PAGES: usize = 64;

/// Frames a [`ReleaseBatch`] holds before it must flush: a fixed size (64 KiB of
/// addresses), whatever `kstack.max` is. A stack with more pages is released in pieces.
const BATCH_FRAMES: usize = 8192;

impl ReleaseBatch {
    /// An empty batch with room for `stacks` stacks and `BATCH_FRAMES` (8192) frames.
    pub fn with_room_for(stacks: usize) -> Self {
        Self {
            frames: alloc::vec::Vec::with_capacity(BATCH_FRAMES),
            slots: alloc::vec::Vec::with_capacity(stacks),
            vas: alloc::vec::Vec::with_capacity(BATCH_FULL_FLUSH_PAGES),
            full_flush: false,
        }
    }

    /// Whether one more stack fits without allocating.
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.slots.capacity()
    }

    /// Adds the stack of a thread that will never run again. The caller has taken its claim
    /// for release where it lived ([`Stack::claim_for_release`]). Its pages are unmapped
    /// now; when the frame buffer fills, the batch flushes (invalidates, frees) and goes on.
    pub fn add(&mut self, stack: Stack) {
        park::discard(&stack);
        let mut pages = stack.mapped_pages.load(Ordering::Relaxed);
        let mut bottom = stack.mapped_bottom();
        while pages > 0 {
            let room = self.frames.capacity() - self.frames.len();
            if room == 0 {
                self.flush_frames();
                continue;
            }
            let n = pages.min(room as u32);
            let before = self.frames.len();
            arena::clear_pages(bottom, n, &mut self.frames);
            if self.vas.len() + n as usize <= self.vas.capacity() {
                self.vas.extend((0..n).map(|i| bottom + i as u64 * PAGE));
            } else {
                // Too many to invalidate one by one: `flush_frames` invalidates everything.
                self.full_flush = true;
            }
            count_unmapped((self.frames.len() - before) as u64);
            bottom += n as u64 * PAGE;
            pages -= n;
        }
        STACKS.fetch_sub(1, Ordering::Relaxed);
        self.slots.push(stack.slot);
    }

    /// Invalidates the TLB for the pages cleared so far and frees their frames.
    fn flush_frames(&mut self) {
        if self.frames.is_empty() {
            return;
        }
        if self.full_flush || self.frames.len() > BATCH_FULL_FLUSH_PAGES {
            crate::arch::tlb::invalidate_all();
        } else {
            use crate::mm::page_table::TlbOps;
            let tlb = crate::arch::tlb::HardwareTlb;
            for &va in self.vas.iter() {
                tlb.invalidate_page(va);
            }
            tlb.sync();
        }
        self.vas.clear();
        self.full_flush = false;
        for pa in self.frames.drain(..) {
            crate::mm::frame::free(pa, 1);
        }
    }

    /// Invalidates, then returns every frame and reservation.
    pub fn finish(&mut self) {
        self.flush_frames();
        for slot in self.slots.drain(..) {
            arena::free_slot(slot);
        }
    }
}
