//! The per-CPU run queues (intrusive lists of control blocks, each under its CPU's lock) and
//! balancing: an idle CPU steals a ready thread from another CPU's queue.
use super::*;

pub(super) struct CpuQueue {
    pub(super) head: *mut Thread,
    pub(super) tail: *mut Thread,
    pub(super) len: usize,
    pub(super) sleepers: sleep::SleepQueue,
    /// Parkable sleepers, oldest first (see `parker`).
    pub(super) parkable: parker::ParkList,
    pub(super) slice_end: u64,
}

// SAFETY: the raw pointers are control blocks shared between CPUs only under this lock.
unsafe impl Send for CpuQueue {}

impl CpuQueue {
    pub(super) const fn new() -> Self {
        Self {
            head: core::ptr::null_mut(),
            tail: core::ptr::null_mut(),
            len: 0,
            sleepers: sleep::SleepQueue::new(),
            parkable: parker::ParkList::new(),
            slice_end: 0,
        }
    }

    pub(super) fn push_back(&mut self, t: *mut Thread) {
        // SAFETY: `t` is a live control block not in any queue; we hold the queue lock.
        unsafe { (*t).next = core::ptr::null_mut() };
        if self.tail.is_null() {
            self.head = t;
        } else {
            // SAFETY: tail is a live control block in this queue.
            unsafe { (*self.tail).next = t };
        }
        self.tail = t;
        self.len += 1;
    }

    pub(super) fn push_front(&mut self, t: *mut Thread) {
        // SAFETY: `t` is a live control block not in any queue; we hold the queue lock.
        unsafe { (*t).next = self.head };
        self.head = t;
        if self.tail.is_null() {
            self.tail = t;
        }
        self.len += 1;
    }

    pub(super) fn pop_front(&mut self) -> Option<*mut Thread> {
        if self.head.is_null() {
            return None;
        }
        let t = self.head;
        // SAFETY: head is a live control block in this queue.
        self.head = unsafe { (*t).next };
        if self.head.is_null() {
            self.tail = core::ptr::null_mut();
        }
        self.len -= 1;
        Some(t)
    }

    /// Unlinks the first thread that is not pinned to this CPU, if any (for stealing: a
    /// pinned thread at the head must not hide the others behind it).
    fn take_unpinned(&mut self) -> Option<*mut Thread> {
        let mut prev: *mut Thread = core::ptr::null_mut();
        let mut t = self.head;
        while !t.is_null() {
            // SAFETY: live control blocks in this queue, under its lock.
            let next = unsafe { (*t).next };
            // SAFETY: as above.
            if !unsafe { (*t).pinned } {
                if prev.is_null() {
                    self.head = next;
                } else {
                    // SAFETY: as above.
                    unsafe { (*prev).next = next };
                }
                if self.tail == t {
                    self.tail = prev;
                }
                self.len -= 1;
                return Some(t);
            }
            prev = t;
            t = next;
        }
        None
    }
}

/// Takes one ready thread from another CPU's queue, if one can be had without waiting.
pub(super) fn steal(cpu: usize) -> Option<*mut Thread> {
    let n = MAX_CPUS;
    for i in 1..n {
        let victim = (cpu + i) % n;
        if QUEUE_LEN[victim].load(Ordering::Relaxed) == 0 {
            continue;
        }
        if let Some(mut q) = QUEUES[victim].try_lock() {
            if let Some(t) = q.take_unpinned() {
                QUEUE_LEN[victim].store(q.len, Ordering::Relaxed);
                // SAFETY: taken from a run queue under its lock; it is ours now.
                unsafe { (*t).cpu.store(cpu as u32, Ordering::Release) };
                return Some(t);
            }
        }
    }
    None
}

/// Takes one ready thread from the CPU with the longest queue, if that queue is longer than
/// `own_len + 1` (so balancing never just moves the imbalance).
pub(super) fn steal_from_busy(cpu: usize, own_len: usize) -> Option<*mut Thread> {
    let (victim, len) = QUEUE_LEN
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != cpu)
        .map(|(i, l)| (i, l.load(Ordering::Relaxed)))
        .max_by_key(|&(_, l)| l)?;
    if len < own_len + 2 {
        return None;
    }
    let mut q = QUEUES[victim].try_lock()?;
    let t = q.take_unpinned()?;
    QUEUE_LEN[victim].store(q.len, Ordering::Relaxed);
    // SAFETY: taken from a run queue under its lock; it is ours now.
    unsafe { (*t).cpu.store(cpu as u32, Ordering::Release) };
    Some(t)
}
