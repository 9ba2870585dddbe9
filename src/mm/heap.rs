//! The kernel heap: a static boot region, then chunks taken from the frame allocator and
//! given back when they empty, and large blocks straight from the frame allocator.
//!
//! - The boot region (1 MiB in the image) serves the device tree and the frame allocator
//!   before the linear map exists, and stays.
//! - Small allocations (below [`LARGE`]) come from chunks, each a buddy heap of its own over
//!   frames from the frame allocator. A chunk is 2 MiB while memory is plentiful and a 2 MiB
//!   run of frames exists; otherwise it is what the allocation needs (down to one page), so
//!   a heap whose free memory was broken up by single stack pages still grows. A chunk whose
//!   last block is freed goes back to the frame allocator at once: after `kill all` the heap
//!   is back to what the kernel itself holds.
//! - Large allocations take their own run of frames and give it back on free.
//!
//! The logic ([`ChunkHeap`]) is generic over a [`ChunkPages`] source and host-tested; on the
//! target it sits behind the global allocator, in an [`IrqMutex`](crate::sync::IrqMutex)
//! (IRQs masked while held, so the scheduler may allocate from exception context: the code
//! it interrupted cannot hold the heap lock on the same CPU).
//!
//! While a thread runs code inside `sched::heap_scope::with_own_heap`, the global allocator
//! serves that thread's allocations (in thread context) from its own
//! [`ThreadHeap`](crate::mm::thread_heap::ThreadHeap) instead; it asks `sched` for it.
//!
//! Owns the global allocator. Calls `frame` (to grow and shrink), `sync` and
//! `sched::heap_scope` (the running thread's own heap).
use core::alloc::Layout;
use core::ptr::NonNull;

/// Page size the chunks are counted in.
pub const PAGE: usize = 4096;
/// Size of a chunk while memory is plentiful: few calls into the frame allocator for a
/// million small objects.
pub const GROW_CHUNK: usize = 2 << 20;
/// Allocations of this many bytes or more get frames of their own instead of chunk space.
pub const LARGE: usize = 64 * 1024;
/// Most chunks the heap holds at once (the descriptor table is static).
pub const MAX_CHUNKS: usize = 256;

/// Where the heap gets runs of frames, by the power-of-two page count.
pub trait ChunkPages {
    /// `pages` contiguous pages (a power of two), aligned to their size, as a kernel
    /// address; `None` when no such run is free.
    fn alloc(&mut self, pages: usize) -> Option<usize>;
    /// Gives back a run [`alloc`](Self::alloc) returned.
    fn free(&mut self, addr: usize, pages: usize);
    /// Whether memory is plentiful enough to take a whole [`GROW_CHUNK`].
    fn plenty(&self) -> bool;
}

struct Chunk {
    start: usize,
    end: usize,
    heap: buddy_system_allocator::Heap<32>,
}

impl Chunk {
    const EMPTY: Chunk = Chunk {
        start: 0,
        end: 0,
        heap: buddy_system_allocator::Heap::empty(),
    };
}

/// Counters of the heap, exact at the time of the call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes taken from the page source now: chunks and large blocks.
    pub grown_bytes: u64,
    /// Bytes handed out now (as the buddy heaps round them), boot region included.
    pub allocated_bytes: u64,
    /// Chunks held now.
    pub chunks: u64,
    /// Bytes in large blocks now.
    pub large_bytes: u64,
}

/// The heap's logic: a boot region, chunks and large blocks over `P`.
pub struct ChunkHeap<P: ChunkPages> {
    pages: P,
    boot: buddy_system_allocator::Heap<32>,
    boot_range: (usize, usize),
    chunks: [Chunk; MAX_CHUNKS],
    count: usize,
    /// The chunk that served the last allocation: tried first.
    hint: usize,
    chunk_bytes: u64,
    large_bytes: u64,
    large_allocated: u64,
    can_grow: bool,
}

