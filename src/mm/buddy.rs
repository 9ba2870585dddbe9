//! A buddy allocator of physical frames that needs no heap.
//!
//! Free blocks (2^k frames, aligned to their size) are kept in one doubly linked list per
//! order, linked through their own first 16 bytes; one byte per frame (`meta`) says whether
//! the frame starts a free block and of which order, which is all a free needs to find and
//! merge its buddy. So allocating and freeing frames never allocates memory: the frame
//! allocator can be used by the heap, and by code that runs when the heap is exhausted.
//!
//! Generic over how a frame is reached ([`FrameAccess`]) so that it is unit-tested on the
//! host. Owns nothing but the lists; the caller locks.
use core::ptr::NonNull;

/// Orders kept: blocks of up to 2^(ORDERS-1) frames.
pub const ORDERS: usize = 32;
const NONE: u64 = u64::MAX;
/// `meta` value of a frame that does not start a free block.
const NOT_FREE: u8 = 0xff;
const PAGE: u64 = 4096;

/// How the allocator reaches a free frame's first bytes, where it keeps its links.
///
/// # Safety
///
/// `links(pa)` must return a pointer valid for reads and writes of two `u64` for every frame
/// `pa` given to the allocator, for as long as that frame is free.
pub unsafe trait FrameAccess {
    /// Where the links of free frame `pa` live.
    fn links(&self, pa: u64) -> NonNull<[u64; 2]>;
}

/// Free lists over the frames `[base, base + meta.len() × 4 KiB)` (physical addresses).
pub struct Buddy<A: FrameAccess> {
    access: A,
    base: u64,
    meta: &'static mut [u8],
    heads: [u64; ORDERS],
    free_pages: u64,
}

/// Order of the smallest block holding `count` frames.
pub fn order_for(count: usize) -> usize {
    count.max(1).next_power_of_two().trailing_zeros() as usize
}

impl<A: FrameAccess> Buddy<A> {
    /// Empty lists for frames from `base` (page-aligned); `meta` has one byte per frame of
    /// the span the allocator may ever be given.
    pub fn new(access: A, base: u64, meta: &'static mut [u8]) -> Self {
        meta.fill(NOT_FREE);
        Self {
            access,
            base,
            meta,
            heads: [NONE; ORDERS],
            free_pages: 0,
        }
    }

    /// Frames free now.
    pub fn free_pages(&self) -> u64 {
        self.free_pages
    }

    fn index(&self, pa: u64) -> Option<usize> {
        let i = pa.checked_sub(self.base)? / PAGE;
        (i < self.meta.len() as u64).then_some(i as usize)
    }

    fn links(&mut self, pa: u64) -> &mut [u64; 2] {
        // SAFETY: `pa` is a free frame (FrameAccess contract); only the allocator touches
        // the links of free frames, and it is used under its caller's lock.
        unsafe { &mut *self.access.links(pa).as_ptr() }
    }

    fn push(&mut self, pa: u64, order: usize) {
        let head = self.heads[order];
        *self.links(pa) = [head, NONE];
        if head != NONE {
            self.links(head)[1] = pa;
        }
        self.heads[order] = pa;
        let i = self.index(pa).expect("frame outside the allocator's span");
        self.meta[i] = order as u8;
    }

    fn unlink(&mut self, pa: u64, order: usize) {
        let [next, prev] = *self.links(pa);
        if prev == NONE {
            self.heads[order] = next;
        } else {
            self.links(prev)[0] = next;
        }
        if next != NONE {
            self.links(next)[1] = prev;
        }
        if let Some(i) = self.index(pa) {
            self.meta[i] = NOT_FREE;
        }
    }

    /// Gives the frames in `[start, end)` (page-aligned, inside the span) to the allocator.
    pub fn add(&mut self, start: u64, end: u64) {
        let mut pa = start;
        while pa < end {
            // The largest block that is aligned at `pa` and fits before `end`.
            let pfn = pa / PAGE;
            let align_order = if pfn == 0 {
                ORDERS - 1
            } else {
                pfn.trailing_zeros() as usize
            };
            let mut order = align_order.min(ORDERS - 1);
            while pa + (PAGE << order) > end {
                order -= 1;
            }
            self.free_block(pa, order);
            pa += PAGE << order;
        }
    }

    /// `2^order_for(count)` contiguous frames aligned to their size; the first's address.
    pub fn alloc(&mut self, count: usize) -> Option<u64> {
        let order = order_for(count);
        let mut k = (order..ORDERS).find(|&k| self.heads[k] != NONE)?;
        let pa = self.heads[k];
        self.unlink(pa, k);
        while k > order {
            k -= 1;
            self.push(pa + (PAGE << k), k);
        }
        self.free_pages -= 1 << order;
        Some(pa)
    }

    /// Gives back frames [`alloc`](Self::alloc) returned for the same `count`.
    pub fn free(&mut self, pa: u64, count: usize) {
        self.free_block(pa, order_for(count));
    }

    fn free_block(&mut self, mut pa: u64, mut order: usize) {
        let i = self.index(pa).expect("frame outside the allocator's span");
        assert!(self.meta[i] == NOT_FREE, "frame {pa:#x} freed twice");
        self.free_pages += 1 << order;
        while order + 1 < ORDERS {
            let buddy = pa ^ (PAGE << order);
            match self.index(buddy) {
                Some(i) if self.meta[i] == order as u8 => {
                    self.unlink(buddy, order);
                    pa = pa.min(buddy);
                    order += 1;
                }
                _ => break,
            }
        }
        self.push(pa, order);
    }
}

#[cfg(test)]
mod tests;
