//! Physical page frames: a buddy allocator over usable RAM, with counters for `mem`.
//!
//! Owns every frame not in the kernel image, the DTB or a reserved range. Frames are
//! handed out by physical address and reached through the linear map (`layout`).
//! Calls `sync` (the lock masks IRQs, so the scheduler may refill stack reserves from here)
//! and nothing else; callers that map frames do so through the translation-table manager.
use core::sync::atomic::{AtomicU64, Ordering};

use crate::mm::layout::{phys_to_virt, PAGE_SHIFT, PAGE_SIZE};
use crate::sync::IrqMutex;

static FRAMES: IrqMutex<buddy_system_allocator::FrameAllocator<32>> =
    IrqMutex::new(buddy_system_allocator::FrameAllocator::new());
static TOTAL_PAGES: AtomicU64 = AtomicU64::new(0);
/// Set while this CPU holds the frame lock: the allocator's free lists are B-trees on the
/// heap, and the heap must not try to grow from frames then (see `heap`).
static INSIDE: [core::sync::atomic::AtomicBool; crate::percpu::MAX_CPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; crate::percpu::MAX_CPUS];

/// Whether this CPU is inside the frame allocator (holding its lock).
pub fn inside() -> bool {
    INSIDE[crate::percpu::cpu_index()].load(Ordering::Relaxed)
}

/// Runs `f` on the allocator with its lock held and [`inside`] set for this CPU.
fn with_frames<R>(f: impl FnOnce(&mut buddy_system_allocator::FrameAllocator<32>) -> R) -> R {
    let mut frames = FRAMES.lock();
    let cpu = crate::percpu::cpu_index();
    INSIDE[cpu].store(true, Ordering::Relaxed);
    let r = f(&mut frames);
    INSIDE[cpu].store(false, Ordering::Relaxed);
    r
}
static FREE_PAGES: AtomicU64 = AtomicU64::new(0);

/// Gives the frames in `[start, end)` (physical, page-aligned inward) to the allocator.
pub fn add_range(start: u64, end: u64) {
    let first = start.div_ceil(PAGE_SIZE as u64);
    let last = end >> PAGE_SHIFT;
    if last <= first {
        return;
    }
    with_frames(|f| f.add_frame(first as usize, last as usize));
    TOTAL_PAGES.fetch_add(last - first, Ordering::Relaxed);
    FREE_PAGES.fetch_add(last - first, Ordering::Relaxed);
}

/// Allocates `count` physically contiguous frames; returns the physical address of the first.
pub fn alloc(count: usize) -> Option<u64> {
    let pfn = with_frames(|f| f.alloc(count))?;
    FREE_PAGES.fetch_sub(count as u64, Ordering::Relaxed);
    Some((pfn as u64) << PAGE_SHIFT)
}

/// Allocates one frame and fills it with zeroes.
pub fn alloc_zeroed() -> Option<u64> {
    let pa = alloc(1)?;
    zero(pa);
    Some(pa)
}

/// Zeroes the frame at `pa` through the linear map.
pub fn zero(pa: u64) {
    // SAFETY: `pa` is a frame this caller owns, reachable through the linear map.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE) };
}

/// Returns `count` frames starting at `pa`, as allocated by [`alloc()`].
pub fn free(pa: u64, count: usize) {
    with_frames(|f| f.dealloc((pa >> PAGE_SHIFT) as usize, count));
    FREE_PAGES.fetch_add(count as u64, Ordering::Relaxed);
}

/// Frames the allocator manages.
pub fn total_pages() -> u64 {
    TOTAL_PAGES.load(Ordering::Relaxed)
}

/// Frames free now.
pub fn free_pages() -> u64 {
    FREE_PAGES.load(Ordering::Relaxed)
}
