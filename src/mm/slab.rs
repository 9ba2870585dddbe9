//! Slab caches: fixed-size objects packed into page-sized slabs.
//!
//! A cache hands out objects of one size and alignment. It takes whole pages (slabs) from a
//! page source, carves each into objects behind a small header at the start of the page,
//! and gives a slab back as soon as its last object is freed (one empty slab is kept as a
//! spare, so a create/exit loop at a slab boundary does not call the frame allocator every
//! time). Allocation and free are O(1): `free` finds the slab header by rounding the object
//! address down to the page, allocation pops the first partial slab's free list (or bumps its
//! never-used index). Per-cache statistics (objects in use, slabs, bytes) are exact, and are
//! what `stacks` reports for thread control blocks.
//!
//! The logic ([`Slab`]) is generic over a [`SlabPages`] source so that it is unit-tested on
//! the host with fake memory, like the translation-table manager. On the target,
//! [`SlabCache`] wraps a `Slab` over the frame allocator in its own `IrqMutex`: it may be
//! used from thread context and from the scheduler (IRQs are masked while the lock is held),
//! but never from the stack-growth fault path, which takes no lock.
//!
//! Owns the pages of its slabs while they hold objects. Calls `mm::frame` (target only) and
//! `sync`; nothing else.
use core::ptr::NonNull;

/// Bytes in a slab: one page.
pub const SLAB_BYTES: usize = 4096;
/// Bytes at the start of each slab taken by its header.
pub const HEADER_BYTES: usize = core::mem::size_of::<SlabHeader>();
/// Smallest object a cache holds (a free object stores the free-list link).
pub const MIN_OBJECT: usize = 16;
/// Largest object a cache holds: one object per slab.
pub const MAX_OBJECT: usize = SLAB_BYTES - HEADER_BYTES;
/// Most objects one slab can hold (bits in the header's bitmap).
const MAX_PER_SLAB: usize = SLAB_BYTES / MIN_OBJECT;
const BITMAP_WORDS: usize = MAX_PER_SLAB / 64;
/// Written in every slab header, to catch a `free` of a pointer no slab handed out.
const MAGIC: u32 = 0x51ab_cac0;

/// Where a [`Slab`] gets its pages and gives them back.
///
/// # Safety
///
/// `alloc_page` must return a pointer to `SLAB_BYTES` bytes aligned to `SLAB_BYTES`, valid for
/// reads and writes and used by nothing else until handed back to `free_page`.
pub unsafe trait SlabPages {
    /// A fresh page, or `None` when memory is out.
    fn alloc_page(&mut self) -> Option<NonNull<u8>>;
    /// Gives back a page `alloc_page` returned.
    fn free_page(&mut self, page: NonNull<u8>);
}

/// The header at the start of every slab page.
#[repr(C)]
struct SlabHeader {
    /// Neighbours in the cache's list of partial slabs (null when full or not listed).
    next: *mut SlabHeader,
    prev: *mut SlabHeader,
    /// Freed objects of this slab, linked through their first word.
    free: *mut u8,
    magic: u32,
    /// Objects handed out from this slab.
    in_use: u16,
    /// Objects below this index have been handed out at least once; the rest are untouched.
    next_unused: u16,
    /// One bit per object: set while it is allocated (catches double frees).
    live: [u64; BITMAP_WORDS],
}

/// Counters of one cache, exact at the time of the call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabStats {
    /// Bytes per object as asked for.
    pub object_size: usize,
    /// Objects allocated now.
    pub objects: u64,
    /// Slabs (pages) the cache holds, the spare included.
    pub slabs: u64,
    /// Bytes of memory those slabs take (`slabs × SLAB_BYTES`).
    pub bytes: u64,
    /// Objects one slab holds.
    pub per_slab: usize,
}

/// Why a cache could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// Size zero, more than [`MAX_OBJECT`] after alignment, or the alignment is not a power
    /// of two up to the slab size.
    BadLayout,
}

/// A cache of fixed-size objects over the page source `P`. Not locked: see [`SlabCache`].
pub struct Slab<P: SlabPages> {
    pages: P,
    size: usize,
    stride: usize,
    first_offset: usize,
    per_slab: usize,
    /// Slabs with at least one free object, most recently used first.
    partial: *mut SlabHeader,
    /// An empty slab kept back (null if none).
    spare: *mut SlabHeader,
    objects: u64,
    slabs: u64,
}

// SAFETY: the raw pointers are slab pages this cache owns exclusively; moving the cache to
// another thread moves that ownership with it.
unsafe impl<P: SlabPages + Send> Send for Slab<P> {}

