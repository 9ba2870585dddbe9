//! Stopping the machine after a panic, on every CPU, with or without a debugger.
//!
//! The first CPU to panic owns the report: it asks every other CPU to stop (the reschedule
//! SGI with [`is_stopping`] set: `irq::dispatch` and every exception entry park a CPU that
//! sees it), prints the report once, waits a bounded time for the others to park (a CPU
//! spinning with IRQs masked never answers), and ends with one line starting `stopped:`. Then
//! it exits through semihosting where a debugger is there (QEMU `-semihosting`), and
//! otherwise powers off through PSCI or the Raspberry Pi's watchdog, or halts. Whether a
//! debugger is there cannot be detected without executing the semihosting call, which traps
//! as an undefined instruction without one; so the command line says (`semihosting=on|off`),
//! defaulting to on for QEMU virt and off for a Pi. Should the semihosting call trap all the
//! same, the exception entry sees the stop in progress and powers off instead.
//!
//! A CPU that panics after the first one parks without printing. Calls `irq` (SGIs),
//! `console`, `backtrace` (the frames and an allocation failure's caller), `arch::psci`,
//! `drivers::bcm2835_pm` and `kernel` (boot information).
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::percpu::cpu_index;

const NOBODY: usize = usize::MAX;
static PANIC_CPU: AtomicUsize = AtomicUsize::new(NOBODY);
static STOPPING: AtomicBool = AtomicBool::new(false);
static PARKED: AtomicUsize = AtomicUsize::new(0);
/// Set once the semihosting exit was tried: a trap after that means there is no debugger.
static TRIED_SEMIHOSTING: AtomicBool = AtomicBool::new(false);

/// Whether a panic is stopping the machine.
pub fn is_stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// Called on exception entry while [`is_stopping`]: parks this CPU, or, on the panicking CPU
/// itself (its semihosting exit trapped: no debugger), powers off.
pub fn on_exception_while_stopping() -> ! {
    if PANIC_CPU.load(Ordering::Acquire) == cpu_index() {
        if TRIED_SEMIHOSTING.load(Ordering::Acquire) {
            crate::kernel::console::write_fmt_emergency(format_args!(
                "stopped: semihosting is not there (no debugger); {}\n",
                power_off_words()
            ));
            power_off_or_halt();
        }
        // A fault while reporting: the report is as far as it goes.
        crate::kernel::console::write_fmt_emergency(format_args!(
            "stopped: fault while reporting the panic; {}\n",
            power_off_words()
        ));
        power_off_or_halt();
    }
    park()
}

