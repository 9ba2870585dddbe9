//! The per-CPU reserve of zeroed pages the growth fault path maps from.
//!
//! Only the owning CPU touches its reserve, and only in exception context (IRQs masked): the
//! scheduler fills it before switching a dynamic thread in, and the fault path takes from it.
//! So it needs no lock, and a growth never waits for or fails on the frame allocator.
//! Calls `mm::frame` (to fill).
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::percpu::MAX_CPUS;

struct Reserve {
    pages: UnsafeCell<Vec<u64>>,
    /// Copy of `pages.len()` for readers on other CPUs.
    len: AtomicUsize,
}

// SAFETY: each reserve is only used by its own CPU with IRQs masked (see module doc).
unsafe impl Sync for Reserve {}

static RESERVES: [Reserve; MAX_CPUS] = [const {
    Reserve {
        pages: UnsafeCell::new(Vec::new()),
        len: AtomicUsize::new(0),
    }
}; MAX_CPUS];

/// Gives each CPU room for `capacity` pages (so filling never reallocates).
pub fn init(cpus: usize, capacity: usize) {
    for r in RESERVES.iter().take(cpus) {
        // SAFETY: boot, before any thread runs.
        unsafe { (*r.pages.get()).reserve_exact(capacity) };
    }
}

fn pages(cpu: usize) -> &'static mut Vec<u64> {
    // SAFETY: the caller is CPU `cpu` in exception context (module doc).
    unsafe { &mut *RESERVES[cpu].pages.get() }
}

/// Fills CPU `cpu`'s reserve up to `need` pages. False if memory ran out first.
pub fn fill(cpu: usize, need: usize) -> bool {
    let v = pages(cpu);
    // The common case on every switch-in: nothing to do.
    if v.len() >= need {
        return true;
    }
    let need = need.min(v.capacity());
    while v.len() < need {
        match crate::mm::frame::alloc_zeroed() {
            Some(pa) => v.push(pa),
            None => {
                RESERVES[cpu].len.store(v.len(), Ordering::Relaxed);
                return false;
            }
        }
    }
    RESERVES[cpu].len.store(v.len(), Ordering::Relaxed);
    true
}

/// Takes `n` zeroed pages from CPU `cpu`'s reserve, handing each to `map`; false (and
/// nothing taken) if the reserve holds fewer.
pub fn take(cpu: usize, n: usize, mut map: impl FnMut(u64)) -> bool {
    let v = pages(cpu);
    if v.len() < n {
        return false;
    }
    for _ in 0..n {
        if let Some(pa) = v.pop() {
            map(pa);
        }
    }
    RESERVES[cpu].len.store(v.len(), Ordering::Relaxed);
    true
}

/// Pages held in all reserves.
pub fn total_pages() -> u64 {
    RESERVES
        .iter()
        .map(|r| r.len.load(Ordering::Relaxed) as u64)
        .sum()
}