/// Pages of a run for `size` bytes: a power of two, as runs are.
pub(crate) fn pages_for(size: usize) -> usize {
    size.div_ceil(PAGE).next_power_of_two()
}

impl<P: ChunkPages> ChunkHeap<P> {
    /// An empty heap over `pages` that cannot grow yet.
    pub const fn new(pages: P) -> Self {
        Self {
            pages,
            boot: buddy_system_allocator::Heap::empty(),
            boot_range: (0, 0),
            chunks: [Chunk::EMPTY; MAX_CHUNKS],
            count: 0,
            hint: 0,
            chunk_bytes: 0,
            large_bytes: 0,
            large_allocated: 0,
            can_grow: false,
        }
    }

    /// Gives the heap its boot region `[start, start + size)`.
    ///
    /// # Safety
    ///
    /// The region is valid memory used by nothing else, for ever.
    pub unsafe fn init_boot(&mut self, start: usize, size: usize) {
        // SAFETY: passed on from the caller.
        unsafe { self.boot.init(start, size) };
        self.boot_range = (start, start + size);
    }

    /// Lets the heap take memory from its page source from now on.
    pub fn enable_growth(&mut self) {
        self.can_grow = true;
    }

    /// The page source.
    pub fn pages(&self) -> &P {
        &self.pages
    }

    /// Current counters.
    pub fn stats(&self) -> HeapStats {
        let small: usize = self.chunks[..self.count]
            .iter()
            .map(|c| c.heap.stats_alloc_actual())
            .sum();
        HeapStats {
            grown_bytes: self.chunk_bytes + self.large_bytes,
            allocated_bytes: (self.boot.stats_alloc_actual() + small) as u64 + self.large_allocated,
            chunks: self.count as u64,
            large_bytes: self.large_bytes,
        }
    }

    /// A block for `layout`, or `None` when memory is out.
    pub fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        if layout.size() >= LARGE && self.can_grow {
            let pages = pages_for(layout.size().max(layout.align()));
            if let Some(addr) = self.pages.alloc(pages) {
                self.large_bytes += (pages * PAGE) as u64;
                self.large_allocated += layout.size() as u64;
                return NonNull::new(addr as *mut u8);
            }
            // No run that long: what is left of the boot region may still hold it.
            return self.boot.alloc(layout).ok();
        }
        if let Ok(p) = self.boot.alloc(layout) {
            return Some(p);
        }
        if self.hint < self.count {
            if let Ok(p) = self.chunks[self.hint].heap.alloc(layout) {
                return Some(p);
            }
        }
        for i in 0..self.count {
            if let Ok(p) = self.chunks[i].heap.alloc(layout) {
                self.hint = i;
                return Some(p);
            }
        }
        let i = self.grow(&layout)?;
        self.hint = i;
        self.chunks[i].heap.alloc(layout).ok()
    }

    /// Gives back a block.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`alloc`](Self::alloc) with this `layout` and is not used any more.
    pub unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        let addr = ptr.as_ptr() as usize;
        if addr >= self.boot_range.0 && addr < self.boot_range.1 {
            // SAFETY: the caller's promise: a block of the boot region for `layout`.
            unsafe { self.boot.dealloc(ptr, layout) };
            return;
        }
        if layout.size() >= LARGE {
            let pages = pages_for(layout.size().max(layout.align()));
            self.pages.free(addr, pages);
            self.large_bytes -= (pages * PAGE) as u64;
            self.large_allocated -= layout.size() as u64;
            return;
        }
        let Some(i) = self.chunk_of(addr) else {
            panic!(
                "heap: free of {addr:#x} ({} bytes), which the heap did not hand out",
                layout.size()
            );
        };
        let c = &mut self.chunks[i];
        // SAFETY: the caller's promise: a block of this chunk for `layout`.
        unsafe { c.heap.dealloc(ptr, layout) };
        if c.heap.stats_alloc_actual() == 0 {
            let (start, end) = (c.start, c.end);
            self.pages.free(start, (end - start) / PAGE);
            self.chunk_bytes -= (end - start) as u64;
            // Keep the table dense: the last chunk takes the freed descriptor's place.
            self.count -= 1;
            self.chunks.swap(i, self.count);
            self.chunks[self.count] = Chunk::EMPTY;
            self.hint = 0;
        }
    }

    fn chunk_of(&self, addr: usize) -> Option<usize> {
        self.chunks[..self.count]
            .iter()
            .position(|c| addr >= c.start && addr < c.end)
    }

    /// Adds a chunk big enough for `layout`; its index.
    fn grow(&mut self, layout: &Layout) -> Option<usize> {
        if !self.can_grow || self.count == MAX_CHUNKS {
            return None;
        }
        let need = pages_for(layout.size().max(layout.align()));
        let mut pages = if self.pages.plenty() {
            (GROW_CHUNK / PAGE).max(need)
        } else {
            need
        };
        // A fragmented machine may have no 2 MiB run left: halve down to what is needed.
        let addr = loop {
            if let Some(a) = self.pages.alloc(pages) {
                break a;
            }
            if pages == need {
                return None;
            }
            pages = (pages / 2).max(need);
        };
        let bytes = pages * PAGE;
        let i = self.count;
        self.chunks[i].start = addr;
        self.chunks[i].end = addr + bytes;
        // SAFETY: the run is ours from the page source and used by this chunk only.
        unsafe { self.chunks[i].heap.add_to_heap(addr, addr + bytes) };
        self.count += 1;
        self.chunk_bytes += bytes as u64;
        Some(i)
    }
}

