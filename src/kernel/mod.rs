//! Boot: from the assembly entry to the kernel binary's main function, on the boot CPU and
//! the secondaries, and the panic handler.
//!
//! The order matters and is all here: per-CPU block and vectors; boot heap; the kernel
//! address space; the DTB (mapped, validated, parsed); the console; physical memory and the
//! linear map; interrupts; the command line; stacks and the scheduler; secondary CPUs; then
//! the main thread. Calls every subsystem's init.
pub mod backtrace;
pub mod console;
pub mod exception;
pub mod irq;
pub mod stop;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::registers::{ReadWriteable, Writeable, TCR_EL1, VBAR_EL1};

use crate::arch::{psci, timer};
use crate::cmdline::KernelArgs;
use crate::dtb::PsciConduit;
use crate::dtb::{self, MachineInfo};
use crate::mm::layout::{self, phys_to_virt, PAGE_SIZE};
use crate::mm::page_table::Attributes;
use crate::mm::regions::{self, Range};
use crate::mm::{frame, heap, kspace};
use crate::{board, println, sched};

/// Declares the function a kernel binary runs, in a thread, once boot is complete.
#[macro_export]
macro_rules! kernel_main {
    ($main:path) => {
        #[unsafe(no_mangle)]
        extern "Rust" fn __dynstack_main() {
            $main()
        }
    };
}

extern "Rust" {
    fn __dynstack_main();
}

extern "C" {
    static exception_vectors: u8;
    static __kernel_start: u8;
    static __kernel_end: u8;
    fn secondary_entry();
}

/// What boot found out about the machine, for `mem`, `cpus` and the tests.
pub struct BootInfo {
    /// The parsed device tree.
    pub machine: MachineInfo,
    /// The kernel command line, parsed.
    pub args: KernelArgs,
    /// Bytes of RAM the DTB describes.
    pub ram_bytes: u64,
    /// Bytes of the kernel image, bss included.
    pub image_bytes: u64,
}

static BOOT_INFO: crate::sync::Once<BootInfo> = crate::sync::Once::new();

/// What boot found; available from the first thread on.
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO.get().expect("boot_info before boot finished")
}

