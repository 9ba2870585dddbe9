//! A reference-counted object whose creation may fail: [`Counted`] is the `Arc` of the
//! paths that must report "out of memory" rather than abort (`Arc::new` aborts when the
//! allocator says no, and `Arc::try_new` is not stable).
//!
//! The object and its count share one [`Block`], which comes from a [`Store`]: on the target
//! the join states' slab cache (`sched::JoinStore`, one O(1) slab allocation per thread
//! created); in the host tests a store that counts its blocks and can be told to fail. The
//! counting is `Arc`'s: a clone adds one (`Relaxed`: whoever clones already holds a
//! reference), a drop takes one away (`Release`), and the drop that takes the last one
//! (after an `Acquire` fence, so that every other holder's use of the object happens before)
//! drops the object and gives its block back. Generic over the store and free of `sched`'s
//! types, so it is host-tested.
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicUsize, Ordering};

/// Most references a [`Counted`] may have: cloning past this is a kernel bug (a leak of
/// clones, like the one `Arc` aborts for) and panics.
const MAX_REFS: usize = isize::MAX as usize;

/// An object and its reference count, as a [`Store`] holds them.
#[repr(C)]
pub struct Block<T> {
    refs: AtomicUsize,
    value: T,
}

/// Where [`Counted`] objects of type `T` live: blocks of one size, each handed out whole.
///
/// # Safety
///
/// `alloc` returns `None` or a block valid for reads and writes of a `Block<T>`, aligned for
/// it, that nothing else uses until it is given to `free`.
pub unsafe trait Store<T> {
    /// A fresh, uninitialised block, or `None` when memory is out.
    fn alloc() -> Option<NonNull<Block<T>>>;

    /// Gives a block back.
    ///
    /// # Safety
    ///
    /// `block` came from [`alloc`](Self::alloc), its value has been dropped and nothing
    /// uses it any more.
    unsafe fn free(block: NonNull<Block<T>>);
}

/// A shared reference to a `T` in a block of the store `S`; the last one dropped drops the
/// `T` and frees the block.
pub struct Counted<T, S: Store<T>> {
    block: NonNull<Block<T>>,
    /// Owns a `Block<T>` (for drop check and auto traits).
    _owns: PhantomData<Block<T>>,
    /// Names the store without owning one.
    _store: PhantomData<fn() -> S>,
}

// SAFETY: like Arc<T>: the value is shared between threads (hence Sync) and may be dropped
// on any of them (hence Send); the count is atomic.
unsafe impl<T: Send + Sync, S: Store<T>> Send for Counted<T, S> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync, S: Store<T>> Sync for Counted<T, S> {}

impl<T, S: Store<T>> Counted<T, S> {
    /// `value` in a new block with one reference, or `value` back when the store has no
    /// block to give (nothing is taken then).
    pub fn try_new(value: T) -> Result<Self, T> {
        let Some(block) = S::alloc() else {
            return Err(value);
        };
        // SAFETY: a fresh block of the store, valid and aligned for a Block<T> (the
        // store's contract), ours alone.
        unsafe {
            block.as_ptr().write(Block {
                refs: AtomicUsize::new(1),
                value,
            })
        };
        Ok(Self {
            block,
            _owns: PhantomData,
            _store: PhantomData,
        })
    }

    /// References there are now (another thread may change it right after).
    pub fn count(this: &Self) -> usize {
        this.block().refs.load(Ordering::Relaxed)
    }

    /// Whether two references name the same object.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.block == b.block
    }

    fn block(&self) -> &Block<T> {
        // SAFETY: the block stays initialised while any reference (this one) exists.
        unsafe { self.block.as_ref() }
    }
}

impl<T, S: Store<T>> Clone for Counted<T, S> {
    fn clone(&self) -> Self {
        let before = self.block().refs.fetch_add(1, Ordering::Relaxed);
        assert!(
            before < MAX_REFS,
            "counted: reference count overflow (clones leaked)"
        );
        Self {
            block: self.block,
            _owns: PhantomData,
            _store: PhantomData,
        }
    }
}

impl<T, S: Store<T>> Drop for Counted<T, S> {
    fn drop(&mut self) {
        if self.block().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other holder's last use happens before the value goes.
        fence(Ordering::Acquire);
        // SAFETY: that was the last reference: nobody else can reach the block, whose value
        // is initialised; it is dropped once and the block given back to the store it came
        // from.
        unsafe {
            core::ptr::drop_in_place(core::ptr::addr_of_mut!((*self.block.as_ptr()).value));
            S::free(self.block);
        }
    }
}

impl<T, S: Store<T>> core::ops::Deref for Counted<T, S> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.block().value
    }
}

#[cfg(test)]
mod tests;