#[cfg(target_os = "none")]
pub use global::*;

#[cfg(target_os = "none")]
mod global {
    use super::*;
    use crate::mm::frame;
    use crate::mm::layout::{phys_to_virt, virt_to_phys};
    use crate::sync::IrqMutex;
    use core::alloc::GlobalAlloc;

    const BOOT_HEAP_SIZE: usize = 1 << 20;

    #[repr(C, align(4096))]
    struct BootHeap([u8; BOOT_HEAP_SIZE]);
    static mut BOOT_HEAP: BootHeap = BootHeap([0; BOOT_HEAP_SIZE]);

    /// Runs of frames from the frame allocator, through the linear map.
    pub struct Frames;

    impl ChunkPages for Frames {
        fn alloc(&mut self, pages: usize) -> Option<usize> {
            frame::alloc(pages).map(|pa| phys_to_virt(pa) as usize)
        }

        fn free(&mut self, addr: usize, pages: usize) {
            frame::free(virt_to_phys(addr as u64), pages);
        }

        fn plenty(&self) -> bool {
            // Large chunks while memory is plentiful; only what is needed when it runs low,
            // so the heap does not take the frames that spawn's low-water mark keeps.
            frame::free_pages() as usize * PAGE / 8 >= GROW_CHUNK
        }
    }

    /// The kernel's global allocator.
    pub struct KernelHeap(IrqMutex<ChunkHeap<Frames>>);

    #[global_allocator]
    static HEAP: KernelHeap = KernelHeap(IrqMutex::new(ChunkHeap::new(Frames)));

    /// Gives the heap its static boot region. Called once, before the first allocation.
    pub fn init_boot_heap() {
        // SAFETY: BOOT_HEAP is used only by the heap from here on; init runs once on the
        // boot CPU.
        unsafe {
            let start = core::ptr::addr_of_mut!(BOOT_HEAP) as usize;
            HEAP.0.lock().init_boot(start, BOOT_HEAP_SIZE);
        }
    }

    /// Lets the heap grow from the frame allocator (the linear map exists now).
    pub fn enable_growth() {
        HEAP.0.lock().enable_growth();
    }

    /// Bytes the heap holds from the frame allocator now, beyond its boot region.
    pub fn grown_bytes() -> u64 {
        HEAP.0.lock().stats().grown_bytes
    }