impl<P: SlabPages> Slab<P> {
    /// A cache of objects of `size` bytes aligned to `align`, over `pages`. No memory is
    /// taken until the first allocation.
    pub fn new(size: usize, align: usize, pages: P) -> Result<Self, SlabError> {
        if size == 0 || !align.is_power_of_two() || align > SLAB_BYTES {
            return Err(SlabError::BadLayout);
        }
        let align = align.max(core::mem::align_of::<usize>());
        let stride = size.max(MIN_OBJECT).next_multiple_of(align);
        let first_offset = HEADER_BYTES.next_multiple_of(align);
        if first_offset + stride > SLAB_BYTES {
            return Err(SlabError::BadLayout);
        }
        let per_slab = ((SLAB_BYTES - first_offset) / stride).min(MAX_PER_SLAB);
        Ok(Self {
            pages,
            size,
            stride,
            first_offset,
            per_slab,
            partial: core::ptr::null_mut(),
            spare: core::ptr::null_mut(),
            objects: 0,
            slabs: 0,
        })
    }

    /// Current counters.
    pub fn stats(&self) -> SlabStats {
        SlabStats {
            object_size: self.size,
            objects: self.objects,
            slabs: self.slabs,
            bytes: self.slabs * SLAB_BYTES as u64,
            per_slab: self.per_slab,
        }
    }

    /// The page source (for tests that count its pages).
    pub fn pages(&self) -> &P {
        &self.pages
    }

    /// An object of the cache's size, uninitialised; `None` if no slab has room and the page
    /// source is out of memory.
    pub fn alloc(&mut self) -> Option<NonNull<u8>> {
        if self.partial.is_null() && !self.add_slab() {
            return None;
        }
        let slab = self.partial;
        // SAFETY: `slab` is a live slab header of this cache (in the partial list).
        let h = unsafe { &mut *slab };
        let index = if !h.free.is_null() {
            let obj = h.free;
            // SAFETY: a free object's first word holds the next free object.
            h.free = unsafe { (obj as *mut *mut u8).read() };
            (obj as usize - slab as usize - self.first_offset) / self.stride
        } else {
            let i = h.next_unused as usize;
            h.next_unused += 1;
            i
        };
        debug_assert!(index < self.per_slab);
        h.live[index / 64] |= 1 << (index % 64);
        h.in_use += 1;
        self.objects += 1;
        if h.in_use as usize == self.per_slab {
            self.unlink(slab);
        }
        let obj = slab as usize + self.first_offset + index * self.stride;
        NonNull::new(obj as *mut u8)
    }

    /// Gives back an object.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`alloc`](Self::alloc) of this cache and is not used after this call.
    /// Pointers of other caches, misaligned pointers and double frees are caught (panic)
    /// as long as the page still belongs to a slab.
    pub unsafe fn free(&mut self, ptr: NonNull<u8>) {
        let addr = ptr.as_ptr() as usize;
        let slab = (addr & !(SLAB_BYTES - 1)) as *mut SlabHeader;
        // SAFETY: by the caller's promise `ptr` lies in a live slab of this cache, whose
        // header starts the page.
        let h = unsafe { &mut *slab };
        let offset = addr - slab as usize;
        assert!(
            h.magic == MAGIC
                && offset >= self.first_offset
                && (offset - self.first_offset).is_multiple_of(self.stride),
            "slab: free of {addr:#x}, which this cache did not hand out"
        );
        let index = (offset - self.first_offset) / self.stride;
        let bit = 1u64 << (index % 64);
        assert!(
            index < self.per_slab && h.live[index / 64] & bit != 0,
            "slab: double free of {addr:#x}"
        );
        h.live[index / 64] &= !bit;
        let was_full = h.in_use as usize == self.per_slab;
        h.in_use -= 1;
        self.objects -= 1;
        // SAFETY: the object is free now; its first word becomes the free-list link.
        unsafe { (ptr.as_ptr() as *mut *mut u8).write(h.free) };
        h.free = ptr.as_ptr();
        if h.in_use == 0 {
            if !was_full {
                self.unlink(slab);
            }
            self.retire(slab);
        } else if was_full {
            self.push_partial(slab);
        }
    }

    /// Gives back the spare empty slab, if any (memory is short). Returns pages freed.
    pub fn shrink(&mut self) -> u64 {
        let spare = core::mem::replace(&mut self.spare, core::ptr::null_mut());
        match NonNull::new(spare as *mut u8) {
            Some(page) => {
                self.pages.free_page(page);
                self.slabs -= 1;
                1
            }
            None => 0,
        }
    }

    fn add_slab(&mut self) -> bool {
        let slab = if !self.spare.is_null() {
            core::mem::replace(&mut self.spare, core::ptr::null_mut())
        } else {
            let Some(page) = self.pages.alloc_page() else {
                return false;
            };
            self.slabs += 1;
            page.as_ptr() as *mut SlabHeader
        };
        // SAFETY: a page of SLAB_BYTES owned by this cache, aligned for the header.
        unsafe {
            slab.write(SlabHeader {
                next: core::ptr::null_mut(),
                prev: core::ptr::null_mut(),
                free: core::ptr::null_mut(),
                magic: MAGIC,
                in_use: 0,
                next_unused: 0,
                live: [0; BITMAP_WORDS],
            })
        };
        self.push_partial(slab);
        true
    }

