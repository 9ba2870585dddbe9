//! The per-CPU run queues (each under its CPU's lock) and stealing: an idle CPU takes a ready
//! thread from another CPU's queue, a busy one pulls from the busiest to even the load.
//!
//! The lists themselves are plain logic, host-tested: [`runq`](super::runq) (the FIFO and
//! what may be stolen), [`sleep`](super::sleep), [`parklist`](super::parklist) and
//! [`balance`](super::balance) (which CPU to take from). This file holds them together
//! under the locks.
use super::*;

/// What one CPU's lock guards: its ready threads, its sleepers, its parkable sleepers, and
/// when its current slice ends.
pub(super) struct CpuQueue {
    pub(super) run: runq::RunQueue<Thread>,
    pub(super) sleepers: sleep::SleepQueue<Thread>,
    /// Parkable sleepers, oldest first (see `parker`).
    pub(super) parkable: parklist::ParkList<Thread>,
    pub(super) slice_end: u64,
}

impl CpuQueue {
    pub(super) const fn new() -> Self {
        Self {
            run: runq::RunQueue::new(),
            sleepers: sleep::SleepQueue::new(),
            parkable: parklist::ParkList::new(),
            slice_end: 0,
        }
    }

    /// Queues `t` at the back.
    ///
    /// # Safety
    /// `t` is a live thread in no run queue; it stays alive while queued (the reaper only
    /// frees dead threads, and a dead thread is never queued).
    #[inline(always)]
    pub(super) unsafe fn push_back(&mut self, t: *mut Thread) {
        // SAFETY: the caller's promise.
        unsafe { self.run.push_back(t) }
    }

    /// Queues `t` at the front. As for [`push_back`](Self::push_back).
    ///
    /// # Safety
    /// As for [`push_back`](Self::push_back).
    #[inline(always)]
    pub(super) unsafe fn push_front(&mut self, t: *mut Thread) {
        // SAFETY: the caller's promise.
        unsafe { self.run.push_front(t) }
    }

    #[inline(always)]
    pub(super) fn pop_front(&mut self) -> Option<*mut Thread> {
        self.run.pop_front()
    }

    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        self.run.len()
    }
}

/// Takes `t`, just taken from CPU `victim`'s queue under its lock, for CPU `cpu`.
fn take_for(cpu: usize, victim: usize, q: &CpuQueue, t: *mut Thread) -> *mut Thread {
    QUEUE_LEN[victim].store(q.len(), Ordering::Relaxed);
    // SAFETY: taken from a run queue under its lock: alive, and ours now.
    unsafe { (*t).cpu.store(cpu as u32, Ordering::Release) };
    t
}

/// Takes one ready thread from another CPU's queue, if one can be had without waiting.
pub(super) fn steal(cpu: usize) -> Option<*mut Thread> {
    for victim in balance::steal_order(cpu, MAX_CPUS) {
        if QUEUE_LEN[victim].load(Ordering::Relaxed) == 0 {
            continue;
        }
        if let Some(mut q) = QUEUES[victim].try_lock() {
            if let Some(t) = q.run.take_unpinned() {
                return Some(take_for(cpu, victim, &q, t));
            }
        }
    }
    None
}

/// Takes one ready thread from the CPU with the longest queue, if that queue is longer than
/// `own_len + 1` (so balancing never just moves the imbalance).
pub(super) fn steal_from_busy(cpu: usize, own_len: usize) -> Option<*mut Thread> {
    let lens = QUEUE_LEN.iter().map(|l| l.load(Ordering::Relaxed));
    let victim = balance::busiest(lens, cpu, own_len)?;
    let mut q = QUEUES[victim].try_lock()?;
    let t = q.run.take_unpinned()?;
    Some(take_for(cpu, victim, &q, t))
}