fn set_vectors() {
    // SAFETY: only the address of the vector table is taken.
    VBAR_EL1.set(core::ptr::addr_of!(exception_vectors) as u64);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Turns off TTBR0 walks: the identity map was only for turning the MMU on, and a null
/// pointer must fault.
fn drop_identity_map() {
    TCR_EL1.modify(TCR_EL1::EPD0::DisableTTBR0Walks);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    crate::arch::tlb::invalidate_all();
}

/// Stops boot with a message on whatever console can be had, and exits QEMU with status 1.
fn early_fail(msg: core::fmt::Arguments) -> ! {
    if !crate::kernel::console::is_ready() {
        if let Ok(va) = kspace::map_device(board::EARLY_UART_PA, PAGE_SIZE as u64) {
            let uart: &'static crate::drivers::pl011::Pl011 =
                // SAFETY: the board's UART registers, just mapped.
                Box::leak(Box::new(unsafe { crate::drivers::pl011::Pl011::new(va as usize) }));
            uart.init();
            crate::kernel::console::set_device(uart);
        }
    }
    if crate::kernel::console::is_ready() {
        crate::kernel::console::write_fmt_emergency(format_args!(
            "dynstack: boot failed: {}\n",
            msg
        ));
    } else {
        semihosting::eprintln!("dynstack: boot failed: {}", msg);
    }
    semihosting::process::exit(1)
}

/// Whether a device tree starts at `pa` (its magic number is there). Some loaders pass
/// something else in x0: QEMU's raspi machines without `-dtb` pass the old ATAG address.
fn dtb_at(pa: u64) -> bool {
    let page = PAGE_SIZE as u64;
    let base = pa & !(page - 1);
    let attrs = Attributes::new(
        crate::mm::page_table::MemoryType::Normal,
        crate::mm::page_table::Permission::ReadOnly,
    );
    if kspace::map(layout::DTB_BASE, base, page * 2, attrs, false).is_err() {
        return false;
    }
    let va = layout::DTB_BASE + (pa - base);
    // SAFETY: 4 bytes inside the two pages just mapped, read-only.
    let magic = u32::from_be(unsafe { core::ptr::read_unaligned(va as *const u32) });
    let _ = kspace::unmap(layout::DTB_BASE, page * 2, |_, _| {});
    magic == dtb::MAGIC
}

fn map_dtb(dtb_pa: u64) -> &'static [u8] {
    let page = PAGE_SIZE as u64;
    let base = dtb_pa & !(page - 1);
    let offset = (dtb_pa - base) as usize;
    let window = layout::DTB_MAX_SIZE as u64 + page;
    let attrs = Attributes::new(
        crate::mm::page_table::MemoryType::Normal,
        crate::mm::page_table::Permission::ReadOnly,
    );
    if let Err(e) = kspace::map(layout::DTB_BASE, base, page * 2, attrs, false) {
        early_fail(format_args!(
            "cannot map the device tree at {:#x}: {}",
            dtb_pa, e
        ));
    }
    // SAFETY: at least 40 bytes from `offset` are mapped (two pages from base).
    let header = unsafe {
        core::slice::from_raw_parts((layout::DTB_BASE as usize + offset) as *const u8, 40)
    };
    let size = match dtb::total_size(header) {
        Ok(s) => s,
        Err(e) => early_fail(format_args!("no valid device tree at {:#x}: {}", dtb_pa, e)),
    };
    let mapped_end = (offset + size) as u64;
    let need = mapped_end.div_ceil(page) * page;
    if need > 2 * page && need <= window {
        if let Err(e) = kspace::map(
            layout::DTB_BASE + 2 * page,
            base + 2 * page,
            need - 2 * page,
            attrs,
            false,
        ) {
            early_fail(format_args!("cannot map the device tree: {}", e));
        }
    }
    // SAFETY: `size` bytes from `offset` are mapped read-only and nothing writes the DTB.
    unsafe { core::slice::from_raw_parts((layout::DTB_BASE as usize + offset) as *const u8, size) }
}

/// Entered from `boot.s` on the boot CPU, MMU on, running in the upper half. Each step
/// needs the ones before it.
#[unsafe(no_mangle)]
extern "C" fn kernel_entry(dtb_pa: u64, image_pa: u64) -> ! {
    let image_bytes = start_boot_cpu(image_pa);
    let (dtb_pa, blob, machine) = read_machine(dtb_pa);
    let console_uart = start_console(&machine);
    let ram_bytes = add_memory(&machine, image_pa, image_bytes, dtb_pa, blob.len() as u64);
    let args = read_command_line(&machine);
    init_interrupts(&machine, &console_uart);
    let cpus = machine.cpus.len().clamp(1, crate::percpu::MAX_CPUS);
    BOOT_INFO.call_once(|| BootInfo {
        machine,
        args,
        ram_bytes,
        image_bytes,
    });
    start_threads(cpus);
    start_secondaries(cpus);
    drop_identity_map();
    crate::kernel::irq::init_this_cpu();
    BOOT_DONE.store(true, Ordering::Release);
    aarch64_cpu::asm::sev();
    sched::start_this_cpu()
}

/// This CPU's identity and vectors, the boot heap and the kernel address space (adopting the
/// boot tables). Returns the size of the image, bss included.
fn start_boot_cpu(image_pa: u64) -> u64 {
    crate::percpu::init_this_cpu(0, crate::arch::aarch64::mpidr_affinity());
    set_vectors();
    heap::init_boot_heap();
    // SAFETY: linker symbols; only their addresses are used.
    let image_bytes =
        core::ptr::addr_of!(__kernel_end) as u64 - core::ptr::addr_of!(__kernel_start) as u64;
    kspace::init(image_pa, image_bytes);
    image_bytes
}

