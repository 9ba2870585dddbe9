//! A thread's own heap around code that allocates without handling failure.
//!
//! Third-party libraries (`serde_json`, `miniz_oxide`, run by the `json` and `inflate`
//! workloads) allocate through the global allocator and treat a failure as fatal: `alloc`
//! calls `handle_alloc_error`, which panics, and a panic stops the kernel. Nor can a thread
//! that is ended halfway through such code (a kill, an overflow, a miss) give back what it
//! had allocated: the blocks would stay allocated for good. [`with_own_heap`] runs code with
//! every allocation the thread makes in thread context served from a
//! [`ThreadHeap`] of its own, taken before the code
//! starts (so memory already out is an error the caller reports, before any library code
//! runs) and given back whole when it is done. When memory runs out inside, the allocation
//! failure ends just that thread (`OOM tid= name=: out of memory in its own heap ...`,
//! counted in `oom_kills`) instead of stopping the kernel; and the reaper gives back the heap
//! of a thread that died in the scope. Either way nothing is lost.
//!
//! Allocations from exception context (on the exception stack) never use it: the code they
//! interrupted may be inside the thread heap, which has no lock. Blocks made in the scope
//! must not outlive it; one that does is a bug, and the scope's end panics naming the bytes.
//! (A block made before the scope and grown inside it moves into the thread heap, as
//! `realloc` allocates anew: such a block must not be grown inside.)
//!
//! Owns the control block's `own_heap` field. Calls `mm::thread_heap` (the heap itself),
//! `mm::heap` (its page source) and `stack` (the OOM count).
use super::*;
use crate::mm::heap::Frames;
use crate::mm::thread_heap::ThreadHeap;
use aarch64_cpu::registers::{Readable, SPSel};
use core::ptr::NonNull;

/// Thread heaps that exist now (in a scope, or left by a thread that died in one and not yet
/// reaped). While there are none, the global allocator need not look for one.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The heap [`with_own_heap`] was to start with could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoOwnHeap {
    /// Bytes it was asked for.
    pub bytes: usize,
}

impl core::fmt::Display for NoOwnHeap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "out of memory: no {} KiB free for a heap of its own",
            self.bytes.div_ceil(1024)
        )
    }
}

/// Runs `f` with this thread's allocations served from a heap of its own whose first chunk
/// holds `bytes` (it grows beyond while memory lasts); see the module doc. `Err` (and `f` is
/// not run) when that first chunk cannot be taken. Inside a scope already, `f` runs in the
/// heap of the outer one.
///
/// Panics outside thread context, or when blocks made inside outlive the scope.
pub fn with_own_heap<R>(bytes: usize, f: impl FnOnce() -> R) -> Result<R, NoOwnHeap> {
    let t = current_ptr();
    assert!(
        !t.is_null() && on_thread_stack(),
        "with_own_heap outside thread context"
    );
    // SAFETY: the running thread's control block lives as long as it runs.
    let th = unsafe { &*t };
    if !th.own_heap.load(Ordering::Relaxed).is_null() {
        return Ok(f());
    }
    let heap = ThreadHeap::create(&mut Frames, bytes).ok_or(NoOwnHeap { bytes })?;
    LIVE.fetch_add(1, Ordering::Relaxed);
    // Only this thread reads the field while it lives (its own program order), the reaper
    // after its death (ordered by the hand-over).
    th.own_heap.store(heap.as_ptr(), Ordering::Relaxed);
    let result = f();
    th.own_heap.store(core::ptr::null_mut(), Ordering::Relaxed);
    // SAFETY: the heap is this thread's and out of use since the store above.
    let left = unsafe { heap.as_ref() }.allocated();
    if left != 0 {
        panic!(
            "{left} bytes allocated in a thread's own heap outlive it (a bug in the scope's code)"
        );
    }
    // SAFETY: created above from Frames; nothing it handed out is live (checked above).
    unsafe { ThreadHeap::release(heap, &mut Frames) };
    LIVE.fetch_sub(1, Ordering::Relaxed);
    Ok(result)
}

/// Whether this code runs on SP_EL0, i.e. on a thread's own stack, not in exception context.
#[inline(always)]
fn on_thread_stack() -> bool {
    SPSel.get() == 0
}

/// The running thread's own heap, for the global allocator: `Some` only in thread context
/// inside [`with_own_heap`]. One load while no thread heap exists.
#[inline(always)]
pub fn current() -> Option<&'static mut ThreadHeap> {
    if LIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    current_slow()
}

#[inline(never)]
fn current_slow() -> Option<&'static mut ThreadHeap> {
    if !on_thread_stack() {
        return None;
    }
    let t = current_ptr();
    if t.is_null() {
        return None;
    }
    // SAFETY: the running thread's control block lives as long as it runs.
    let h = unsafe { &*t }.own_heap.load(Ordering::Relaxed);
    // SAFETY: a thread heap is used by its thread alone, in thread context, one allocator
    // call at a time (the allocator is not re-entered); it lives until the scope ends or the
    // reaper frees the dead thread, and neither can happen during this call.
    NonNull::new(h).map(|mut p| unsafe { p.as_mut() })
}

/// Gives back the heap of a thread that died inside [`with_own_heap`]. Called by the reaper,
/// which has the dead control block to itself.
pub(super) fn release_dead(th: &Thread) {
    let h = th.own_heap.swap(core::ptr::null_mut(), Ordering::Relaxed);
    if let Some(h) = NonNull::new(h) {
        // SAFETY: the dead thread's heap, from Frames; the thread cannot use it again and
        // nothing it made can be live elsewhere (blocks do not leave the scope).
        unsafe { ThreadHeap::release(h, &mut Frames) };
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Called by the panic handler first: if the panic is an allocation of `size` bytes that the
/// running thread's own heap could not serve, and the thread can be ended (not a system
/// thread, no lock held), reports it and ends the thread; its heap goes back when it is
/// reaped. Returns otherwise (the panic is a real one).
pub fn end_thread_out_of_own_heap(size: u64) {
    let Some(heap) = current() else {
        return;
    };
    let held_kib = heap.pages() * crate::mm::heap::PAGE / 1024;
    // SAFETY: in thread context (`current` checked), so a thread is running.
    let t = unsafe { &*current_ptr() };
    if t.essential || crate::sync::locks_held() > 0 {
        return;
    }
    crate::kernel::console::write_fmt_emergency(format_args!(
        "OOM tid={} name={}: out of memory in its own heap (an allocation of {} bytes failed with {} KiB held)\n",
        t.tid,
        t.name(),
        size,
        held_kib
    ));
    stack::note_oom_kill();
    exit()
}

/// Thread heaps that exist now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}
