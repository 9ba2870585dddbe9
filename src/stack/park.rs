//! Parked stacks: a sleeping thread's stack without a single page mapped.
//!
//! A thread asleep in this kernel stopped in an `svc` (`sleep`, `park`), so its registers are
//! in its control block and the only live part of its stack is the few hundred bytes between
//! its saved SP and the top. *Parking* copies those bytes (less [`PARK_MARGIN`] below SP,
//! which nothing uses: AArch64 code has no red zone) into a block of the smallest of
//! [`CLASSES`] that fits, unmaps every page of the reservation and returns them; the
//! reservation itself (its slot in the arena) is kept. Before the thread runs again the
//! scheduler's switch-in (`restore`, called from `prepare_switch_in`) maps the top page(s)
//! from its CPU's reserve, copies the bytes back to the same addresses (so every pointer into
//! the stack, saved frame pointers included, is still right), and gives the block back. A
//! stack whose live part does not fit the largest class is trimmed instead.
//!
//! When a stack may be parked, exactly: its policy is dynamic; its thread is *parkable*
//! (workload threads are, by construction: their stacks hold nothing any other thread may
//! read; a system thread may declare itself so with `sched::set_parkable`); the thread is
//! sleeping or blocked (stopped in an `svc`, so its saved SP is exact); and the parker holds
//! the stack's claim in the [`CLAIM_PARKING`](super) state. A touch of a parked stack by some
//! other thread is therefore a bug in that thread; it is caught as a translation fault in the
//! arena and reported naming the parked thread (`exception.rs`), and the toucher is ended.
//!
//! The claim (one byte in the [`Stack`]) is what makes parking safe against everything that
//! races with it on other CPUs. Every party takes it with a compare-and-swap from free and
//! gives it back when done:
//! - switch-in (`sched::switch_to_next`) takes it as *running* before it loads a thread's
//!   registers and restores a parked stack under it, so a thread never runs on a stack that
//!   is being parked, trimmed or released; if it cannot, it tries another thread first;
//! - parking takes it as *parking* for the whole batch, from the copy until the broadcast TLB
//!   invalidation is complete and the frames are free, so no CPU can run the thread while a
//!   stale translation to a freed frame may exist;
//! - trim takes it as *trimming*;
//! - release (kill, exit: the reaper) waits for it in place before it frees the block or the
//!   pages, so a thread killed while being parked is freed only after the park is finished;
//!   and a thread only exits by running, which means it was restored first.
//!
//! Waking never waits for parking: a sleeper woken while parked is queued as usual and its
//! switch-in restores it; woken while being parked, it waits in the run queue until the claim
//! is free again (the parker kicks its CPU then).
//!
//! Owns the parked blocks (a slab cache per class) and the parking counters. Calls `arena`,
//! `reserve`, `mm::frame`, `mm::slab` and `arch::tlb`.
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{arena, reserve, Stack, CLAIM_FREE, CLAIM_PARKING, PAGE};
use crate::cmdline::StackPolicy;
use crate::mm::layout::align_down;
use crate::mm::slab::SlabCache;

/// Sizes of the blocks parked bytes are kept in. An `idle` thread needs the smallest; a thread
/// asleep a few frames deep one of the middle ones.
pub const CLASSES: [usize; 5] = [128, 256, 512, 1024, 2048];

/// Bytes below the saved SP copied with the live part.
pub const PARK_MARGIN: u64 = 16;

static PARKED_STACKS: AtomicU64 = AtomicU64::new(0);
static PARKED_BYTES: AtomicU64 = AtomicU64::new(0);
static PARKS: AtomicU64 = AtomicU64::new(0);
static RESTORES: AtomicU64 = AtomicU64::new(0);
static TRIMMED_INSTEAD: AtomicU64 = AtomicU64::new(0);
static WAITS: AtomicU64 = AtomicU64::new(0);

/// Parking counters for `stacks`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParkStats {
    /// Stacks parked now.
    pub parked: u64,
    /// Bytes of blocks holding parked stacks now (class sizes).
    pub parked_bytes: u64,
    /// Stacks parked since boot.
    pub parks: u64,
    /// Parked stacks restored since boot.
    pub restores: u64,
    /// Stacks trimmed because their live part was too large for a block, or no block could be
    /// had.
    pub trimmed_instead: u64,
    /// Times a parked thread had to wait to be restored because no page could be found.
    pub waits: u64,
}