/// The device tree: the loader's, else the board's (on virt: where QEMU puts it for an ELF
/// boot; on a Pi: the built-in description, whose model string says the loader passed none),
/// mapped and parsed. Returns where it is, its bytes and what it says.
fn read_machine(dtb_pa: u64) -> (u64, &'static [u8], MachineInfo) {
    let dtb_pa = if dtb_pa != 0 && dtb_at(dtb_pa) {
        dtb_pa
    } else {
        board::dtb_fallback_pa()
    };
    let blob = map_dtb(dtb_pa);
    let machine = match dtb::parse(blob) {
        Ok(m) => m,
        Err(e) => early_fail(format_args!(
            "device tree at {:#x} is malformed: {}",
            dtb_pa, e
        )),
    };
    (dtb_pa, blob, machine)
}

/// The console: the PL011, or the mini UART if the command line asks for it (`console=mini`)
/// and the tree has one. The rest of the command line is read once the console is up.
/// Returns the console's UART.
fn start_console(machine: &MachineInfo) -> dtb::Uart {
    let wants_mini = crate::cmdline::console_choice(machine.bootargs.as_deref().unwrap_or(""))
        == crate::cmdline::ConsoleChoice::Mini;
    let console_uart = match machine.mini_uart.filter(|_| wants_mini) {
        Some(mini) => {
            start_mini_uart(&mini);
            mini
        }
        None => {
            let Some(uart) = machine.uart.filter(|u| u.kind == dtb::UartKind::Pl011) else {
                early_fail(format_args!(
                    "the device tree names no PL011 UART (the default console; console=mini \
                     picks the mini UART)"
                ));
            };
            start_pl011(&uart);
            uart
        }
    };
    println!("dynstack: booting on {} ({})", board::NAME, machine.model);
    if wants_mini && console_uart.kind != dtb::UartKind::Bcm2835Aux {
        println!(
            "dynstack: console=mini: the device tree has no enabled mini UART; using the PL011"
        );
    }
    console_uart
}

/// Physical memory: RAM minus the image, the DTB and reserved ranges goes to the frame
/// allocator; then the linear map, and the heap may grow. Returns the bytes of RAM.
fn add_memory(
    machine: &MachineInfo,
    image_pa: u64,
    image_bytes: u64,
    dtb_pa: u64,
    dtb_bytes: u64,
) -> u64 {
    let ram: Vec<Range> = machine
        .memory
        .iter()
        .map(|r| Range::from_base_size(r.base, r.size))
        .collect();
    if ram.is_empty() {
        early_fail(format_args!("the device tree describes no memory"));
    }
    let image = Range::from_base_size(image_pa, image_bytes);
    let mut holes: Vec<Range> = machine
        .reserved
        .iter()
        .map(|r| Range::from_base_size(r.base, r.size))
        .collect();
    holes.push(image);
    holes.push(Range::from_base_size(dtb_pa, dtb_bytes));
    for r in regions::subtract(&ram, &holes, PAGE_SIZE as u64) {
        frame::add_range(r.start, r.end);
    }
    for r in regions::subtract(&ram, &[image], PAGE_SIZE as u64) {
        if let Err(e) = kspace::map(
            phys_to_virt(r.start),
            r.start,
            r.len(),
            Attributes::DATA,
            true,
        ) {
            early_fail(format_args!(
                "cannot build the linear map for {:#x}..{:#x}: {}",
                r.start, r.end, e
            ));
        }
    }
    kspace::linear_map_ready();
    frame::enable();
    heap::enable_growth();
    ram.iter().map(|r| r.len()).sum()
}

/// The kernel command line: errors reported, the stack settings applied.
fn read_command_line(machine: &MachineInfo) -> KernelArgs {
    let (args, errors) = crate::cmdline::parse(machine.bootargs.as_deref().unwrap_or(""));
    for e in &errors {
        println!("error: {}", e);
    }
    if let Err(e) = crate::stack::configure(args.stack) {
        println!("error: {}", e);
    }
    if !args.ignored.is_empty() {
        println!(
            "dynstack: ignoring unknown arguments: {}",
            args.ignored.join(" ")
        );
    }
    args
}

