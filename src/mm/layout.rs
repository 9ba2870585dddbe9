//! The kernel's virtual address space (TTBR1 half, 48-bit), in one place.
//!
//! ```text
//! 0xFFFF_0000_0000_0000  linear map of physical memory (VA = LINEAR_BASE + PA)
//! 0xFFFF_8000_0000_0000  stack arena: thread stack reservations, each with a guard gap below
//! 0xFFFF_FFFE_0000_0000  device (MMIO) window, handed out in page multiples
//! 0xFFFF_FFFE_8000_0000  DTB window (up to 8 MiB, mapped read-only)
//! 0xFFFF_FFFF_0000_0000  per-CPU exception stacks, then per-CPU emergency stacks, each in a
//!                        32 KiB window = 16 KiB guard + 16 KiB stack
//! 0xFFFF_FFFF_8000_0000  kernel image (text RX, rodata R, data/bss RW)
//! ```
//! Owns only constants and address arithmetic; calls nothing.

/// Size of a page and of a translation granule.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Start of the linear map: physical address `pa` is visible at `LINEAR_BASE + pa`.
pub const LINEAR_BASE: u64 = 0xFFFF_0000_0000_0000;
/// Physical memory the linear map can cover (64 TiB).
pub const LINEAR_SIZE: u64 = 0x4000_0000_0000;

/// Start of the stack arena.
pub const STACK_ARENA_BASE: u64 = 0xFFFF_8000_0000_0000;
/// Bytes of virtual space in the stack arena (256 GiB: ten million 16 KiB stacks with 4 KiB
/// guards take 186 GiB).
pub const STACK_ARENA_SIZE: u64 = 256 << 30;

/// Start of the device window.
pub const DEVICE_BASE: u64 = 0xFFFF_FFFE_0000_0000;
/// Size of the device window.
pub const DEVICE_SIZE: u64 = 1 << 30;

/// Where the device tree blob is mapped.
pub const DTB_BASE: u64 = 0xFFFF_FFFE_8000_0000;
/// Largest device tree the kernel accepts (the Linux arm64 limit).
pub const DTB_MAX_SIZE: usize = crate::dtb::MAX_TOTAL_SIZE;

/// Start of the per-CPU exception stack windows.
pub const EXCEPTION_STACKS_BASE: u64 = 0xFFFF_FFFF_0000_0000;
/// Bytes of one exception stack. The vector entry checks bit 14 of SP (see vectors.s),
/// so this and the window layout must change together.
pub const EXCEPTION_STACK_SIZE: usize = 16 * 1024;
/// One CPU's window: the lower half is an unmapped guard, the upper half the stack.
pub const EXCEPTION_STACK_WINDOW: u64 = 2 * EXCEPTION_STACK_SIZE as u64;

/// Link address of the kernel image (see linker.ld).
pub const KERNEL_BASE: u64 = 0xFFFF_FFFF_8000_0000;

/// Linear-map address of physical address `pa`.
pub const fn phys_to_virt(pa: u64) -> u64 {
    LINEAR_BASE + pa
}

/// Physical address behind a linear-map address.
pub const fn virt_to_phys(va: u64) -> u64 {
    va - LINEAR_BASE
}

/// Top (initial SP) of CPU `cpu`'s exception stack.
pub const fn exception_stack_top(cpu: usize) -> u64 {
    EXCEPTION_STACKS_BASE + (cpu as u64 + 1) * EXCEPTION_STACK_WINDOW
}

/// Windows of the exception-stack region before the first emergency stack: one per CPU the
/// kernel supports (`percpu::MAX_CPUS` checks that it fits).
pub const EMERGENCY_STACKS_FIRST_WINDOW: usize = 8;

/// Top of CPU `cpu`'s emergency stack, which the vector entry switches to when the exception
/// stack has run out. Laid out like an exception stack (the upper half of a window, an
/// unmapped guard below), so the same bit-14 check guards it too.
pub const fn emergency_stack_top(cpu: usize) -> u64 {
    exception_stack_top(EMERGENCY_STACKS_FIRST_WINDOW + cpu)
}

/// Whether `sp` may be the stack pointer of a frame on a stack laid out as the vector entry
/// expects (bit 14 set: the upper half of a 32 KiB window, see vectors.s).
pub const fn passes_vector_check(sp: u64) -> bool {
    sp & (EXCEPTION_STACK_SIZE as u64) != 0
}

/// Rounds `x` up to a multiple of the power of two `align`.
pub const fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}

/// Rounds `x` down to a multiple of the power of two `align`.
pub const fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_stack_windows_satisfy_the_vector_check() {
        // vectors.s tests bit 14 of SP after reserving a frame: set inside the stack half,
        // clear inside the guard half.
        for cpu in 0..8 {
            let top = exception_stack_top(cpu);
            assert_ne!((top - 272) & (1 << 14), 0);
            assert_ne!((top - EXCEPTION_STACK_SIZE as u64) & (1 << 14), 0);
            assert_eq!((top - EXCEPTION_STACK_SIZE as u64 - 8) & (1 << 14), 0);
            let em = emergency_stack_top(cpu);
            assert!(passes_vector_check(em - 272));
            assert!(passes_vector_check(em - EXCEPTION_STACK_SIZE as u64));
            assert!(!passes_vector_check(em - EXCEPTION_STACK_SIZE as u64 - 8));
            // No emergency stack shares a window with an exception stack.
            assert!(em - EXCEPTION_STACK_WINDOW >= exception_stack_top(7));
        }
    }

    #[test]
    fn regions_do_not_overlap() {
        const {
            assert!(LINEAR_BASE + LINEAR_SIZE <= STACK_ARENA_BASE);
            assert!(STACK_ARENA_BASE + STACK_ARENA_SIZE <= DEVICE_BASE);
            assert!(DEVICE_BASE + DEVICE_SIZE <= DTB_BASE);
            assert!(DTB_BASE + DTB_MAX_SIZE as u64 <= EXCEPTION_STACKS_BASE);
            assert!(exception_stack_top(255) <= KERNEL_BASE);
            assert!(emergency_stack_top(255) <= KERNEL_BASE);
        }
    }
}
