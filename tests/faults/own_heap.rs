//! A thread's own heap (`sched::heap_scope`): code that allocates without handling failure
//! (here `serde_json`, as the `json` workload runs it) gets its memory from a heap of the
//! thread's own, and whatever happens to the thread, everything in it comes back.
//!
//! - `own_heap_serves_the_scope`: blocks made inside the scope are in the thread's own heap,
//!   which grows past its first chunk; after the scope no thread heap is left and every frame
//!   is accounted for as before.
//! - `own_heap_refused_when_memory_is_out`: with every frame taken (the reserves' too), the
//!   scope does not start (`NoOwnHeap`) and its code does not run.
//! - `own_heap_out_of_memory_ends_only_the_thread`: a thread starts a scope, then every free
//!   frame is taken away and it parses a JSON document far larger than its first chunk. The
//!   allocation failure inside `serde_json` must end that thread (an `OOM` line, counted in
//!   `oom_kills`), not stop the kernel, and nothing after it may run; its heap must come back
//!   when it is reaped.
//! - `own_heap_given_back_when_the_thread_dies`: a thread overflows its stack inside a scope
//!   holding several chunks, and a workload thread is killed while it sleeps inside one; the
//!   reaper must give both heaps back.
use super::*;

use alloc::boxed::Box;
use dynstack::sched::heap_scope;
use dynstack::testing::MemorySnapshot;

/// Checks that no thread heap is left and every frame is where it was in `before`.
fn all_back(before: &MemorySnapshot, what: &str) -> TestResult {
    check!(
        heap_scope::live() == 0,
        "{}: {} thread heap(s) left",
        what,
        heap_scope::live()
    );
    // Other CPUs move pages between their reserves and the frame allocator at any time, and
    // a page in the middle of such a move is in neither for a moment: a leak stays, that
    // does not, so look again for up to 2 s before calling it one.
    let mut after = MemorySnapshot::take();
    for _ in 0..200 {
        if after.accounted() == before.accounted() {
            break;
        }
        nap(10, "waiting for every frame to be accounted for");
        after = MemorySnapshot::take();
    }
    check!(
        after.accounted() == before.accounted(),
        "{}: {} frames accounted for, {} before ({:?} against {:?})",
        what,
        after.accounted(),
        before.accounted(),
        after,
        before
    );
    Ok(())
}

pub(crate) fn own_heap_serves_the_scope() -> TestResult {
    let before = MemorySnapshot::take();
    // Errors made inside are &'static str: a String made there would outlive the scope.
    let inside = heap_scope::with_own_heap(16 * 1024, || -> Result<(), &'static str> {
        let v: Vec<u64> = (0..8192).collect();
        let b = Box::new([7u8; 100]);
        let Some(h) = heap_scope::current() else {
            return Err("no own heap inside the scope");
        };
        if !h.owns(v.as_ptr() as usize) || !h.owns(b.as_ptr() as usize) {
            return Err("blocks made in the scope are not in the thread's own heap");
        }
        if h.pages() <= 4 {
            return Err("64 KiB of blocks did not make the heap grow past its first chunk");
        }
        if v.iter().sum::<u64>() != 8191 * 8192 / 2 || b.iter().any(|&x| x != 7) {
            return Err("blocks in the own heap lost their contents");
        }
        Ok(())
    });
    match inside {
        Ok(r) => r.map_err(String::from)?,
        Err(e) => return Err(format!("the scope did not start: {e}")),
    }
    all_back(&before, "after the scope")
}

/// Every frame there is, in a list threaded through the frames themselves (holding them
/// needs no memory): the free ones, then those the per-CPU reserves held (drained on each
/// CPU in turn). With no dynamic thread running, nothing gives frames back after that: no
/// reserve can refill and no switch-in finds one short (so nothing asks for a trim).
struct Hoard {
    head: u64,
    pages: u64,
}

impl Hoard {
    fn push(&mut self, pa: u64) {
        // SAFETY: a frame just taken from the allocator, ours; its first word holds the link.
        unsafe { (dynstack::mm::layout::phys_to_virt(pa) as *mut u64).write(self.head) };
        self.head = pa;
        self.pages += 1;
    }

    fn take_free(&mut self) {
        while let Some(pa) = frame::alloc(1) {
            self.push(pa);
        }
    }

    fn take_everything() -> Result<Hoard, String> {
        let mut h = Hoard { head: 0, pages: 0 };
        h.take_free();
        for cpu in 0..sched::online_count() {
            if !sched::pin_current_to(cpu) {
                drop(h);
                return Err(format!("cannot move to CPU {cpu} to drain its reserve"));
            }
            let daif = dynstack::arch::irq::save_and_disable();
            stack::reserve::drain(cpu);
            dynstack::arch::irq::restore(daif);
        }
        h.take_free();
        let (free, reserve) = (frame::free_pages(), stack::reserve::total_pages());
        if free != 0 || reserve != 0 {
            drop(h);
            return Err(format!(
                "{free} frames free and {reserve} in reserves after taking every frame"
            ));
        }
        Ok(h)
    }
}

impl Drop for Hoard {
    fn drop(&mut self) {
        while self.head != 0 {
            let pa = self.head;
            // SAFETY: a frame of the list; its first word is the link.
            self.head = unsafe { (dynstack::mm::layout::phys_to_virt(pa) as *const u64).read() };
            frame::free(pa, 1);
            self.pages -= 1;
        }
    }
}

