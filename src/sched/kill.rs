//! Ending workload threads on request (`kill`, `kill all`), the hand-over of dead threads to
//! the reaper, and walks over the thread table.
use super::*;

/// Ends a workload thread that has been asked to exit. One that is parked or sleeping is
/// retired on the spot: it holds nothing (workload threads only wait at their resting point),
/// so it need not run again just to exit. One that is ready or running exits the next time
/// it is switched in. `t` must be alive (callers hold the thread table lock).
pub(super) fn end_killed(t: *mut Thread) {
    // SAFETY: callers hold the thread table lock, which keeps `t` alive.
    let th = unsafe { &*t };
    loop {
        let cpu = th.cpu.load(Ordering::Acquire) as usize;
        let mut q = QUEUES[cpu].lock();
        if th.cpu.load(Ordering::Acquire) as usize != cpu {
            continue;
        }
        match th.state() {
            ThreadState::Sleeping | ThreadState::Blocked => {
                // SAFETY: asleep on this CPU (checked under its lock): alive, in its sleep
                // queue if sleeping, and in its park list or in none.
                unsafe {
                    if th.state() == ThreadState::Sleeping {
                        q.sleepers.remove(t);
                    }
                    q.parkable.remove(t);
                }
                // Its CPU's queue lock is held.
                note_dying(th);
                th.set_state(ThreadState::Dead);
                drop(q);
                hand_to_reaper(t);
            }
            ThreadState::Dead => {}
            ThreadState::Running => {
                th.park_token.store(true, Ordering::Relaxed);
                drop(q);
                // It may have its CPU to itself and never yield: make that CPU reschedule.
                if cpu != cpu_index() {
                    if let Some(k) = KICK.get() {
                        k(cpu);
                    }
                }
            }
            ThreadState::Ready => th.park_token.store(true, Ordering::Relaxed),
        }
        return;
    }
}

/// Queues a dead thread for the reaper and wakes it. Call with no run-queue lock held.
pub(super) fn hand_to_reaper(t: *mut Thread) {
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::note_handed(t);
    {
        let mut z = ZOMBIES.lock();
        // SAFETY: dead, in no queue, not yet reaped; its link is the zombie list's now.
        unsafe { (*t).next.store(z.head, Ordering::Relaxed) };
        z.head = t;
    }
    let reaper = REAPER.load(Ordering::Acquire);
    if !reaper.is_null() && reaper != t {
        // SAFETY: the reaper never exits.
        unsafe { unpark(reaper) };
    }
}

/// Why a kill was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum KillError {
    /// No thread has that id.
    NoSuchThread(u64),
    /// The thread is not a workload thread.
    NotWorkload(u64),
}

impl core::fmt::Display for KillError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSuchThread(t) => write!(f, "no thread {}", t),
            Self::NotWorkload(t) => write!(f, "thread {} is not a workload thread", t),
        }
    }
}

/// Must be called with the thread table locked (which keeps `t` alive).
pub(super) fn request_kill(t: *mut Thread) -> bool {
    // SAFETY: the caller holds the table lock; the reaper removes a thread from the table
    // before freeing it.
    let th = unsafe { &*t };
    if th.state() == ThreadState::Dead || th.kill_requested.swap(true, Ordering::AcqRel) {
        return false;
    }
    PENDING_KILLS.fetch_add(1, Ordering::Relaxed);
    end_killed(t);
    true
}

/// Asks workload thread `tid` to exit and waits until it is gone.
pub fn kill(tid: u64) -> Result<u64, KillError> {
    let requested = table::with_tid(tid, |t| {
        // SAFETY: in the table, hence alive, while the table lock is held.
        if unsafe { (*t).kind } != ThreadKind::Workload {
            return Err(KillError::NotWorkload(tid));
        }
        Ok(request_kill(t))
    })
    .ok_or(KillError::NoSuchThread(tid))??;
    if !requested {
        return Ok(0);
    }
    wait_until_reaped(tid);
    Ok(1)
}

/// Waits until thread `tid` is gone and its memory is back, however many other kills are
/// still pending (a kill of one thread must not wait for everybody's).
fn wait_until_reaped(tid: u64) {
    loop {
        if table::with_tid(tid, |_| ()).is_none() {
            // The reaper took it out of the table in a batch counted in REAP_STARTED before
            // that (seen through the table lock); once REAP_DONE reaches what REAP_STARTED
            // says now, that batch has given its memory back.
            let started = REAP_STARTED.load(Ordering::SeqCst);
            while REAP_DONE.load(Ordering::SeqCst) < started {
                sleep_ms(1);
            }
            return;
        }
        sleep_ms(1);
    }
}

