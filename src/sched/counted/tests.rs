//! [`Counted`] against a store that counts its blocks and can be told to fail: creation that
//! fails takes nothing and hands the value back, the value is dropped and its block freed
//! exactly once, by the last reference, whichever thread holds it.
use super::*;
use std::alloc::{alloc, dealloc, Layout};
use std::cell::Cell;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

std::thread_local! {
    /// Blocks this thread's store holds now.
    static LIVE: Cell<i64> = const { Cell::new(0) };
    /// Whether the next `alloc` on this thread fails.
    static FAIL: Cell<bool> = const { Cell::new(false) };
}

/// Frees from any thread, so the count of blocks freed elsewhere is global.
static FREED_ANYWHERE: AtomicU64 = AtomicU64::new(0);

struct TestStore;

// SAFETY: blocks come from the system allocator with the layout of a Block<T>, each used
// only by its Counted until freed.
unsafe impl<T> Store<T> for TestStore {
    fn alloc() -> Option<NonNull<Block<T>>> {
        if FAIL.with(|f| f.replace(false)) {
            return None;
        }
        LIVE.with(|c| c.set(c.get() + 1));
        // SAFETY: a Block<T> holds an AtomicUsize, so its size is not zero.
        NonNull::new(unsafe { alloc(Layout::new::<Block<T>>()) } as *mut Block<T>)
    }

    unsafe fn free(block: NonNull<Block<T>>) {
        LIVE.with(|c| c.set(c.get() - 1));
        FREED_ANYWHERE.fetch_add(1, Ordering::SeqCst);
        // SAFETY: allocated by `alloc` above with this layout.
        unsafe { dealloc(block.as_ptr() as *mut u8, Layout::new::<Block<T>>()) };
    }
}

type TestCounted<T> = Counted<T, TestStore>;

/// A new counted value; the store has a block (the test did not tell it to fail).
fn new<T>(value: T) -> TestCounted<T> {
    match TestCounted::try_new(value) {
        Ok(c) => c,
        Err(_) => panic!("the store had no block"),
    }
}

fn live() -> i64 {
    LIVE.with(Cell::get)
}

/// Counts its drops.
struct Noisy(Arc<AtomicU64>);

impl Drop for Noisy {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_failed_creation_takes_nothing_and_gives_the_value_back() {
    let drops = Arc::new(AtomicU64::new(0));
    FAIL.with(|f| f.set(true));
    let back = match TestCounted::try_new(Noisy(drops.clone())) {
        Ok(_) => panic!("the store was told to fail"),
        Err(v) => v,
    };
    assert_eq!(live(), 0, "a failed creation holds a block");
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "the value was dropped, not handed back"
    );
    drop(back);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    // The store works again after saying no once.
    let c = new(7u32);
    assert_eq!(*c, 7);
    assert_eq!(live(), 1);
    drop(c);
    assert_eq!(live(), 0);
}

#[test]
fn the_last_reference_drops_the_value_and_frees_the_block_once() {
    let drops = Arc::new(AtomicU64::new(0));
    let a = new(Noisy(drops.clone()));
    assert_eq!(Counted::count(&a), 1);
    let b = a.clone();
    let c = b.clone();
    assert!(Counted::ptr_eq(&a, &c));
    assert_eq!(Counted::count(&a), 3);
    assert_eq!(live(), 1, "clones share one block");
    drop(a);
    drop(c);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "dropped while a reference is left"
    );
    assert_eq!(live(), 1);
    assert_eq!(Counted::count(&b), 1);
    drop(b);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(live(), 0);
}

#[test]
fn references_dropped_on_other_threads_free_the_block_once() {
    let freed_before = FREED_ANYWHERE.load(Ordering::SeqCst);
    let drops = Arc::new(AtomicU64::new(0));
    let rounds = 200;
    for _ in 0..rounds {
        let a = new(Noisy(drops.clone()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = a.clone();
                std::thread::spawn(move || {
                    let more = r.clone();
                    drop(r);
                    drop(more);
                })
            })
            .collect();
        drop(a);
        for t in threads {
            t.join().expect("a thread panicked");
        }
    }
    assert_eq!(drops.load(Ordering::SeqCst), rounds);
    // Other tests free blocks too, concurrently: at least ours were freed, each once (a
    // double free would have failed in the system allocator or the drop count).
    assert!(FREED_ANYWHERE.load(Ordering::SeqCst) - freed_before >= rounds);
}