pub(crate) fn own_heap_refused_when_memory_is_out() -> TestResult {
    let before = MemorySnapshot::take();
    let ran = AtomicBool::new(false);
    let result = {
        let hoard = Hoard::take_everything()?;
        beat("starting a scope with no frame free");
        let r = heap_scope::with_own_heap(4096, || ran.store(true, Ordering::SeqCst));
        drop(hoard);
        r
    };
    check!(
        result.is_err(),
        "with no frame free the scope started (its code ran: {})",
        ran.load(Ordering::SeqCst)
    );
    check!(!ran.load(Ordering::SeqCst), "the refused scope's code ran");
    all_back(&before, "after the refused scope")
}

static READY: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);
static PARSED: AtomicBool = AtomicBool::new(false);
static AFTER_SCOPE: AtomicBool = AtomicBool::new(false);

/// A JSON array of `n` small objects: parsed, about 800 bytes of `Value`s each (8,000 of
/// them far more than trim and the reserves can give back once every frame is taken).
fn big_document(n: usize) -> String {
    let mut doc = String::from("[");
    for i in 0..n {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(&format!(
            "{{\"id\":{i},\"tags\":[\"a\",\"b\"],\"n\":{}}}",
            i * 7
        ));
    }
    doc.push(']');
    doc
}

pub(crate) fn own_heap_out_of_memory_ends_only_the_thread() -> TestResult {
    for flag in [&READY, &GO, &PARSED, &AFTER_SCOPE] {
        flag.store(false, Ordering::SeqCst);
    }
    // Made before the scope, on the general heap: the thread only reads it.
    let doc: &'static str = Box::leak(big_document(8000).into_boxed_str());
    let before = MemorySnapshot::take();
    let h = sched::spawn_with("ownheap-oom", StackPolicy::Fixed, move || {
        let _ = heap_scope::with_own_heap(4096, || {
            READY.store(true, Ordering::SeqCst);
            while !GO.load(Ordering::SeqCst) {
                sched::sleep_ms(1);
            }
            let v: serde_json::Value = serde_json::from_str(doc).unwrap_or_default();
            core::hint::black_box(&v);
            PARSED.store(true, Ordering::SeqCst);
        });
        AFTER_SCOPE.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("cannot start the thread: {e}"))?;
    while !READY.load(Ordering::SeqCst) {
        nap(1, "waiting for the thread to enter its scope");
    }
    {
        // Nothing free: the heap's first page is all the parse gets.
        let _ballast = Ballast::take_all_but(0);
        beat("parsing with no free memory");
        GO.store(true, Ordering::SeqCst);
        h.join();
    }
    check!(
        !PARSED.load(Ordering::SeqCst) && !AFTER_SCOPE.load(Ordering::SeqCst),
        "the thread went on after its heap ran out (parsed: {}, after the scope: {})",
        PARSED.load(Ordering::SeqCst),
        AFTER_SCOPE.load(Ordering::SeqCst)
    );
    let s = stack::stats();
    check!(
        s.oom_kills == before.oom_kills + 1,
        "OOM kills {} -> {}: the thread was not ended as out of memory",
        before.oom_kills,
        s.oom_kills
    );
    all_back(&before, "after the thread was reaped")
}

/// Recurses until the guard gap ends the thread.
#[inline(never)]
fn recurse_forever(depth: u64) -> u64 {
    if core::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let pad = [depth; 32];
    core::hint::black_box(&pad);
    recurse_forever(depth + 1) + pad[3]
}

static SLEEPING_IN_SCOPE: AtomicBool = AtomicBool::new(false);

/// A workload thread: a scope with three chunks' worth of blocks, asleep inside it.
fn sleep_in_scope(_: usize) {
    let _ = heap_scope::with_own_heap(4096, || {
        let v: Vec<u64> = (0..2000).collect();
        core::hint::black_box(&v);
        SLEEPING_IN_SCOPE.store(true, Ordering::SeqCst);
        loop {
            sched::sleep_ms(1000);
        }
    });
}

pub(crate) fn own_heap_given_back_when_the_thread_dies() -> TestResult {
    let before = MemorySnapshot::take();
    let h = sched::spawn_with("ownheap-overflow", StackPolicy::Dynamic, || {
        let _ = heap_scope::with_own_heap(4096, || {
            let v: Vec<u64> = (0..2000).collect();
            core::hint::black_box(&v);
            core::hint::black_box(recurse_forever(0));
        });
        AFTER_SCOPE.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("cannot start the overflowing thread: {e}"))?;
    AFTER_SCOPE.store(false, Ordering::SeqCst);
    h.join();
    check!(
        stack::stats().overflows == before.overflows + 1 && !AFTER_SCOPE.load(Ordering::SeqCst),
        "the thread did not die of its overflow inside the scope"
    );
    all_back(&before, "after the overflowed thread was reaped")?;

    SLEEPING_IN_SCOPE.store(false, Ordering::SeqCst);
    let tid = sched::spawn_raw(
        "ownheap-sleep",
        ThreadKind::Workload,
        StackPolicy::Dynamic,
        sleep_in_scope,
        0,
        None,
    )
    .map_err(|e| format!("cannot start the sleeping thread: {e}"))?;
    while !SLEEPING_IN_SCOPE.load(Ordering::SeqCst) {
        nap(1, "waiting for the thread to sleep in its scope");
    }
    check!(
        heap_scope::live() == 1,
        "{} thread heaps while one thread sleeps in its scope",
        heap_scope::live()
    );
    sched::kill(tid).map_err(|e| format!("kill {tid}: {e}"))?;
    all_back(&before, "after the sleeping thread was killed")
}
