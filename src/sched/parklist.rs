//! A park list: one CPU's parkable sleepers in the order they went to sleep, doubly linked
//! through the control blocks, so that a thread joins at the tail and leaves from wherever
//! it is in O(1), and the ones asleep longest are always at the head (see `parker`).
//!
//! Plain logic, generic over the node type so that the host tests run it on nodes of their
//! own; the kernel's node is `sched::Thread`. The links live in the node ([`ParkLinks`]);
//! the lock around the list (the CPU's run-queue lock, in the kernel) makes them one owner's
//! at a time. Calls nothing.
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// The links a node needs to be in a park list.
pub struct ParkLinks<N> {
    listed: AtomicBool,
    prev: AtomicPtr<N>,
    next: AtomicPtr<N>,
}

impl<N> ParkLinks<N> {
    /// Links of a node in no list.
    pub const fn new() -> Self {
        Self {
            listed: AtomicBool::new(false),
            prev: AtomicPtr::new(core::ptr::null_mut()),
            next: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Whether the node is in a park list.
    pub fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }
}

impl<N> Default for ParkLinks<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A node that can be in a park list.
pub trait ParkNode: Sized {
    /// Its links.
    fn park_links(&self) -> &ParkLinks<Self>;
}

/// One CPU's parkable sleepers, oldest first.
pub struct ParkList<N> {
    head: *mut N,
    tail: *mut N,
}

// SAFETY: the list holds pointers to nodes shared between CPUs only under the lock that
// wraps the list.
unsafe impl<N> Send for ParkList<N> {}

impl<N: ParkNode> ParkList<N> {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            head: core::ptr::null_mut(),
            tail: core::ptr::null_mut(),
        }
    }

    /// The node asleep longest, if any.
    pub fn head(&self) -> Option<*mut N> {
        (!self.head.is_null()).then_some(self.head)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Adds `t` at the tail (it is the newest sleeper).
    ///
    /// # Safety
    /// `t` is a live node in no park list, and stays alive until it is taken out.
    pub unsafe fn push_back(&mut self, t: *mut N) {
        // SAFETY: the caller's promise.
        let l = unsafe { (*t).park_links() };
        l.prev.store(self.tail, Ordering::Relaxed);
        l.next.store(core::ptr::null_mut(), Ordering::Relaxed);
        l.listed.store(true, Ordering::Relaxed);
        if self.tail.is_null() {
            self.head = t;
        } else {
            // SAFETY: the tail is a node in this list, alive by its pusher's promise.
            unsafe { (*self.tail).park_links().next.store(t, Ordering::Relaxed) };
        }
        self.tail = t;
    }

    /// Takes `t` out of the list if it is in one (it must then be this one).
    ///
    /// # Safety
    /// `t` is a live node, in this list or in none.
    pub unsafe fn remove(&mut self, t: *mut N) {
        // SAFETY: the caller's promise.
        let l = unsafe { (*t).park_links() };
        if !l.listed.load(Ordering::Relaxed) {
            return;
        }
        let prev = l.prev.load(Ordering::Relaxed);
        let next = l.next.load(Ordering::Relaxed);
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: neighbours in this list are alive by their pushers' promise.
            unsafe { (*prev).park_links().next.store(next, Ordering::Relaxed) };
        }
        if next.is_null() {
            self.tail = prev;
        } else {
            // SAFETY: as above.
            unsafe { (*next).park_links().prev.store(prev, Ordering::Relaxed) };
        }
        l.prev.store(core::ptr::null_mut(), Ordering::Relaxed);
        l.next.store(core::ptr::null_mut(), Ordering::Relaxed);
        l.listed.store(false, Ordering::Relaxed);
    }
}

impl<N: ParkNode> Default for ParkList<N> {
    fn default() -> Self {
        Self::new()
    }
}