    /// Bytes handed out by the heap now.
    pub fn allocated_bytes() -> u64 {
        HEAP.0.lock().stats().allocated_bytes
    }

    /// All the heap's counters.
    pub fn stats() -> HeapStats {
        HEAP.0.lock().stats()
    }

    /// Stack the heap's locked sections may use below their caller's SP: the deepest is a
    /// free that merges buddies and gives a chunk back (about 720 bytes of frames), plus a
    /// margin.
    const LOCKED_STACK_BYTES: u64 = 1024;

    /// Under `kstack.strategy=expand` a stack grows only where code says so, and a touch below
    /// its mapped part ends the thread (a *miss*), unless the thread holds a lock: then it
    /// cannot be ended and the kernel stops. Unannotated third-party code (the `json` and
    /// `inflate` workloads) calls the heap, which holds its lock while it runs, so a miss
    /// there would stop the kernel, depending only on where the code's frames happen to
    /// cross a page. Touching the stack the locked section may need before taking the lock
    /// moves such a miss here, where the thread can be ended like at any other miss. Nothing
    /// under the other strategies (their stacks grow by themselves), for fixed stacks, off a
    /// thread's own stack (exception context, boot), or in the kernel's own threads.
    #[inline(always)]
    fn touch_stack_before_lock() {
        if crate::stack::strategy::current() == crate::cmdline::StackStrategy::Expand {
            // SP's own page is mapped (the thread runs on it), so only an SP within
            // LOCKED_STACK_BYTES of its page's bottom can need a page below.
            let sp = crate::arch::stack_pointer();
            if sp % PAGE as u64 <= LOCKED_STACK_BYTES {
                touch_thread_stack(sp);
            }
        }
    }

    /// The rare half of [`touch_stack_before_lock`]: reads `LOCKED_STACK_BYTES` below `sp`
    /// if `sp` is on the running workload thread's own dynamic stack.
    #[inline(never)]
    fn touch_thread_stack(sp: u64) {
        let t = crate::sched::current_ptr();
        if t.is_null() {
            return;
        }
        // SAFETY: the running thread's control block lives as long as it runs.
        let t = unsafe { &*t };
        // Fixed stacks never miss (and system threads' may not be touched below their part).
        if t.stack.policy() != crate::cmdline::StackPolicy::Dynamic || t.essential {
            return;
        }
        let (base, top) = (t.stack.base(), t.stack.top());
        if sp <= base || sp > top {
            return;
        }
        let at = sp.saturating_sub(LOCKED_STACK_BYTES).max(base);
        // SAFETY: an address inside the running thread's own reservation, below its SP
        // (nothing live there): mapped, or a fault the stack subsystem handles (a miss ends
        // this thread, which holds no lock here).
        unsafe { core::ptr::read_volatile(at as *const u8) };
    }

    // SAFETY: ChunkHeap returns blocks that fit `layout` and are disjoint; all access to it
    // is under the lock.
    unsafe impl GlobalAlloc for KernelHeap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if let Some(own) = crate::sched::heap_scope::current() {
                // The thread heap takes no lock of its own, but growing it takes the frame
                // allocator's.
                touch_stack_before_lock();
                return own
                    .alloc(&mut Frames, layout)
                    .map_or(core::ptr::null_mut(), |p| p.as_ptr());
            }
            touch_stack_before_lock();
            match self.0.lock().alloc(layout) {
                Some(p) => p.as_ptr(),
                None => core::ptr::null_mut(),
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let Some(p) = NonNull::new(ptr) else {
                return;
            };
            if let Some(own) = crate::sched::heap_scope::current() {
                if own.owns(ptr as usize) {
                    // SAFETY: passed on from the caller; the block is the thread heap's.
                    unsafe { own.dealloc(p, layout) };
                    return;
                }
            }
            touch_stack_before_lock();
            // SAFETY: passed on from the caller (GlobalAlloc's contract).
            unsafe { self.0.lock().dealloc(p, layout) };
        }
    }
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
