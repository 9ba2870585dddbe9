//! The kernel address space: the live TTBR1 translation tables (adopted from the boot code)
//! and the windows in it — linear map, device window, DTB window, exception stacks, and the
//! stack arena's tables.
//!
//! Owns the kernel's `PageTable` behind one lock. Until the linear map exists, tables come
//! from a small pool inside the kernel image; afterwards from the frame allocator. Calls
//! `mm::page_table`, `mm::frame` and `arch::tlb`.
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aarch64_cpu::registers::TTBR1_EL1;

use crate::arch::tlb::HardwareTlb;
use crate::mm::frame;
use crate::mm::layout::{phys_to_virt, DEVICE_BASE, DEVICE_SIZE, KERNEL_BASE, PAGE_SIZE};
use crate::mm::page_table::{
    Attributes, Half, MapError, PageTable, Reclaim, TableMemory, Translation,
};
use crate::sync::IrqMutex;

const BOOT_POOL_PAGES: usize = 32;

#[repr(C, align(4096))]
struct BootPool([[u8; PAGE_SIZE]; BOOT_POOL_PAGES]);
static mut BOOT_POOL: BootPool = BootPool([[0; PAGE_SIZE]; BOOT_POOL_PAGES]);

static IMAGE_PA: AtomicU64 = AtomicU64::new(0);
static IMAGE_END_PA: AtomicU64 = AtomicU64::new(0);
static LINEAR_READY: AtomicBool = AtomicBool::new(false);
static TABLE_PAGES: AtomicU64 = AtomicU64::new(0);

struct Space {
    table: Option<PageTable>,
    boot_pool_used: usize,
    next_device_va: u64,
}

static SPACE: IrqMutex<Space> = IrqMutex::new(Space {
    table: None,
    boot_pool_used: 0,
    next_device_va: DEVICE_BASE,
});

/// Frames for tables, and where the kernel can reach them.
struct KernelMemory<'a> {
    boot_pool_used: &'a mut usize,
}

fn image_pa_to_va(pa: u64) -> Option<u64> {
    let start = IMAGE_PA.load(Ordering::Relaxed);
    let end = IMAGE_END_PA.load(Ordering::Relaxed);
    (pa >= start && pa < end).then(|| pa - start + KERNEL_BASE)
}

/// Physical address of a kernel image (link-address) pointer.
pub fn image_va_to_pa(va: u64) -> u64 {
    va - KERNEL_BASE + IMAGE_PA.load(Ordering::Relaxed)
}

// SAFETY: frames come zeroed from the boot pool (zeroed .bss, used once each) or the frame
// allocator; table_ptr reaches image frames through the image mapping and all other RAM
// through the linear map, which exists whenever such frames are handed out.
unsafe impl TableMemory for KernelMemory<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        TABLE_PAGES.fetch_add(1, Ordering::Relaxed);
        if LINEAR_READY.load(Ordering::Relaxed) {
            return frame::alloc_zeroed();
        }
        if *self.boot_pool_used == BOOT_POOL_PAGES {
            return None;
        }
        // SAFETY: only the address is taken; pages are handed out once each.
        let va = unsafe { core::ptr::addr_of!(BOOT_POOL.0[*self.boot_pool_used]) as u64 };
        *self.boot_pool_used += 1;
        Some(image_va_to_pa(va))
    }

    fn free_table(&mut self, pa: u64) {
        TABLE_PAGES.fetch_sub(1, Ordering::Relaxed);
        if image_pa_to_va(pa).is_none() {
            frame::free(pa, 1);
        }
    }

    fn table_ptr(&self, pa: u64) -> *mut u64 {
        image_pa_to_va(pa).unwrap_or_else(|| phys_to_virt(pa)) as *mut u64
    }
}

fn with_space<R>(f: impl FnOnce(&mut PageTable, &mut KernelMemory) -> R) -> R {
    let mut space = SPACE.lock();
    let Space {
        table,
        boot_pool_used,
        ..
    } = &mut *space;
    let table = table.as_mut().expect("kspace::init not called");
    f(table, &mut KernelMemory { boot_pool_used })
}

/// Adopts the boot tables (TTBR1_EL1) as the kernel address space.
pub fn init(image_pa: u64, image_size: u64) {
    IMAGE_PA.store(image_pa, Ordering::Relaxed);
    IMAGE_END_PA.store(image_pa + image_size, Ordering::Relaxed);
    let root = TTBR1_EL1.get_baddr();
    // SAFETY: the root the MMU uses right now, built by boot.s in the standard format.
    SPACE.lock().table = Some(unsafe { PageTable::from_root(root, Half::Upper) });
}

/// Tells table allocation that all RAM outside the image is reachable through the linear map.
pub fn linear_map_ready() {
    LINEAR_READY.store(true, Ordering::Release);
}

/// Maps `[va, va+size)` to `[pa, pa+size)`.
pub fn map(
    va: u64,
    pa: u64,
    size: u64,
    attrs: Attributes,
    allow_blocks: bool,
) -> Result<(), MapError> {
    with_space(|t, m| t.map(m, &HardwareTlb, va, pa, size, attrs, allow_blocks))
}

/// Unmaps `[va, va+size)` and invalidates it on all CPUs; `on_unmapped(va, pa)` per page.
pub fn unmap(va: u64, size: u64, on_unmapped: impl FnMut(u64, u64)) -> Result<(), MapError> {
    with_space(|t, m| t.unmap(m, &HardwareTlb, va, size, Reclaim::KeepTables, on_unmapped))
}

/// Maps a device's registers into the device window; returns the virtual address of `pa`.
pub fn map_device(pa: u64, size: u64) -> Result<u64, MapError> {
    let offset = pa & (PAGE_SIZE as u64 - 1);
    let base = pa - offset;
    let len = (size + offset).div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64;
    let mut space = SPACE.lock();
    let va = space.next_device_va;
    if va + len > DEVICE_BASE + DEVICE_SIZE {
        return Err(MapError::OutOfMemory);
    }
    space.next_device_va += len;
    let Space {
        table,
        boot_pool_used,
        ..
    } = &mut *space;
    let table = table.as_mut().expect("kspace::init not called");
    table.map(
        &mut KernelMemory { boot_pool_used },
        &HardwareTlb,
        va,
        base,
        len,
        Attributes::DEVICE,
        false,
    )?;
    Ok(va + offset)
}

/// Creates the last-level tables for `[va, va+size)` without mapping; returns how many
/// tables were created.
pub fn prepare_tables(va: u64, size: u64) -> Result<usize, MapError> {
    with_space(|t, m| t.prepare_tables(m, &HardwareTlb, va, size))
}

/// Virtual address of the last-level table that translates `va`, if it exists.
pub fn leaf_table(va: u64) -> Option<u64> {
    with_space(|t, m| t.leaf_slot(m, va)).map(|p| p as u64 & !(PAGE_SIZE as u64 - 1))
}

/// What `va` translates to now.
pub fn query(va: u64) -> Option<Translation> {
    with_space(|t, m| t.query(m, va))
}

/// Visits every leaf mapping of the kernel address space.
pub fn walk(f: impl FnMut(u64, Translation)) {
    with_space(|t, m| t.walk(m, f))
}

/// Pages of translation tables allocated since boot (boot.s's own tables not included).
pub fn table_pages() -> u64 {
    TABLE_PAGES.load(Ordering::Relaxed)
}
