//! A heap of one thread's own: chunks of frames that hold its allocations while it runs code
//! that may allocate without bounds or without handling failure (third-party libraries),
//! and that go back whole when that code is done or the thread dies.
//!
//! The general heap cannot take back what a thread allocated if the thread is ended halfway
//! (a kill, a stack overflow, an allocation that fails inside a library that cannot handle
//! failure): the blocks stay allocated for ever. A [`ThreadHeap`] can: every block is in one
//! of its chunks, so releasing the chunks releases everything, whatever state the code was
//! left in. Its descriptor lives at the start of its first chunk, so nothing of it is on the
//! thread's stack, and a thread heap needs no lock: only its own thread, in thread context,
//! allocates from it.
//!
//! The first chunk is what the caller expects the code to need; when it is full the heap
//! takes another chunk, as large as all it holds (so a few chunks cover any growth), up to
//! [`MAX_CHUNKS`]. Where memory is broken up, a chunk is what the source has, down to what
//! the allocation needs (one page for the first).
//!
//! Generic over the [`ChunkPages`] source and host-tested. Which thread's heap is in use is
//! `sched`'s business (`sched::heap_scope`). Calls nothing but its page source.
use core::alloc::Layout;
use core::ptr::NonNull;

use crate::mm::heap::{pages_for, ChunkPages, PAGE};

/// Most chunks one thread heap holds: its first and up to seven that each double it.
pub const MAX_CHUNKS: usize = 8;

/// Bytes at the start of the first chunk that the descriptor takes (rounded up so that the
/// blocks behind it stay 64-byte aligned).
pub const DESCRIPTOR_BYTES: usize = core::mem::size_of::<ThreadHeap>().next_multiple_of(64);

/// A thread's own heap, over chunks of pages from a [`ChunkPages`] source; see the module doc.
pub struct ThreadHeap {
    heap: buddy_system_allocator::Heap<32>,
    /// `(start, pages)` of each chunk; the first holds this descriptor.
    chunks: [(usize, usize); MAX_CHUNKS],
    count: usize,
    allocated: usize,
    peak: usize,
}

impl ThreadHeap {
    /// A thread heap whose first chunk is `bytes` (rounded up to a power of two of pages),
    /// or less when `pages` has no run that long (memory broken up: the heap grows by what
    /// its allocations need), its descriptor at the start of that chunk; `None` when `pages`
    /// has not a page left.
    pub fn create<P: ChunkPages>(pages: &mut P, bytes: usize) -> Option<NonNull<ThreadHeap>> {
        let mut count = pages_for(bytes.max(DESCRIPTOR_BYTES + 1));
        let start = loop {
            if let Some(start) = pages.alloc(count) {
                break start;
            }
            if count == 1 {
                return None;
            }
            count /= 2;
        };
        let this = start as *mut ThreadHeap;
        // SAFETY: the run is ours from the page source, page-aligned (aligned enough for the
        // descriptor) and large enough for it; nothing else uses it.
        unsafe {
            this.write(ThreadHeap {
                heap: buddy_system_allocator::Heap::empty(),
                chunks: [(0, 0); MAX_CHUNKS],
                count: 1,
                allocated: 0,
                peak: 0,
            });
            (*this).chunks[0] = (start, count);
            (*this)
                .heap
                .add_to_heap(start + DESCRIPTOR_BYTES, start + count * PAGE);
        }
        NonNull::new(this)
    }

    /// A block for `layout`, from the chunks held or from a new one; `None` when the chunk
    /// table is full or `pages` has no run for one.
    pub fn alloc<P: ChunkPages>(&mut self, pages: &mut P, layout: Layout) -> Option<NonNull<u8>> {
        let p = match self.heap.alloc(layout) {
            Ok(p) => p,
            Err(()) => {
                self.grow(pages, &layout)?;
                self.heap.alloc(layout).ok()?
            }
        };
        self.allocated += layout.size();
        self.peak = self.peak.max(self.allocated);
        Some(p)
    }

    /// Whether `addr` lies in one of this heap's chunks (a block it handed out).
    pub fn owns(&self, addr: usize) -> bool {
        self.chunks[..self.count]
            .iter()
            .any(|&(start, count)| addr >= start && addr < start + count * PAGE)
    }

    /// Gives back a block.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`alloc`](Self::alloc) of this heap with this `layout` and is not
    /// used any more.
    pub unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: passed on from the caller.
        unsafe { self.heap.dealloc(ptr, layout) };
        self.allocated -= layout.size();
    }

    /// Bytes handed out and not given back.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// The most bytes handed out at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Pages taken from the page source, the descriptor's included.
    pub fn pages(&self) -> usize {
        self.chunks[..self.count].iter().map(|&(_, n)| n).sum()
    }

    /// Gives every chunk back to `pages`, the descriptor's last; every block the heap handed
    /// out goes with them.
    ///
    /// # Safety
    ///
    /// `this` came from [`create`](Self::create) over the same source, and neither it nor
    /// any block it handed out is used any more.
    pub unsafe fn release<P: ChunkPages>(this: NonNull<ThreadHeap>, pages: &mut P) {
        // SAFETY: the caller's promise: a live descriptor nobody else uses. The table is
        // copied out because the first chunk, which holds it, goes back too.
        let (chunks, count) = unsafe {
            let h = this.as_ref();
            (h.chunks, h.count)
        };
        for &(start, n) in chunks[1..count].iter().chain(&chunks[..1]) {
            pages.free(start, n);
        }
    }

    /// Adds a chunk for `layout`: as many pages as the heap holds (it doubles), fewer when
    /// the source has no such run, never fewer than the allocation needs.
    fn grow<P: ChunkPages>(&mut self, pages: &mut P, layout: &Layout) -> Option<()> {
        if self.count == MAX_CHUNKS {
            return None;
        }
        let need = pages_for(layout.size().max(layout.align()));
        let mut count = self.pages().next_power_of_two().max(need);
        let start = loop {
            if let Some(start) = pages.alloc(count) {
                break start;
            }
            if count == need {
                return None;
            }
            count = (count / 2).max(need);
        };
        // SAFETY: the run is ours from the page source and used by this heap only.
        unsafe { self.heap.add_to_heap(start, start + count * PAGE) };
        self.chunks[self.count] = (start, count);
        self.count += 1;
        Some(())
    }
}

#[cfg(test)]
mod tests;