/// The parking counters now.
pub fn stats() -> ParkStats {
    ParkStats {
        parked: PARKED_STACKS.load(Ordering::Relaxed),
        parked_bytes: PARKED_BYTES.load(Ordering::Relaxed),
        parks: PARKS.load(Ordering::Relaxed),
        restores: RESTORES.load(Ordering::Relaxed),
        trimmed_instead: TRIMMED_INSTEAD.load(Ordering::Relaxed),
        waits: WAITS.load(Ordering::Relaxed),
    }
}

/// Whether `kstack.park_after` allows parking at all (it is not `off`).
pub fn enabled() -> bool {
    super::config().park_after_ms.is_some()
}

/// The smallest class that holds `len` bytes.
pub fn class_for(len: usize) -> Option<usize> {
    CLASSES.iter().position(|&c| c >= len)
}

/// One slab cache per class. Their locks mask IRQs, so a block may be freed by the scheduler
/// in exception context (restore); they are never used on the growth fault path. Empty slabs
/// go back to the frame allocator, so a million parked threads killed leave nothing behind.
static BLOCKS: [SlabCache; CLASSES.len()] = [
    SlabCache::new(CLASSES[0], 16),
    SlabCache::new(CLASSES[1], 16),
    SlabCache::new(CLASSES[2], 16),
    SlabCache::new(CLASSES[3], 16),
    SlabCache::new(CLASSES[4], 16),
];

fn alloc_block(class: usize) -> Option<NonNull<u8>> {
    BLOCKS[class].alloc()
}

/// # Safety
/// `ptr` came from [`alloc_block`] with the same class and is not used afterwards.
unsafe fn free_block(ptr: NonNull<u8>, class: usize) {
    // SAFETY: the caller's contract.
    unsafe { BLOCKS[class].free(ptr) };
}

/// Parks `stack`, whose claim the caller holds as parking and whose thread stopped with SP
/// `saved_sp`: copies the live bytes into a block and clears every page's entry, adding the
/// frames and addresses to `frames`/`vas` (the caller invalidates, then frees). A stack whose
/// live part is too large, or for which no block can be had, is trimmed instead. Returns the
/// whether it was parked and the pages taken out of the stack.
fn park_claimed(
    stack: &Stack,
    saved_sp: u64,
    frames: &mut Vec<u64>,
    vas: &mut Vec<u64>,
) -> (bool, u32) {
    if stack.policy != StackPolicy::Dynamic || stack.is_parked() {
        return (false, 0);
    }
    let top = stack.top();
    let mapped = stack.mapped_pages.load(Ordering::Relaxed);
    let bottom = top - mapped as u64 * PAGE;
    let from = align_down(saved_sp.saturating_sub(PARK_MARGIN), 16).max(bottom);
    if saved_sp > top || saved_sp < bottom {
        // Not a SP on this stack (never the case for a thread stopped in an svc): leave it.
        return (false, 0);
    }
    let len = (top - from) as usize;
    let block = class_for(len).and_then(|class| Some((class, alloc_block(class)?)));
    let Some((class, block)) = block else {
        TRIMMED_INSTEAD.fetch_add(1, Ordering::Relaxed);
        return (false, super::trim::trim_claimed(stack, saved_sp));
    };
    // SAFETY: [from, top) is mapped (from ≥ bottom) and the thread cannot run while we hold
    // its claim; the block has room for `len` ≤ its class bytes.
    unsafe { core::ptr::copy_nonoverlapping(from as *const u8, block.as_ptr(), len) };
    if frames.len() + mapped as usize <= frames.capacity() {
        arena::clear_pages(bottom, mapped, frames);
        vas.extend((0..mapped).map(|i| bottom + i as u64 * PAGE));
    } else {
        // More pages than the batch has room for (a huge kstack.max): invalidated and
        // freed on their own, before the claim is released all the same.
        arena::unmap_pages(bottom, mapped);
    }
    stack.mapped_pages.store(0, Ordering::Relaxed);
    stack
        .parked_block
        .store(block.as_ptr() as u64, Ordering::Relaxed);
    stack.parked_len.store(len as u32, Ordering::Relaxed);
    super::count_unmapped(mapped as u64);
    PARKED_STACKS.fetch_add(1, Ordering::Relaxed);
    PARKED_BYTES.fetch_add(CLASSES[class] as u64, Ordering::Relaxed);
    PARKS.fetch_add(1, Ordering::Relaxed);
    (true, mapped)
}

