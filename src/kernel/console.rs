//! The serial console: `print!`/`println!` output and line input for the shell.
//!
//! Owns the console device (a UART driver registered at boot) and the input ring that the
//! UART interrupt fills. Output is serialised by a lock so lines from different CPUs do not
//! interleave; a panic report bypasses the lock if its holder is the CPU that panicked.
//! Calls `sync` and `sched` (to wake the thread waiting for input).
use alloc::string::String;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::sync::IrqMutex;

/// A UART the console can drive.
pub trait ConsoleDevice: Send + Sync {
    /// Sends one byte, waiting for room.
    fn write_byte(&self, byte: u8);
    /// Takes one received byte, if any.
    fn try_read_byte(&self) -> Option<u8>;
    /// Raises an interrupt when input arrives.
    fn enable_input_interrupt(&self);
}

impl ConsoleDevice for crate::drivers::pl011::Pl011 {
    fn write_byte(&self, byte: u8) {
        crate::drivers::pl011::Pl011::write_byte(self, byte)
    }
    fn try_read_byte(&self) -> Option<u8> {
        crate::drivers::pl011::Pl011::try_read_byte(self)
    }
    fn enable_input_interrupt(&self) {
        self.enable_rx_interrupt()
    }
}

impl ConsoleDevice for crate::drivers::bcm2835_aux::MiniUart {
    fn write_byte(&self, byte: u8) {
        crate::drivers::bcm2835_aux::MiniUart::write_byte(self, byte)
    }
    fn try_read_byte(&self) -> Option<u8> {
        crate::drivers::bcm2835_aux::MiniUart::try_read_byte(self)
    }
    fn enable_input_interrupt(&self) {
        self.enable_rx_interrupt()
    }
}

/// Lets the console device interrupt on input (once the interrupt controller routes it).
pub fn enable_input_interrupt() {
    if let Some(dev) = DEVICE.get() {
        dev.enable_input_interrupt();
    }
}

static DEVICE: crate::sync::Once<&'static dyn ConsoleDevice> = crate::sync::Once::new();
static OUTPUT: IrqMutex<()> = IrqMutex::new(());

const INPUT_SIZE: usize = 1024;
static INPUT: IrqMutex<InputRing> = IrqMutex::new(InputRing {
    buf: [0; INPUT_SIZE],
    head: 0,
    len: 0,
});
/// The thread blocked in [`read_byte`], if any.
static READER: AtomicPtr<crate::sched::Thread> = AtomicPtr::new(core::ptr::null_mut());
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct InputRing {
    buf: [u8; INPUT_SIZE],
    head: usize,
    len: usize,
}

/// Makes `device` the console. Later calls are ignored.
pub fn set_device(device: &'static dyn ConsoleDevice) {
    DEVICE.call_once(|| device);
}

/// Whether a console device exists yet.
pub fn is_ready() -> bool {
    DEVICE.get().is_some()
}

struct Writer<'a>(&'a dyn ConsoleDevice);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.write_byte(b'\r');
            }
            self.0.write_byte(b);
        }
        Ok(())
    }
}

/// Writes formatted text to the console (the body of `print!`).
pub fn write_fmt(args: fmt::Arguments) {
    if let Some(dev) = DEVICE.get() {
        let _guard = OUTPUT.lock();
        let _ = Writer(*dev).write_fmt(args);
    }
}

/// Writes a panic or fatal report: takes the output lock if it can within a short while,
/// and writes anyway if not (its holder may be the CPU that is dying).
pub fn write_fmt_emergency(args: fmt::Arguments) {
    if let Some(dev) = DEVICE.get() {
        let mut guard = None;
        for _ in 0..1_000_000 {
            if let Some(g) = OUTPUT.try_lock() {
                guard = Some(g);
                break;
            }
            core::hint::spin_loop();
        }
        let _ = Writer(*dev).write_fmt(args);
        drop(guard);
    }
}

/// A `core::fmt::Write` sink that prints to the console, for code that takes a writer (the
/// shell). It writes whole lines at once, so a line built from many pieces (a summary line)
/// is never split by a report from another CPU; a partial line (a prompt, the echo of what
/// is typed) goes out at [`flush`], which [`read_byte`] calls before it waits.
pub struct Console;

/// What [`Console`] has been given since its last complete line.
static PENDING: IrqMutex<String> = IrqMutex::new(String::new());

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut pending = PENDING.lock();
        pending.push_str(s);
        let Some(end) = pending.rfind('\n') else {
            return Ok(());
        };
        let lines: String = pending.drain(..=end).collect();
        drop(pending);
        write_fmt(format_args!("{}", lines));
        Ok(())
    }
}

/// Writes out what [`Console`] holds of an unfinished line.
pub fn flush() {
    let rest = core::mem::take(&mut *PENDING.lock());
    if !rest.is_empty() {
        write_fmt(format_args!("{}", rest));
    }
}

/// Moves bytes waiting in the device into the input ring; true if there were any.
fn drain_device() -> bool {
    let Some(dev) = DEVICE.get() else {
        return false;
    };
    let mut got = false;
    let mut ring = INPUT.lock();
    while let Some(b) = dev.try_read_byte() {
        if ring.len == INPUT_SIZE {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let tail = (ring.head + ring.len) % INPUT_SIZE;
        ring.buf[tail] = b;
        ring.len += 1;
        got = true;
    }
    got
}

/// Called from the UART interrupt: moves received bytes into the input ring and wakes the
/// reader.
pub fn on_input_interrupt() {
    if drain_device() {
        let reader = READER.load(Ordering::Acquire);
        if !reader.is_null() {
            // SAFETY: the reader is the shell thread, blocked in read_byte; it never exits
            // while registered.
            unsafe { crate::sched::unpark(reader) };
        }
    }
}

fn pop_input() -> Option<u8> {
    let mut ring = INPUT.lock();
    if ring.len == 0 {
        return None;
    }
    let b = ring.buf[ring.head];
    ring.head = (ring.head + 1) % INPUT_SIZE;
    ring.len -= 1;
    Some(b)
}

/// Waits for the next input byte. Only one thread (the shell) reads the console.
pub fn read_byte() -> u8 {
    flush();
    loop {
        if let Some(b) = pop_input() {
            return b;
        }
        READER.store(crate::sched::current_ptr(), Ordering::Release);
        // Bytes that arrived between the check and registering as reader would not wake us,
        // nor would bytes that were already in the FIFO before its interrupt was enabled.
        drain_device();
        if let Some(b) = pop_input() {
            READER.store(core::ptr::null_mut(), Ordering::Release);
            return b;
        }
        crate::sched::park();
        READER.store(core::ptr::null_mut(), Ordering::Release);
    }
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::kernel::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::kernel::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