    /// An empty slab: kept as the spare if there is none, given back otherwise.
    fn retire(&mut self, slab: *mut SlabHeader) {
        // SAFETY: `slab` is an empty slab of this cache, no longer listed.
        unsafe { (*slab).magic = 0 };
        if self.spare.is_null() {
            self.spare = slab;
        } else if let Some(page) = NonNull::new(slab as *mut u8) {
            self.pages.free_page(page);
            self.slabs -= 1;
        }
    }

    fn push_partial(&mut self, slab: *mut SlabHeader) {
        // SAFETY: `slab` and the list head are live slab headers of this cache.
        unsafe {
            (*slab).prev = core::ptr::null_mut();
            (*slab).next = self.partial;
            if !self.partial.is_null() {
                (*self.partial).prev = slab;
            }
        }
        self.partial = slab;
    }

    fn unlink(&mut self, slab: *mut SlabHeader) {
        // SAFETY: `slab` is in the partial list; its neighbours are live headers.
        unsafe {
            let (prev, next) = ((*slab).prev, (*slab).next);
            if prev.is_null() {
                self.partial = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*slab).prev = core::ptr::null_mut();
            (*slab).next = core::ptr::null_mut();
        }
    }
}

impl<P: SlabPages> Drop for Slab<P> {
    /// Gives back the spare slab. Slabs that still hold objects are leaked on purpose: some
    /// object may still be in use.
    fn drop(&mut self) {
        self.shrink();
    }
}

/// Pages from the frame allocator, through the linear map.
#[cfg(target_os = "none")]
pub struct FramePages;

/// Frames all slab caches hold now (for the memory accounting of `mem` and the tests).
#[cfg(target_os = "none")]
static FRAME_PAGES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Frames held by all slab caches over the frame allocator.
#[cfg(target_os = "none")]
pub fn frame_pages() -> u64 {
    FRAME_PAGES.load(core::sync::atomic::Ordering::Relaxed)
}

// SAFETY: frames are page-aligned, owned by the caller until freed, and the linear map makes
// them readable and writable.
#[cfg(target_os = "none")]
unsafe impl SlabPages for FramePages {
    fn alloc_page(&mut self) -> Option<NonNull<u8>> {
        let pa = crate::mm::frame::alloc(1)?;
        FRAME_PAGES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        NonNull::new(crate::mm::layout::phys_to_virt(pa) as *mut u8)
    }

    fn free_page(&mut self, page: NonNull<u8>) {
        FRAME_PAGES.fetch_sub(1, core::sync::atomic::Ordering::Relaxed);
        crate::mm::frame::free(crate::mm::layout::virt_to_phys(page.as_ptr() as u64), 1);
    }
}

/// A slab cache over the frame allocator with its own lock, usable from any CPU.
///
/// Use it from thread context or from the scheduler; never from the stack-growth fault path
/// (the lock may be held by the code the fault interrupted). A `static` cache is created
/// with [`SlabCache::new`] in a const context and sized on its first use:
///
/// ```ignore
/// static BLOCKS: SlabCache = SlabCache::new(256, 16);
/// let p = BLOCKS.alloc().ok_or(OutOfMemory)?;
/// // ... use 256 bytes at p ...
/// unsafe { BLOCKS.free(p) };
/// ```
#[cfg(target_os = "none")]
pub struct SlabCache {
    size: usize,
    align: usize,
    inner: crate::sync::IrqMutex<Option<Slab<FramePages>>>,
}

#[cfg(target_os = "none")]
impl SlabCache {
    /// A cache of `object_size`-byte objects aligned to `align`. Panics at first use (a
    /// kernel bug) if the layout does not fit a slab: at most [`MAX_OBJECT`] bytes, `align`
    /// a power of two.
    pub const fn new(object_size: usize, align: usize) -> Self {
        Self {
            size: object_size,
            align,
            inner: crate::sync::IrqMutex::new(None),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Slab<FramePages>) -> R) -> R {
        let mut g = self.inner.lock();
        let slab = g.get_or_insert_with(|| match Slab::new(self.size, self.align, FramePages) {
            Ok(s) => s,
            Err(_) => panic!(
                "slab: object size {} align {} does not fit a slab",
                self.size, self.align
            ),
        });
        f(slab)
    }

    /// An uninitialised object, or `None` when memory is out.
    pub fn alloc(&self) -> Option<NonNull<u8>> {
        self.with(|s| s.alloc())
    }

    /// Gives back an object.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`alloc`](Self::alloc) of this cache and is not used afterwards.
    pub unsafe fn free(&self, ptr: NonNull<u8>) {
        // SAFETY: passed on from the caller.
        self.with(|s| unsafe { s.free(ptr) })
    }

    /// Gives back the spare empty slab. Returns pages freed.
    pub fn shrink(&self) -> u64 {
        self.with(|s| s.shrink())
    }

    /// Current counters.
    pub fn stats(&self) -> SlabStats {
        self.with(|s| s.stats())
    }
}

#[cfg(test)]
mod tests;