/// Exception stacks for every CPU, the stack arena, this CPU's idle thread, the reaper and
/// the main thread.
fn start_threads(cpus: usize) {
    for cpu in 0..cpus {
        map_exception_stack(cpu);
    }
    crate::stack::init(cpus);
    sched::init_table(crate::stack::arena::capacity() as usize);
    sched::set_online();
    if let Err(e) = sched::add_cpu(0)
        .and_then(|_| sched::start_reaper())
        .and_then(|_| sched::parker::start())
    {
        early_fail(format_args!("cannot create the first threads: {}", e));
    }
    // The main thread (the shell) has a fixed stack of the system size, so it can run, and
    // the user can kill things, even when memory has run out.
    if let Err(e) = sched::spawn_system_with("main", || {
        // SAFETY: provided by the binary through kernel_main!.
        unsafe { __dynstack_main() }
    }) {
        early_fail(format_args!("cannot create the main thread: {}", e));
    }
}

/// Maps the PL011 at `uart` and makes it the console.
fn start_pl011(uart: &dtb::Uart) {
    let uart_va = match kspace::map_device(uart.region.base, uart.region.size.max(0x1000)) {
        Ok(va) => va,
        Err(e) => early_fail(format_args!("cannot map the UART: {}", e)),
    };
    // SAFETY: the UART's registers, just mapped as device memory.
    let pl011: &'static crate::drivers::pl011::Pl011 = Box::leak(Box::new(unsafe {
        crate::drivers::pl011::Pl011::new(uart_va as usize)
    }));
    pl011.init();
    crate::kernel::console::set_device(pl011);
}

/// Maps the auxiliary block of the mini UART at `uart` (whose `reg` starts at `AUX_MU_IO`)
/// and makes the mini UART the console.
fn start_mini_uart(uart: &dtb::Uart) {
    use crate::drivers::bcm2835_aux::{MiniUart, BLOCK_SIZE, IO_OFFSET};
    let Some(block) = uart.region.base.checked_sub(IO_OFFSET) else {
        early_fail(format_args!(
            "the mini UART's registers at {:#x} are not inside an auxiliary block",
            uart.region.base
        ));
    };
    let va = match kspace::map_device(block, BLOCK_SIZE) {
        Ok(va) => va,
        Err(e) => early_fail(format_args!("cannot map the mini UART: {}", e)),
    };
    // SAFETY: the auxiliary block's registers, just mapped as device memory.
    let mini: &'static MiniUart = Box::leak(Box::new(unsafe { MiniUart::new(va as usize) }));
    mini.init();
    crate::kernel::console::set_device(mini);
}

