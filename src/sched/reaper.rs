//! The reaper: the system thread that gives dead threads' stacks and control blocks back, and
//! trims sleeping threads' stacks when memory runs low.
use super::*;

/// Starts the reaper, which returns dead threads' stacks and control blocks.
pub fn start_reaper() -> Result<(), SpawnError> {
    // Fixed, like idle: the reaper is what gives memory back when it has run out.
    let tid = spawn_thread(
        "reaper",
        ThreadKind::System,
        StackPolicy::Fixed,
        reaper_loop,
        0,
        None,
        None,
        true,
        None,
    )?;
    let p = table::with_tid(tid, |t| t).expect("reaper just inserted");
    REAPER.store(p, Ordering::Release);
    Ok(())
}

/// Asks the reaper to trim sleeping threads' stacks (memory ran low). May be called with a
/// run-queue lock held: the reaper is woken later, by `switch_to_next` once it has
/// dropped that lock.
pub fn request_trim() {
    if !TRIM_REQUESTED.swap(true, Ordering::AcqRel) {
        WAKE_REAPER.store(true, Ordering::Release);
    }
}

pub(super) static TRIM_REQUESTED: AtomicBool = AtomicBool::new(false);
pub(super) static WAKE_REAPER: AtomicBool = AtomicBool::new(false);

pub(super) fn wake_reaper_if_asked() {
    if WAKE_REAPER.swap(false, Ordering::AcqRel) {
        let reaper = REAPER.load(Ordering::Acquire);
        if !reaper.is_null() {
            // SAFETY: the reaper never exits.
            unsafe { unpark(reaper) };
        }
    }
}

/// Dead threads released per batch.
pub(super) const REAP_BATCH: usize = 1024;

pub(super) fn reaper_loop(_: usize) {
    // Allocated once: reaping must not need memory, since it is what gives memory back.
    let mut batch = stack::ReleaseBatch::with_room_for(REAP_BATCH);
    let mut joins = alloc::vec::Vec::with_capacity(REAP_BATCH);
    loop {
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::reaper_may_reap();
        let list = {
            let mut z = ZOMBIES.lock();
            core::mem::replace(&mut z.head, core::ptr::null_mut())
        };
        if list.is_null() {
            if TRIM_REQUESTED.swap(false, Ordering::AcqRel) {
                stack::trim_all();
                continue;
            }
            park();
            continue;
        }
        reap_list(list, &mut batch, &mut joins);
    }
}

/// Frees a list of dead threads (linked through `next`): control blocks, table entries,
/// and their stacks in one batch; then tells whoever waits in `join`.
pub(super) fn reap_list(
    mut t: *mut Thread,
    batch: &mut stack::ReleaseBatch,
    joins: &mut alloc::vec::Vec<Join>,
) {
    while !t.is_null() {
        let mut killed = 0;
        let batch_no = REAP_STARTED.fetch_add(1, Ordering::SeqCst) + 1;
        while !t.is_null() && batch.has_room() && joins.len() < joins.capacity() {
            // SAFETY: dead control blocks handed over through the zombie list; no CPU runs
            // or queues them any more. Others may still look at the stack (trim, parking)
            // until the claim below, so the block is only shared until then.
            let th = unsafe { &*t };
            let next = th.next.load(Ordering::Relaxed);
            table::remove(th.stack.slot());
            if th.kind == ThreadKind::Workload {
                // Live first, then dead (Release): `resting_workload_threads` reads dead
                // first (Acquire), so it never counts this thread as resting.
                WORKLOAD_THREADS.fetch_sub(1, Ordering::Relaxed);
                DEAD_WORKLOADS.fetch_sub(1, Ordering::Release);
            }
            if th.kill_requested.load(Ordering::Relaxed) {
                killed += 1;
            }
            // Wait for whoever parks or trims it to finish, where the stack lives: they hold
            // pointers into this control block.
            th.stack.claim_for_release();
            // SAFETY: dead, out of every queue and the table, its stack claimed: the block
            // is the reaper's alone.
            if let Some(j) = unsafe { th.take_join() } {
                joins.push(j);
            }
            // A thread that died inside `with_own_heap` (killed, overflowed, out of memory)
            // leaves its heap here.
            heap_scope::release_dead(th);
            // SAFETY: `t` was allocated with this layout in spawn_raw and is moved out and
            // freed once, here.
            let owned = unsafe { t.read() };
            batch.add(owned.stack);
            // SAFETY: `t` came from THREAD_CACHE in spawn_raw; its contents were moved out
            // above and nothing refers to it any more.
            unsafe { THREAD_CACHE.free(core::ptr::NonNull::new_unchecked(t as *mut u8)) };
            t = next;
        }
        batch.finish();
        // Only now is their memory back: `kill` waits for this count.
        PENDING_KILLS.fetch_sub(killed, Ordering::Release);
        REAP_DONE.store(batch_no, Ordering::SeqCst);
        for j in joins.drain(..) {
            // SeqCst on both sides: see JoinHandle::join.
            j.done.store(true, Ordering::SeqCst);
            let w = j.waiter.load(Ordering::SeqCst);
            if !w.is_null() {
                // SAFETY: the waiter is blocked in join, hence alive.
                unsafe { unpark(w) };
            }
        }
    }
}
