//! Physical page frames: a buddy allocator over usable RAM, with counters for `mem`.
//!
//! Owns every frame not in the kernel image, the DTB or a reserved range. Frames are
//! handed out by physical address and reached through the linear map (`layout`). The
//! allocator ([`super::buddy`]) keeps its free lists inside the free frames and one byte
//! per frame, carved from RAM at [`enable`]: it never allocates from the heap, so the heap
//! may grow and shrink through it, with its own lock held, and nothing here fails for lack
//! of heap.
//!
//! Calls `sync` (the lock masks IRQs, so the scheduler may refill stack reserves from here)
//! and the one low-memory watcher registered with [`watch_low`], and nothing else; callers that map frames do so through the translation-table manager.
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::mm::buddy::{order_for, Buddy, FrameAccess};
use crate::mm::layout::{phys_to_virt, PAGE_SHIFT, PAGE_SIZE};
use crate::sync::IrqMutex;

const PAGE: u64 = PAGE_SIZE as u64;
const MAX_RANGES: usize = 64;

/// Free frames are reached through the linear map.
struct Linear;

// SAFETY: the buddy is only given RAM frames, and only once the linear map covers all RAM.
unsafe impl FrameAccess for Linear {
    fn links(&self, pa: u64) -> NonNull<[u64; 2]> {
        NonNull::new(phys_to_virt(pa) as *mut [u64; 2]).expect("linear map address")
    }
}

struct Frames {
    /// RAM ranges recorded before the linear map exists.
    ranges: [(u64, u64); MAX_RANGES],
    count: usize,
    buddy: Option<Buddy<Linear>>,
}

static FRAMES: IrqMutex<Frames> = IrqMutex::new(Frames {
    ranges: [(0, 0); MAX_RANGES],
    count: 0,
    buddy: None,
});
static TOTAL_PAGES: AtomicU64 = AtomicU64::new(0);
static FREE_PAGES: AtomicU64 = AtomicU64::new(0);

/// The one watcher of free memory crossing a mark ([`watch_low`]): the mark and the hook.
static LOW_WATCH: crate::sync::Once<(u64, fn(bool))> = crate::sync::Once::new();
/// Whether free memory was below the watched mark when last looked at (under the lock).
static BELOW_MARK: AtomicBool = AtomicBool::new(false);

/// Calls `hook(true)` whenever free memory falls below `mark` frames and `hook(false)`
/// whenever it rises to `mark` again, and once now with where it is. The hook runs with the
/// allocator's lock held (IRQs masked), so the calls come in the order the crossings
/// happened; it may not allocate or free frames. One watcher (the stack reserves); set once,
/// at boot.
pub fn watch_low(mark: u64, hook: fn(bool)) {
    let f = FRAMES.lock();
    LOW_WATCH.call_once(|| (mark, hook));
    let below = FREE_PAGES.load(Ordering::Relaxed) < mark;
    BELOW_MARK.store(below, Ordering::Relaxed);
    hook(below);
    drop(f);
}

/// Publishes the free count after a change, and tells the watcher if it crossed its mark.
/// Under the allocator's lock.
fn set_free(free: u64) {
    FREE_PAGES.store(free, Ordering::Relaxed);
    if let Some(&(mark, hook)) = LOW_WATCH.get() {
        let below = free < mark;
        if below != BELOW_MARK.load(Ordering::Relaxed) {
            BELOW_MARK.store(below, Ordering::Relaxed);
            hook(below);
        }
    }
}

/// Records the frames in `[start, end)` (physical, page-aligned inward) for the allocator.
/// Called before [`enable`].
pub fn add_range(start: u64, end: u64) {
    let first = start.div_ceil(PAGE);
    let last = end >> PAGE_SHIFT;
    if last <= first {
        return;
    }
    let mut f = FRAMES.lock();
    if f.count < MAX_RANGES {
        let i = f.count;
        f.ranges[i] = (first * PAGE, last * PAGE);
        f.count += 1;
    }
}

/// Builds the free lists over the recorded ranges, once the linear map covers them: the
/// per-frame bytes are carved from the top of the largest range.
pub fn enable() {
    let mut guard = FRAMES.lock();
    let f = &mut *guard;
    let ranges = &mut f.ranges[..f.count];
    let (Some(lo), Some(hi)) = (
        ranges.iter().map(|r| r.0).min(),
        ranges.iter().map(|r| r.1).max(),
    ) else {
        return;
    };
    let span = ((hi - lo) / PAGE) as usize;
    let meta_bytes = (span as u64).div_ceil(PAGE) * PAGE;
    let Some(big) = ranges
        .iter_mut()
        .filter(|r| r.1 - r.0 > meta_bytes)
        .max_by_key(|r| r.1 - r.0)
    else {
        return;
    };
    big.1 -= meta_bytes;
    let meta_pa = big.1;
    // SAFETY: frames just taken out of the allocator's ranges, RAM reachable through the
    // linear map, used for nothing else for ever.
    let meta = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(meta_pa) as *mut u8, span) };
    let mut buddy = Buddy::new(Linear, lo, meta);
    for &(s, e) in ranges.iter() {
        buddy.add(s, e);
    }
    // Total counts the per-frame bytes too: they are frames of RAM the allocator manages,
    // allocated for good.
    TOTAL_PAGES.store(buddy.free_pages() + meta_bytes / PAGE, Ordering::Relaxed);
    FREE_PAGES.store(buddy.free_pages(), Ordering::Relaxed);
    f.buddy = Some(buddy);
}

/// Allocates `count` physically contiguous frames (rounded up to a power of two, aligned to
/// that size); returns the physical address of the first.
pub fn alloc(count: usize) -> Option<u64> {
    let mut f = FRAMES.lock();
    let b = f.buddy.as_mut()?;
    let pa = b.alloc(count)?;
    set_free(b.free_pages());
    Some(pa)
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

/// Returns `count` frames starting at `pa`, as allocated by [`alloc()`] with that count.
pub fn free(pa: u64, count: usize) {
    let mut f = FRAMES.lock();
    if let Some(b) = f.buddy.as_mut() {
        b.free(pa, count);
        set_free(b.free_pages());
    }
}

/// Frames the allocator manages.
pub fn total_pages() -> u64 {
    TOTAL_PAGES.load(Ordering::Relaxed)
}

/// Frames free now.
pub fn free_pages() -> u64 {
    FREE_PAGES.load(Ordering::Relaxed)
}

/// Frames an allocation of `count` really takes (a power of two).
pub fn rounded(count: usize) -> usize {
    1 << order_for(count)
}