/// Sets up the interrupt controller the device tree names, and registers it with `irq`
/// together with the IDs the timer (the EL1 virtual timer, the third `timer` interrupt) and
/// the console UART (`console_uart`: the PL011, or the mini UART) raise through it.
///
/// A GIC's specifiers are the three-cell GIC format. The Pi 3's BCM2836 pair has two
/// two-cell formats: the timer's are the local controller's (`<source flags>`), the UART's
/// are armctrl's (`<bank bit>`), because on these SoCs the generic timer reaches only the
/// local controller and the peripherals only armctrl.
fn init_interrupts(machine: &MachineInfo, console_uart: &dtb::Uart) {
    use crate::drivers::bcm2836::{self, Bcm2836};
    use crate::drivers::gic::InterruptController;

    let timer_spec = machine.timer.as_ref().and_then(|t| t.interrupts.get(2));
    let uart_spec = console_uart.irq.as_ref();
    let gic_ids = || {
        (
            timer_spec.and_then(|s| s.gic_intid()).unwrap_or(27),
            uart_spec.and_then(|s| s.gic_intid()),
        )
    };
    let (controller, timer_intid, uart_intid): (&'static dyn InterruptController, u32, _) =
        match &machine.interrupt_controller {
            Some(dtb::InterruptController::GicV2 {
                distributor,
                cpu_interface,
            }) => {
                let d = map_or_fail(distributor.base, distributor.size);
                let c = map_or_fail(cpu_interface.base, cpu_interface.size);
                let (timer, uart) = gic_ids();
                // SAFETY: the GIC's registers, just mapped.
                let gic = Box::leak(Box::new(unsafe {
                    crate::drivers::gic::v2::GicV2::new(d as usize, c as usize)
                }));
                (gic, timer, uart)
            }
            Some(dtb::InterruptController::GicV3 {
                distributor,
                redistributors,
            }) => {
                let d = map_or_fail(distributor.base, distributor.size);
                let r = map_or_fail(redistributors.base, redistributors.size);
                let (timer, uart) = gic_ids();
                // SAFETY: as above.
                let gic = Box::leak(Box::new(unsafe {
                    crate::drivers::gic::v3::GicV3::new(
                        d as usize,
                        r as usize,
                        redistributors.size as usize,
                    )
                }));
                (gic, timer, uart)
            }
            Some(dtb::InterruptController::Bcm2836 { local, peripheral }) => {
                let l = map_or_fail(local.base, local.size.max(bcm2836::LOCAL_SIZE));
                let p =
                    peripheral.map(|r| map_or_fail(r.base, r.size.max(bcm2836::PERIPHERAL_SIZE)));
                let timer = timer_spec
                    .filter(|s| s.count == 2)
                    .and_then(|s| bcm2836::local_intid(s.cells[0]))
                    .unwrap_or(bcm2836::VIRTUAL_TIMER_INTID);
                let uart = uart_spec
                    .filter(|s| s.count == 2 && p.is_some())
                    .and_then(|s| bcm2836::peripheral_intid(s.cells[0], s.cells[1]));
                // SAFETY: both controllers' registers, just mapped (at least the sizes the
                // driver needs).
                let intc = Box::leak(Box::new(unsafe {
                    Bcm2836::new(l as usize, p.map(|p| p as usize))
                }));
                (intc, timer, uart)
            }
            None => early_fail(format_args!(
                "no supported interrupt controller (GICv2, GICv3 or BCM2836) in the device tree"
            )),
        };
    controller.init_distributor();
    crate::kernel::irq::init(controller, timer_intid, uart_intid);
    if uart_intid.is_some() {
        crate::kernel::console::enable_input_interrupt();
    }
}

fn map_or_fail(pa: u64, size: u64) -> u64 {
    match kspace::map_device(pa, size) {
        Ok(va) => va,
        Err(e) => early_fail(format_args!(
            "cannot map device registers at {:#x}: {}",
            pa, e
        )),
    }
}

/// Maps CPU `cpu`'s exception stack and its emergency stack, each the upper half of its
/// window (the lower half stays unmapped: the guard).
fn map_exception_stack(cpu: usize) {
    let size = layout::EXCEPTION_STACK_SIZE as u64;
    let pages = layout::EXCEPTION_STACK_SIZE / PAGE_SIZE;
    for (top, what) in [
        (layout::exception_stack_top(cpu), "exception"),
        (layout::emergency_stack_top(cpu), "emergency"),
    ] {
        let Some(pa) = frame::alloc(pages) else {
            early_fail(format_args!("no memory for cpu {}'s {} stack", cpu, what));
        };
        if let Err(e) = kspace::map(top - size, pa, size, Attributes::DATA, false) {
            early_fail(format_args!(
                "cannot map cpu {}'s {} stack: {}",
                cpu, what, e
            ));
        }
    }
}

/// Stack pointer handed to the next secondary CPU that starts.
#[unsafe(no_mangle)]
static SECONDARY_BOOT_SP: AtomicU64 = AtomicU64::new(0);
/// CPU index of the next secondary CPU that starts (PSCI passes it in `x0` too; the spin
/// table cannot).
static SECONDARY_BOOT_CPU: AtomicUsize = AtomicUsize::new(0);
static SECONDARY_UP: AtomicBool = AtomicBool::new(false);
static BOOT_DONE: AtomicBool = AtomicBool::new(false);

/// How a secondary CPU is started.
#[derive(Clone, Copy)]
enum StartMethod {
    /// PSCI `CPU_ON` through this conduit.
    Psci(PsciConduit),
    /// The spin table: the CPU polls this physical address with its MMU off.
    SpinTable(u64),
}

/// Starts the secondary CPUs the device tree lists, one at a time, each by its own
/// `enable-method` (PSCI `CPU_ON` on QEMU `virt`, the spin table on the Raspberry Pi), and
/// waits up to 30 s for each to come up.
fn start_secondaries(cpus: usize) {
    let info = boot_info();
    let me = crate::arch::aarch64::mpidr_affinity();
    let entry_pa = kspace::image_va_to_pa(secondary_entry as *const () as u64);
    let mut index = 1;
    for cpu in info.machine.cpus.iter().take(crate::percpu::MAX_CPUS) {
        if cpu.mpidr == me || index >= cpus {
            continue;
        }
        let method = match cpu.enable {
            dtb::EnableMethod::Psci => info.machine.psci.map(StartMethod::Psci),
            dtb::EnableMethod::SpinTable { release_addr } => {
                Some(StartMethod::SpinTable(release_addr))
            }
            dtb::EnableMethod::None => None,
        };
        let Some(method) = method else {
            println!(
                "dynstack: cpu mpidr {:#x}: no enable method this kernel can use (PSCI with a psci node, or spin-table); not started",
                cpu.mpidr
            );
            continue;
        };
        crate::percpu::get(index)
            .mpidr
            .store(cpu.mpidr, Ordering::Relaxed);
        if let Err(e) = sched::add_cpu(index) {
            println!(
                "dynstack: cpu {}: no idle thread ({}); not started",
                index, e
            );
            continue;
        }
        // Start below the top of its exception stack: the first thread's frame is copied to
        // the very top (enter_first_frame), and must not overlap the stack in use then.
        SECONDARY_BOOT_SP.store(layout::exception_stack_top(index) - 4096, Ordering::Release);
        SECONDARY_BOOT_CPU.store(index, Ordering::Release);
        SECONDARY_UP.store(false, Ordering::Release);
        // The secondary reads nothing written since boot before its MMU and caches are on
        // (its first reads are the boot tables, written with the MMU off), so no cache
        // maintenance is needed here, except for the spin table's release address, which it
        // polls with its caches off.
        let started = match method {
            StartMethod::Psci(conduit) => psci::cpu_on(conduit, cpu.mpidr, entry_pa, index as u64)
                .map_err(|e| alloc::format!("{}", e)),
            StartMethod::SpinTable(release_addr) => {
                spin_table_release(release_addr, entry_pa).map_err(alloc::string::String::from)
            }
        };
        match started {
            Ok(()) => {
                // Generous: QEMU's clock is the host's, and a loaded host may not run a new
                // vCPU for over a second. A CPU given up on that comes up later would boot
                // with the next CPU's stack and index, so waiting long is the safe side.
                let deadline =
                    crate::arch::timer::now() + crate::arch::timer::ns_to_ticks(30_000_000_000);
                while !SECONDARY_UP.load(Ordering::Acquire) {
                    if crate::arch::timer::now() > deadline {
                        println!(
                            "dynstack: cpu {} (mpidr {:#x}) did not come up",
                            index, cpu.mpidr
                        );
                        break;
                    }
                    core::hint::spin_loop();
                }
            }
            Err(e) => println!(
                "dynstack: cpu {} (mpidr {:#x}) failed to start: {}",
                index, cpu.mpidr, e
            ),
        }
        index += 1;
    }
}

/// Releases a CPU parked on a spin table: stores `entry_pa` at `release_addr`, where the
/// CPU polls with its MMU and caches off, cleans it to the point of coherency, and wakes
/// the CPU with `sev`.
fn spin_table_release(release_addr: u64, entry_pa: u64) -> Result<(), &'static str> {
    if !release_addr.is_multiple_of(8) {
        return Err("the spin table's release address is not 8-byte aligned");
    }
    // The Pi's release addresses are in RAM (a reserved page), so in the linear map; any
    // other place gets a device mapping, which needs no cleaning but takes no harm from it.
    let linear = phys_to_virt(release_addr);
    let va = if kspace::query(linear).is_some() {
        linear
    } else {
        kspace::map_device(release_addr, 8)
            .map_err(|_| "cannot map the spin table's release address")?
    };
    // SAFETY: `va` maps the 8 aligned bytes at `release_addr`, which the firmware set aside
    // for releasing this CPU; the cache maintenance, barrier and event have no other memory
    // effects.
    unsafe {
        core::ptr::write_volatile(va as *mut u64, entry_pa);
        core::arch::asm!(
            "dc cvac, {va}",
            "dsb sy",
            "sev",
            va = in(reg) va,
            options(nostack, preserves_flags)
        );
    }
    Ok(())
}

