//! The kernel heap: a buddy heap that starts in a static region (so the device tree and the
//! frame allocator can use it before the linear map exists) and grows from the frame
//! allocator in large chunks once it does.
//!
//! Owns the global allocator. Calls `frame` (to grow) and `sync` (IRQs are masked while the
//! heap lock is held, so the scheduler may allocate from exception context: the code it
//! interrupted cannot be holding the heap lock on the same CPU).
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::mm::frame;
use crate::mm::layout::{phys_to_virt, PAGE_SIZE};
use crate::sync::IrqMutex;

const BOOT_HEAP_SIZE: usize = 1 << 20;
/// The heap grows by at least this much at a time, so a million small objects do not mean a
/// million calls into the frame allocator.
const GROW_CHUNK: usize = 2 << 20;
/// Free bytes the heap keeps for the frame allocator's own B-tree nodes: it allocates them
/// while it holds the frame lock, when the heap cannot grow (that would take the same lock).
/// Topped up after any allocation made outside the frame allocator.
const SLACK: usize = 64 << 10;

#[repr(C, align(4096))]
struct BootHeap([u8; BOOT_HEAP_SIZE]);
static mut BOOT_HEAP: BootHeap = BootHeap([0; BOOT_HEAP_SIZE]);

/// The kernel's global allocator.
pub struct KernelHeap {
    heap: IrqMutex<buddy_system_allocator::Heap<32>>,
    can_grow: AtomicBool,
    grown_bytes: AtomicU64,
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap {
    heap: IrqMutex::new(buddy_system_allocator::Heap::empty()),
    can_grow: AtomicBool::new(false),
    grown_bytes: AtomicU64::new(0),
};

/// Gives the heap its static boot region. Called once, before the first allocation.
pub fn init_boot_heap() {
    // SAFETY: BOOT_HEAP is used only by the heap from here on; init runs once on the boot CPU.
    unsafe {
        let start = core::ptr::addr_of_mut!(BOOT_HEAP) as usize;
        HEAP.heap.lock().init(start, BOOT_HEAP_SIZE);
    }
}

/// Lets the heap grow from the frame allocator (the linear map exists now).
pub fn enable_growth() {
    HEAP.can_grow.store(true, Ordering::Release);
}

/// Bytes the heap has taken from the frame allocator, beyond its boot region.
pub fn grown_bytes() -> u64 {
    HEAP.grown_bytes.load(Ordering::Relaxed)
}

/// Bytes handed out by the heap now.
pub fn allocated_bytes() -> u64 {
    HEAP.heap.lock().stats_alloc_actual() as u64
}

impl KernelHeap {
    /// Takes frames for a growth that `layout` needs; called without the heap lock (see
    /// `alloc`). Returns the new region's start and size.
    fn grow_frames(&self, layout: &Layout) -> Option<(usize, usize)> {
        if !self.can_grow.load(Ordering::Acquire) {
            return None;
        }
        let need = layout
            .size()
            .max(layout.align())
            .next_power_of_two()
            .max(PAGE_SIZE);
        // Large chunks while memory is plentiful (few calls into the frame allocator); only
        // what is needed when it runs low, so the heap does not take the frames that spawn's
        // low-water mark keeps for the kernel.
        let plenty = frame::free_pages() as usize * PAGE_SIZE / 8 >= GROW_CHUNK;
        let want = if plenty { need.max(GROW_CHUNK) } else { need };
        let pa = frame::alloc(want / PAGE_SIZE)?;
        Some((phys_to_virt(pa) as usize, want))
    }
}

// SAFETY: the buddy heap returns blocks that fit `layout` and are disjoint; all access to it
// is under the lock.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let inside_frames = frame::inside();
        let (got, low) = {
            let mut heap = self.heap.lock();
            let got = heap.alloc(layout).ok();
            let free = heap.stats_total_bytes() - heap.stats_alloc_actual();
            (got, free < SLACK)
        };
        if inside_frames {
            return got.map_or(core::ptr::null_mut(), |p| p.as_ptr());
        }
        if let Some(p) = got {
            if low && self.can_grow.load(Ordering::Acquire) {
                // Top up the slack now, while growing is allowed.
                let slack = Layout::from_size_align(SLACK, PAGE_SIZE).expect("valid layout");
                if let Some((start, size)) = self.grow_frames(&slack) {
                    // SAFETY: the frames are ours, contiguous, reachable through the linear map.
                    unsafe { self.heap.lock().add_to_heap(start, start + size) };
                    self.grown_bytes.fetch_add(size as u64, Ordering::Relaxed);
                }
            }
            return p.as_ptr();
        }
        // Grow with the heap unlocked: the frame allocator allocates from this heap (its free
        // lists are B-trees) while it holds its own lock, so taking the frame lock under the
        // heap lock deadlocks against a CPU that frees frames (trim, exit, parking) meanwhile.
        let Some((start, size)) = self.grow_frames(&layout) else {
            return core::ptr::null_mut();
        };
        let mut heap = self.heap.lock();
        // SAFETY: the frames are ours, contiguous, and reachable through the linear map.
        unsafe { heap.add_to_heap(start, start + size) };
        self.grown_bytes.fetch_add(size as u64, Ordering::Relaxed);
        match heap.alloc(layout) {
            Ok(p) => p.as_ptr(),
            Err(_) => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller hands back a block this allocator returned for `layout`.
            unsafe { self.heap.lock().dealloc(p, layout) };
        }
    }
}
