//! Boot sequence: from the assembly entry to the binary's main function.

/// Declares the function a kernel binary runs once boot is complete.
#[macro_export]
macro_rules! kernel_main {
    ($main:path) => {
        #[unsafe(no_mangle)]
        extern "Rust" fn __dynstack_main() -> ! {
            $main()
        }
    };
}

/// Entered from `boot.s` on the boot CPU, MMU on, running in the upper half.
#[unsafe(no_mangle)]
extern "C" fn kernel_entry(dtb_pa: u64, image_pa: u64) -> ! {
    semihosting::println!("dynstack: up, dtb={:#x} image={:#x}", dtb_pa, image_pa);
    semihosting::process::exit(0)
}

/// Entered from `boot.s` on a secondary CPU.
#[unsafe(no_mangle)]
extern "C" fn secondary_kernel_entry(cpu: u64) -> ! {
    let _ = cpu;
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Stack pointer handed to the next secondary CPU that starts.
#[unsafe(no_mangle)]
static SECONDARY_BOOT_SP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The shell: the main function of the dynstack binary.
pub fn run_shell() -> ! {
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    semihosting::println!("PANIC {}", info);
    semihosting::process::exit(101)
}

#[global_allocator]
static HEAP: buddy_system_allocator::LockedHeap<32> = buddy_system_allocator::LockedHeap::empty();