/// Entered from `boot.s` on a secondary CPU, MMU on, on its exception stack. `_context` is
/// PSCI's context argument (the CPU index); the spin table passes nothing, so the index
/// comes from [`SECONDARY_BOOT_CPU`] either way.
#[unsafe(no_mangle)]
extern "C" fn secondary_kernel_entry(_context: u64) -> ! {
    let cpu = SECONDARY_BOOT_CPU.load(Ordering::Acquire);
    crate::percpu::init_this_cpu(cpu, crate::arch::aarch64::mpidr_affinity());
    set_vectors();
    drop_identity_map();
    crate::kernel::irq::init_this_cpu();
    sched::set_online();
    SECONDARY_UP.store(true, Ordering::Release);
    // Threads start once every CPU is up and the boot CPU has finished.
    while !BOOT_DONE.load(Ordering::Acquire) {
        aarch64_cpu::asm::wfe();
    }
    sched::start_this_cpu()
}

/// What boot found, or `None` before boot has finished (for the panic path).
pub fn boot_info_if_ready() -> Option<&'static BootInfo> {
    BOOT_INFO.get()
}

/// Powers the machine off (QEMU exits with status 0).
pub fn poweroff() -> ! {
    crate::kernel::console::flush();
    power_off_no_semihosting();
    // Last resort: QEMU's semihosting exit (on hardware without a debugger this traps).
    crate::kernel::console::write_fmt_emergency(format_args!(
        "dynstack: neither PSCI nor a power-management watchdog stopped the machine; trying semihosting\n"
    ));
    semihosting::process::exit(0)
}

