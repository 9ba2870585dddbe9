//! `kstack.strategy=expand init="heap-miss"`: a stack that runs off its mapped part inside the
//! heap must be a miss that ends the thread, never one taken while the heap's lock is held
//! (that cannot be ended, so the kernel would stop).
//!
//! Under `expand` a stack grows only where code says so; unannotated code that calls the
//! allocator (the `json` and `inflate` workloads: third-party libraries) may cross into an
//! unmapped page anywhere, the allocator's own frames included. A dynamic thread here puts
//! its SP between 64 and 128 bytes above its mapped part (by recursion, measured as it goes)
//! and allocates from there: the allocator's frames below its lock would cross the page, so
//! the heap must touch the stack it needs before it locks (`mm::heap`), and the thread is
//! ended there as a miss. The boot prints `faults: heap-miss: ...` lines and exits 0; a
//! `PANIC` (the miss taken under the lock) fails the shell case `expand-miss-in-the-heap`.
use super::*;

use core::alloc::Layout;

/// Where the allocation was made from: SP minus the mapped part's bottom (0 if the thread
/// never got there).
static OFFSET: AtomicU64 = AtomicU64::new(0);
/// Set if the allocation returned (it must not: the thread is ended inside it).
static RETURNED: AtomicBool = AtomicBool::new(false);

/// How far above the mapped part the allocation is made from: below the frames the allocator
/// pushes before its lock is taken (`__rust_alloc`'s), above those it pushes under it.
const WINDOW: core::ops::Range<u64> = 64..128;

#[inline(never)]
fn descend(bottom: u64) {
    let pad = [0u64; 2];
    core::hint::black_box(&pad);
    let sp = dynstack::arch::stack_pointer();
    if sp >= bottom + WINDOW.end {
        descend(bottom);
        core::hint::black_box(&pad);
        return;
    }
    OFFSET.store(sp - bottom, Ordering::SeqCst);
    if !WINDOW.contains(&(sp - bottom)) {
        return;
    }
    let layout = Layout::new::<[u64; 4]>();
    // Through black_box: an allocation freed unused would be optimised away.
    // SAFETY: the layout's size is not zero; the block is freed at once.
    let p = core::hint::black_box(unsafe { alloc::alloc::alloc(layout) });
    RETURNED.store(true, Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: allocated just above with this layout.
        unsafe { alloc::alloc::dealloc(p, layout) };
    }
}

/// The mode: see the module doc.
pub(crate) fn run() -> ! {
    if stack::strategy::current() != dynstack::cmdline::StackStrategy::Expand {
        dynstack::println!("faults: heap-miss FAILED: boot with kstack.strategy=expand");
        semihosting::process::exit(1);
    }
    let misses = stack::stats().misses;
    let h = sched::spawn_with("heapmiss", StackPolicy::Dynamic, || {
        // SAFETY: the running thread's control block.
        let bottom = unsafe { (*sched::current_ptr()).stack.mapped_bottom() };
        descend(bottom);
    });
    match h {
        Ok(h) => h.join(),
        Err(e) => {
            dynstack::println!("faults: heap-miss FAILED: cannot start the thread: {}", e);
            semihosting::process::exit(1);
        }
    }
    let offset = OFFSET.load(Ordering::SeqCst);
    let missed = stack::stats().misses - misses;
    dynstack::println!(
        "faults: heap-miss: allocated from {} bytes above the mapped part; misses {}, returned {}",
        offset,
        missed,
        RETURNED.load(Ordering::SeqCst)
    );
    if !WINDOW.contains(&offset) || missed != 1 || RETURNED.load(Ordering::SeqCst) {
        dynstack::println!(
            "faults: heap-miss FAILED: expected one miss from inside the allocation, made {:?} bytes above the mapped part",
            WINDOW
        );
        semihosting::process::exit(1);
    }
    // The heap's lock is free: the kernel carries on.
    let v: Vec<u64> = (0..1000).collect();
    dynstack::println!(
        "faults: heap-miss done: the heap works after the miss ({} items)",
        v.len()
    );
    semihosting::process::exit(0)
}
