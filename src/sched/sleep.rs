//! A CPU's sleeping threads: a binary min-heap on (deadline, tid), with each node's index
//! kept in the node so a sleeper can be taken out early (kill) in O(log n).
//!
//! The heap never allocates where the scheduler works (exception context): a thread makes
//! room for itself ([`SleepQueue::make_room`]) in thread context, with IRQs masked so that it
//! cannot move to another CPU before its `svc` puts it in. Owned by the CPU's run-queue lock
//! in the kernel.
//!
//! Plain logic, generic over the node type so that the host tests run it on nodes of their
//! own; the kernel's node is `sched::Thread`. Calls `alloc` (a `Vec`, grown only by
//! `make_room`).
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

/// A control block that can sleep: it has a wake-up key and a field for its heap index.
pub trait SleepNode: Sized {
    /// (deadline, tie-breaker): the heap wakes the least first. The tie-breaker (the
    /// kernel's tid) makes the order among equal deadlines the same on every run.
    fn sleep_key(&self) -> (u64, u64);
    /// Where the node is in the heap, kept up to date by the heap while it is in it.
    fn sleep_index(&self) -> &AtomicU32;
}

/// The sleepers of one CPU.
pub struct SleepQueue<N> {
    heap: Vec<*mut N>,
}

// SAFETY: the heap holds pointers to nodes shared between CPUs only under the lock that
// wraps the queue.
unsafe impl<N> Send for SleepQueue<N> {}

fn key<N: SleepNode>(t: *mut N) -> (u64, u64) {
    // SAFETY: every pointer in the heap is a live node (the promise of `push`).
    unsafe { (*t).sleep_key() }
}

fn set_index<N: SleepNode>(t: *mut N, i: usize) {
    // SAFETY: as in `key`.
    unsafe { (*t).sleep_index().store(i as u32, Ordering::Relaxed) };
}

impl<N: SleepNode> SleepQueue<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self { heap: Vec::new() }
    }

    /// Sleepers in the queue.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nobody sleeps.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Makes sure one more sleeper fits without allocating. False if memory ran out.
    pub fn make_room(&mut self) -> bool {
        self.heap.try_reserve(1).is_ok()
    }

    /// Whether one more sleeper fits without allocating.
    pub fn has_room(&self) -> bool {
        self.heap.len() < self.heap.capacity()
    }

    /// Adds a sleeper, if there is room (see [`make_room`](Self::make_room)); never
    /// allocates. False (and nothing changes) when there is no room.
    ///
    /// # Safety
    /// `t` is a live node in no sleep queue, whose key does not change while it is in this
    /// one, and it stays alive until it is taken out.
    pub unsafe fn push(&mut self, t: *mut N) -> bool {
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
    pub fn first_deadline(&self) -> Option<u64> {
        self.heap.first().map(|&t| key(t).0)
    }

    /// Takes out the first sleeper if its deadline is at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<*mut N> {
        if self.first_deadline()? > now {
            return None;
        }
        Some(self.remove_at(0))
    }

    /// Takes out `t` if it is in this queue (its index names it); otherwise does nothing.
    ///
    /// # Safety
    /// `t` is a live node.
    pub unsafe fn remove(&mut self, t: *mut N) {
        // SAFETY: the caller's promise.
        let i = unsafe { (*t).sleep_index().load(Ordering::Relaxed) } as usize;
        if self.heap.get(i) == Some(&t) {
            self.remove_at(i);
        }
    }

    fn remove_at(&mut self, i: usize) -> *mut N {
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

impl<N: SleepNode> Default for SleepQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}