/// How long a power-off through the Pi's watchdog may take before the caller tries
/// something else.
const POWER_OFF_WAIT_NS: u64 = 2_000_000_000;

/// Powers off through PSCI or the Pi's power-management watchdog; returns if neither is
/// there (or neither worked).
pub fn power_off_no_semihosting() {
    if let Some(c) = BOOT_INFO.get().and_then(|i| i.machine.psci) {
        psci::system_off(c);
    }
    // No PSCI (a Raspberry Pi): the power-management watchdog's halt, as Linux does it.
    if let Some(wdt) = BOOT_INFO.get().and_then(|i| i.machine.pm_watchdog) {
        if let Ok(va) = kspace::map_device(wdt.base, wdt.size.max(0x28)) {
            // SAFETY: the block's registers, just mapped as device memory.
            unsafe { crate::drivers::bcm2835_pm::Bcm2835Pm::new(va as usize) }.power_off();
            // The watchdog fires within microseconds on a board; in QEMU its timer runs on
            // the host's clock, so a host that is busy elsewhere can take far longer than
            // the driver's own short spin. Wait on the generic timer before giving up.
            let deadline = timer::now() + timer::ns_to_ticks(POWER_OFF_WAIT_NS);
            while timer::now() < deadline {
                core::hint::spin_loop();
            }
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::kernel::stop::on_panic(info)
}
