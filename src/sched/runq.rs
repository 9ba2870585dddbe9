//! A run queue: an intrusive FIFO of control blocks, linked through a field of each block,
//! so queueing a thread never allocates (the scheduler runs in exception context).
//!
//! Plain logic, generic over the node type so that the host tests run it on nodes of their
//! own; the kernel's node is `sched::Thread`. The queue owns nothing but its links: whoever
//! pushes a node promises that it stays alive while it is queued and is in no other run
//! queue, and the lock around the queue (each CPU's, in the kernel) is what makes the link
//! fields one owner's at a time. Calls nothing.
use core::sync::atomic::{AtomicPtr, Ordering};

/// A control block that can be queued: it has a link field for the next node and says
/// whether it is pinned to its CPU.
pub trait RunNode: Sized {
    /// The link to the next node in the queue it is in (meaningless while in none).
    fn run_link(&self) -> &AtomicPtr<Self>;
    /// Whether the node must stay on its CPU: [`RunQueue::take_unpinned`] passes it over.
    fn is_pinned(&self) -> bool;
}

/// First in, first out, with a length; `push_front` for a thread that must run next.
pub struct RunQueue<N> {
    head: *mut N,
    tail: *mut N,
    len: usize,
}

// SAFETY: the queue holds pointers to nodes that are shared between CPUs only under the
// lock that wraps the queue.
unsafe impl<N> Send for RunQueue<N> {}

impl<N: RunNode> RunQueue<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            head: core::ptr::null_mut(),
            tail: core::ptr::null_mut(),
            len: 0,
        }
    }

    /// Nodes queued.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Queues `t` at the back.
    ///
    /// # Safety
    /// `t` is a live node in no run queue, and stays alive until it is taken out again.
    #[inline]
    pub unsafe fn push_back(&mut self, t: *mut N) {
        // SAFETY: the caller's promise: `t` is alive and its link is ours.
        unsafe {
            (*t).run_link()
                .store(core::ptr::null_mut(), Ordering::Relaxed)
        };
        if self.tail.is_null() {
            self.head = t;
        } else {
            // SAFETY: the tail is a node in this queue, alive by its pusher's promise.
            unsafe { (*self.tail).run_link().store(t, Ordering::Relaxed) };
        }
        self.tail = t;
        self.len += 1;
    }

    /// Queues `t` at the front: it is the next to be popped.
    ///
    /// # Safety
    /// As for [`push_back`](Self::push_back).
    #[inline]
    pub unsafe fn push_front(&mut self, t: *mut N) {
        // SAFETY: the caller's promise: `t` is alive and its link is ours.
        unsafe { (*t).run_link().store(self.head, Ordering::Relaxed) };
        self.head = t;
        if self.tail.is_null() {
            self.tail = t;
        }
        self.len += 1;
    }

    /// Takes the node at the front, if any.
    #[inline]
    pub fn pop_front(&mut self) -> Option<*mut N> {
        if self.head.is_null() {
            return None;
        }
        let t = self.head;
        // SAFETY: the head is a node in this queue, alive by its pusher's promise.
        self.head = unsafe { (*t).run_link().load(Ordering::Relaxed) };
        if self.head.is_null() {
            self.tail = core::ptr::null_mut();
        }
        self.len -= 1;
        Some(t)
    }

    /// Unlinks the first node that is not pinned, if any (for stealing: a pinned node at the
    /// head must not hide the others behind it). The others keep their order.
    pub fn take_unpinned(&mut self) -> Option<*mut N> {
        let mut prev: *mut N = core::ptr::null_mut();
        let mut t = self.head;
        while !t.is_null() {
            // SAFETY: nodes in this queue are alive by their pushers' promise.
            let node = unsafe { &*t };
            let next = node.run_link().load(Ordering::Relaxed);
            if !node.is_pinned() {
                if prev.is_null() {
                    self.head = next;
                } else {
                    // SAFETY: as above: `prev` is in this queue.
                    unsafe { (*prev).run_link().store(next, Ordering::Relaxed) };
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

impl<N: RunNode> Default for RunQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}