/// Parks this CPU for good (IRQs masked), counted for the report.
pub fn park() -> ! {
    crate::arch::irq::save_and_disable();
    PARKED.fetch_add(1, Ordering::AcqRel);
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// The panic handler's body.
pub fn on_panic(info: &core::panic::PanicInfo) -> ! {
    // An allocation that a thread's own heap could not serve ends that thread, not the
    // kernel (`sched::heap_scope`); this returns if the panic is anything else.
    if !is_stopping() {
        if let Some(size) = allocation_failure_size(info) {
            crate::sched::heap_scope::end_thread_out_of_own_heap(size);
        }
    }
    crate::arch::irq::save_and_disable();
    let cpu = cpu_index();
    if let Err(first) = PANIC_CPU.compare_exchange(NOBODY, cpu, Ordering::AcqRel, Ordering::Acquire)
    {
        if first == cpu {
            // A panic while reporting a panic.
            on_exception_while_stopping();
        }
        // Another CPU is reporting its panic: this one only stops.
        park();
    }
    STOPPING.store(true, Ordering::Release);
    let online = crate::sched::online_count().max(1);
    if let Some(c) = crate::kernel::irq::controller() {
        c.send_sgi(
            crate::kernel::irq::SGI_RESCHEDULE,
            crate::drivers::gic::SgiTarget::AllOthers,
        );
    }
    let fp: u64;
    // SAFETY: reads the frame pointer register.
    unsafe { core::arch::asm!("mov {}, x29", out(reg) fp) };
    // No allocation here: the panic may be the heap running out.
    if crate::kernel::console::is_ready() {
        print_panic_line(cpu, info, fp);
    } else {
        semihosting::eprintln!("PANIC on cpu {}: {}", cpu, info);
        semihosting::process::exit(101)
    }
    crate::kernel::backtrace::print(fp);
    // Bounded wait for the others: up to a second of counter time (a CPU spinning with IRQs
    // masked never answers; one QEMU has not scheduled for a while answers late).
    let start = crate::arch::timer::now();
    let limit = crate::arch::timer::ns_to_ticks(1_000_000_000);
    while PARKED.load(Ordering::Acquire) + 1 < online
        && crate::arch::timer::now().wrapping_sub(start) < limit
    {
        core::hint::spin_loop();
    }
    let halted = (PARKED.load(Ordering::Acquire) + 1).min(online);
    let how = if semihosting_present() {
        "exiting through semihosting"
    } else {
        power_off_words()
    };
    if halted == online {
        let noun = if halted == 1 { "CPU" } else { "CPUs" };
        crate::kernel::console::write_fmt_emergency(format_args!(
            "stopped: {halted} {noun} halted, {how}\n"
        ));
    } else {
        crate::kernel::console::write_fmt_emergency(format_args!(
            "stopped: {} of {} CPUs halted ({} did not answer), {}\n",
            halted,
            online,
            online - halted,
            how
        ));
    }
    if semihosting_present() {
        TRIED_SEMIHOSTING.store(true, Ordering::Release);
        semihosting::process::exit(101)
    }
    power_off_or_halt()
}

/// The report's first line: `PANIC on cpu N: ` and the panic. An allocation failure
/// (`alloc`'s `memory allocation of N bytes failed`, raised inside `alloc` at a location that
/// names only the library) names its caller instead of that location: the first frame of
/// the backtrace from `fp` outside the allocator, `alloc`, `core` and the panic path, as
/// `PANIC on cpu 0: memory allocation of 288 bytes failed in dynstack::shell::foo+0x40`.
/// Without a symbol table the line is the panic as it is, and the backtrace has the caller.
fn print_panic_line(cpu: usize, info: &core::panic::PanicInfo, fp: u64) {
    if let Some(size) = allocation_failure_size(info) {
        if let Some(caller) = crate::kernel::backtrace::allocation_caller(fp) {
            crate::kernel::console::write_fmt_emergency(format_args!(
                "PANIC on cpu {cpu}: memory allocation of {size} bytes failed in {caller}\n"
            ));
            return;
        }
    }
    crate::kernel::console::write_fmt_emergency(format_args!("PANIC on cpu {}: {}\n", cpu, info));
}

/// The size of a failed allocation if the panic is `alloc`'s allocation failure.
fn allocation_failure_size(info: &core::panic::PanicInfo) -> Option<u64> {
    use core::fmt::Write;
    let mut message = ShortText::new();
    let _ = write!(message, "{}", info.message());
    crate::symbols::caller::allocation_failure_size(message.as_str())
}

/// A short panic message, in a buffer of its own (the panic path allocates nothing): room
/// for an allocation failure's; a longer message reads as empty.
struct ShortText {
    bytes: [u8; 64],
    len: usize,
    cut: bool,
}

impl ShortText {
    fn new() -> Self {
        ShortText {
            bytes: [0; 64],
            len: 0,
            cut: false,
        }
    }

    fn as_str(&self) -> &str {
        if self.cut {
            return "";
        }
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for ShortText {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if s.len() > self.bytes.len() - self.len {
            self.cut = true;
            return Err(core::fmt::Error);
        }
        self.bytes[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// Whether a panic may exit through semihosting: the command line's `semihosting=`, or the
/// board's default (QEMU virt: yes; a Pi: no).
fn semihosting_present() -> bool {
    let default = !cfg!(any(feature = "board-rpi3", feature = "board-rpi4"));
    crate::kernel::boot_info_if_ready()
        .and_then(|i| i.args.semihosting)
        .unwrap_or(default)
}

fn power_off_words() -> &'static str {
    let info = crate::kernel::boot_info_if_ready();
    if info.is_some_and(|i| i.machine.psci.is_some()) {
        "powering off through PSCI"
    } else if info.is_some_and(|i| i.machine.pm_watchdog.is_some()) {
        "powering off through the watchdog"
    } else {
        "halting"
    }
}

/// PSCI SYSTEM_OFF, or the Pi's watchdog, or a halt loop: never semihosting.
fn power_off_or_halt() -> ! {
    crate::kernel::power_off_no_semihosting();
    crate::arch::irq::save_and_disable();
    loop {
        aarch64_cpu::asm::wfe();
    }
}
