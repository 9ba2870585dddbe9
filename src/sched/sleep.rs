//! A CPU's sleeping threads: a binary min-heap on (deadline, tid), with each thread's index
//! kept in its control block so a sleeper can be taken out early (kill) in O(log n).
//!
//! The heap never allocates where the scheduler works (exception context): a thread makes
//! room for itself ([`SleepQueue::make_room`]) in thread context, with IRQs masked so that it
//! cannot move to another CPU before its `svc` puts it in. Owned by the CPU's run-queue lock.
use alloc::vec::Vec;

use super::thread::Thread;

/// The sleepers of one CPU.
pub(crate) struct SleepQueue {
    heap: Vec<*mut Thread>,
}

fn key(t: *mut Thread) -> (u64, u64) {
    // SAFETY: every pointer in the heap is a live, sleeping control block.
    unsafe { ((*t).wake_at, (*t).tid) }
}

fn set_index(t: *mut Thread, i: usize) {
    // SAFETY: as in `key`; the index is only used under the queue lock.
    unsafe { (*t).sleep_index = i as u32 };
}

impl SleepQueue {
    /// An empty queue.
    pub(crate) const fn new() -> Self {
        Self { heap: Vec::new() }
    }

    /// Makes sure one more sleeper fits without allocating. False if memory ran out.
    pub(crate) fn make_room(&mut self) -> bool {
        self.heap.try_reserve(1).is_ok()
    }

    /// Whether one more sleeper fits without allocating.
    pub(crate) fn has_room(&self) -> bool {
        self.heap.len() < self.heap.capacity()
    }

    /// Adds a sleeper, if there is room (see [`make_room`](Self::make_room)); never allocates.
    pub(crate) fn push(&mut self, t: *mut Thread) -> bool {
        if self.heap.len() == self.heap.capacity() {
            return false;
        }
        self.heap.push(t);
        let i = self.heap.len() - 1;
        set_index(t, i);
        self.sift_up(i);
        true
    }

    /// The earliest deadline, if anybody sleeps.
    pub(crate) fn first_deadline(&self) -> Option<u64> {
        self.heap.first().map(|&t| key(t).0)
    }

    /// Takes out the first sleeper if its deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<*mut Thread> {
        if self.first_deadline()? > now {
            return None;
        }
        Some(self.remove_at(0))
    }

    /// Takes out `t`, which must be in this queue.
    pub(crate) fn remove(&mut self, t: *mut Thread) {
        // SAFETY: as in `key`.
        let i = unsafe { (*t).sleep_index } as usize;
        if self.heap.get(i) == Some(&t) {
            self.remove_at(i);
        }
    }

    fn remove_at(&mut self, i: usize) -> *mut Thread {
        let t = self.heap.swap_remove(i);
        if i < self.heap.len() {
            set_index(self.heap[i], i);
            self.sift_down(i);
            self.sift_up(i);
        }
        t
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        set_index(self.heap[a], a);
        set_index(self.heap[b], b);
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if key(self.heap[i]) >= key(self.heap[parent]) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && key(self.heap[l]) < key(self.heap[least]) {
                least = l;
            }
            if r < self.heap.len() && key(self.heap[r]) < key(self.heap[least]) {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }
}