/// Asks every workload thread to exit and waits until all are gone; `progress(done, total)`
/// is called about once a second so the console can show it.
pub fn kill_all(progress: &mut dyn FnMut(usize, usize)) -> u64 {
    let mut killed = 0u64;
    // The table lock is held while each kill is requested (see walk_threads): the reaper
    // removes a thread from the table before freeing it.
    walk_threads(&mut |t| {
        // SAFETY: walk_threads hands out live control blocks.
        if unsafe { (*t).kind } == ThreadKind::Workload && request_kill(t) {
            killed += 1;
        }
    });
    wait_for_kills(progress, killed as usize);
    killed
}

/// Waits until every requested kill has been reaped; `progress(done, total)` about once a
/// second, where `total` is how many this caller asked for.
pub(super) fn wait_for_kills(progress: &mut dyn FnMut(usize, usize), total: usize) {
    let mut last = timer::now();
    loop {
        let left = PENDING_KILLS.load(Ordering::Relaxed);
        if left == 0 {
            break;
        }
        let now = timer::now();
        if timer::ticks_to_ns(now - last) >= 1_000_000_000 {
            progress(total.saturating_sub(left), total);
            last = now;
        }
        sleep_ms(1);
    }
}

/// Visits up to `limit` threads in table order (by stack slot), holding the table lock for
/// a chunk of them at a time. `f` must not allocate or block: copy out what is needed.
pub fn for_each_thread(limit: usize, f: &mut dyn FnMut(&Thread)) {
    let mut left = limit;
    table::walk(&mut |t| {
        if left == 0 {
            return false;
        }
        left -= 1;
        // SAFETY: walk hands out live control blocks.
        f(unsafe { &*t });
        left > 0
    });
}

/// Visits up to `max` threads from table position `start` (0: the beginning), holding the
/// table lock for a chunk at a time; returns where to resume, or `None` when the table has
/// no more threads. `f` must not allocate or block: copy out what is needed.
pub fn for_each_thread_from(start: usize, max: usize, f: &mut dyn FnMut(&Thread)) -> Option<usize> {
    if max == 0 {
        return Some(start);
    }
    let mut left = max;
    table::walk_from(start, &mut |t| {
        left -= 1;
        // SAFETY: walk hands out live control blocks.
        f(unsafe { &*t });
        left > 0
    })
}

/// Visits every live thread, a chunk at a time (so IRQs are not masked for long).
pub fn for_each_thread_chunked(f: &mut dyn FnMut(&Thread)) {
    // SAFETY: walk_threads hands out live control blocks.
    walk_threads(&mut |t| f(unsafe { &*t }));
}

/// Visits every live thread a chunk at a time, like [`for_each_thread_chunked`], and calls
/// `f(None)` after each chunk, with the table lock dropped: there the caller may do what must
/// not be done under it (allocate, invalidate TLBs). A thread seen in a chunk is alive until
/// `f(None)` only if the caller keeps it so (a stack claim: the reaper waits for it).
pub fn for_each_thread_batched(f: &mut dyn FnMut(Option<&Thread>)) {
    let mut next = 0usize;
    loop {
        let mut seen = 0;
        let resume = table::walk_from(next, &mut |t| {
            seen += 1;
            // SAFETY: walk hands out live control blocks.
            f(Some(unsafe { &*t }));
            seen < 256
        });
        f(None);
        match resume {
            Some(n) => next = n,
            None => return,
        }
    }
}

/// Calls `f` with thread `tid`, if it is alive, under the thread table lock (which keeps it
/// alive; `f` must not take that lock again, nor allocate).
pub fn with_thread<R>(tid: u64, f: impl FnOnce(*mut Thread) -> R) -> Option<R> {
    table::with_tid(tid, f)
}

/// The CPU whose queues hold the thread of `stack` (a stack in a control block whose claim
/// the caller holds, which keeps the thread alive).
pub fn cpu_of_stack(stack: *const Stack) -> usize {
    let offset = core::mem::offset_of!(Thread, stack);
    // SAFETY: every stack the scheduler hands out lives in a control block, at this offset,
    // and the caller's claim keeps that block alive.
    let t = unsafe { &*((stack as usize - offset) as *const Thread) };
    t.cpu.load(Ordering::Acquire) as usize
}

/// Tells the CPUs in `mask` (bit n: CPU n) to look at their queues again if they are idle:
/// a thread woken while its stack was claimed (parked, trimmed) may wait there.
pub fn kick_cpus(mask: u64) {
    // Only the bits set (usually one): a loop over every CPU costs each call MAX_CPUS
    // rounds wherever it is inlined (the park batch's finish).
    let mut rest = mask & (u64::MAX >> (64 - MAX_CPUS));
    while rest != 0 {
        let cpu = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        kick(cpu);
    }
}

/// Calls `f` for every thread in the table, holding the table lock for a chunk of them at
/// a time (see [`table::walk`]). A thread seen here stays alive while `f` runs: the reaper
/// takes it out of the table (under this lock) before freeing it.
pub(super) fn walk_threads(f: &mut dyn FnMut(*mut Thread)) {
    table::walk(&mut |t| {
        f(t);
        true
    });
}
