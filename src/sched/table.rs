//! The thread table: every live thread, indexed by its stack's arena slot.
//!
//! A two-level array: a top level of leaf pointers sized once for the arena's capacity, and
//! leaves of 500 entries (one slab object of a page each) created when a slot in their
//! range is first used and given back when their last thread is gone. Slots are unique
//! among live threads and reused, so the table stays as dense as the arena.
//!
//! Nothing here allocates while the table lock is held: a missing leaf is allocated before
//! the lock is taken (and given back if another CPU installed one first), and an emptied
//! leaf is freed after the lock is dropped. Inserting can therefore fail cleanly (out of
//! memory), and reading the table (ps, kill, trim) needs no memory at all. Walks hold the
//! lock for one chunk of slots at a time and resume by slot number.
//!
//! Calls `mm::slab` and `sync`.
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::Thread;
use crate::mm::slab::SlabCache;
use crate::sync::IrqMutex;

/// Entries per leaf: a leaf with its count fills one slab object of a page.
const LEAF_ENTRIES: usize = 500;

struct Leaf {
    threads: [*mut Thread; LEAF_ENTRIES],
    /// Entries in use.
    used: usize,
}

/// Leaves come from a slab cache of their own, so their pages are counted with the slabs.
static LEAVES: SlabCache = SlabCache::new(core::mem::size_of::<Leaf>(), 8);

struct Table {
    leaves: Vec<*mut Leaf>,
}

// SAFETY: the raw pointers are leaves and control blocks shared only under the table lock.
unsafe impl Send for Table {}

static TABLE: IrqMutex<Table> = IrqMutex::new(Table { leaves: Vec::new() });
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Sizes the top level for `slots` arena slots. Called once at boot, before the first thread.
pub fn init(slots: usize) {
    let leaves = slots.div_ceil(LEAF_ENTRIES);
    let mut v = Vec::new();
    v.resize(leaves, core::ptr::null_mut());
    TABLE.lock().leaves = v;
}

/// Threads in the table.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

fn alloc_leaf() -> Option<*mut Leaf> {
    let leaf = LEAVES.alloc()?.as_ptr() as *mut Leaf;
    // SAFETY: a fresh object of the leaf cache: size and alignment of a Leaf.
    unsafe {
        leaf.write(Leaf {
            threads: [core::ptr::null_mut(); LEAF_ENTRIES],
            used: 0,
        })
    };
    Some(leaf)
}

fn free_leaf(leaf: *mut Leaf) {
    // SAFETY: from LEAVES, out of the table, used by nobody.
    unsafe { LEAVES.free(core::ptr::NonNull::new_unchecked(leaf as *mut u8)) };
}

/// Adds thread `t`, whose stack has arena slot `slot`. False if no memory for a leaf.
pub fn insert(slot: u32, t: *mut Thread) -> bool {
    let (li, ei) = (slot as usize / LEAF_ENTRIES, slot as usize % LEAF_ENTRIES);
    let mut spare = None;
    loop {
        {
            let mut table = TABLE.lock();
            let Some(&leaf) = table.leaves.get(li) else {
                return false;
            };
            if !leaf.is_null() || spare.is_some() {
                let leaf = if leaf.is_null() {
                    let l = spare.take().unwrap_or(core::ptr::null_mut());
                    table.leaves[li] = l;
                    l
                } else {
                    leaf
                };
                // SAFETY: a live leaf, under the table lock.
                let l = unsafe { &mut *leaf };
                debug_assert!(l.threads[ei].is_null(), "slot {slot} in use twice");
                l.threads[ei] = t;
                l.used += 1;
                COUNT.fetch_add(1, Ordering::Relaxed);
                drop(table);
                if let Some(s) = spare {
                    free_leaf(s);
                }
                return true;
            }
        }
        // No leaf yet: make one without holding the lock, then try again.
        match alloc_leaf() {
            Some(l) => spare = Some(l),
            None => return false,
        }
    }
}

/// Takes the thread with arena slot `slot` out of the table.
pub fn remove(slot: u32) {
    let (li, ei) = (slot as usize / LEAF_ENTRIES, slot as usize % LEAF_ENTRIES);
    let emptied = {
        let mut table = TABLE.lock();
        let leaf = table.leaves[li];
        // SAFETY: the slot's thread is in the table, so its leaf is live.
        let l = unsafe { &mut *leaf };
        l.threads[ei] = core::ptr::null_mut();
        l.used -= 1;
        COUNT.fetch_sub(1, Ordering::Relaxed);
        if l.used == 0 {
            table.leaves[li] = core::ptr::null_mut();
            Some(leaf)
        } else {
            None
        }
    };
    if let Some(leaf) = emptied {
        free_leaf(leaf);
    }
}

/// Slots visited per hold of the lock.
const CHUNK: usize = 256;

/// Calls `f` for threads in slot order, holding the table lock for a chunk of slots at a
/// time, until `f` returns false or every thread was seen. A thread seen here stays alive
/// while `f` runs: the reaper takes it out of the table (under this lock) before freeing it.
/// `f` must not allocate or take the table lock.
pub fn walk(f: &mut dyn FnMut(*mut Thread) -> bool) {
    walk_from(0, f);
}

/// [`walk`] from slot `start` on. Returns the slot after the last thread `f` saw if `f`
/// stopped the walk (to resume there), `None` if the walk reached the end.
pub fn walk_from(start: usize, f: &mut dyn FnMut(*mut Thread) -> bool) -> Option<usize> {
    let mut next = start;
    loop {
        let table = TABLE.lock();
        let end_slot = table.leaves.len() * LEAF_ENTRIES;
        if next >= end_slot {
            return None;
        }
        let stop = (next + CHUNK).min(end_slot);
        while next < stop {
            let leaf = table.leaves[next / LEAF_ENTRIES];
            if leaf.is_null() {
                // Skip to the next leaf.
                next = (next / LEAF_ENTRIES + 1) * LEAF_ENTRIES;
                continue;
            }
            // SAFETY: a live leaf, under the table lock.
            let t = unsafe { (*leaf).threads[next % LEAF_ENTRIES] };
            next += 1;
            if !t.is_null() && !f(t) {
                return Some(next);
            }
        }
    }
}

/// The thread with id `tid`, if it is in the table, passed to `f` under the table lock.
pub fn with_tid<R>(tid: u64, f: impl FnOnce(*mut Thread) -> R) -> Option<R> {
    let mut found = None;
    let mut f = Some(f);
    walk(&mut |t| {
        // SAFETY: walk hands out live control blocks.
        if unsafe { (*t).tid } == tid {
            found = f.take().map(|f| f(t));
            false
        } else {
            true
        }
    });
    found
}

/// The thread whose stack has arena slot `slot`, passed to `f` under the table lock; `None`
/// if there is none, or if the table is locked right now (for fault reports, which may run
/// in any context and must not wait).
pub fn try_with_slot<R>(slot: u32, f: impl FnOnce(*mut Thread) -> R) -> Option<R> {
    let table = TABLE.try_lock()?;
    let leaf = *table.leaves.get(slot as usize / LEAF_ENTRIES)?;
    if leaf.is_null() {
        return None;
    }
    // SAFETY: a live leaf, under the table lock.
    let t = unsafe { (*leaf).threads[slot as usize % LEAF_ENTRIES] };
    (!t.is_null()).then(|| f(t))
}