/// Gives back the block of a parked stack whose thread will never run again (the caller
/// holds the claim for release).
pub(super) fn discard(stack: &Stack) {
    let ptr = stack.parked_block.swap(0, Ordering::Relaxed);
    let Some(block) = NonNull::new(ptr as *mut u8) else {
        return;
    };
    let len = stack.parked_len.load(Ordering::Relaxed) as usize;
    let class = class_for(len).expect("a parked length fits a class");
    // SAFETY: the block was allocated in park_claimed with this class and is unused now.
    unsafe { free_block(block, class) };
    PARKED_STACKS.fetch_sub(1, Ordering::Relaxed);
    PARKED_BYTES.fetch_sub(CLASSES[class] as u64, Ordering::Relaxed);
}

/// Restores a parked `stack` before its thread runs on CPU `cpu` (exception context; the
/// caller holds the claim as running and has filled this CPU's reserve with
/// `kstack.max` pages): maps the pages the live bytes need, copies them back, frees the
/// block. Leaves the reserve with enough pages for the rest of the stack to grow.
pub(super) fn restore(cpu: usize, stack: &Stack) -> bool {
    let ptr = stack.parked_block.load(Ordering::Relaxed);
    let Some(block) = NonNull::new(ptr as *mut u8) else {
        return true;
    };
    let len = stack.parked_len.load(Ordering::Relaxed) as u64;
    let top = stack.top();
    let from = top - len;
    let first = align_down(from, PAGE);
    let pages = ((top - first) / PAGE) as u32;
    let mut va = top;
    if !reserve::take_all(cpu, pages as usize, |pa| {
        va -= PAGE;
        arena::map_page(va, pa);
    }) {
        WAITS.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    arena::publish();
    // SAFETY: [from, top) was just mapped on this CPU (and published); the block holds `len`
    // bytes saved from these addresses; the claim keeps everybody else off this stack.
    unsafe { core::ptr::copy_nonoverlapping(block.as_ptr(), from as *mut u8, len as usize) };
    stack.mapped_pages.store(pages, Ordering::Relaxed);
    super::count_mapped(pages as u64);
    discard(stack);
    RESTORES.fetch_add(1, Ordering::Relaxed);
    true
}

/// Counts a parked thread that could not be restored for want of memory.
pub(super) fn count_wait() {
    WAITS.fetch_add(1, Ordering::Relaxed);
}

/// Beyond this many pages one full invalidation is cheaper than one per page.
const FULL_FLUSH_PAGES: usize = 64;

/// Stacks parked together: each is claimed, copied out and its entries cleared; then one
/// broadcast TLB invalidation covers all of them, the frames go back, and the claims are
/// released. Its buffers are allocated once ([`with_room_for`](Self::with_room_for)), so
/// parking needs no memory but the blocks.
pub struct ParkBatch {
    claimed: Vec<(*const Stack, *const u64)>,
    frames: Vec<u64>,
    vas: Vec<u64>,
}

// SAFETY: the raw pointers are only dereferenced while the claims they stand for are held
// (see `claim`), whichever CPU the batch is used on.
unsafe impl Send for ParkBatch {}

impl ParkBatch {
    /// An empty batch for up to `stacks` stacks, with room for [`BATCH_PAGES`] pages (a
    /// batch invalidates and frees what it holds whenever that is full).
    pub fn with_room_for(stacks: usize) -> Self {
        let pages = BATCH_PAGES;
        Self {
            claimed: Vec::with_capacity(stacks),
            frames: Vec::with_capacity(pages),
            vas: Vec::with_capacity(pages),
        }
    }

    /// Whether one more stack fits.
    pub fn has_room(&self) -> bool {
        self.claimed.len() < self.claimed.capacity()
    }

    /// Whether no stack is claimed.
    pub fn is_empty(&self) -> bool {
        self.claimed.is_empty()
    }

    /// Takes `stack`'s claim for parking, if nobody holds it, and adds it to the batch.
    /// `saved_sp` is where its thread's saved SP lives; it is read only when the batch parks.
    ///
    /// # Safety
    /// The caller must know the thread to be parkable and not running (it holds the lock of
    /// the queue that has it asleep), and both pointers must stay valid while the claim is
    /// held: the reaper waits for a stack's claim before freeing its thread.
    pub unsafe fn claim(&mut self, stack: &Stack, saved_sp: *const u64) -> bool {
        if !self.has_room() || stack.is_parked() || stack.policy != StackPolicy::Dynamic {
            return false;
        }
        if stack
            .claim
            .compare_exchange(
                CLAIM_FREE,
                CLAIM_PARKING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        self.claimed.push((stack as *const Stack, saved_sp));
        true
    }

    /// Parks every claimed stack, invalidates once, frees the frames, releases the claims,
    /// and has the CPUs of these threads look at their queues again (one woken meanwhile
    /// waits there for its claim). Returns (stacks parked, pages freed).
    pub fn finish(&mut self) -> (u64, u64) {
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::park_batch_claimed(&mut self.claimed.iter().map(|&(stack, _)| {
            // SAFETY: claimed (see `claim`), so the stack is valid.
            unsafe { (*stack).slot() }
        }));
        let mut parked = 0u64;
        let mut pages = 0u64;
        for i in 0..self.claimed.len() {
            let (stack, sp) = self.claimed[i];
            // SAFETY: claimed (see `claim`), so both pointers are valid and stable.
            let (stack, sp) = unsafe { (&*stack, core::ptr::read_volatile(sp)) };
            if self.frames.len() + (super::max_pages() as usize).min(BATCH_PAGES)
                > self.frames.capacity()
            {
                self.flush();
            }
            let (done, freed) = park_claimed(stack, sp, &mut self.frames, &mut self.vas);
            parked += done as u64;
            pages += freed as u64;
        }
        self.flush();
        let mut cpus = 0u64;
        for (stack, _) in self.claimed.drain(..) {
            cpus |= 1 << (crate::sched::cpu_of_stack(stack) % 64);
            // SAFETY: still claimed until this store; not touched after it.
            unsafe { (*stack).claim.store(CLAIM_FREE, Ordering::Release) };
        }
        crate::sched::kick_cpus(cpus);
        (parked, pages)
    }

    /// Invalidates the TLB entries of the pages collected so far (once, on all CPUs) and
    /// frees their frames.
    fn flush(&mut self) {
        if !self.frames.is_empty() {
            if self.frames.len() > FULL_FLUSH_PAGES {
                crate::arch::tlb::invalidate_all();
            } else {
                use crate::mm::page_table::TlbOps;
                let tlb = crate::arch::tlb::HardwareTlb;
                for &va in &self.vas {
                    tlb.invalidate_page(va);
                }
                tlb.sync();
            }
        }
        for pa in self.frames.drain(..) {
            crate::mm::frame::free(pa, 1);
        }
        self.vas.clear();
    }
}

/// The trim command's and the reaper's batch (they take turns; allocated at boot). A plain
/// spin lock, not counted (see `sync`): `trim_all` holds it for a whole walk over the thread
/// table, too long to mask IRQs, and only code with bounded stack use takes it (the reaper,
/// the shell's `trim`, tests).
#[allow(clippy::disallowed_types)]
static TRIM_BATCH: spin::Mutex<Option<ParkBatch>> = spin::Mutex::new(None);

/// Stacks parked per batch.
pub const BATCH: usize = 256;
/// Pages a batch collects before it invalidates and frees them.
pub const BATCH_PAGES: usize = 1024;

/// Allocates the batch `trim` parks with.
pub(super) fn init() {
    *TRIM_BATCH.lock() = Some(ParkBatch::with_room_for(BATCH));
}

/// Runs `f` with the shared trim batch.
pub fn with_trim_batch<R>(f: impl FnOnce(&mut ParkBatch) -> R) -> Option<R> {
    let mut guard = TRIM_BATCH.lock();
    guard.as_mut().map(f)
}
